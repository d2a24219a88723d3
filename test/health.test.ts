import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { build } from 'esbuild';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { HealthMonitor, statusFor, worst } from '../src/health/health.js';
import { createLogger } from '../src/logger.js';
import { TelemetryServer } from '../src/server/telemetry-server.js';
import path from 'node:path';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { capturedLog, inProcess, REGISTER, ROOT, runToExit } from './helpers.js';

const DIST = process.env.POOLSCOPE_DIST ?? path.join(ROOT, 'dist');
const url = inject('databaseUrl');
let ps: ReturnType<typeof inProcess>;
let server: TelemetryServer;
let base: string;
const pools: pg.Pool[] = [];

beforeEach(async () => {
  ps = inProcess();
  const monitor = new HealthMonitor(ps.registry, {
    thresholds: { warning: 0.75, critical: 0.9 },
    historySize: 3,
    sampleIntervalMillis: 60_000,
    serviceName: 'health-test',
  });
  server = new TelemetryServer({ host: '127.0.0.1', port: 0, health: monitor, metrics: ps.scrapeText, logger: createLogger() });
  await server.start();
  base = `http://127.0.0.1:${server.address()!.port}`;
  (globalThis as { monitor?: HealthMonitor }).monitor = monitor;
});
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end().catch(() => undefined)));
  await server.close();
  await ps.close();
});

async function holdConnections(pool: pg.Pool, n: number) {
  const clients: pg.PoolClient[] = [];
  for (let i = 0; i < n; i++) clients.push(await pool.connect());
  return clients;
}

