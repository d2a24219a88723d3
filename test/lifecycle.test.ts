// Situations where Poolscope could lose data silently: a start after pg was loaded, a restart after
// shutdown(), worker threads, and warnings in programmatic use. Each is handled or said once.
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { find, REGISTER, ROOT, runToExit, scrapeUrl, spawnApp } from './helpers.js';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';

const url = inject('databaseUrl');

function run(fixture: string, args: string[] = [], env: Record<string, string> = {}) {
  return runToExit(process.execPath, [...args, path.join(ROOT, 'test', 'fixtures', fixture)], {
    env: { ...process.env, DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: '0', ...env },
  });
}

describe('no silent loss', () => {
  it('a programmatic start after pg was loaded measures queries and attaches older pools on their next connect; a restart after shutdown() keeps working (bug: both went dark)', async () => {
    const { code, stdout, stderr } = await run('late-start.mjs');
    expect(code).toBe(0);
    const report = JSON.parse(/REPORT (.*)/.exec(stdout)![1]!);
    expect(report.firstStart.createdMax).toMatch(/ 4$/);
    expect(report.firstStart.beforeQueries).toBeGreaterThanOrEqual(2);
    expect(report.restart.newPoolMax).toMatch(/ 5$/);
    expect(report.restart.oldPoolMax).toMatch(/ 4$/);
    expect(report.restart.queryLines).toBeGreaterThanOrEqual(2);
    // Programmatic use logs too (no diag logger of the app's own): the late start is said, once.
    expect(stderr.match(/pg was loaded before Poolscope started/g)?.length).toBe(1);
    // Nothing else: a restart once found the shut-down providers still registered globally (review).
    expect(stderr.split('\n').filter((l) => l.trim() !== '' && !/pg was loaded before Poolscope started/.test(l))).toEqual([]);
  });

  it('a restart after shutdown() with traces on registers its providers again, silently (bug: three "duplicate registration" lines)', async () => {
    const index = path.join(path.dirname(REGISTER), 'index.js');
    const script = `import { startPoolscope } from ${JSON.stringify(index)}; ` +
      "await startPoolscope({ port: 0 }).shutdown(); const again = startPoolscope({ port: 0 }); await again.shutdown(); console.log('done');";
    const r = await runToExit(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}` },
    });
    expect(r).toEqual({ code: 0, stdout: 'done\n', stderr: '' });
  });

  // Found by a review of the public API: scrape() after shutdown() rejected (an unhandled rejection ended the
  // process), and a shut-down instance's health handler went on judging pools it no longer observed as healthy.
  it('a shut-down instance answers as shut down: no scrape (bug: rejected), health unknown with a reason (bug: healthy), monitorPool and forceFlush inert', async () => {
    const index = path.join(path.dirname(REGISTER), 'index.js');
    const script = `import { startPoolscope } from ${JSON.stringify(index)};
      const ps = startPoolscope({ port: 0 }); const { default: pg } = await import('pg'); const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
      ps.monitorPool(pool, { name: 'before' }); await pool.query('SELECT 1'); const before = ps.getPoolHealth().status;
      await ps.shutdown();
      const scraped = ps.scrape();
      const health = ps.getPoolHealth();
      let served = ''; const res = { writeHead(status) { served += status; }, setHeader() {}, end(b) { served += ' ' + JSON.parse(b).status; } };
      ps.healthHandler('database')({ method: 'GET', url: '/health/database', headers: {} }, res);
      const other = new pg.Pool({ connectionString: process.env.DATABASE_URL });
      const named = ps.monitorPool(other, { name: 'after' }); await ps.forceFlush();
      await pool.end(); await other.end();
      console.log(JSON.stringify({ before, scraped: scraped === undefined ? 'undefined' : await scraped, status: health.status, reason: health.reason, served, named: named ?? null }));`;
    const r = await runToExit(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DATABASE_URL: url }, cwd: ROOT });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ before: 'healthy', scraped: 'undefined', status: 'unknown',
      reason: 'Poolscope was shut down: pools are no longer observed', served: '200 unknown', named: null });
    expect(r.stderr.trim().split('\n')).toEqual(['poolscope: monitorPool() called after shutdown(); ignored.']);
  });

  it('a worker thread under --import says its pools are not monitored, once, and the main thread keeps its endpoint', async () => {
    const { code, stderr } = await run('worker-pools.mjs', ['--import', REGISTER]);
    expect(code).toBe(0);
    expect(stderr.match(/not started in a worker thread/g)?.length).toBe(1);
    expect(stderr).not.toMatch(/already in use/);
  });

  // Found by running Kysely's and Slonik's suites under the preload: esbuild's and ava's own worker threads, which
  // never load pg, each printed the line, on the stderr of commands that never touched a pool.
  // Found reviewing the change above: a worker that loaded pg and called process.exit() within 2 s was not told.
  it('a worker thread that loads pg and exits at once still says its pools are not monitored (bug: silent)', async () => {
    const { code, stderr } = await run('worker-exits.mjs', ['--import', REGISTER]);
    expect(code).toBe(0);
    expect(stderr.match(/not started in a worker thread/g)?.length).toBe(1);
  });

  it('a worker thread that started Poolscope itself, as the line advises, is not told it is unmonitored (bug: it was)', async () => {
    const { code, stdout, stderr } = await run('worker-started.mjs', ['--import', REGISTER]);
    expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: 'worker pool seen=true\n', stderr: '' });
  });

  it('a worker thread that never loads pg says nothing (bug: every worker said it was not monitored)', async () => {
    const { code, stdout, stderr } = await run('worker-without-pg.mjs', ['--import', REGISTER]);
    expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: 'LISTENING 0 answer=42\n', stderr: '' });
  });
});

describe('zero-code in a CommonJS app', () => {
  it('sees knex and Sequelize pools, names them host:port/database, and labels their queries', async () => {
    const metricsPort = await freePort();
    const app = await spawnApp('cjs-pools.cjs', { DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort) });
    try {
      await fetch(`http://127.0.0.1:${app.port}/`).then((r) => r.text());
      const samples = await scrapeUrl(`http://127.0.0.1:${metricsPort}/metrics`);
      const u = new URL(url);
      const target = `${u.hostname}:${u.port}${u.pathname}`;
      const maxes = find(samples, 'db_client_connection_max').map((s) => [s.labels.db_client_connection_pool_name, s.value]);
      expect(maxes).toEqual(expect.arrayContaining([[target, 3], [`${target}#2`, 4]]));
      for (const name of [target, `${target}#2`]) {
        expect(find(samples, 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: name }).length).toBeGreaterThan(0);
      }
      expect(app.stderr()).toBe('');
    } finally {
      app.child.kill('SIGKILL');
      await app.exit;
    }
  });
});
