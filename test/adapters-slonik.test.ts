// Slonik's own pool against a real PostgreSQL. Slonik is ESM-only, so the import-in-the-middle loader hook
// is registered first (as `--import dist/register.js` does) and Slonik is imported after the
// instrumentation exists; its pool is then the hooked one. Gauges must equal `pool.state()` at the same
// instant. Slonik 49 requires Node >= 24: below that the whole file is skipped.
import { register } from 'node:module';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { SLONIK_ESM_FILES } from '../src/adapters/slonik.js';
import { StuckDetector } from '../src/health/stuck-detector.js';
import type { AcquirePath, CloseReason, PoolObserver } from '../src/pools/observer.js';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { find, inProcess, ROOT, scrapeUrl, spawnApp, value, waitFor, type Sample } from './helpers.js';

const NODE_MAJOR = Number(process.versions.node.split('.')[0]);
const url = inject('databaseUrl');
const u = new URL(url);
const target = `${u.hostname}:${u.port}${u.pathname}`;

type Slonik = typeof import('slonik');
type SlonikPool = Awaited<ReturnType<Slonik['createPool']>>;

let ps: ReturnType<typeof inProcess>;
let slonik: Slonik;

/** What the adapter reported, per pool name: the calls a recorder receives. */
const seen = {
  paths: new Map<string, AcquirePath[]>(),
  closes: new Map<string, CloseReason[]>(),
  timeouts: new Map<string, number>(),
  failures: new Map<string, number>(),
  idleErrors: new Map<string, number>(),
};
const push = <T>(map: Map<string, T[]>, key: string, v: T) => map.set(key, [...(map.get(key) ?? []), v]);
const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
const probe: PoolObserver = {
  acquired: (pool, _client, _wait, path) => push(seen.paths, pool.name, path),
  connectionClosed: (pool, reason) => push(seen.closes, pool.name, reason),
  acquireTimedOut: (pool) => bump(seen.timeouts, pool.name),
  connectionFailed: (pool) => bump(seen.failures, pool.name),
  idleError: (pool) => bump(seen.idleErrors, pool.name),
};

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f().catch(() => undefined)));
});

async function newPool(options: Record<string, unknown> = {}, uri = url): Promise<SlonikPool> {
  const pool = await slonik.createPool(uri, { maximumPoolSize: 4, minimumPoolSize: 0, ...options });
  cleanups.push(() => pool.end());
  return pool;
}

function deferred() {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => { release = resolve; });
  return { promise, release };
}

const poolLabel = (name: string) => ({ db_client_connection_pool_name: name });

/** The gauges for `name` and Slonik's state() read on both sides of the same scrape; retried until they agree. */
async function gaugesWithState(pool: SlonikPool, name: string) {
  for (let attempt = 0; ; attempt++) {
    const before = JSON.stringify(pool.state());
    const s = await ps.scrape();
    const after = pool.state();
    if (before === JSON.stringify(after) || attempt === 10) {
      return {
        state: after,
        gauges: {
          used: value(s, 'db_client_connection_count', { ...poolLabel(name), db_client_connection_state: 'used' }),
          idle: value(s, 'db_client_connection_count', { ...poolLabel(name), db_client_connection_state: 'idle' }),
          pending: value(s, 'db_client_connection_pending_requests', poolLabel(name)),
          max: value(s, 'db_client_connection_max', poolLabel(name)),
        },
        samples: s,
      };
    }
  }
}

const slonikCounters = (st: SlonikPool extends { state(): infer S } ? S : never, max: number) => ({
  used: st.acquiredConnections + st.pendingReleaseConnections + st.pendingConnections,
  idle: st.idleConnections,
  pending: st.waitingClients,
  max,
});

const counter = (s: Sample[], name: string, pool: string) => find(s, name, poolLabel(pool)).reduce((sum, x) => sum + x.value, 0);

/**
 * A TCP proxy to the test server that can stop answering: new connections are then accepted and never
 * served, so pg's connect times out (Slonik's `connectionTimeout`). Slonik queries the server once while
 * creating a pool, so the pool is created while the proxy forwards.
 */
