// Reliability: real faults injected into real processes (issue 5). The application pays nothing for its
// telemetry and Poolscope's numbers stay true: collector outages, PostgreSQL restarts, pool exhaustion,
// pool churn, signals and bad input. Fixtures are test/fixtures/rel-*.mjs, ordinary pg apps that count what
// they observe themselves, so every number Poolscope reports is held against an independent truth.
//
// POOLSCOPE_DIST=/path/to/dist runs these tests against another build (used to check that they fail against
// a deliberately broken one).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort, startPostgres } from '../scripts/postgres.mjs';
import { find, killApps, parseExposition, ROOT, runToExit, scrapeUrl, spawnApp, standaloneAppDir, waitFor, type Sample, type SpawnedApp } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const DIST = process.env.POOLSCOPE_DIST ?? path.join(ROOT, 'dist');
const PRELOAD = ['--import', path.join(DIST, 'register.js')];
const POOL = 'db_client_connection_pool_name';

const apps: SpawnedApp[] = [];
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  await killApps(apps);
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

interface Started { app: SpawnedApp; appUrl: string; metricsUrl: string }
async function start(fixture: string, env: Record<string, string> = {}, preload = true): Promise<Started> {
  const metricsPort = await freePort();
  // http/json: the stand-in collector below decodes OTLP/JSON (the default protocol is http/protobuf).
  const app = await spawnApp(fixture, { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', ...env }, preload ? PRELOAD : []);
  apps.push(app);
  return { app, appUrl: `http://127.0.0.1:${app.port}`, metricsUrl: `http://127.0.0.1:${metricsPort}` };
}

async function json(url: string): Promise<any> {
  const res = await fetch(url);
  return res.json();
}

/** Requests `url` from `concurrency` workers until the time is up; bounded in time and count. */
async function load(url: string, { concurrency = 4, durationMs = 1000, maxRequests = 20_000 } = {}) {
  const statuses: Record<string, number> = {};
  const latencies: number[] = [];
  const bodies: any[] = [];
  const deadline = Date.now() + durationMs;
  let sent = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < deadline && sent < maxRequests) {
      sent++;
      const t = performance.now();
      try {
        const res = await fetch(url);
        const text = await res.text();
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status !== 200 && bodies.length < 50) bodies.push(JSON.parse(text));
      } catch {
        statuses.failed = (statuses.failed ?? 0) + 1;
      }
      latencies.push(performance.now() - t);
    }
  }));
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? 0;
  return { statuses, p99, requests: latencies.length, bodies };
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Lines an application would see in its own stderr because of Poolscope or the SDK. */
const stderrLines = (app: SpawnedApp) => app.stderr().split('\n').filter((l) => l.trim() !== '');
/** No stack trace, no unhandled rejection, no Node process warning. */
function expectCleanStderr(app: SpawnedApp) {
  const text = app.stderr();
  expect(text).not.toMatch(/^\s+at /m);
  expect(text).not.toMatch(/Unhandled|uncaught|\(node:\d+\)|Warning:/i);
}

