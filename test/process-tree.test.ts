// The telemetry port when several node processes of one service get the preload: NODE_OPTIONS reaches npm (or
// pnpm, yarn, tsx) running the start script, a cluster's primary and its workers, and every child process.
import { once } from 'node:events';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import http, { type Server } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { find, killApps, otlpReceiver, parseExposition, REGISTER, ROOT, runToExit, spawnApp, standaloneAppDir, waitFor, type Sample, type SpawnedApp } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const apps: SpawnedApp[] = [];
// SIGTERM: the launchers forward it to the service they started, which SIGKILL left running after the suite.
afterEach(async () => {
  await killApps(apps, 'SIGTERM');
});

/** A scrape on a connection of its own (a cluster hands each new connection to the next worker). */
function scrapeFresh(port: number, route = '/metrics'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: route, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

const refused = (port: number) => scrapeFresh(port, '/health').then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
const instanceOf = (samples: Sample[]) => find(samples, 'target_info')[0]?.labels.service_instance_id;
const preloaded = (port: number, env: Record<string, string> = {}) => ({
  DATABASE_URL, NODE_OPTIONS: `--import ${REGISTER}`, OTEL_EXPORTER_PROMETHEUS_PORT: String(port), ...env,
});

/**
 * `fixture` as Vite's CLI: inside its package, beside pg, reached through npm's .bin symlink; returns that path.
 * `others`: more fixtures, by their path under node_modules.
 */
function asVite(fixture: string, others: Record<string, string> = {}): string {
  const dir = standaloneAppDir([], ['pg']);
  const vite = path.join(dir, 'node_modules', 'vite');
  mkdirSync(path.join(vite, 'bin'), { recursive: true });
  writeFileSync(path.join(vite, 'package.json'), '{ "name": "vite", "type": "module" }');
  copyFileSync(path.join(ROOT, 'test', 'fixtures', fixture), path.join(vite, 'bin', 'vite.js'));
  for (const [at, other] of Object.entries(others)) {
    mkdirSync(path.dirname(path.join(dir, 'node_modules', at)), { recursive: true });
    copyFileSync(path.join(ROOT, 'test', 'fixtures', other), path.join(dir, 'node_modules', at));
  }
  mkdirSync(path.join(dir, 'node_modules', '.bin'));
  symlinkSync('../vite/bin/vite.js', path.join(dir, 'node_modules', '.bin', 'vite'));
  return path.join(dir, 'node_modules', '.bin', 'vite');
}

/**
 * Runs a node:test file that serves HTTP under the preload; checks that it passed, that the telemetry port was
 * refused while its own server answered, and that nothing of Poolscope's is in the output.
 */
async function nodeTest(fixture: string) {
  const port = await freePort();
  const r = await runToExit(process.execPath, ['--test', path.join(ROOT, 'test', 'fixtures', fixture)], {
    env: { ...process.env, ...preloaded(port, { POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' }), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' },
    killAfterMs: 30_000,
  });
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/RESULT own=refused\b/);
  expect(r.stdout + r.stderr).not.toMatch(/poolscope/i);
  return r;
}

describe('the telemetry port in a tree of node processes', () => {
  it('is left to the service by the process that starts it (bug: npm start, tsx or a process manager held it, and the service with the pools was told it was taken)', async () => {
    const port = await freePort();
    const app = await spawnApp('launcher.mjs', preloaded(port, { LAUNCH: 'rel-app.mjs', POOL_MAX: '4' }), []);
    apps.push(app);
    expect((await fetch(`http://127.0.0.1:${app.port}/q`)).status).toBe(200);
    const samples = parseExposition((await scrapeFresh(port)).body);
    expect(find(samples, 'db_client_connection_max')[0]?.value).toBe(4);
    expect(app.stderr()).toBe('');
  });

  it('is left to the service by a launcher that loads pg without using it (bug: Medusa\'s develop watcher held it, and its health said it saw pg but no pool)', async () => {
    const port = await freePort();
    const app = await spawnApp('launcher.mjs', preloaded(port, { LAUNCH: 'rel-app.mjs', POOL_MAX: '4', LAUNCHER_LOADS_PG: '1' }), []);
    apps.push(app);
    expect((await fetch(`http://127.0.0.1:${app.port}/q`)).status).toBe(200);
    const samples = parseExposition((await scrapeFresh(port)).body);
    expect(find(samples, 'db_client_connection_max')[0]?.value).toBe(4);
    expect(app.stderr()).toBe('');
  });

  it('is served by one cluster worker, with its own pools, and the other workers say it is taken (bug: the primary held it with no pool)', async () => {
    const port = await freePort();
    const app = await spawnApp('cluster-app.cjs', preloaded(port, { APP_PORT: String(await freePort()) }), []);
    apps.push(app);
    for (let i = 0; i < 4; i++) expect((await scrapeFresh(app.port, '/pq')).status).toBe(200);
    // Every scrape answered by the same worker: a shared handle gave each one to the next worker in turn.
    const instances = new Set<string | undefined>();
    for (let i = 0; i < 4; i++) {
      const samples = parseExposition((await scrapeFresh(port)).body);
      expect(find(samples, 'db_client_connection_max', { db_client_connection_pool_name: 'orders' })[0]?.value).toBe(3);
      instances.add(instanceOf(samples));
    }
    expect(instances.size).toBe(1);
    expect([...instances][0]).toBeDefined();
    await waitFor(() => app.stderr().includes('already in use') || undefined, 20_000); // said at the first retry, 5 s on
    const lines = app.stderr().split('\n').filter((l) => l.trim() !== '');
    expect(lines).toEqual([expect.stringMatching(/^poolscope: 127\.0\.0\.1:\d+ .* is already in use; .*cluster workers: give each its own port, or push with OTLP\.\)$/)]);
    app.child.kill('SIGTERM');
    expect(await app.exit).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('is left to the workers by a cluster primary that used pg before forking (bug: the primary held it for its life, and no worker\'s pool was ever served)', async () => {
    const port = await freePort();
    const app = await spawnApp('cluster-app.cjs', preloaded(port, { APP_PORT: String(await freePort()), PRIMARY_MIGRATES: '1' }), []);
    apps.push(app);
    for (let i = 0; i < 4; i++) expect((await scrapeFresh(app.port, '/pq')).status).toBe(200);
    const samples = await waitFor(async () => {
      const s = parseExposition((await scrapeFresh(port)).body);
      return find(s, 'db_client_connection_max', { db_client_connection_pool_name: 'orders' }).length > 0 ? s : undefined;
    }, 20_000);
    expect(find(samples, 'db_client_connection_max', { db_client_connection_pool_name: 'orders' })[0]?.value).toBe(3);
    expect(find(samples, 'db_client_connection_max', { db_client_connection_pool_name: 'migrations' })).toEqual([]);
    app.child.kill('SIGTERM');
    await app.exit;
  }, 40_000);

  // Found by a review of process fleets: a primary that opened a pool after forking found the port held by a
  // worker, said it was taken, and tried again every 5 s, to take it in the gap of a worker's restart.
  it('is left to the workers by a cluster primary that opens a pool after forking, which says its pool is not served there and serves it once they are gone (bug: it kept trying to take the port)', async () => {
    const port = await freePort();
    const app = await spawnApp('cluster-app.cjs', preloaded(port, { APP_PORT: String(await freePort()), PRIMARY_POOL: '1' }), []);
    apps.push(app);
    for (let i = 0; i < 4; i++) expect((await scrapeFresh(app.port, '/pq')).status).toBe(200);
    await waitFor(() => app.stderr().includes('this cluster primary') || undefined, 20_000);
    // Past the first retry (5 s after the primary's attempt), which said the port was taken.
    await new Promise((r) => setTimeout(r, 7_000));
    const lines = app.stderr().split('\n').filter((l) => l.trim() !== '');
    expect(lines).toEqual(expect.arrayContaining([
      expect.stringMatching(/^poolscope: this cluster primary has a connection pool open, but leaves the telemetry port to its workers while it has any: /),
    ]));
    // One worker serves; the other says the port is taken; the primary does not.
    expect(lines.filter((l) => l.includes('already in use')), lines.join('\n')).toHaveLength(1);
    expect(lines).toHaveLength(2);
    const samples = parseExposition((await scrapeFresh(port)).body);
    expect(find(samples, 'db_client_connection_max', { db_client_connection_pool_name: 'orders' })[0]?.value).toBe(3);
    expect(find(samples, 'db_client_connection_max', { db_client_connection_pool_name: 'primary' })).toEqual([]);
    // Its workers gone, the primary serves its own pool.
    app.child.kill('SIGUSR2');
    const alone = await waitFor(async () => {
      const r = await scrapeFresh(port).catch(() => undefined);
      const s = r?.status === 200 ? parseExposition(r.body) : [];
      return find(s, 'db_client_connection_max', { db_client_connection_pool_name: 'primary' }).length > 0 ? s : undefined;
    }, 15_000, 200);
    expect(find(alone, 'db_client_connection_max', { db_client_connection_pool_name: 'primary' })[0]?.value).toBe(1);
    app.child.kill('SIGTERM');
    await app.exit;
  }, 60_000);

  it('is taken by the service once the process that held it exits (bug: a CLI that used pg held the port as the service started, and the service never served /metrics and /health)', async () => {
    const port = await freePort();
    // The CLI: another process holding the port as the service starts.
    const holder = http.createServer((_req, res) => res.end('someone else')).listen(port, '127.0.0.1');
    await new Promise((r) => holder.once('listening', r));
    const service = await spawnApp('rel-app.mjs', { ...preloaded(port, { POOL_MAX: '4' }), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' }, []);
    apps.push(service);
    expect((await fetch(`http://127.0.0.1:${service.port}/q`)).status).toBe(200);
    await waitFor(() => service.stderr().includes('already in use') || undefined, 20_000); // said at the first retry, 5 s on
    expect((await scrapeFresh(port)).body).toBe('someone else');
    await new Promise((r) => holder.close(r));
    const samples = await waitFor(async () => {
      const r = await scrapeFresh(port).catch(() => undefined);
      return r?.status === 200 ? parseExposition(r.body) : undefined;
    }, 15_000, 200);
    expect(find(samples, 'db_client_connection_max')[0]?.value).toBe(4);
    expect(service.stderr().split('\n').filter((l) => l.trim() !== '')).toEqual([
      expect.stringMatching(/^poolscope: 127\.0\.0\.1:\d+ .* is already in use; \/metrics and \/health are not served by this process while it is \(tried again every 5 s\)\. /),
      expect.stringMatching(/^poolscope: 127\.0\.0\.1:\d+ is free now: \/metrics and \/health are served by this process\.$/),
    ]);
  });

  it('is not complained of by a CLI that uses pg for a few seconds while the service holds it (bug: its port-taken line read as if it were one of the service\'s processes)', async () => {
    const port = await freePort();
    const holder = http.createServer((_req, res) => res.end('the service')).listen(port, '127.0.0.1');
    await new Promise((r) => holder.once('listening', r));
    try {
      const script = "const pg = require('pg'); const p = new pg.Pool({ connectionString: process.env.DATABASE_URL }); " +
        "p.query('select 1').then(() => new Promise((r) => setTimeout(r, 2500))).then(() => p.end()).then(() => console.log('done'));";
      const r = await runToExit(process.execPath, ['-e', script], {
        cwd: ROOT, env: { ...process.env, ...preloaded(port), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' }, killAfterMs: 20_000,
      });
      expect(r).toEqual({ code: 0, stdout: 'done\n', stderr: '' });
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });

  it('is bound by a process that serves HTTP without pg, as its server listens', async () => {
    const port = await freePort();
    const app = await spawnApp('http-only.mjs', preloaded(port), []);
    apps.push(app);
    await waitFor(async () => (await scrapeFresh(port, '/health').catch(() => undefined))?.status === 200 || undefined);
  });

  it('is bound by an ES-module HTTP/2 service without pg, as its server listens (bug: on Node 20, never)', async () => {
    const port = await freePort();
    const app = await spawnApp('http2-only.mjs', preloaded(port), []);
    apps.push(app);
    await waitFor(async () => (await scrapeFresh(port).catch(() => undefined))?.status === 200 || undefined);
  });

  it('is bound at once for a caller that awaits ready (bug: ready never settled, and an ES module exited with 13)', async () => {
    const port = await freePort();
    const r = await runToExit(process.execPath, [path.join(ROOT, 'test', 'fixtures', 'await-ready.mjs')], {
      env: { ...process.env, ...preloaded(port), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' }, killAfterMs: 20_000,
    });
    expect(r).toEqual({ code: 0, stdout: `port=${port}\n`, stderr: '' });
  });

  it('is not bound by a process that neither loads pg nor serves HTTP, unless POOLSCOPE_SERVER_START=immediate', async () => {
    const port = await freePort();
    const idle = await spawnApp('no-service.mjs', preloaded(port), []);
    apps.push(idle);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await refused(port)).toBe(true);
    idle.child.kill('SIGKILL');
    await idle.exit;
    const eager = await spawnApp('no-service.mjs', preloaded(port, { POOLSCOPE_SERVER_START: 'immediate' }), []);
    apps.push(eager);
    await waitFor(async () => (await scrapeFresh(port).catch(() => undefined))?.status === 200 || undefined);
    expect(idle.stderr() + eager.stderr()).toBe('');
  });

  it('is left by a dev server to the service beside it, until the dev server loads pg (bug: under a global NODE_OPTIONS, `concurrently "vite" "node server.js"`: Vite held the port, and the service was told it was taken)', async () => {
    const port = await freePort();
    const env = preloaded(port, { POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' });
    const dev = await spawnApp(asVite('dev-server.mjs'), env, []);
    apps.push(dev);
    for (let i = 0; i < 3; i++) expect((await fetch(`http://127.0.0.1:${dev.port}/`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await refused(port)).toBe(true);
    const service = await spawnApp('rel-app.mjs', { ...env, POOL_MAX: '4' }, []);
    apps.push(service);
    expect((await fetch(`http://127.0.0.1:${service.port}/q`)).status).toBe(200);
    expect(find(parseExposition((await scrapeFresh(port)).body), 'db_client_connection_max')[0]?.value).toBe(4);
    service.child.kill('SIGKILL');
    await service.exit;
    expect((await fetch(`http://127.0.0.1:${dev.port}/pg`)).status).toBe(200);
    await waitFor(async () => (await scrapeFresh(port, '/health').catch(() => undefined))?.status === 200 || undefined);
    // Neither the port-taken line nor the blind-health line (the dev server served requests without pg).
    expect(dev.stderr() + service.stderr()).toBe('');
  });

  it('is not pushed over OTLP by a dev server\'s requests (durations, spans), nor is a collector that is down told of, until the dev server loads pg (bug: Vite\'s requests were pushed as the service\'s request durations)', async () => {
    const servers: Server[] = [];
    try {
      const receiver = await otlpReceiver(servers);
      const otlp = (endpoint: string) => preloaded(0, { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_METRIC_EXPORT_INTERVAL: '100', OTEL_TRACES_EXPORTER: 'otlp', OTEL_BSP_SCHEDULE_DELAY: '100' });
      const dev = await spawnApp(asVite('dev-server.mjs'), otlp(receiver.url), []);
      apps.push(dev);
      // Port 1: nothing listens there, so every push to it fails.
      const deaf = await spawnApp(asVite('dev-server.mjs'), otlp('http://127.0.0.1:1'), []);
      apps.push(deaf);
      for (const app of [dev, deaf]) for (let i = 0; i < 3; i++) expect((await fetch(`http://127.0.0.1:${app.port}/`)).status).toBe(200);
      // Ten export intervals.
      await new Promise((r) => setTimeout(r, 1_000));
      const durations = () => receiver.bodies.flatMap((b) => b.body.resourceMetrics ?? []).flatMap((r: any) => r.scopeMetrics ?? [])
        .flatMap((sm: any) => sm.metrics ?? []).filter((m: any) => m.name === 'http.server.request.duration')
        .flatMap((m: any) => m.histogram.dataPoints);
      const spans = () => receiver.bodies.filter((b) => b.path === '/v1/traces').flatMap((b) => b.body.resourceSpans)
        .flatMap((r: any) => r.scopeSpans).flatMap((ss: any) => ss.spans).map((x: any) => x.name as string);
      expect(durations()).toEqual([]);
      expect(spans()).toEqual([]);
      expect(deaf.stderr()).toBe('');
      // Once it renders a page that queries, it is the service: its requests from then on are.
      expect((await fetch(`http://127.0.0.1:${dev.port}/pg`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${dev.port}/`)).status).toBe(200);
      await waitFor(() => durations().some((p: any) => Number(p.count) >= 2) || undefined);
      expect(Math.max(...durations().map((p: any) => Number(p.count)))).toBe(2);
      // The request that first used pg was judged at its start, so only the one after it has a span.
      await waitFor(() => spans().includes('GET') || undefined);
      await new Promise((r) => setTimeout(r, 300));
      expect(spans().filter((n) => n === 'GET')).toHaveLength(1);
      expect(dev.stderr()).toBe('');
    } finally {
      await Promise.all(servers.map((x) => new Promise((resolve) => x.close(resolve))));
    }
  });

  // Found by a review of test runners: parallel workers with pools each tried the port, and the port-taken line
  // landed in the TAP report.
  it('is not complained of by a test file that uses pg while another process holds the port (bug: the line in the test report)', async () => {
    const port = await freePort();
    const holder = net.createServer().listen(port, '127.0.0.1');
    await once(holder, 'listening');
    try {
      const r = await runToExit(process.execPath, ['--test', path.join(ROOT, 'test', 'fixtures', 'node-test-pool.mjs')], {
        env: { ...process.env, ...preloaded(port, { HOLD_MS: '6500' }), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' },
        killAfterMs: 30_000,
      });
      expect(r.code).toBe(0);
      expect(r.stdout + r.stderr).not.toMatch(/poolscope/i);
    } finally {
      holder.close();
    }
  }, 40_000);

  it('is not bound by a node:test file that serves HTTP, and is bound by the service that file spawns (bug: the test file took it and printed the blind-health line into the test output)', async () => {
    const r = await nodeTest('serving.test.mjs');
    expect(r.stdout).toMatch(/RESULT spawned=200\b/);
  });

  it('is not bound by a Vitest test file that serves HTTP in Vitest\'s default forks pool (review: its worker was judged before Vitest marked it, bound the port and printed the blind-health line)', async () => {
    const port = await freePort();
    const dir = standaloneAppDir(['vitest-serving.test.mjs'], ['vitest']);
    // This suite runs in Vitest itself: its own worker's marks must not reach the run under test.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VITEST|TINYPOOL)/.test(k)));
    const r = await runToExit(process.execPath, [path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', dir, 'vitest-serving.test.mjs'], {
      env: { ...env, ...preloaded(port, { POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' }), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' },
      cwd: dir, killAfterMs: 60_000,
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/RESULT own=refused\b/);
    // (The run's directory is named poolscope-app-…: Poolscope's own lines start `poolscope:`.)
    expect(r.stdout + r.stderr).not.toMatch(/poolscope:/i);
  });

  it('is not bound by a node:test file that loads its application, listening as it loads, before node:test (bug: it was taken for a service)', async () => {
    await nodeTest('serving-first.test.cjs');
  });

  it('is not bound by a build tool\'s worker thread that loads pg, which says nothing (bug: SvelteKit\'s `vite build` printed the worker-thread line)', async () => {
    const port = await freePort();
    const r = await runToExit(process.execPath, [asVite('dev-build.mjs', { '@sveltejs/kit/analyse.mjs': 'analyse-routes.mjs' })], {
      env: { ...process.env, ...preloaded(port), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' }, killAfterMs: 20_000,
    });
    expect(r).toEqual({ code: 0, stdout: 'LISTENING 0\n', stderr: '' });
  });
});