async function blackHoleProxy() {
  let forwarding = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (!forwarding) return;
    const upstream = net.connect(Number(u.port), u.hostname);
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => socket.destroy());
    socket.pipe(upstream).pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return {
    uri: `postgres://${u.username}@127.0.0.1:${port}${u.pathname}`,
    name: `127.0.0.1:${port}${u.pathname}`,
    stopAnswering: () => { forwarding = false; },
  };
}

describe.skipIf(NODE_MAJOR < 24)(`Slonik (its own pool)${NODE_MAJOR < 24 ? ` — skipped: slonik 49 requires Node >= 24, this is ${process.versions.node}` : ''}`, () => {
  beforeAll(async () => {
    // What src/register.ts does under --import: the loader hook, told to wrap Slonik's pool factories.
    register('@opentelemetry/instrumentation/hook.mjs', pathToFileURL(`${ROOT}/`), { data: { include: [SLONIK_ESM_FILES] } });
    ps = inProcess({ localAggregation: true });
    ps.instrumentation.addRecorder(probe);
    slonik = await import('slonik');
    return () => ps.close();
  });

  it('reports its pool as host:port/database with gauges equal to pool.state() while saturated', async () => {
    const s0 = await ps.scrape();
    const waits0 = counter(s0, 'db_client_connection_wait_time_seconds_count', target);
    const uses0 = counter(s0, 'db_client_connection_use_time_seconds_count', target);
    const creates0 = counter(s0, 'db_client_connection_create_time_seconds_count', target);
    const selects0 = find(s0, 'db_client_operation_duration_seconds_count', { ...poolLabel(target), db_operation_name: 'SELECT' })
      .reduce((sum, x) => sum + x.value, 0);
    const paths0 = seen.paths.get(target)?.length ?? 0;
    const { sql } = slonik;
    const pool = await newPool();

    // Declared before any connection exists.
    const empty = await gaugesWithState(pool, target);
    expect(empty.gauges).toEqual({ used: 0, idle: 0, pending: 0, max: 4 });

    await pool.oneFirst(sql.unsafe`SELECT 1`);
    // Released connections are reset (DISCARD ALL) before they are idle again.
    await waitFor(() => pool.state().idleConnections === 1 || undefined);
    const gate = deferred();
    let holding = 0;
    const held = Array.from({ length: 4 }, () => pool.transaction(async (tx) => {
      await tx.query(sql.unsafe`SELECT 1`);
      holding++;
      await gate.promise;
    }));
    await waitFor(() => holding === 4 || undefined);
    const queued = Array.from({ length: 3 }, () => pool.oneFirst(sql.unsafe`SELECT 2`));
    await waitFor(() => pool.state().waitingClients === 3 || undefined);

    const saturated = await gaugesWithState(pool, target);
    expect(saturated.gauges).toEqual(slonikCounters(saturated.state, 4));
    expect(saturated.gauges).toEqual({ used: 4, idle: 0, pending: 3, max: 4 });
    expect(value(saturated.samples, 'poolscope_pool_utilization_ratio', poolLabel(target))).toBe(1);

    gate.release();
    await Promise.all([...held, ...queued]);
    await waitFor(() => pool.state().pendingReleaseConnections === 0 || undefined);
    const idle = await gaugesWithState(pool, target);
    expect(idle.gauges).toEqual(slonikCounters(idle.state, 4));
    expect(idle.gauges.used).toBe(0);
    expect(idle.gauges.idle).toBe(4);

    // 1 + 4 + 3 acquires: each timed, each ended a use; 4 connections opened, each timed once.
    const after = idle.samples;
    expect(counter(after, 'db_client_connection_wait_time_seconds_count', target) - waits0).toBe(8);
    expect(counter(after, 'db_client_connection_use_time_seconds_count', target) - uses0).toBe(8);
    expect(counter(after, 'db_client_connection_create_time_seconds_count', target) - creates0).toBe(4);
    // Every SELECT ran on a connection labelled with the pool (Slonik's own type lookup runs on a client of no pool).
    const selects = find(after, 'db_client_operation_duration_seconds_count', { ...poolLabel(target), db_operation_name: 'SELECT' })
      .reduce((sum, x) => sum + x.value, 0);
    expect(selects - selects0).toBe(8);
    // The first acquire opened a connection; then 1 idle + 3 new for the transactions; the 3 others queued.
    expect(seen.paths.get(target)!.slice(paths0).sort()).toEqual(['idle', 'new', 'new', 'new', 'new', 'queued', 'queued', 'queued']);
  });

  it('counts each connect timeout once per acquire, and not as a failed connection', async () => {
    const proxy = await blackHoleProxy();
    const pool = await newPool({ connectionTimeout: 1_000, connectionRetryLimit: 0 }, proxy.uri);
    proxy.stopAnswering();
    const settled = Promise.allSettled([1, 2, 3].map(() => pool.oneFirst(slonik.sql.unsafe`SELECT 1`)));
    // While they connect, the connections being opened for the callers are used ones.
    await waitFor(() => pool.state().pendingConnections === 3 || undefined);
    const connecting = await gaugesWithState(pool, proxy.name);
    expect(connecting.gauges).toEqual(slonikCounters(connecting.state, 4));
    expect(connecting.gauges).toEqual({ used: 3, idle: 0, pending: 0, max: 4 });
    const results = await settled;
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of results) expect(String((r as PromiseRejectedResult).reason)).toMatch(/timeout/i);
    const s = await ps.scrape();
    expect(value(s, 'db_client_connection_timeouts_total', poolLabel(proxy.name))).toBe(3);
    expect(seen.timeouts.get(proxy.name)).toBe(3);
    expect(seen.failures.get(proxy.name)).toBeUndefined();
    expect(find(s, 'db_client_connection_wait_time_seconds_count', poolLabel(proxy.name))).toEqual([]);
  });

  it('regression: callers on connections a silent server never opens went unseen by stuck detection (Slonik leaves them out of waitingClients)', async () => {
    const proxy = await blackHoleProxy();
    const pool = await newPool({ connectionTimeout: 'DISABLE_TIMEOUT', connectionRetryLimit: 0 }, proxy.uri);
    proxy.stopAnswering();
    void Promise.allSettled([1, 2].map(() => pool.oneFirst(slonik.sql.unsafe`SELECT 1`)));
    await waitFor(() => pool.state().pendingConnections === 2 || undefined);
    const observed = [...ps.registry.pools()].find((p) => p.name === proxy.name)!;
    const snapshot = observed.snapshot()!;
    // The pending gauge stays Slonik's own count.
    expect(snapshot.pending).toBe(0);
    expect(observed.opening()?.count).toBe(2);
    const detector = new StuckDetector({ windowMillis: 100, timeouts: 1 }, 5);
    const t = performance.now();
    expect(detector.judge(observed, snapshot, t).stuckReason).toBeUndefined();
    expect(detector.judge(observed, snapshot, t + 100).stuckReason).toBe('no_progress');
  });

  it('does not take a connection Slonik opens to refill its minimum for a caller waiting (review: a refill hanging on a silent server read as stuck with no one waiting)', async () => {
    const { sql } = slonik;
    const proxy = await blackHoleProxy();
    const pool = await newPool({ minimumPoolSize: 2, idleTimeout: 'DISABLE_TIMEOUT', connectionTimeout: 'DISABLE_TIMEOUT' }, proxy.uri);
    const pid = await pool.oneFirst(sql.unsafe`SELECT pg_backend_pid()`);
    await waitFor(() => (pool.state().idleConnections === 2 ? true : undefined));
    proxy.stopAnswering();
    // The server ends one idle connection; Slonik opens another to keep its minimum, into the silent proxy.
    const admin = await newPool({ poolName: 'admin' });
    await admin.query(sql.unsafe`SELECT pg_terminate_backend(${pid as number})`);
    await waitFor(() => (pool.state().pendingConnections === 1 ? true : undefined), 5_000);
    const observed = [...ps.registry.pools()].find((p) => p.name === proxy.name)!;
    expect(observed.snapshot()!.pending).toBe(0);
    expect(observed.opening()).toBeUndefined();
    const detector = new StuckDetector({ windowMillis: 100, timeouts: 1 }, 5);
    const t = performance.now();
    detector.judge(observed, observed.snapshot()!, t);
    expect(detector.judge(observed, observed.snapshot()!, t + 1_000).stuckReason).toBeUndefined();
  });

  it('counts a released connection that Slonik is still resetting as used, not idle', async () => {
    const reset = deferred();
    cleanups.push(async () => reset.release());
    const pool = await newPool({ poolName: 'resetting', resetConnection: async () => { await reset.promise; } });
    await pool.oneFirst(slonik.sql.unsafe`SELECT 1`);
    await waitFor(() => pool.state().pendingReleaseConnections === 1 || undefined);
    const resetting = await gaugesWithState(pool, 'resetting');
    expect(resetting.gauges).toEqual(slonikCounters(resetting.state, 4));
    expect(resetting.gauges).toEqual({ used: 1, idle: 0, pending: 0, max: 4 });
    reset.release();
    await waitFor(() => pool.state().idleConnections === 1 || undefined);
    const idle = await gaugesWithState(pool, 'resetting');
    expect(idle.gauges).toEqual({ used: 0, idle: 1, pending: 0, max: 4 });
  });

  it('takes Slonik\'s poolName, is renamed by monitorPool(), and its series go at pool.end()', async () => {
    const pool = await newPool({ poolName: 'orders', maximumPoolSize: 2 });
    await pool.oneFirst(slonik.sql.unsafe`SELECT 1`);
    let s = await ps.scrape();
    expect(value(s, 'db_client_connection_max', poolLabel('orders'))).toBe(2);
    expect(find(s, 'db_client_operation_duration_seconds_count', { ...poolLabel('orders'), db_operation_name: 'SELECT' })).toHaveLength(1);

    expect(ps.instrumentation.monitorPool(pool, { name: 'billing' })).toBe('billing');
    // Idempotent: the same pool is not attached twice.
    expect(ps.instrumentation.monitorPool(pool)).toBe('billing');
    s = await ps.scrape();
    expect(find(s, 'db_client_connection_max', poolLabel('orders'))).toEqual([]);
    expect(value(s, 'db_client_connection_max', poolLabel('billing'))).toBe(2);

    const closes0 = seen.closes.get('billing')?.length ?? 0;
    await pool.end();
    // Gone at end(), before any collection notices.
    expect(ps.registry.liveNames().has('billing')).toBe(false);
    s = await ps.scrape();
    expect(s.filter((x) => x.labels.db_client_connection_pool_name === 'billing' && /^db_client_connection_(count|max|min|pending)/.test(x.name)))
      .toEqual([]);
    expect(seen.closes.get('billing')!.slice(closes0)).toEqual(['pool_closed']);
  });

  it('tells why connections close: idle timeout, maximum age, a failed handler, server termination', async () => {
    const { sql } = slonik;
    const pool = await newPool({ poolName: 'reasons', idleTimeout: 150, maximumConnectionAge: 60_000 });
    await pool.oneFirst(sql.unsafe`SELECT 1`);
    await waitFor(() => (seen.closes.get('reasons')?.length === 1 ? true : undefined), 5_000);
    expect(seen.closes.get('reasons')).toEqual(['idle_timeout']);

    // A handler that throws makes Slonik destroy the connection it held.
    await expect(pool.connect(async () => { throw new Error('handler failed'); })).rejects.toThrow('handler failed');
    await waitFor(() => (seen.closes.get('reasons')?.length === 2 ? true : undefined), 5_000);
    expect(seen.closes.get('reasons')![1]).toBe('error');

    // The server ends an idle connection.
    const aged = await newPool({ poolName: 'terminated', idleTimeout: 'DISABLE_TIMEOUT' });
    const pid = await aged.oneFirst(sql.unsafe`SELECT pg_backend_pid()`);
    await waitFor(() => (aged.state().idleConnections === 1 ? true : undefined));
    await pool.query(sql.unsafe`SELECT pg_terminate_backend(${pid as number})`);
    await waitFor(() => (seen.closes.get('terminated')?.length === 1 ? true : undefined), 5_000);
    expect(seen.closes.get('terminated')).toEqual(['server_terminated']);
    expect(seen.idleErrors.get('terminated')).toBe(1);

    // Past its maximum age, an idle connection is destroyed when next acquired.
    const old = await newPool({ poolName: 'old', maximumConnectionAge: 100, idleTimeout: 'DISABLE_TIMEOUT' });
    await old.oneFirst(sql.unsafe`SELECT 1`);
    await new Promise((r) => setTimeout(r, 250));
    await old.oneFirst(sql.unsafe`SELECT 1`);
    await waitFor(() => (seen.closes.get('old')?.length === 1 ? true : undefined), 5_000);
    expect(seen.closes.get('old')).toEqual(['max_lifetime']);
  });

  it('counts acquires by path, shows a spike between two collections as a peak, and counts time at capacity', async () => {
    const { sql } = slonik;
    const name = 'slonik-signals';
    const pool = await newPool({ maximumPoolSize: 2, poolName: name });
    await pool.oneFirst(sql.unsafe`SELECT 1`); // one idle connection
    await waitFor(() => pool.state().idleConnections === 1 || undefined);
    const s0 = await ps.scrape();
    const path0 = (p: string) => find(s0, 'poolscope_pool_acquires_total', { ...poolLabel(name), poolscope_acquire_path: p }).reduce((a, x) => a + x.value, 0);
    const before = { idle: path0('idle'), new: path0('new'), queued: path0('queued') };
    const gate = deferred();
    let holding = 0;
    // The idle connection, then a new one, then a third caller queues.
    const held = [1, 2].map(() => pool.connect(async (c) => { await c.query(sql.unsafe`SELECT 1`); holding++; await gate.promise; }));
    await waitFor(() => holding === 2 || undefined);
    const queued = pool.oneFirst(sql.unsafe`SELECT 2`);
    await waitFor(() => pool.state().waitingClients === 1 || undefined);
    await new Promise((r) => setTimeout(r, 250));
    gate.release();
    await Promise.all([...held, queued]);
    await waitFor(() => pool.state().pendingReleaseConnections === 0 || undefined);
    const s = await ps.scrape();
    const path = (p: string) => find(s, 'poolscope_pool_acquires_total', { ...poolLabel(name), poolscope_acquire_path: p }).reduce((a, x) => a + x.value, 0);
    expect([path('idle') - before.idle, path('new') - before.new, path('queued') - before.queued]).toEqual([1, 1, 1]);
    expect(value(s, 'db_client_connection_count', { ...poolLabel(name), db_client_connection_state: 'used' })).toBe(0);
    expect(value(s, 'poolscope_pool_used_peak', poolLabel(name))).toBe(2);
    expect(value(s, 'poolscope_pool_pending_peak', poolLabel(name))).toBe(1);
    expect(value(s, 'poolscope_pool_saturated_time_seconds_total', poolLabel(name))).toBeGreaterThanOrEqual(0.2);
    const next = await ps.scrape();
    expect(value(next, 'poolscope_pool_used_peak', poolLabel(name))).toBe(2);
  });

  it('observes from pool.state() alone a pool created while Poolscope was stopped', async () => {
    ps.instrumentation.disable();
    let pool: SlonikPool;
    try {
      pool = await newPool({ maximumPoolSize: 3 });
    } finally {
      ps.instrumentation.enable();
    }
    let s = await ps.scrape();
    expect(find(s, 'db_client_connection_max', poolLabel('late'))).toEqual([]);
    expect(ps.instrumentation.monitorPool(pool, { name: 'late' })).toBe('late');
    const gate = deferred();
    const held = pool.transaction(async () => { await gate.promise; });
    await waitFor(() => pool.state().acquiredConnections === 1 || undefined);
    const seenNow = await gaugesWithState(pool, 'late');
    expect(seenNow.gauges).toEqual(slonikCounters(seenNow.state, 3));
    expect(seenNow.gauges.used).toBe(1);
    gate.release();
    await held;
    await pool.end();
    s = await ps.scrape();
    expect(find(s, 'db_client_connection_max', poolLabel('late'))).toEqual([]);
  });
  it('works zero-code in a CommonJS app: gauges equal pool.state() while saturated, a pool stuck past the window answers 503, long holds count as leaks and idle transactions as idle in transaction, queries labelled, series gone at end()', async () => {
    // Needs `npm run build`: the app runs under node --import dist/register.js.
    const metricsPort = await freePort();
    const app = await spawnApp('slonik-app.cjs', {
      DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      POOLSCOPE_HEALTH_STUCK_WINDOW: '800', POOLSCOPE_LEAK_THRESHOLD: '400', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '300',
    });
    cleanups.push(async () => { app.child.kill('SIGKILL'); await app.exit; });
    const call = async (method: string, route: string) => (await fetch(`http://127.0.0.1:${app.port}${route}`, { method })).json();
    const metrics = () => scrapeUrl(`http://127.0.0.1:${metricsPort}/metrics`);
    const gauges = (s: Sample[]) => ({
      used: value(s, 'db_client_connection_count', { ...poolLabel(target), db_client_connection_state: 'used' }),
      idle: value(s, 'db_client_connection_count', { ...poolLabel(target), db_client_connection_state: 'idle' }),
      pending: value(s, 'db_client_connection_pending_requests', poolLabel(target)),
      max: value(s, 'db_client_connection_max', poolLabel(target)),
    });
    await call('POST', '/hold');
    const state = await call('GET', '/state') as ReturnType<SlonikPool['state']> & { max: number };
    const s = await metrics();
    expect(gauges(s)).toEqual(slonikCounters(state, state.max));
    expect(gauges(s)).toEqual({ used: 2, idle: 0, pending: 1, max: 2 });
    // Both connections held and a caller waiting with nothing completing: stuck after the window; both holds
    // outlast the leak threshold and are counted once each.
    const health = await waitFor(async () => {
      const res = await fetch(`http://127.0.0.1:${metricsPort}/health/database`);
      const body = await res.json() as { pools: Array<{ name: string; stuck: boolean; stuckReason?: string }> };
      return res.status === 503 ? body : undefined;
    }, 5_000, 100);
    expect(health.pools.find((p) => p.name === target)).toMatchObject({ stuck: true, stuckReason: 'no_progress' });
    await waitFor(async () => (find(await metrics(), 'poolscope_pool_leaks_total', poolLabel(target)).reduce((a, x) => a + x.value, 0) === 2) || undefined, 5_000, 100);
    // Each hold is a transaction that ran a query and now waits: idle in an open transaction, counted once each.
    // (Missed before: the leak detector read the transaction state off Slonik's connection, not its pg.Client.)
    await waitFor(async () => (counter(await metrics(), 'poolscope_pool_idle_in_transaction_total', target) === 2) || undefined, 5_000, 100);
    expect(app.stderr()).toMatch(/idle in an open transaction/);
    await call('POST', '/release');
    // Past the telemetry server's short result cache (SERVER_LIMITS.metricsCacheMs), so this is a new collection.
    await new Promise((r) => setTimeout(r, 250));
    const after = await metrics();
    expect(gauges(after)).toEqual({ used: 0, idle: 2, pending: 0, max: 2 });
    expect(find(after, 'db_client_operation_duration_seconds_count', { ...poolLabel(target), db_operation_name: 'SELECT' })
      .reduce((sum, x) => sum + x.value, 0)).toBe(3);
    await call('POST', '/end');
    await new Promise((r) => setTimeout(r, 250)); // past the result cache again
    expect(find(await metrics(), 'db_client_connection_max', poolLabel(target))).toEqual([]);
    expect(app.stderr().split('\n').filter((l) => l !== '' &&
      !/^poolscope: pool ".*" (is at 100% utilization|is (no longer )?stuck|(has )?(a )?connection|recovered)|^poolscope: .*(leak|held|checked out)/i.test(l))).toEqual([]);
    // The idle transactions ended and the connections were released: nothing more was counted afterwards.
    expect(counter(after, 'poolscope_pool_idle_in_transaction_total', target)).toBe(2);
    expect((await fetch(`http://127.0.0.1:${metricsPort}/health/database`)).status).toBe(200);
  });
});