// ---------------------------------------------------------------------------------------------------------
// A stand-in OTLP/HTTP collector that can be healthy, answer 503, hang, or refuse connections.
type CollectorMode = 'ok' | '503' | 'hang' | 'refuse';
async function fakeCollector() {
  let mode: CollectorMode = 'ok';
  const pushes: Array<{ at: number; body: any }> = [];
  let open = 0;
  let maxOpenDuringHang = 0;
  const sockets = new Set<net.Socket>();
  const server: Server = createServer((req, res) => {
    let data = '';
    req.on('data', (d) => { data += d; });
    req.on('end', () => {
      if (mode === 'ok') {
        pushes.push({ at: Date.now(), body: JSON.parse(data) });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      } else if (mode === '503') {
        res.writeHead(503, { 'content-type': 'text/plain' });
        res.end('collector overloaded');
      } // 'hang': never answer
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    open++;
    if (mode === 'hang') maxOpenDuringHang = Math.max(maxOpenDuringHang, open);
    socket.on('close', () => { sockets.delete(socket); open--; });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const closeNow = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
  cleanups.push(closeNow);
  return {
    url: `http://127.0.0.1:${port}`,
    pushes,
    get maxOpenDuringHang() { return maxOpenDuringHang; },
    async set(next: CollectorMode) {
      if (next === 'refuse') await closeNow();
      else if (mode === 'refuse') {
        server.listen(port, '127.0.0.1');
        await once(server, 'listening');
      }
      if (next !== 'hang') for (const s of sockets) if (mode === 'hang') s.destroy();
      mode = next;
    },
  };
}

/** The cumulative count of successful SELECTs in an OTLP push, and the series' start time. */
function pushedSelects(body: any): { count: number; start: string } | undefined {
  for (const rm of body.resourceMetrics ?? []) {
    for (const sm of rm.scopeMetrics ?? []) {
      for (const m of sm.metrics ?? []) {
        if (m.name !== 'db.client.operation.duration') continue;
        for (const dp of m.histogram?.dataPoints ?? []) {
          const attrs = Object.fromEntries((dp.attributes ?? []).map((a: any) => [a.key, Object.values(a.value)[0]]));
          if (attrs['db.operation.name'] === 'SELECT' && attrs['error.type'] === undefined) {
            return { count: Number(dp.count), start: String(dp.startTimeUnixNano) };
          }
        }
      }
    }
  }
  return undefined;
}

describe('collector unreachable, slow or failing', () => {
  it('keeps the app serving through 503, hanging and refused exports, then resumes with continuous counters', async () => {
    const collector = await fakeCollector();
    const { app, appUrl } = await start('rel-app.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_METRIC_EXPORT_INTERVAL: '250',
    });
    const baseline = await load(`${appUrl}/q`, { durationMs: 1200 });
    await waitFor(() => collector.pushes.length >= 2 || undefined, 5_000);
    const rssBefore = rssBytes(app.child.pid!);
    for (const mode of ['503', 'hang', 'refuse'] as const) {
      await collector.set(mode);
      const pushed = collector.pushes.length;
      const during = await load(`${appUrl}/q`, { durationMs: 2000 });
      expect(during.statuses, `app requests during a ${mode} outage`).toEqual({ 200: during.requests });
      expect(during.p99, `p99 during a ${mode} outage`).toBeLessThan(Math.max(500, 5 * baseline.p99));
      expect(collector.pushes.length).toBe(pushed);
      await collector.set('ok');
      // Export resumes within a few intervals of the collector answering again.
      await waitFor(() => collector.pushes.length >= pushed + 2 || undefined, 5_000);
    }
    // The app's own count of successful queries reaches the collector in full: cumulative, never reset.
    const truth = (await json(`${appUrl}/state`)).stats.ok;
    await waitFor(() => pushedSelects(collector.pushes.at(-1)!.body)?.count === truth || undefined, 5_000);
    const series = collector.pushes.map((p) => pushedSelects(p.body)).filter((s) => s !== undefined);
    expect(new Set(series.map((s) => s.start)).size).toBe(1);
    for (let i = 1; i < series.length; i++) expect(series[i]!.count).toBeGreaterThanOrEqual(series[i - 1]!.count);
    // Nothing queues up while the collector is away: sockets to a hanging collector and memory stay bounded.
    expect(collector.maxOpenDuringHang).toBeLessThanOrEqual(4);
    expect(rssBytes(app.child.pid!) - rssBefore).toBeLessThan(64 * 1024 * 1024);
    expect(app.child.exitCode).toBeNull();
    expectCleanStderr(app);
  });

  // Bug: PeriodicExportingMetricReader's own timeout (= the exporter's timeout, both exportTimeoutMillis)
  // fires before the exporter gives up, and the reader logs "metrics export timed out" through diag.error on
  // every export interval: OutageLoggingExporter never gets to turn the failure into its single line.
  it('costs one log line for a hanging collector, not one per export (bug: reader timeout logged each interval)', async () => {
    const collector = await fakeCollector();
    await collector.set('hang');
    const { app, appUrl } = await start('rel-app.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
      OTEL_METRIC_EXPORT_INTERVAL: '200',
    });
    const during = await load(`${appUrl}/q`, { concurrency: 2, durationMs: 2500 });
    expect(during.statuses).toEqual({ 200: during.requests });
    await new Promise((r) => setTimeout(r, 500));
    const lines = stderrLines(app);
    expect(lines.filter((l) => /export/i.test(l)), lines.join('\n')).toHaveLength(1);
  });

  describe('two 503 outages with a recovery between them', () => {
    let lines: string[];
    beforeAll(async () => {
      const collector = await fakeCollector();
      const { app, appUrl } = await start('rel-app.mjs', {
        OTEL_METRICS_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
        OTEL_METRIC_EXPORT_INTERVAL: '200',
      });
      for (let outage = 0; outage < 2; outage++) {
        await collector.set('503');
        await load(`${appUrl}/q`, { concurrency: 2, durationMs: 1500 });
        const pushed = collector.pushes.length;
        await collector.set('ok');
        await load(`${appUrl}/q`, { concurrency: 2, durationMs: 600 });
        await waitFor(() => collector.pushes.length > pushed || undefined, 5_000);
      }
      await new Promise((r) => setTimeout(r, 300));
      lines = stderrLines(app);
      expectCleanStderr(app);
    }, 30_000);

    it('logs no line per failed export', () => {
      expect(lines.length, lines.join('\n')).toBeLessThanOrEqual(4);
    });

    // Bug: the outage line goes through the logger's per-key 60 s rate limit ('otlp:failing'), so an
    // outage that starts within a minute of the previous one is not logged at all.
    it('logs the start of every outage (bug: a second outage within 60 s is silent)', () => {
      expect(lines.filter((l) => l.includes('failed')), lines.join('\n')).toHaveLength(2);
    });

    // Bug: the recovery line is logged at INFO, below the default OTEL_LOG_LEVEL (warn), so by default an
    // outage has no end in the logs, contrary to the README ("one when it ends").
    it('logs the end of every outage at the default log level (bug: recovery is logged at info)', () => {
      expect(lines.filter((l) => l.includes('recovered')), lines.join('\n')).toHaveLength(2);
    });
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('PostgreSQL restarted under the app (own server)', () => {
  let pgServer: { url: string; stopServer(): Promise<void>; startServer(): Promise<void>; stop(): Promise<void> };
  beforeAll(async () => { pgServer = await startPostgres(); }, 60_000);
  afterAll(async () => { await pgServer?.stop(); });

  async function restartTrace(preload: boolean) {
    const { app, appUrl, metricsUrl } = await start('rel-restart.mjs', { DATABASE_URL: pgServer.url }, preload);
    await pgServer.stopServer();
    let down: any;
    try {
      down = await json(`${appUrl}/while-down`);
    } finally {
      await pgServer.startServer();
    }
    const up = await json(`${appUrl}/after-up`);
    const metrics = preload ? await scrapeUrl(`${metricsUrl}/metrics`) : [];
    return { app, trace: up.trace, down, metrics };
  }

  it('the app sees exactly the errors it sees without Poolscope, and Poolscope counts them', async () => {
    const plain = await restartTrace(false);
    const preloaded = await restartTrace(true);
    expect(preloaded.trace).toEqual(plain.trace);
    const failures = plain.trace.find((e: any) => e.step === 'server down').failures;
    expect(failures.filter((f: any) => f.poolError)).toHaveLength(2);
    expect(failures.filter((f: any) => f.busyQuery !== undefined && f.err)).toHaveLength(2);

    // poolscope.pool.errors: the two idle-client errors plus the two failed connection attempts, by error.type.
    const expected: Record<string, number> = {};
    const add = (type: string) => { expected[type] = (expected[type] ?? 0) + 1; };
    for (const f of failures) if (f.poolError) add(f.poolError.code);
    const whileDown = plain.trace.filter((e: any) => e.step === 'query while down' || e.step === 'connect(cb) while down');
    for (const e of whileDown) add(e.err.code);
    const errors = find(preloaded.metrics, 'poolscope_pool_errors_total');
    expect(Object.fromEntries(errors.map((s) => [s.labels.error_type, s.value]))).toEqual(expected);
    // The two queries cut off mid-flight are failed operations with their SQLSTATE as error.type.
    const failedQueries = find(preloaded.metrics, 'db_client_operation_duration_seconds_count')
      .filter((s) => s.labels.error_type !== undefined);
    const busyCodes: Record<string, number> = {};
    for (const f of failures) if (f.busyQuery !== undefined) busyCodes[f.err.code] = (busyCodes[f.err.code] ?? 0) + 1;
    expect(Object.fromEntries(failedQueries.map((s) => [s.labels.error_type, s.value]))).toEqual(busyCodes);
    // And the gauges are the pool's own counters once the server is back.
    const counts = preloaded.trace.at(-1).counts;
    const pool = find(preloaded.metrics, 'db_client_connection_max')[0]!.labels[POOL]!;
    const gauge = (name: string, labels: Record<string, string> = {}) => find(preloaded.metrics, name, { [POOL]: pool, ...labels })[0]?.value;
    expect(gauge('db_client_connection_count', { db_client_connection_state: 'used' })).toBe(counts.total - counts.idle);
    expect(gauge('db_client_connection_count', { db_client_connection_state: 'idle' })).toBe(counts.idle);
    expect(gauge('db_client_connection_pending_requests')).toBe(counts.waiting);
    expectCleanStderr(preloaded.app);
  });

  it('under load: errors and error.type match what the app observed, gauges return to the truth', async () => {
    const { app, appUrl, metricsUrl } = await start('rel-app.mjs', { DATABASE_URL: pgServer.url, POOL_MAX: '4' });
    const before = load(`${appUrl}/q`, { concurrency: 6, durationMs: 5000 });
    await new Promise((r) => setTimeout(r, 800));
    await pgServer.stopServer();
    await new Promise((r) => setTimeout(r, 1000));
    await pgServer.startServer();
    const result = await before;
    // Let in-flight work drain, then compare Poolscope with the app's own observations.
    await waitFor(async () => ((await json(`${appUrl}/state`)).waitingCount === 0 ? true : undefined), 5_000);
    await new Promise((r) => setTimeout(r, 200));
    const truth = await json(`${appUrl}/state`);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(result.statuses['500'] ?? 0).toBeGreaterThan(0); // the restart was felt
    expect(truth.stats.ok).toBeGreaterThan(0);
    expect(result.statuses['200']).toBe(truth.stats.ok);

    const byType = (samples: Sample[]) => Object.fromEntries(samples.map((x) => [x.labels.error_type, x.value]));
    const expectedPoolErrors: Record<string, number> = { ...truth.stats.connectErrors };
    for (const [t, n] of Object.entries(truth.stats.idleErrors as Record<string, number>)) expectedPoolErrors[t] = (expectedPoolErrors[t] ?? 0) + n;
    expect(byType(find(s, 'poolscope_pool_errors_total')), JSON.stringify(truth.stats.messages)).toEqual(expectedPoolErrors);
    const ops = find(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' });
    expect(byType(ops.filter((x) => x.labels.error_type !== undefined))).toEqual(truth.stats.queryErrors);
    expect(ops.find((x) => x.labels.error_type === undefined)?.value).toBe(truth.stats.ok);
    expect(find(s, 'db_client_connection_timeouts_total').reduce((a, x) => a + x.value, 0)).toBe(0);
    const v = (name: string, labels: Record<string, string> = {}) => find(s, name, labels)[0]?.value;
    expect(v('db_client_connection_count', { db_client_connection_state: 'used' })).toBe(truth.totalCount - truth.idleCount);
    expect(v('db_client_connection_count', { db_client_connection_state: 'idle' })).toBe(truth.idleCount);
    expect(v('db_client_connection_pending_requests')).toBe(truth.waitingCount);
    expect(app.child.exitCode).toBeNull();
    expectCleanStderr(app);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('pool exhaustion with connectionTimeoutMillis', () => {
  it('counts every acquire timeout exactly once, reports pending while waiting, critical (200) while queueing, stuck (503) after the timeouts, and back', async () => {
    const { app, appUrl, metricsUrl } = await start('rel-app.mjs', {
      POOL_MAX: '2', POOL_CONNECTION_TIMEOUT: '600', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100', POOLSCOPE_HEALTH_STUCK_WINDOW: '1500',
    });
    expect((await fetch(`${metricsUrl}/health/database`)).status).toBe(200);
    const holders = [fetch(`${appUrl}/hold?ms=3000`), fetch(`${appUrl}/hold?ms=3000`)];
    await waitFor(async () => ((await json(`${appUrl}/state`)).idleCount === 0 && (await json(`${appUrl}/state`)).totalCount === 2) || undefined);
    // 6 waiters through pool.connect() (promise) and 4 through pool.query() (callback inside pg-pool).
    const waiters = [
      ...Array.from({ length: 6 }, () => fetch(`${appUrl}/q`).then((r) => r.json())),
      ...Array.from({ length: 4 }, () => fetch(`${appUrl}/pq`).then((r) => r.json())),
    ];
    await waitFor(async () => ((await json(`${appUrl}/state`)).waitingCount === 10) || undefined, 3_000);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    const truthWhileWaiting = await json(`${appUrl}/state`);
    expect(find(s, 'db_client_connection_pending_requests')[0]!.value).toBe(truthWhileWaiting.waitingCount);
    expect(find(s, 'poolscope_pool_utilization_ratio')[0]!.value).toBe(1);
    // regression: 503 at 90 % took every replica out during spikes. Queueing for less than the window is busy, not stuck.
    const critical = await fetch(`${metricsUrl}/health/database`);
    expect(critical.status).toBe(200);
    const body = (await critical.json()) as any;
    expect(body.status).toBe('critical');
    expect(body.pools[0]).toMatchObject({ used: 2, pending: 10, status: 'critical', stuck: false });
    expect((await fetch(`${metricsUrl}/health`)).status).toBe(200);

    const outcomes = await Promise.all(waiters);
    expect(outcomes.every((o: any) => o.message === 'timeout exceeded when trying to connect')).toBe(true);
    // Timeouts are failures: readiness fails for the stuck window, liveness never does.
    const stuck = await fetch(`${metricsUrl}/health/database`);
    expect(stuck.status).toBe(503);
    expect(((await stuck.json()) as any).pools[0]).toMatchObject({ stuck: true, stuckReason: 'acquire_timeouts', score: 0 });
    expect((await fetch(`${metricsUrl}/health`)).status).toBe(200);
    const stuckMetrics = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(Object.fromEntries(find(stuckMetrics, 'poolscope_pool_stuck').map((x) => [x.labels.poolscope_stuck_reason, x.value])))
      .toEqual({ server_unreachable: 0, acquire_timeouts: 1, no_progress: 0 });
    await Promise.all(holders);
    await waitFor(async () => ((await fetch(`${metricsUrl}/health/database`)).status === 200) || undefined, 10_000, 100);
    const truth = await json(`${appUrl}/state`);
    expect(truth.stats.timeouts).toBe(10);
    const after = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(find(after, 'db_client_connection_timeouts_total')[0]!.value).toBe(truth.stats.timeouts);
    expect(find(after, 'poolscope_pool_errors_total')).toHaveLength(0);
    expect(find(after, 'db_client_connection_pending_requests')[0]!.value).toBe(0);
    const healthy = await fetch(`${metricsUrl}/health/database`);
    expect(healthy.status).toBe(200);
    expect(((await healthy.json()) as any).status).toBe('healthy');
    expect(app.child.exitCode).toBeNull();
  });

  it('counts a new connection that does not open in time as one timeout (silent server)', async () => {
    const accepted = new Set<net.Socket>();
    const silent = net.createServer((socket) => { accepted.add(socket); });
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    cleanups.push(() => new Promise((r) => { for (const socket of accepted) socket.destroy(); silent.close(r); }));
    const silentUrl = `postgres://x@127.0.0.1:${(silent.address() as net.AddressInfo).port}/x`;
    const { appUrl, metricsUrl } = await start('rel-app.mjs', { DATABASE_URL: silentUrl, POOL_MAX: '2', POOL_CONNECTION_TIMEOUT: '300' });
    const results = await Promise.all([
      ...Array.from({ length: 3 }, () => fetch(`${appUrl}/q`).then((r) => r.json())),
      ...Array.from({ length: 2 }, () => fetch(`${appUrl}/pq`).then((r) => r.json())),
    ]);
    expect(results.every((r: any) => /timeout/.test(r.message))).toBe(true);
    const truth = await json(`${appUrl}/state`);
    expect(truth.stats.timeouts).toBe(5);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(find(s, 'db_client_connection_timeouts_total')[0]!.value).toBe(5);
    // Each new connection that did not open in time is a failed connection attempt as well (its caller's
    // timeout is counted once above): what makes a silent server read server_unreachable.
    const connects = results.filter((r: any) => r.message === 'Connection terminated due to connection timeout').length;
    expect(connects).toBeGreaterThan(0);
    expect(find(s, 'poolscope_pool_errors_total').map((x) => [x.labels.error_type, x.value])).toEqual([['connect_timeout', connects]]);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('churn: 1,000 pools created, used and ended', () => {
  async function churn(preload: boolean) {
    const metricsPort = await freePort();
    const { code, stdout: out, stderr: err } = await runToExit(process.execPath, ['--expose-gc', ...(preload ? PRELOAD : []), path.join(ROOT, 'test', 'fixtures', 'rel-churn.mjs')], {
      env: {
        ...process.env, DATABASE_URL, CHURN_POOLS: '1000', CHURN_WARMUP: '100', CHURN_QUERIES_PER_POOL: '30',
        OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
        ...(preload ? { CHURN_METRICS_PORT: String(metricsPort) } : {}),
      },
      killAfterMs: 28_000,
    });
    const line = out.split('\n').find((l) => l.startsWith('RESULT '));
    if (code !== 0 || line === undefined) throw new Error(`churn fixture failed (${code}): ${err}`);
    return { result: JSON.parse(line.slice(7)), stderr: err };
  }

  it('leaks no series, no listeners and no memory, and adds no listener to pools, clients or the process', async () => {
    const { result: pre, stderr } = await churn(true);
    const { result: plain } = await churn(false);
    expect(pre.queries).toBe(30_000);
    expect(pre.failed).toBe(1000);
    // Series: the same set after 1,000 pools as after the first 100 (names are reused once a pool ends).
    expect(pre.end.series.pools).toEqual(pre.warm.series.pools);
    expect(pre.end.series.pools.length).toBeLessThanOrEqual(4);
    expect(pre.end.series.lines).toBe(pre.warm.series.lines);
    // Listeners: exactly what pg-pool itself has, on every pool and client, and none on the process.
    expect(pre.listenerShapes).toEqual(plain.listenerShapes);
    expect(pre.listenerShapes).toHaveLength(1);
    expect(pre.processAfter).toEqual(pre.processBefore);
    expect(pre.processAfter).toEqual(plain.processAfter);
    // Heap after forced GC: 900 more pools cost Poolscope less than 1.5 MB beyond what the same churn costs
    // without it (measured: ~0.5 MB; keeping even the ended pool objects alone costs ~2.5 MB), and under 3 MB in all.
    expect((pre.end.heap - pre.warm.heap) - (plain.end.heap - plain.warm.heap)).toBeLessThan(1.5 * 1024 * 1024);
    expect(pre.end.heap - pre.warm.heap).toBeLessThan(3 * 1024 * 1024);
    expect(stderr).not.toMatch(/^\s+at |Warning|\(node:/m);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------------------
describe('signals and process lifecycle', () => {
  async function signalApp(signal: 'SIGINT' | 'SIGTERM', handler: 'on' | 'once') {
    const collector = await fakeCollector();
    const { app } = await start('rel-signal.mjs', {
      SIGNAL: signal, HANDLER: handler, CLEANUP_MS: '1000',
      OTEL_METRICS_EXPORTER: 'prometheus,otlp', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_METRIC_EXPORT_INTERVAL: '60000',
    });
    app.child.kill(signal);
    await waitFor(() => app.stdout().includes(`HANDLER ${signal}`) || undefined, 3_000);
    await new Promise((r) => setTimeout(r, 500));
    const aliveDuringCleanup = app.child.exitCode === null && app.child.signalCode === null;
    const exit = await app.exit;
    return { app, aliveDuringCleanup, exit, collector };
  }

  it('SIGINT on an app with its own handler (process.on): the handler runs and the process lives until it exits', async () => {
    const { app, aliveDuringCleanup, exit } = await signalApp('SIGINT', 'on');
    expect(aliveDuringCleanup).toBe(true);
    expect(exit).toEqual({ code: 7, signal: null });
    expect(app.stdout()).toContain('CLEANUP DONE 7');
  });

  // Bug (register.ts onSignal): whether to re-raise is decided after the flush, from
  // process.listenerCount(signal). An application handler registered with process.once has already been
  // removed by then, so Poolscope re-raises the signal and kills the app in the middle of its own cleanup.
  it.each(['SIGINT', 'SIGTERM'] as const)('%s on an app whose handler uses process.once is not killed mid-cleanup (bug: re-raised)', async (signal) => {
    const { app, aliveDuringCleanup, exit } = await signalApp(signal, 'once');
    expect(app.stdout()).toContain(`HANDLER ${signal}`);
    expect(aliveDuringCleanup).toBe(true);
    expect(exit).toEqual({ code: 7, signal: null });
    expect(app.stdout()).toContain('CLEANUP DONE 7');
  });

  // Found by running a NestJS application under the preload: enableShutdownHooks() cleans up in a few
  // milliseconds and raises the signal again. Poolscope's once() listener was gone by then, so Node's default
  // action ended the process in the middle of the final export, and nothing said it was lost.
  it.each(['SIGINT', 'SIGTERM'] as const)('%s re-raised by the application\'s handler waits for the final OTLP export, then ends the process the way the signal would (bug: export lost, silently)', async (signal) => {
    const collector = await fakeCollector();
    const { app } = await start('rel-signal.mjs', {
      SIGNAL: signal, HANDLER: 'reraise',
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_METRIC_EXPORT_INTERVAL: '60000',
    });
    app.child.kill(signal);
    expect(await app.exit).toEqual({ code: null, signal });
    expect(app.stdout()).toContain(`HANDLER ${signal}`);
    const names = collector.pushes.map((p) => (p.body.resourceMetrics ?? []).flatMap((rm: any) =>
      (rm.scopeMetrics ?? []).flatMap((sm: any) => (sm.metrics ?? []).map((m: any) => m.name as string))));
    expect(names).toEqual([expect.arrayContaining(['db.client.operation.duration'])]);
    expect(app.stderr()).toBe('');
  });

  // Found by reviewing the fix above: a listener of Poolscope's that stayed installed made signal-exit (execa,
  // write-file-atomic, ora…), which re-raises only when its own listeners are alone, never re-raise, and the
  // process never ended.
  it('SIGTERM ends a service that uses signal-exit as without the preload (bug: it never ended)', async () => {
    const collector = await fakeCollector();
    const { app } = await start('signal-exit-app.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_METRIC_EXPORT_INTERVAL: '60000',
    });
    app.child.kill('SIGTERM');
    const exit = await Promise.race([app.exit, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    expect(exit).toEqual({ code: null, signal: 'SIGTERM' });
    expect(app.stdout()).toContain('onExit null SIGTERM');
  }, 20_000);

  it('a second process on the same metrics port warns clearly and serves; the first keeps its endpoint', async () => {
    const port = await freePort();
    const first = await spawnApp('rel-app.mjs', { DATABASE_URL, POOL_MAX: '4', OTEL_EXPORTER_PROMETHEUS_PORT: String(port) }, PRELOAD);
    apps.push(first);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).status === 200 || undefined);
    const second = await spawnApp('rel-app.mjs', { DATABASE_URL, POOL_MAX: '3', OTEL_EXPORTER_PROMETHEUS_PORT: String(port) }, PRELOAD);
    apps.push(second);
    expect((await fetch(`http://127.0.0.1:${second.port}/q`)).status).toBe(200);
    await waitFor(() => second.stderr().includes('already in use') || undefined, 20_000); // said at the first retry, 5 s on
    expect(stderrLines(second)).toEqual([expect.stringMatching(/^poolscope: 127\.0\.0\.1:\d+ .* is already in use; .*keeps running\. \(Several processes .*push with OTLP\.\)$/)]);
    expect(find(await scrapeUrl(`http://127.0.0.1:${port}/metrics`), 'db_client_connection_max')[0]!.value).toBe(4);
    expect(second.child.exitCode).toBeNull();
    expect(first.child.exitCode).toBeNull();
  });

  // Bug: at beforeExit the final OTLP flush is "bounded" by an unref'd 5 s timer, but the OTLP exporter's
  // retry back-off timers (5 attempts, up to ~13 s) are ref'd, so a script with an unreachable collector
  // stays alive long after its work is done. Then (found by running pg-pool's own test suite under the
  // preload): the 5 s limit itself held every such script 5 s, so the final export is skipped outright when
  // the collector refuses the connection.
  it('a short script with an unreachable collector still exits promptly (bug: retry timers keep it alive ~13 s, then 5 s)', async () => {
    const dead = await freePort();
    const started = Date.now();
    const { app } = await start('short-script.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}`,
    });
    const exit = await Promise.race([app.exit, new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(4_000); // start-up and one refused connection, not the 5 s limit
    // Bug: the data the final flush could not deliver was lost without a word.
    expect(stderrLines(app).filter((l) => /final OTLP export/.test(l))).toEqual([
      'poolscope: the final OTLP export was skipped: the collector is unreachable (ECONNREFUSED); the telemetry since the last successful export is lost.',
    ]);
  });

  // Bug (found by running TypeORM's suite under the preload): every node process started with the preload in
  // NODE_OPTIONS (npm, a CLI, the `node -p` of a build step) said the final export was skipped, or that the
  // metrics port was taken, though it had nothing to export or serve; node-gyp fails a `node -p` that writes to
  // stderr, so native modules (sqlite3) no longer built, and TypeORM's CLI tests, which expect a quiet stderr, failed.
  it('a process with no pool and no request says nothing, collector down or port taken (bug: a line on every node -p)', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = String((blocker.address() as net.AddressInfo).port);
    try {
      for (const env of [
        { OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: dead, OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
        { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: dead, OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
        { OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: taken },
      ]) {
        const { code, stdout, stderr } = await runToExit(process.execPath, [...PRELOAD, '-p', "'inc'"], { env: { ...process.env, ...env }, killAfterMs: 30_000 });
        expect({ code, stdout, stderr }).toEqual({ code: 0, stdout: 'inc\n', stderr: '' });
      }
    } finally {
      blocker.close();
    }
  });

  it('a process whose stderr reader went away is not crashed by a second line of ours (bug: EPIPE, an uncaught exception)', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      // Two lines: a bad setting as the preload starts, the taken port once pg is in use.
      const child = spawn(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'late-pg-script.mjs')], {
        env: { ...process.env, DATABASE_URL, POOLSCOPE_HEALTH_HISTORY_SIZE: 'abc', OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
          OTEL_EXPORTER_PROMETHEUS_PORT: String((blocker.address() as net.AddressInfo).port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stderr!.destroy();
      let stdout = '';
      child.stdout!.on('data', (d) => { stdout += d; });
      const [code] = await once(child, 'exit');
      expect({ code, stdout }).toEqual({ code: 0, stdout: 'ok\n' });
    } finally {
      blocker.close();
    }
  });

  it('an application whose stderr reader went away writes its next line as it would without the preload (bug: a line of ours in between spent the stream\'s guard, and the application\'s line was an uncaught EPIPE)', async () => {
    // Outside the repository: its Slonik would start the loader thread on Node 20, whose stderr Node pipes into the
    // process's, and then the console's guard is off without Poolscope writing anything (README, Limitations).
    const dir = standaloneAppDir(['stderr-reader-gone.mjs'], ['pg']);
    const run = async (preload: string[]) => {
      const child = spawn(process.execPath, [...preload, path.join(dir, 'stderr-reader-gone.mjs')], {
        cwd: dir, env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'],
      });
      // The reader reads the first line, then goes.
      child.stderr!.once('data', () => child.stderr!.destroy());
      let stdout = '';
      child.stdout!.on('data', (d) => { stdout += d; });
      const [code] = await once(child, 'exit');
      return { code, stdout };
    };
    expect(await run([])).toEqual({ code: 0, stdout: 'app done\n' });
    expect(await run(PRELOAD)).toEqual({ code: 0, stdout: 'app done\n' });
  });

  // Bug (found reviewing the fix above): a process whose only telemetry came from a lone pg.Client (no pool)
  // was counted as having nothing to export, and its lost final export went unsaid.
  it('a script with a lone client and the collector down still says its final export was skipped (bug: silent)', async () => {
    const { code, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'traced-queries.cjs')], {
      env: { ...process.env, DATABASE_URL, QUERIES: '3', OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_PROMETHEUS_PORT: '0',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}` },
      killAfterMs: 30_000,
    });
    expect(code).toBe(0);
    expect(stderr).toContain('the final OTLP export was skipped: the collector is unreachable (ECONNREFUSED)');
  });

  // Bug (found by running pg-pool's own test suite under the preload): with OTLP on, the final export kept an
  // exit-on-idle script alive, 5 s with the collector down, so its pool's unref'd lifetime timer fired
  // ("removed"), and its own 'beforeExit' listener ran twice, also with the collector up.
  it.each([
    ['metrics, collector down', { OTEL_METRICS_EXPORTER: 'otlp' }, 'down'],
    ['traces, collector down', { OTEL_TRACES_EXPORTER: 'otlp' }, 'down'],
    ['metrics and traces, collector up', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_TRACES_EXPORTER: 'otlp' }, 'up'],
  ] as const)('an exit-on-idle script prints and exits exactly as without the preload (%s) (bug: held open, beforeExit ran twice)', async (_, env, collectorState) => {
    const collector = await fakeCollector();
    const endpoint = collectorState === 'up' ? collector.url : `http://127.0.0.1:${await freePort()}`;
    const fixture = path.join(ROOT, 'test', 'fixtures', 'exit-on-idle.cjs');
    const plain = await runToExit(process.execPath, [fixture], { env: { ...process.env, DATABASE_URL }, killAfterMs: 30_000 });
    const pre = await runToExit(process.execPath, [...PRELOAD, fixture], {
      env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, ...env },
      killAfterMs: 30_000,
    });
    expect(plain.stdout).toBe('first done\nsecond done\nbeforeExit 1\nexit\n');
    expect(pre.stdout).toBe(plain.stdout);
    expect(pre.code).toBe(0);
    if (collectorState === 'up') expect(collector.pushes.length).toBeGreaterThan(0); // the final export still went out
    else expect(pre.stderr).toContain('the final OTLP export was skipped: the collector is unreachable (ECONNREFUSED)');
  });

  // Found by adversarial review: with a collector up, the final export outlasted the work a 'beforeExit'
  // listener had started, and the process was ended once it was done, as if nothing had run: Node's next
  // 'beforeExit', which the listener relied on to flush what it had queued meanwhile, never came.
  it('a script whose beforeExit listener queues more work writes all of it, collector up (bug: the second flush was lost)', async () => {
    const collector = await fakeCollector();
    const fixture = path.join(ROOT, 'test', 'fixtures', 'before-exit-queue.cjs');
    const plain = await runToExit(process.execPath, [fixture], { env: { ...process.env, DATABASE_URL }, killAfterMs: 30_000 });
    expect(plain.stdout.trim()).toBe(JSON.stringify(['event-1', 'event-2, queued during the first flush']));
    for (const exporters of [{ OTEL_METRICS_EXPORTER: 'otlp' }, { OTEL_TRACES_EXPORTER: 'otlp' }]) {
      const pre = await runToExit(process.execPath, [...PRELOAD, fixture], {
        env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, ...exporters },
        killAfterMs: 30_000,
      });
      expect({ stdout: pre.stdout, code: pre.code }).toEqual({ stdout: plain.stdout, code: 0 });
    }
    expect(collector.pushes.length).toBeGreaterThan(0);
  });

  // Found by reviewing the fix above: a keep-alive socket closing during the export counted as the
  // listener's work, and the listener, which only logs, ran twice.
  it('a beforeExit listener that only logs runs once, whatever else closes meanwhile (bug: twice after a keep-alive request)', async () => {
    const collector = await fakeCollector();
    const fixture = path.join(ROOT, 'test', 'fixtures', 'before-exit-keepalive.mjs');
    const plain = await runToExit(process.execPath, [fixture], { env: { ...process.env }, killAfterMs: 30_000 });
    expect(plain.stdout).toBe('beforeExit 0\n');
    for (const endpoint of [collector.url, `http://127.0.0.1:${await freePort()}`]) {
      const pre = await runToExit(process.execPath, [...PRELOAD, fixture], {
        env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: endpoint },
        killAfterMs: 30_000,
      });
      expect({ stdout: pre.stdout, code: pre.code }).toEqual({ stdout: plain.stdout, code: 0 });
    }
  });

  // Found beside Elastic APM (one run in two or more): an agent preloaded with --require registered its
  // 'beforeExit' listener before Poolscope's; what it started there to flush was already active when Poolscope
  // looked, read as nothing new, and the process was ended once the final export was done, before the agent's
  // reply came: its last events were lost.
  it.each(['socket', 'timer'])('an agent that flushes at beforeExit, registered before Poolscope, finishes its flush (%s) (bug: ended before it)', async (flush) => {
    const collector = await fakeCollector();
    // Outside the repository, whose Slonik starts Node 20's loader thread, which runs --require preloads again.
    const dir = standaloneAppDir(['before-exit-agent.cjs', 'short-script.mjs'], ['pg']);
    const run = (preload: string[]) => runToExit(process.execPath, ['--require', './before-exit-agent.cjs', ...preload, 'short-script.mjs'], {
      cwd: dir, killAfterMs: 30_000,
      env: { ...process.env, DATABASE_URL, FLUSH: flush, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_METRICS_EXPORTER: 'otlp',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url },
    });
    const plain = await run([]);
    expect(plain).toMatchObject({ code: 0, stdout: 'LISTENING 0 answer=42\nagent flushed 1\n' });
    const pre = await run(PRELOAD);
    expect({ stdout: pre.stdout, code: pre.code }).toEqual({ stdout: plain.stdout, code: 0 });
    expect(collector.pushes.length).toBeGreaterThan(0);
  });

  // Bug (found by running node-postgres's own test suite under the preload): with traces on and the collector
  // down, every batch of spans was retried for the whole export timeout, one batch after the other, with
  // ref'd timers (a script of 5,000 queries exited 40 s after its work), and each failed batch was written
  // to stderr as a raw JSON error by the SDK's own copy of @opentelemetry/core.
  it('a traced script with the collector down gives up on the collector: one line, no JSON, no wait per batch (bug: 40 s, JSON lines)', async () => {
    const dead = await freePort();
    const started = Date.now();
    const { code, stdout, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'traced-queries.cjs')], {
      env: {
        ...process.env, DATABASE_URL, QUERIES: '6000', OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_PROMETHEUS_PORT: '0',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}`, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '3000',
      },
      killAfterMs: 60_000,
    });
    expect(code).toBe(0);
    expect(stdout).toContain('done 6000');
    const lines = stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines.filter((l) => !l.startsWith('poolscope: '))).toEqual([]);
    expect(lines.filter((l) => /OTLP span export .* failed/.test(l))).toHaveLength(1);
    // One batch's retries (the 3 s export timeout) at most, not one per batch (twelve batches here).
    expect(Date.now() - started).toBeLessThan(8_000);
  }, 70_000);

  // Bug (found by running Express's own test suite under the preload, traces to a collector that was down):
  // the first batch still went to the upstream exporter, whose retries (referenced timers, up to the 10 s
  // export timeout) kept each test process alive 6-9 s after its work. The same held for a metric export in
  // flight as a script ended (up to the export interval). Now nothing is handed to an exporter while its
  // collector refuses connections.
  it.each([
    ['traces, a batch due while the script runs', { OTEL_TRACES_EXPORTER: 'otlp', QUERIES: '1200' }],
    ['metrics, an export due while the script runs', { OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '6000', QUERIES: '10', HOLD_MS: '6500' }],
  ])('%s, collector down: the script exits as soon as its work is done (bug: held by the exporter\'s retries)', async (_, env) => {
    const dead = await freePort();
    const { code, stdout, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'traced-queries.cjs')], {
      env: { ...process.env, ...env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}` },
      killAfterMs: 60_000,
    });
    const exitedAt = Date.now();
    expect(code).toBe(0);
    const doneAt = Number(/done \d+ at (\d+)/.exec(stdout)?.[1]);
    // The retries alone would take 3 s and more here; the process has nothing else left to do.
    expect(exitedAt - doneAt).toBeLessThan(2_000);
    expect(stderr.split('\n').filter((l) => /OTLP (span|metric) export .* failed/.test(l))).toEqual([
      expect.stringContaining('(connect ECONNREFUSED)'),
    ]);
  }, 70_000);

  // Bug (found by running node-postgres's own test suite under the preload): the tracing SDK reports through
  // the global error handler of its own copy of @opentelemetry/core, which Poolscope never set, so its errors
  // (an export timing out, here) reached stderr as raw JSON.
  it('tracing SDK errors come as one rate-limited poolscope line (bug: raw JSON from the SDK\'s own core copy)', async () => {
    const collector = await fakeCollector();
    await collector.set('hang');
    const { code, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'traced-queries.cjs')], {
      env: {
        ...process.env, DATABASE_URL, QUERIES: '3000', OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_PROMETHEUS_PORT: '0',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_BSP_EXPORT_TIMEOUT: '200', OTEL_BSP_SCHEDULE_DELAY: '50',
      },
      killAfterMs: 60_000,
    });
    expect(code).toBe(0);
    const lines = stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines.filter((l) => /OpenTelemetry SDK error: Timeout/.test(l))).toHaveLength(1);
    expect(lines.filter((l) => !l.startsWith('poolscope: '))).toEqual([]);
  }, 70_000);

  // Bug: a script that ended with process.exit() skipped the final export (no 'beforeExit') and lost the
  // telemetry since the last export without a word.
  it('process.exit() without the final export is said once; after shutdown() the export goes out and nothing is said (bug: lost silently)', async () => {
    const collector = await fakeCollector();
    const fixture = path.join(ROOT, 'test', 'fixtures', 'exit-explicitly.mjs');
    const env = { ...process.env, DATABASE_URL, OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_ENDPOINT: collector.url };
    const abrupt = await runToExit(process.execPath, [...PRELOAD, fixture], { env, killAfterMs: 30_000 });
    expect(abrupt.code).toBe(0);
    expect(abrupt.stdout).toBe('done\n');
    expect(abrupt.stderr.split('\n').filter((l) => l.includes('final OTLP export'))).toEqual([
      'poolscope: the process exited without the final OTLP export (process.exit() or an uncaught error); the telemetry since the last export is lost. Await getPoolscope()?.shutdown() before process.exit() to send it.',
    ]);
    expect(collector.pushes).toHaveLength(0);

    const orderly = await runToExit(process.execPath, [...PRELOAD, fixture], { env: { ...env, SHUT_DOWN_FIRST: '1' }, killAfterMs: 30_000 });
    expect(orderly.code).toBe(0);
    expect(orderly.stderr).not.toContain('final OTLP export');
    expect(collector.pushes.length).toBeGreaterThan(0);

    // Found by running knex's own suite under the preload: `knex --version` and test runners that exit with
    // process.exit() said it too, with no pool ever seen and nothing to lose.
    const noPool = await runToExit(process.execPath, [...PRELOAD, '-e', 'process.exit(0)'], { env, killAfterMs: 30_000 });
    expect(noPool.code).toBe(0);
    expect(noPool.stderr).toBe('');
  });

  // Bug (found by running Sequelize's own suite under the preload): Poolscope's timers went through the global
  // timer functions, so under an application's fake timers its leak sweep and the telemetry server's
  // deadlines ran on the fake clock (or never), and clearing a native timer through the fake one made
  // fake-timers warn.
  it('Poolscope\'s own timers stay on real time under an application\'s fake timers (bug: they went through the fakes)', async () => {
    const metricsPort = await freePort();
    const { code, stdout, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'fake-timers.mjs')], {
      env: {
        ...process.env, DATABASE_URL, POOLSCOPE_DIST_DIR: DIST, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
        POOLSCOPE_LEAK_THRESHOLD: '100', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '100', OTEL_METRICS_EXPORTER: 'prometheus,otlp',
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
      },
      killAfterMs: 30_000,
    });
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(code).toBe(0);
    expect(JSON.parse(stdout.trim().split('\n').pop()!)).toEqual({ fromPoolscope: [] });
  });

  // Found by a review of test runners under the preload: sinon's fake timers (nextTick, setTimeout, Date from 0)
  // held a push up for good, the reader's own timeout being on the fake clock, and every later push waited on it;
  // /health read a negative uptime and a 1970 timestamp.
  it('OTLP pushes resume once an application\'s fake clock is uninstalled, and /health keeps real time under it (bug: pushes stopped for good, uptime negative)', async () => {
    let count = 0;
    const receiver = createServer((req, res) => {
      if (req.method === 'POST') count++;
      req.resume();
      req.on('end', () => res.end(req.method === 'GET' ? String(count) : '{}'));
    });
    receiver.listen(0, '127.0.0.1');
    await once(receiver, 'listening');
    try {
      const url = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
      const { code, stdout, stderr } = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'fake-clock-otlp.mjs')], {
        env: {
          ...process.env, DATABASE_URL, OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
          OTEL_METRIC_EXPORT_INTERVAL: '200', OTEL_METRIC_EXPORT_TIMEOUT: '150', RECEIVER_URL: url, EXPORT_INTERVAL: '200', FAKE_MS: '1000', AFTER_MS: '1500',
          POOLSCOPE_INDEX: pathToFileURL(path.join(DIST, 'index.js')).href,
        },
        killAfterMs: 30_000,
      });
      expect({ code, stderr: stderr.split('\n').filter((l) => l !== '' && !/OTLP metric export to .* (failed|recovered)/.test(l)) }).toEqual({ code: 0, stderr: [] });
      const r = JSON.parse(/^RESULT (.*)$/m.exec(stdout)![1]!) as { before: number; during: number; after: number; uptime: number; year: number };
      expect(r.before).toBeGreaterThan(0);
      // About seven intervals after the clock went: a push or two may still be lost to it, not all of them.
      expect(r.after - r.during).toBeGreaterThanOrEqual(3);
      expect(r.uptime).toBeGreaterThanOrEqual(0);
      expect(r.year).toBeGreaterThanOrEqual(2026);
    } finally {
      receiver.close();
    }
  });

  // Bug: when the final flush had not settled within its 5 s limit, register.js called process.exit(), whatever
  // the application was still doing: work its own 'beforeExit' handler had started was cut off, and the exit
  // code it would have set was lost.
  it('the final flush never cuts off work the application starts at beforeExit (bug: process.exit() after 5 s, exit code lost)', async () => {
    const dead = await freePort();
    const { app } = await start('before-exit-work.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}`, OTEL_EXPORTER_OTLP_TIMEOUT: '7000',
      FINAL_WORK_MS: '6000',
    });
    const exit = await Promise.race([app.exit, new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(app.stdout()).toContain('final work done');
    expect(exit).toEqual({ code: 3, signal: null });
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('runtime flags', () => {
  const [major] = process.versions.node.split('.').map(Number);
  const permission = major! >= 23 ? '--permission' : '--experimental-permission';
  for (const flags of [['--throw-deprecation', '--pending-deprecation'], ['--unhandled-rejections=strict'],
    ['--disallow-code-generation-from-strings'], ['--disable-proto=throw'], [permission, '--allow-fs-read=*']]) {
    it(`${flags.join(' ')} changes nothing for a script that queries and ends its pool`, async () => {
      // Outside the repository, whose Slonik would start the loader thread on Node 20 (a worker, which the
      // permission model refuses without --allow-worker: said in one line).
      const dir = standaloneAppDir(['short-script.mjs'], ['pg']);
      const run = async (preload: string[]) => {
        const r = await runToExit(process.execPath, [...flags, ...preload, path.join(dir, 'short-script.mjs')],
          { cwd: dir, env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, killAfterMs: 30_000 });
        return { ...r, stderr: r.stderr.replace(/\(node:\d+\)/g, '(node)') };
      };
      const baseline = await run([]);
      expect(baseline.code).toBe(0);
      expect(await run(PRELOAD)).toEqual(baseline);
    });
  }

  // Found running NocoDB on Node 22: with Poolscope's dist outside node_modules (a checkout's ./dist), the
  // require hook's wrapper was the first frame outside Node when a dependency required `punycode`, and Node warns
  // of a deprecated builtin unless that frame is inside node_modules: DEP0040 under the preload alone, and an exit
  // under --throw-deprecation.
  for (const flags of [[], ['--jitless']]) {
    it(`a dependency requiring a deprecated builtin gets no warning it would not get without the preload${flags.length > 0 ? ` (${flags.join(' ')})` : ''} (bug: DEP0040 on Node 22 and 24)`, async () => {
      // No pg: on Node 20, --jitless alone makes a script that loads pg exit (undici without WebAssembly).
      const dir = standaloneAppDir([], []);
      mkdirSync(path.join(dir, 'node_modules', 'uses-punycode'), { recursive: true });
      writeFileSync(path.join(dir, 'node_modules', 'uses-punycode', 'index.js'), "module.exports = require('punycode').toASCII('bücher.example');");
      writeFileSync(path.join(dir, 'app.cjs'), "console.log(require('uses-punycode'));");
      writeFileSync(path.join(dir, 'app.mjs'), "import host from 'uses-punycode'; console.log(host);");
      for (const app of ['app.cjs', 'app.mjs']) {
        const run = (preload: string[]) => runToExit(process.execPath, [...flags, '--throw-deprecation', ...preload, path.join(dir, app)],
          { cwd: dir, env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, killAfterMs: 30_000 });
        const baseline = await run([]);
        expect({ app, code: baseline.code, stdout: baseline.stdout }).toEqual({ app, code: 0, stdout: 'xn--bcher-kva.example\n' });
        expect({ app, ...(await run(PRELOAD)) }).toEqual({ app, ...baseline });
      }
    });
  }

  // Found by a run under Node's flags: on Node 22 every process with the preload died (node:http imported as an ES
  // module loads undici's WebAssembly), and on Node 24 an ES-module import of a hooked package failed (the loader
  // hook's lexer is WebAssembly only).
  it('--jitless (no WebAssembly) changes nothing for an ES module importing a hooked package and serving HTTP', async () => {
    // Not `import 'node:http'` itself: that alone kills Node 22 under --jitless, preload or not.
    const script = "import express from 'express'; " +
      "const s = express().listen(0, '127.0.0.1', () => { console.log(typeof express); s.close(); });";
    const run = (preload: string[]) => runToExit(process.execPath, ['--jitless', ...preload, '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, killAfterMs: 30_000 });
    const baseline = await run([]);
    expect({ code: baseline.code, stdout: baseline.stdout }).toEqual({ code: 0, stdout: 'function\n' });
    expect(await run(PRELOAD)).toEqual(baseline);
  });

  it('--frozen-intrinsics: a leak is still reported with where it was acquired (bug: "a recorder failed", no leak line)', async () => {
    const script = "const pg = require('pg'); (async () => { const p = new pg.Pool({ connectionString: process.env.DATABASE_URL }); " +
      "const c = await p.connect(); await new Promise((r) => setTimeout(r, 300)); c.release(); await p.end(); })();";
    const r = await runToExit(process.execPath, ['--frozen-intrinsics', ...PRELOAD, '-e', script], {
      cwd: ROOT, killAfterMs: 30_000,
      env: { ...process.env, DATABASE_URL, POOLSCOPE_LEAK_STACK: 'true', POOLSCOPE_LEAK_THRESHOLD: '50', OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/a connection has been checked out for \d+ ms \(leak threshold 50 ms\)\. Acquired at:\n {4}at /);
    expect(r.stderr).not.toMatch(/recorder failed/);
  });
});

describe('bad input', () => {
  const LONG = 'x'.repeat(100_000);
  // Every variable Poolscope reads (src/config.ts, src/register.ts) and the OTLP ones the SDK reads, with garbage.
  const garbage: Record<string, Record<string, string>> = {
    numbers: {
      OTEL_SDK_DISABLED: 'maybe', POOLSCOPE_HEALTH_ENDPOINTS: 'yes please', OTEL_METRICS_EXPORTER: 'prometheus,kafka,,',
      OTEL_TRACES_EXPORTER: 'jaeger', OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'redis, ,ÿ', OTEL_LOG_LEVEL: 'loud',
      OTEL_METRIC_EXPORT_INTERVAL: 'NaN', OTEL_METRIC_EXPORT_TIMEOUT: '-5', POOLSCOPE_HEALTH_WARNING_THRESHOLD: '1e999',
      POOLSCOPE_HEALTH_CRITICAL_THRESHOLD: '0x10', POOLSCOPE_LOG_UTILIZATION_THRESHOLD: '∞',
      POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '1', POOLSCOPE_HEALTH_HISTORY_SIZE: '100000000', POOLSCOPE_POOL_BASE_SIZE: '-3',
      OTEL_SERVICE_NAME: 'svc"}\n# HELP injected 1', OTEL_RESOURCE_ATTRIBUTES: '=,,a=%ZZ,b,c=\u00e9\u0001',
    },
    inverted: {
      OTEL_METRICS_EXPORTER: ' PROMETHEUS ', POOLSCOPE_HEALTH_WARNING_THRESHOLD: '0.95', POOLSCOPE_HEALTH_CRITICAL_THRESHOLD: '0.5',
      POOLSCOPE_HEALTH_SAMPLE_INTERVAL: LONG, POOLSCOPE_HEALTH_HISTORY_SIZE: '0', OTEL_SERVICE_NAME: LONG,
      OTEL_LOG_LEVEL: '', OTEL_SDK_DISABLED: ' ', OTEL_EXPORTER_PROMETHEUS_HOST: '   ',
    },
    otlp: {
      OTEL_METRICS_EXPORTER: 'otlp,prometheus', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1',
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'ftp://nowhere', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '::::',
      OTEL_EXPORTER_OTLP_HEADERS: 'garbage,=,a=%ZZ', OTEL_EXPORTER_OTLP_TIMEOUT: 'soon', OTEL_EXPORTER_OTLP_COMPRESSION: 'zip',
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sideways', OTEL_METRIC_EXPORT_INTERVAL: '0', OTEL_LOG_LEVEL: 'verbose',
    },
  };

  it.each(Object.keys(garbage))('garbage settings (%s): the app runs and serves, Poolscope falls back with bounded warnings', async (set) => {
    const { app, appUrl, metricsUrl } = await start('rel-app.mjs', garbage[set]!);
    for (let i = 0; i < 3; i++) expect((await fetch(`${appUrl}/q`)).status).toBe(200);
    const res = await fetch(`${metricsUrl}/metrics`);
    expect(res.status).toBe(200);
    const samples = parseExposition(await res.text()); // still valid exposition, whatever the service name
    expect(find(samples, 'db_client_connection_max')[0]?.value).toBe(4);
    expect((await fetch(`${metricsUrl}/health/database`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    const lines = stderrLines(app);
    expect(app.stderr()).not.toMatch(/^\s+at /m);
    expect(app.stderr()).not.toMatch(/failed to start/);
    // Bounded, not per request: one line per bad setting, and at OTEL_LOG_LEVEL=verbose the instrumentation's
    // six-line debug entry per hooked pg file (four since pg.defaults is read).
    expect(lines.length).toBeLessThanOrEqual(36);
    for (const line of lines) expect(line.length).toBeLessThan(400); // long values are never echoed
    expect(app.child.exitCode).toBeNull();
  });

  // Bug (config.ts): OTEL_EXPORTER_OTLP_ENDPOINT is read with reader.string(), unvalidated, and the derived
  // `${base}/v1/metrics` fallback is returned by reader.url() without validation; the OTLP exporter's
  // constructor then throws and Poolscope does not start at all (stack trace, no metrics, no health).
  it('an invalid OTEL_EXPORTER_OTLP_ENDPOINT falls back with a warning (bug: Poolscope fails to start)', async () => {
    // The interval keeps the (fallback) exporter from pushing anywhere during the test.
    const { app, appUrl, metricsUrl } = await start('rel-app.mjs', {
      OTEL_METRICS_EXPORTER: 'prometheus,otlp', OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url', OTEL_METRIC_EXPORT_INTERVAL: '600000',
    });
    expect((await fetch(`${appUrl}/q`)).status).toBe(200);
    expect(app.stderr()).not.toMatch(/failed to start|^\s+at /m);
    expect(app.stderr()).toMatch(/^poolscope: OTEL_EXPORTER_OTLP_ENDPOINT .*; using /m);
    expect((await fetch(`${metricsUrl}/metrics`)).status).toBe(200);
  });

  // Bug (sdk.ts, upstream env detector): one bad entry in OTEL_RESOURCE_ATTRIBUTES dropped every attribute in
  // it, with a debug-level line only: the service's target_info lost its environment without a word.
  it('the resource reaches target_info, and a bad OTEL_RESOURCE_ATTRIBUTES is reported once (bug: dropped silently)', async () => {
    const good = await start('rel-app.mjs', { OTEL_RESOURCE_ATTRIBUTES: 'service.name=shop,deployment.environment.name=prod,team=a%2Cb' });
    const info = find(parseExposition(await (await fetch(`${good.metricsUrl}/metrics`)).text()), 'target_info')[0]!;
    expect(info.labels).toMatchObject({ service_name: 'shop', deployment_environment_name: 'prod', team: 'a,b' });
    expect(await (await fetch(`${good.metricsUrl}/health`)).json()).toMatchObject({ service: 'shop' });

    const bad = await start('rel-app.mjs', { OTEL_SERVICE_NAME: 'shop', OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod,s3cret' });
    const badInfo = find(parseExposition(await (await fetch(`${bad.metricsUrl}/metrics`)).text()), 'target_info')[0]!;
    expect(badInfo.labels.service_name).toBe('shop');
    expect(badInfo.labels.deployment_environment_name).toBeUndefined();
    const reported = stderrLines(bad.app).filter((l) => l.includes('OTEL_RESOURCE_ATTRIBUTES'));
    expect(reported).toEqual([expect.stringMatching(/^poolscope: OTEL_RESOURCE_ATTRIBUTES entry 2 is not key=value .*; using no resource attributes from it\.$/)]);
    expect(bad.app.stderr()).not.toContain('s3cret');
  });

  // Found by a hostile-input review: Poolscope's wrappers read the global clock at every checkout and query, so an
  // application that replaced `performance` had every pool call fail, and a standalone client crashed the process.
  it.each(['empty', 'throwing'])('pg behaves as without the preload when the application replaced the global clock (%s)', async (clock) => {
    const fixture = path.join(ROOT, 'test', 'fixtures', 'replaced-clock.cjs');
    const env = { ...process.env, DATABASE_URL, CLOCK: clock, OTEL_EXPORTER_PROMETHEUS_PORT: '0' };
    const bare = await runToExit(process.execPath, [fixture], { env, killAfterMs: 30_000 });
    expect(bare.stdout).toBe('[[{"a":1}],[{"b":2}],[{"c":3}]]\n');
    // Replaced after the preload loaded, and (review: the preload then failed to load, and the app with it)
    // before, by a --require file.
    const early = ['--require', path.join(ROOT, 'test', 'fixtures', 'replace-clock.cjs')];
    for (const args of [[...PRELOAD, fixture], [...early, ...PRELOAD, fixture]]) {
      const preloaded = await runToExit(process.execPath, args, { env, killAfterMs: 30_000 });
      expect(preloaded.stdout, args.join(' ')).toBe(bare.stdout);
      expect(preloaded.code).toBe(0);
      // Replaced before it loaded, the OpenTelemetry SDK (which reads the global clock as it loads) cannot run:
      // Poolscope says so and stays out of the way.
      if (args[0] === '--require') expect(preloaded.stderr).toMatch(/^poolscope: failed to start, the application runs without it: /);
      else expect(preloaded.stderr).toBe('');
    }
  });

  // Bug (register.ts, config.ts reject()): a rejected value is echoed into the warning as is, so a newline in
  // an environment variable forges a log line of its own.
  it('a bad value cannot forge log lines (bug: newlines echoed into the warning)', async () => {
    const { app, appUrl } = await start('rel-app.mjs', {
      OTEL_LOG_LEVEL: 'x\npoolscope: forged', POOLSCOPE_HEALTH_WARNING_THRESHOLD: '1\npoolscope: forged',
    });
    expect((await fetch(`${appUrl}/q`)).status).toBe(200);
    await waitFor(() => app.stderr().includes('POOLSCOPE_HEALTH_WARNING_THRESHOLD') || undefined);
    expect(stderrLines(app).filter((l) => /forged/i.test(l) && !/OTEL_LOG_LEVEL|POOLSCOPE_HEALTH/.test(l))).toEqual([]);
  });

  // Found by differential testing of pg's API: Poolscope's wrappers read their own marks through `this`, so a
  // client behind a strict Proxy (a test double) failed its queries, and methods called on foreign objects or
  // primitives threw Poolscope's TypeErrors ("reading 'apply'", "Invalid value used as weak map key").
  it('odd receivers (a strict Proxy client, foreign objects, primitives) get what pg gives them (bug: Poolscope\'s errors)', async () => {
    const fixture = path.join(ROOT, 'test', 'fixtures', 'odd-receivers.cjs');
    const run = (preload: string[]) => runToExit(process.execPath, [...preload, fixture],
      { env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0' }, killAfterMs: 30_000 });
    const plain = await run([]);
    expect(plain.code).toBe(0);
    expect(JSON.parse(plain.stdout)).toMatchObject({ strictClient: { value: [{ a: 1 }] }, strictPooledClient: { value: [{ a: 2 }] } });
    const pre = await run(PRELOAD);
    expect({ code: pre.code, seen: JSON.parse(pre.stdout) }).toEqual({ code: 0, seen: JSON.parse(plain.stdout) });
  });

  it('odd queries give identical results with and without the preload, and are measured without their text', async () => {
    const marker = `sqlmark${Date.now().toString(36)}`;
    const runQueries = async (preload: boolean) => {
      const { app, metricsUrl } = await start('rel-queries.mjs', { SQL_MARKER: marker }, preload);
      const line = app.stdout().split('\n').find((l) => l.startsWith('RESULT '))!;
      const metrics = preload ? await (await fetch(`${metricsUrl}/metrics`)).text() : '';
      const health = preload ? await (await fetch(`${metricsUrl}/health/database`)).text() : '';
      app.child.kill('SIGTERM');
      await app.exit;
      return { result: JSON.parse(line.slice(7)), metrics, health, stderr: app.stderr(), stdout: app.stdout() };
    };
    const plain = await runQueries(false);
    const pre = await runQueries(true);
    expect(pre.result).toEqual(plain.result);
    expect(plain.result.filter((r: any) => r.err).map((r: any) => r.label))
      .toEqual(['named statement error', 'multi statement with error', 'unicode error']);
    for (const out of [pre.metrics, pre.health, pre.stderr, pre.stdout.replace(/^RESULT .*$/m, '')]) {
      expect(out).not.toContain(marker);
      expect(out).not.toContain('xxxxxxxxxx');
      expect(out).not.toMatch(/ünïcödé|naïve|表|😀/);
    }
    const s = parseExposition(pre.metrics);
    const ops = find(s, 'db_client_operation_duration_seconds_count');
    expect(new Set(ops.map((o) => o.labels.db_operation_name))).toEqual(new Set(['SELECT', 'CREATE', 'INSERT', 'WITH']));
    // Promise-path queries are measured, errors with their SQLSTATE; submittables are not (documented).
    expect(find(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' })
      .find((o) => o.labels.error_type === undefined)?.value).toBe(9);
    expect(find(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT', error_type: '42P01' })[0]?.value).toBe(3);
  });
});
