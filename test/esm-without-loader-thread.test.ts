// ES-module applications on runtimes without in-thread module hooks: the CommonJS packages they import are
// instrumented without the ESM loader thread, which only hooked ES-module packages (Slonik, NestJS 12), traces
// or another loader start (src/cjs-import-hook.ts).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { otherLoaderPresent } from '../src/cjs-import-hook.js';
import { find, REGISTER, ROOT, parseExposition, runToExit } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

// What the runtime offers decides the path: in-thread hooks where supported, else this module's.
// @ts-expect-error import-in-the-middle ships this entry point without type declarations
const { supportsSyncHooks } = await import('import-in-the-middle/supports-sync-hooks.mjs') as { supportsSyncHooks(): boolean };
const inThreadHooks = supportsSyncHooks();

/** An application directory holding only the given packages, as a service's node_modules would. */
function appDir(packages: string[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-esm-app-'));
  dirs.push(dir);
  mkdirSync(path.join(dir, 'node_modules', '@x'), { recursive: true });
  for (const p of packages) symlinkSync(path.join(ROOT, 'node_modules', p), path.join(dir, 'node_modules', p), 'dir');
  // A CommonJS package whose evaluation throws: the importer must get that very error.
  mkdirSync(path.join(dir, 'node_modules', 'throws-on-load'));
  writeFileSync(path.join(dir, 'node_modules', 'throws-on-load', 'package.json'), '{"name":"throws-on-load","version":"1.0.0","main":"index.js"}');
  writeFileSync(path.join(dir, 'node_modules', 'throws-on-load', 'index.js'), 'const e = new Error("own failure"); e.code = "OWN"; throw e;\n');
  writeFileSync(path.join(dir, 'app.mjs'), APP);
  return dir;
}

const APP = `
import Module from 'node:module';
// Imported before pg requires it: a CommonJS module an ES module imports after some require() loaded it is
// the importer's as Node first loaded it, a replaced export included (README, Limitations).
import Pool from 'pg-pool';
import express from 'express';
import Fastify from 'fastify';
import pg from 'pg';

const report = { bridge: Module[Symbol.for('poolscope.cjs-import-hook')] === true };
try { await import('throws-on-load'); } catch (e) { report.loadError = e.code + ' ' + e.message; }

// pg-pool imported on its own: its pool is known from construction, before any query.
const direct = new Pool({ connectionString: process.env.DATABASE_URL, max: 4, poolName: 'direct' });
report.directIsPool = direct instanceof Pool;
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2, poolName: 'main' });

const app = express();
const router = express.Router();
router.get('/items/:id', async (req, res) => res.json((await pool.query('SELECT $1::int AS id', [req.params.id])).rows[0]));
app.use('/api', router);
const server = app.listen(0, '127.0.0.1');
await new Promise((r) => server.once('listening', r));
const fastify = Fastify();
fastify.get('/users/:id', async (req) => (await pool.query('SELECT $1::int AS id', [req.params.id])).rows[0]);
await fastify.listen({ port: 0, host: '127.0.0.1' });

report.express = await (await fetch('http://127.0.0.1:' + server.address().port + '/api/items/41')).json();
report.fastify = await (await fetch('http://127.0.0.1:' + fastify.server.address().port + '/users/42')).json();
report.metrics = await (await fetch('http://127.0.0.1:' + process.env.OTEL_EXPORTER_PROMETHEUS_PORT + '/metrics')).text();
process.stdout.write('REPORT ' + JSON.stringify(report) + '\\n');
server.close();
await fastify.close();
await pool.end();
await direct.end();
`;

async function run(dir: string, env: Record<string, string> = {}, args: string[] = [], app = 'app.mjs') {
  const port = await freePort();
  const { code, stdout: out, stderr: err } = await runToExit(process.execPath, ['--import', REGISTER, ...args, path.join(dir, app)], {
    cwd: dir,
    env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port), ...env },
    killAfterMs: 20_000,
  });
  expect(code, err).toBe(0);
  expect(err).toBe('');
  const line = out.split('\n').find((l) => l.startsWith('REPORT '));
  expect(line, out + err).toBeDefined();
  const report = JSON.parse(line!.slice(7)) as {
    bridge: boolean; loadError: string; directIsPool: boolean; express: unknown; fastify: unknown; metrics: string;
  };
  return { ...report, samples: parseExposition(report.metrics) };
}

