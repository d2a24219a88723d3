// Applications whose module loader hands Node the source of CommonJS files (Yarn Plug'n'Play's on Node 22.22+,
// custom loaders): Node compiles those with its ES-module loader's own require, where neither Poolscope's require
// hook nor the loader hooks see pg (src/adapters/late-attach.ts).
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { find, parseExposition, REGISTER, runToExit, standaloneAppDir } from './helpers.js';

// @ts-expect-error import-in-the-middle ships this entry point without type declarations
const { supportsSyncHooks } = await import('import-in-the-middle/supports-sync-hooks.mjs') as { supportsSyncHooks(): boolean };

const DATABASE_URL = inject('databaseUrl');
const dir = standaloneAppDir(['cjs-source-loader.mjs', 'cjs-source-loader-register.mjs', 'cjs-source-app.cjs', 'cjs-source-dependency.cjs'], ['pg']);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const LOADER = ['--import', './cjs-source-loader-register.mjs'];

async function run(preload: boolean, env: Record<string, string> = {}, loader = LOADER) {
  const port = await freePort();
  const args = [...(preload ? ['--import', REGISTER] : []), ...loader, 'cjs-source-app.cjs'];
  return runToExit(process.execPath, args, {
    cwd: dir,
    env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port), ...env },
    killAfterMs: 20_000,
  });
}

const UNSEEN = /pg was loaded where Poolscope's module hooks could not see it/g;

describe('a loader that hands Node CommonJS sources', () => {
  // The loader registered by an `--import` after Poolscope's, and given with --experimental-loader (it then runs
  // before the preload, and hands Node the source of Poolscope's own CommonJS dependencies too).
  it.each([['--import', LOADER], ['--experimental-loader', ['--experimental-loader', './cjs-source-loader.mjs']]])(
    'runs the application exactly as without the preload, the loader given with %s (bug: on Node 22.22+ require("node:http") ' +
    'killed it at start-up; with --experimental-loader every require() through Node\'s CommonJS loader threw)', async (_, loader) => {
      const plain = await run(false, {}, loader);
      expect(plain.code, plain.stderr).toBe(0);
      expect(plain.stdout).toBe('rows 1,2,3 http function again true\n');
      const withPreload = await run(true, {}, loader);
      expect(withPreload.code, withPreload.stderr).toBe(0);
      expect(withPreload.stdout).toBe(plain.stdout);
    });

  it.each([['--import', LOADER], ['--experimental-loader', ['--experimental-loader', './cjs-source-loader.mjs']]])(
    'runs the application with traces on, the loader given with %s (bug: before Node 24 require("node:http") killed it at start-up)', async (_, loader) => {
      const r = await run(true, { OTEL_TRACES_EXPORTER: 'console' }, loader);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('rows 1,2,3 http function again true\n');
    });

  // Found by review: knex (its tarn) and Sequelize loaded through the hooks were taken for modules loaded out of
  // their sight at every sample while pg was not loaded (knex on MySQL, or before its first connection).
  it('says nothing of knex loaded through the hooks while pg is not loaded (review: "its pools are not monitored")', async () => {
    const knexDir = standaloneAppDir([], ['knex']);
    try {
      const r = await runToExit(process.execPath, ['--import', REGISTER, '-e', "require('knex'); setTimeout(() => {}, 800);"], {
        cwd: knexDir,
        env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' },
        killAfterMs: 20_000,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
    } finally {
      rmSync(knexDir, { recursive: true, force: true });
    }
  });

  // --experimental-default-type=module has Node compile every CommonJS file the same way where it has no in-thread
  // hooks (Node 20, 22 before 22.22.3: those hooks see such files).
  const cases: Array<[string, string[]]> = [['a loader', LOADER]];
  if (!supportsSyncHooks() && Number(process.versions.node.split('.')[0]) < 23) {
    cases.push(['--experimental-default-type=module', ['--experimental-default-type=module']]);
  }
  it.each(cases)('measures pg from the next health sample and says once why it came late, under %s (bug: its pool and queries were never seen, and the warning blamed a bundle)', async (_, loader) => {
    const port = await freePort();
    const r = await run(true, {
      OTEL_EXPORTER_PROMETHEUS_PORT: String(port), SCRAPE_URL: `http://127.0.0.1:${port}/metrics`,
      POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '500', WAIT_FOR_PATCH: '1', NODE_NO_WARNINGS: '1',
    }, loader);
    expect(r.code, r.stderr).toBe(0);
    const line = r.stderr.split('\n').find((l) => l.startsWith('REPORT '));
    expect(line, r.stderr).toBeDefined();
    const report = JSON.parse(line!.slice(7)) as { firstUnseen: boolean; metrics: string };
    const samples = parseExposition(report.metrics);
    expect(find(samples, 'db_client_connection_max')).toHaveLength(1);
    expect(find(samples, 'db_client_connection_max')[0]!.value).toBe(3);
    // The queries after the sample that found pg are measured, in the pool whose connection they used (opened
    // before the pool was found); the first one too only if that sample came while it ran (a slow start).
    const pool = find(samples, 'db_client_connection_max')[0]!.labels.db_client_connection_pool_name!;
    const counted = find(samples, 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: pool })[0]?.value;
    if (report.firstUnseen) expect(counted).toBe(2);
    else expect([2, 3]).toContain(counted);
    const rest = r.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('REPORT '));
    expect(rest.join('\n').match(UNSEEN)).toHaveLength(1);
    expect(rest).toHaveLength(1);
  });
});