describe('health status', () => {
  it('is healthy below 75 %, warning from 75 % and critical from 90 % utilization', () => {
    const t = { warning: 0.75, critical: 0.9 };
    expect([0, 0.5, 0.7499, 0.75, 0.8999, 0.9, 1].map((u) => statusFor(u, t)))
      .toEqual(['healthy', 'healthy', 'healthy', 'warning', 'warning', 'critical', 'critical']);
    expect(worst(['healthy', 'critical', 'warning'])).toBe('critical');
    expect(worst([])).toBe('healthy');
  });

  it('walks a real pool from healthy to warning to critical and back, worst pool first — regression: 503 at 90 % took every replica out during spikes, so critical answers 200', async () => {
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    const other = new pg.Pool({ connectionString: url, max: 10 });
    pools.push(pool, other);
    ps.instrumentation.monitorPool(pool, { name: 'main' });
    ps.instrumentation.monitorPool(other, { name: 'side' });
    const get = async (path: string) => {
      const res = await fetch(`${base}${path}`);
      return { code: res.status, body: (await res.json()) as any };
    };

    const held = await holdConnections(pool, 7);
    let r = await get('/health/database');
    expect(r.code).toBe(200);
    expect(r.body.status).toBe('healthy');

    held.push(...(await holdConnections(pool, 1)));
    r = await get('/health/database');
    expect(r.code).toBe(200);
    expect(r.body.status).toBe('warning');
    expect(r.body.pools.find((p: { name: string }) => p.name === 'main')).toMatchObject({ used: 8, max: 10, utilization: 0.8, status: 'warning' });

    held.push(...(await holdConnections(pool, 1)));
    r = await get('/health/database');
    // Full is not stuck: nobody waits, so nothing is failing. Only a stuck pool answers 503.
    expect(r.code).toBe(200);
    expect(r.body).toMatchObject({ status: 'critical', stuck: false });
    expect(r.body.pools.find((p: { name: string }) => p.name === 'main')).toMatchObject({ status: 'critical', stuck: false });
    expect(r.body.pools.find((p: { name: string }) => p.name === 'side').status).toBe('healthy');
    const summary = await get('/health');
    expect(summary.code).toBe(200);
    expect(summary.body).toMatchObject({ status: 'critical', service: 'health-test', checks: { database: { status: 'critical', pools: 2, stuckPools: 0 } } });

    held.forEach((c) => c.release());
    r = await get('/health/database');
    expect(r.code).toBe(200);
    expect(r.body.status).toBe('healthy');
  });

  it('reports pending, overflow, a timestamp and a bounded sample history per pool', async () => {
    const pool = new pg.Pool({ connectionString: url, max: 2, min: 1 });
    pools.push(pool);
    ps.instrumentation.monitorPool(pool, { name: 'small' });
    const held = await holdConnections(pool, 2);
    const waiting = pool.query('SELECT 1');
    const monitor = (globalThis as { monitor?: HealthMonitor }).monitor!;
    for (let i = 0; i < 5; i++) monitor.sample(new Date(Date.UTC(2026, 0, 1, 0, 0, i)));
    const body = (await (await fetch(`${base}/health/database`)).json()) as any;
    const p = body.pools[0];
    expect(p).toMatchObject({ name: 'small', used: 2, idle: 0, pending: 1, overflow: 1, min: 1, max: 2, utilization: 1 });
    expect(Date.parse(p.timestamp)).toBeGreaterThan(Date.now() - 60_000);
    expect(p.history).toHaveLength(3);
    expect(p.history.map((h: { timestamp: string }) => h.timestamp)).toEqual([
      '2026-01-01T00:00:02.000Z', '2026-01-01T00:00:03.000Z', '2026-01-01T00:00:04.000Z',
    ]);
    held.forEach((c) => c.release());
    await waiting;
  });

  it('logs one warning when a pool crosses 80 %, and one when overflow becomes active', async () => {
    const lines: string[] = [];
    const capture: DiagLogger = {
      error: (m) => lines.push(m), warn: (m) => lines.push(m), info: () => {}, debug: () => {}, verbose: () => {},
    };
    diag.setLogger(capture, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
    try {
      const pool = new pg.Pool({ connectionString: url, max: 5, min: 1 });
      pools.push(pool);
      ps.instrumentation.monitorPool(pool, { name: 'logged' });
      const held = await holdConnections(pool, 5);
      held.forEach((c) => c.release());
      const again = await holdConnections(pool, 5);
      again.forEach((c) => c.release());
      const utilization = lines.filter((l) => l.includes('utilization'));
      expect(utilization).toEqual(['poolscope: pool "logged" is at 80% utilization (4/5 connections in use, 0 waiting).']);
      expect(lines.filter((l) => l.includes('overflow'))).toEqual([
        'poolscope: pool "logged" is in overflow: 2 connections open, base size 1.',
      ]);
    } finally {
      diag.disable();
    }
  });
});

// Found by a mutation audit: nothing held the promise that a fault of Poolscope's never fails readiness.
describe('a fault inside Poolscope', () => {
  it('answers 200 "unknown" on both routes, and says so once', async () => {
    const { lines, logger } = capturedLog();
    const registry = { snapshots: () => { throw new Error('broken registry'); }, everObserved: true };
    const monitor = new HealthMonitor(registry as never, {
      thresholds: { warning: 0.75, critical: 0.9 }, historySize: 3, sampleIntervalMillis: 60_000, serviceName: 'faulty', logger,
    });
    const faulty = new TelemetryServer({ host: '127.0.0.1', port: 0, health: monitor, logger: createLogger() });
    await faulty.start();
    try {
      const at = `http://127.0.0.1:${faulty.address()!.port}`;
      for (const route of ['/health/database', '/health', '/health/database']) {
        const res = await fetch(`${at}${route}`);
        expect(res.status, route).toBe(200);
        expect(((await res.json()) as { status: string }).status).toBe(route === '/health' ? 'degraded' : 'unknown');
      }
      expect(lines).toEqual([expect.stringMatching(/^poolscope: computing pool health failed \(broken registry\); the health routes answer 200 "unknown" meanwhile\.$/)]);
    } finally {
      await faulty.close();
    }
  });
});

describe('telemetry server', () => {
  it('serves only its routes and refuses bodies', async () => {
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/../etc/passwd`)).status).toBe(404);
    expect((await fetch(`${base}/health?verbose=1`)).status).toBe(200);
    expect((await fetch(`${base}/health`, { method: 'DELETE' })).status).toBe(405);
    expect((await fetch(`${base}/metrics`, { method: 'HEAD' })).status).toBe(200);
    const res = await fetch(`${base}/metrics`);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  });
});

/** The standalone-clients fixture as an application bundled with pg inlined. */
async function bundleFixture(outfile: string): Promise<void> {
  await build({
    entryPoints: [path.join(ROOT, 'test', 'fixtures', 'standalone-clients.mjs')], outfile, bundle: true,
    platform: 'node', format: 'esm', external: ['pg-native'], logLevel: 'silent',
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  });
}

describe('health of an application whose pools Poolscope cannot see', () => {
  async function run(env: Record<string, string>, app = path.join(ROOT, 'test', 'fixtures', 'standalone-clients.mjs')) {
    const port = await freePort();
    const r = await runToExit(process.execPath, ['--import', REGISTER, app], {
      env: { ...process.env, DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: String(port), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', ...env },
      killAfterMs: 20_000,
    });
    expect(r.code).toBe(0);
    return { ...(JSON.parse(r.stdout.trim().split('\n').pop()!) as { database: any; summary: any }), stderr: r.stderr };
  }

  it('answers "unknown" (200) with a reason and says so once when pg is used without an observed pool, standalone clients named among the causes (they once went unmentioned)', async () => {
    const { database, summary, stderr } = await run({});
    expect(database.code).toBe(200);
    expect(database.body).toMatchObject({ status: 'unknown', score: null, pools: [] });
    expect(database.body.reason).toMatch(/^pg is in use but no connection pool is observed: .*standalone pg\.Client/);
    expect(summary).toMatchObject({ code: 200, body: { status: 'degraded', checks: { database: { status: 'unknown', reason: database.body.reason } } } });
    const lines = stderr.split('\n').filter((l) => l !== '');
    expect(lines).toEqual([expect.stringMatching(/^poolscope: pg is in use but no connection pool is observed: .*standalone pg\.Client.*\/health\/database reports "unknown"/)]);
  });

  it('says once that pg has not been loaded when the application is bundled with pg inlined (it said "no connection pool is open", and nothing in the log)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-bundle-'));
    try {
      const bundle = path.join(dir, 'app.mjs');
      await bundleFixture(bundle);
      const { database, summary, stderr } = await run({ FIXTURE_POOL: '1', FIXTURE_HTTP: '1' }, bundle);
      expect(database).toMatchObject({ code: 200, body: { status: 'unknown', score: null, pools: [] } });
      expect(database.body.reason).toMatch(/^no connection pool has been seen, and pg has not been loaded through Node's module loader: .*bundled with pg inlined \(mark pg as external in the bundler\)/);
      expect(summary.body.status).toBe('degraded');
      const lines = stderr.split('\n').filter((l) => l !== '');
      expect(lines).toEqual([expect.stringMatching(/^poolscope: no connection pool has been seen, and pg has not been loaded .*\/health\/database reports "unknown"/)]);
      // Advice that fits: monitorPool() cannot help where pg itself went unseen (it once said to use it).
      expect(lines[0]).toContain('see the README\'s Limitations on bundles and other clients');
      expect(lines[0]).not.toContain('monitorPool');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says so at a health sample when only /metrics is scraped, once the bundled service has served a request (it waited for a health route)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-bundle-'));
    try {
      const bundle = path.join(dir, 'app.mjs');
      await bundleFixture(bundle);
      const { stderr } = await run({ FIXTURE_POOL: '1', FIXTURE_HTTP: '1', FIXTURE_HEALTH: '0', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' }, bundle);
      expect(stderr.split('\n').filter((l) => l !== '')).toEqual([expect.stringMatching(/^poolscope: no connection pool has been seen, and pg has not been loaded/)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  // Found running a service on @databases/pg (an unsupported pool library) that was only scraped on /metrics:
  // the warning waited for a health route, and nothing ever said Poolscope saw no pool.
  it('says so at a health sample when only /metrics is scraped, once the service has served a request and queried (bug: it waited for a health route)', async () => {
    const { stderr } = await run({ FIXTURE_HTTP: '1', FIXTURE_HEALTH: '0', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' });
    expect(stderr.split('\n').filter((l) => l !== '')).toEqual([expect.stringMatching(/^poolscope: pg is in use but no connection pool is observed: .*standalone pg\.Client.*\/health\/database reports "unknown"/)]);
  });

  it('does not say pg is missing to a service that loads it on its first request, probed before that (bug: told it was bundled)', async () => {
    const { database, summary, stderr } = await run({ POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100' }, path.join(ROOT, 'test', 'fixtures', 'lazy-pg.mjs'));
    expect(database.body).toMatchObject({ status: 'unknown', reason: expect.stringMatching(/pg has not been loaded .*does not use pg \(or not yet\)/) });
    expect(summary.body.status).toBe('healthy');
    expect(stderr).toBe('');
  });

  it('takes the warning back once a service that served other routes first loads pg and a pool is seen (bug: the warning stood)', async () => {
    const { summary, stderr } = await run({ POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100', LAZY_PING: '1' }, path.join(ROOT, 'test', 'fixtures', 'lazy-pg.mjs'));
    expect(summary.body.status).toBe('healthy');
    expect(stderr.split('\n').filter((l) => l !== '')).toEqual([
      expect.stringMatching(/^poolscope: no connection pool has been seen, and pg has not been loaded/),
      'poolscope: a connection pool is observed now; the earlier "no connection pool" warning no longer applies.',
    ]);
  });

  it('says the pg instrumentation is off when it is, and logs nothing (bug: told pg was never loaded)', async () => {
    const { database, stderr } = await run({ FIXTURE_POOL: '1', FIXTURE_HTTP: '1', OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg' });
    expect(database.body).toMatchObject({ status: 'unknown', reason: expect.stringMatching(/^no pool is observed: .*pg instrumentation is off/) });
    expect(stderr).toBe('');
  });

  // Found reviewing the change above: the disabled Poolscope's health read the HTTP instrumentation it never made.
  it('answers getPoolHealth() of a disabled Poolscope with its reason (bug: a ReferenceError)', async () => {
    const script = `import { startPoolscope, getPoolHealth } from ${JSON.stringify(path.join(DIST, 'index.js'))};
startPoolscope({ disabled: true });
console.log(JSON.stringify(getPoolHealth()));`;
    const r = await runToExit(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env }, killAfterMs: 20_000 });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ status: 'unknown', reason: expect.stringMatching(/Poolscope is disabled \(OTEL_SDK_DISABLED\)/) });
  });

  it('reports the pool, not "unknown", once one is observed', async () => {
    const { database, summary, stderr } = await run({ FIXTURE_POOL: '1' });
    expect(database).toMatchObject({ code: 200, body: { status: 'healthy' } });
    expect(database.body.reason).toBeUndefined();
    expect(database.body.pools).toHaveLength(1);
    expect(summary.body.status).toBe('healthy');
    expect(stderr).toBe('');
  });
});