function expectInstrumented(r: Awaited<ReturnType<typeof run>>) {
  expect(r.express).toEqual({ id: 41 });
  expect(r.fastify).toEqual({ id: 42 });
  expect(r.loadError).toBe('OWN own failure');
  expect(r.directIsPool).toBe(true);
  // Route templates: both frameworks were hooked where the application imported them.
  const routes = find(r.samples, 'http_server_request_duration_seconds_count').map((s) => s.labels.http_route).sort();
  expect(routes).toEqual(['/api/items/:id', '/users/:id']);
  // The pool pg-pool's own import made, known before it ran a query, and the one pg made.
  expect(find(r.samples, 'db_client_connection_max', { db_client_connection_pool_name: 'direct' })[0]?.value).toBe(4);
  expect(find(r.samples, 'db_client_connection_max', { db_client_connection_pool_name: 'main' })[0]?.value).toBe(2);
  expect(find(r.samples, 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: 'main' })[0]?.value).toBe(2);
}

describe('ES-module applications without the loader thread', () => {
  it('instruments the CommonJS packages an ES module imports without starting the loader thread', async () => {
    const r = await run(appDir(['express', 'fastify', 'pg', 'pg-pool']));
    expectInstrumented(r);
    expect(r.bridge).toBe(!inThreadHooks);
  });

  // Found by differential testing of pg's API on Node 20: an ES module importing pg-pool after pg had required
  // it gets the class Node first loaded, not the one the require hook returns, and `instanceof` between the two
  // was false (plain node: the same class).
  it('keeps instanceof between pg-pool as imported and as required (bug: false after pg required it first)', async () => {
    const dir = appDir(['pg', 'pg-pool']);
    writeFileSync(path.join(dir, 'identity.mjs'), `
import pg from 'pg';
import EsmPool from 'pg-pool';
import { createRequire } from 'node:module';
const CjsPool = createRequire(import.meta.url)('pg-pool');
const imported = new EsmPool({ max: 1 });
const required = new CjsPool({ max: 1 });
const own = new pg.Pool({ max: 1 });
console.log(JSON.stringify({
  importedIsRequired: imported instanceof CjsPool, requiredIsImported: required instanceof EsmPool,
  pgPoolIsImported: own instanceof EsmPool, pgPoolIsRequired: own instanceof CjsPool,
  // pg's own Pool stays a subclass: a plain pg-pool pool is none of its instances.
  importedIsPgPool: imported instanceof pg.Pool, requiredIsPgPool: required instanceof pg.Pool,
}));
await Promise.all([imported.end(), required.end(), own.end()]);
`);
    const runIt = async (preload: string[]) => {
      const r = await runToExit(process.execPath, [...preload, path.join(dir, 'identity.mjs')], {
        cwd: dir, env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, killAfterMs: 20_000 });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, boolean>;
    };
    const plain = await runIt([]);
    expect(plain).toMatchObject({ importedIsRequired: true, importedIsPgPool: false });
    expect(await runIt(['--import', REGISTER])).toEqual(plain);
  });

  it('adds no warning, not even a pending deprecation (it read module.parent, which exited under --throw-deprecation)', async () => {
    const r = await run(appDir(['express', 'fastify', 'pg', 'pg-pool']), {}, ['--pending-deprecation', '--throw-deprecation']);
    expectInstrumented(r);
  });

  it('starts the loader thread instead when Slonik is installed, and instruments the same', async () => {
    const r = await run(appDir(['express', 'fastify', 'pg', 'pg-pool', 'slonik']));
    expect(r.bridge).toBe(false);
    expectInstrumented(r);
  });

  it('starts the loader thread for a Slonik only pnpm\'s store holds', async () => {
    const dir = appDir(['express', 'fastify', 'pg', 'pg-pool']);
    const store = path.join(dir, 'node_modules', '.pnpm', 'slonik@49.10.9', 'node_modules');
    mkdirSync(store, { recursive: true });
    symlinkSync(path.join(ROOT, 'node_modules', 'slonik'), path.join(store, 'slonik'), 'dir');
    expect((await run(dir)).bridge).toBe(false);
  });

  it('starts the loader thread for any hooked package installed as an ES module (NestJS 12, scoped, also in pnpm\'s store), not for one installed as CommonJS (NestJS 11)', async () => {
    const withNest = (type: 'module' | 'commonjs', where: 'top' | 'pnpm') => {
      const dir = appDir(['express', 'fastify', 'pg', 'pg-pool']);
      const pkg = where === 'top' ? path.join(dir, 'node_modules', '@nestjs', 'platform-express')
        : path.join(dir, 'node_modules', '.pnpm', '@nestjs+platform-express@12.5.0', 'node_modules', '@nestjs', 'platform-express');
      mkdirSync(pkg, { recursive: true });
      writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: '@nestjs/platform-express', version: '12.5.0', type }));
      return dir;
    };
    if (inThreadHooks) return; // no loader thread to start where the runtime hooks in-thread
    expect((await run(withNest('module', 'top'))).bridge).toBe(false);
    expect((await run(withNest('module', 'pnpm'))).bridge).toBe(false);
    expect((await run(withNest('commonjs', 'top'))).bridge).toBe(true);
  });

  // Found by reviewing the check above: it read whatever a hooked package's package.json was, and a FIFO there
  // hung start-up for good (a symlink to /dev/zero took gigabytes).
  it('reads only a regular package.json of sane size to decide (bug: a FIFO hung start-up)', { timeout: 30_000 }, async () => {
    if (inThreadHooks) return; // the check runs only where no in-thread hooks exist
    const dir = appDir(['express', 'fastify', 'pg', 'pg-pool']);
    const fake = path.join(dir, 'node_modules', 'koa');
    mkdirSync(fake);
    expect(spawnSync('mkfifo', [path.join(fake, 'package.json')]).status).toBe(0);
    const zero = path.join(dir, 'node_modules', '@hapi', 'hapi');
    mkdirSync(zero, { recursive: true });
    symlinkSync('/dev/zero', path.join(zero, 'package.json'));
    const r = await run(dir);
    expect(r.bridge).toBe(true);
    expectInstrumented(r);
  });

  it('obeys POOLSCOPE_ESM_LOADER_THREAD: always starts the thread, never does not even with Slonik installed', async () => {
    const always = await run(appDir(['express', 'fastify', 'pg', 'pg-pool']), { POOLSCOPE_ESM_LOADER_THREAD: 'always' });
    expect(always.bridge).toBe(false);
    expectInstrumented(always);
    const never = await run(appDir(['express', 'fastify', 'pg', 'pg-pool', 'slonik']), { POOLSCOPE_ESM_LOADER_THREAD: 'never' });
    expect(never.bridge).toBe(!inThreadHooks);
    expectInstrumented(never);
  });

  it('starts the loader thread instead when another loader runs, whose CommonJS sources bypass the hook', async () => {
    const dir = appDir(['express', 'fastify', 'pg', 'pg-pool']);
    writeFileSync(path.join(dir, 'other-loader.mjs'), '');
    const r = await run(dir, {}, ['--import', path.join(dir, 'other-loader.mjs')]);
    expect(r.bridge).toBe(false);
    expectInstrumented(r);
  });

  // tsx, the other loader most services run under. Without the loader thread (a change that dropped the check
  // for another loader, tried on the word of a measurement that missed this shape), the Express router mounted
  // under a prefix and Fastify's routes lost their http.route under tsx.
  it('monitors an application run through tsx, routes included, by starting the loader thread', async () => {
    const dir = appDir(['express', 'fastify', 'pg', 'pg-pool', 'tsx']);
    writeFileSync(path.join(dir, 'app.mts'), `const typed: number = 1;\n${APP}`);
    const r = await run(dir, {}, ['--import', 'tsx'], 'app.mts');
    expect(r.bridge).toBe(false);
    expectInstrumented(r);
  });

  it('leaves Node\'s builtins out of the loader thread when traces are off (bug: a later loader that answers node: URLs itself, as ts-node does, got node:http?iitm=true and the application did not start on Node 20)', async () => {
    const dir = appDir(['express', 'fastify', 'pg', 'pg-pool']);
    writeFileSync(path.join(dir, 'builtin-hooks.mjs'), `export async function load(url, context, nextLoad) {
  if (url.startsWith('node:')) return { format: 'builtin', url, shortCircuit: true };
  return nextLoad(url, context);
}
`);
    writeFileSync(path.join(dir, 'other-loader.mjs'), "import { register } from 'node:module';\nregister('./builtin-hooks.mjs', import.meta.url);\n");
    writeFileSync(path.join(dir, 'app.mjs'), `import 'node:http';\nimport 'node:https';\n${APP}`);
    const r = await run(dir, {}, ['--import', path.join(dir, 'other-loader.mjs')]);
    expectInstrumented(r);
  });

  it('tells another loader from ours on the command line and in NODE_OPTIONS', () => {
    expect(otherLoaderPresent(['--import', '/x/register.js'], '')).toBe(false);
    expect(otherLoaderPresent(['--import=/x/register.js', '--require', 'dotenv/config'], '')).toBe(false);
    expect(otherLoaderPresent(['--import', '/x/register.js', '--import', 'tsx'], '')).toBe(true);
    expect(otherLoaderPresent(['--import', '/x/register.js'], '--import tsx')).toBe(true);
    expect(otherLoaderPresent(['--experimental-loader=ts-node/esm'], '')).toBe(true);
    expect(otherLoaderPresent([], '--loader ts-node/esm  --import /x/register.js')).toBe(true);
  });

  it('starts the loader thread instead when traces are on', async () => {
    const r = await run(appDir(['express', 'fastify', 'pg', 'pg-pool']), { OTEL_TRACES_EXPORTER: 'console' });
    expect(r.bridge).toBe(false);
  });
});
