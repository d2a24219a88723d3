// Leak (long-hold) detection, idle-in-transaction detection and connection hold time by http.route, for
// every supported pool library, in an Express service run under `--import dist/register.js` against a real
// PostgreSQL. Thresholds are short so the tests are quick; every hold is far from its threshold either way.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { fileURLToPath } from 'node:url';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { capturedLog, find, parseExposition, REGISTER, runToExit, scrapeUrl, spawnApp, waitFor, type Sample, type SpawnedApp } from './helpers.js';
import { ObservedPool } from '../src/pools/observed-pool.js';
import { LeakDetector } from '../src/recorders/leak-detector.js';
import { createLogger } from '../src/logger.js';
import { HTTP_ROUTE_OVERFLOW, MAX_HTTP_ROUTES } from '../src/http/route.js';

const DATABASE_URL = inject('databaseUrl');
const LIBRARIES = ['pg', 'knex', 'seq'] as const;
type Library = (typeof LIBRARIES)[number];

interface Running { app: SpawnedApp; metricsUrl: string; appUrl: string }

async function start(env: Record<string, string>, nodeArgs: string[] = []): Promise<Running> {
  const metricsPort = await freePort();
  const app = await spawnApp('leaks-app.mjs', { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), ...env }, [...nodeArgs, '--import', REGISTER]);
  return { app, metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`, appUrl: `http://127.0.0.1:${app.port}` };
}

async function stop(r: Running | undefined): Promise<void> {
  if (r === undefined || r.app.child.exitCode !== null || r.app.child.signalCode !== null) return;
  r.app.child.kill('SIGKILL');
  await r.app.exit;
}

async function get(r: Running, path: string): Promise<void> {
  const res = await fetch(`${r.appUrl}${path}`);
  expect(res.status, path).toBe(200);
  await res.text();
}

const poolName = (lib: Library) => `${lib}-leaks`;
const poolLabel = (lib: Library) => ({ db_client_connection_pool_name: poolName(lib) });

/** Sum of every series of `name` whose labels include `labels` (0 when there is none). */
function total(samples: Sample[], name: string, labels: Record<string, string>): number {
  return find(samples, name, labels).reduce((n, s) => n + s.value, 0);
}

/** Checkouts in `lib`'s hold-time histogram: all of them, or those charged to `route`. */
function held(samples: Sample[], lib: Library, route?: string): number {
  return total(samples, 'poolscope_pool_hold_time_seconds_count', route === undefined ? poolLabel(lib) : { ...poolLabel(lib), http_route: route });
}

/** Log lines (stderr) of one kind for one pool. */
function lines(r: Running, lib: Library, kind: 'leak' | 'idle'): string[] {
  const marker = kind === 'leak' ? /a connection (has been|was) checked out for/ : /idle in an open transaction/;
  // A line with a stack continues on indented lines; split on the log line starts.
  return r.app.stderr().split(/\n(?=\S)/).filter((l) => l.includes(`pool "${poolName(lib)}"`) && marker.test(l));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Idle transactions flagged so far on the pg-pool pool. */
async function idleFlagged(r: Running): Promise<number> {
  return total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_idle_in_transaction_total', poolLabel('pg'));
}

describe('under --import with routes on (leak threshold 1 s, idle-in-transaction 300 ms)', () => {
  let r: Running;
  beforeAll(async () => {
    r = await start({
      POOLSCOPE_POOL_ROUTES: 'true', POOLSCOPE_LEAK_THRESHOLD: '1000', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '300',
    });
  }, 30_000);
  afterAll(() => stop(r));

  for (const lib of LIBRARIES) {
    describe(lib === 'pg' ? 'pg-pool' : lib === 'knex' ? 'knex (tarn)' : 'Sequelize (sequelize-pool)', () => {
      it('counts a connection held past the threshold exactly once and logs it once, with pool and route', async () => {
        // Released well before the threshold: never counted.
        await get(r, `/${lib}/hold/100`);
        await get(r, `/${lib}/hold/100`);
        const route = { ...poolLabel(lib), http_route: `/${lib}/hold/:ms` };
        // Two connections held for 2.5 s: both cross the 1 s threshold while the sweep runs every 75 ms.
        const held = [get(r, `/${lib}/hold/2500`), get(r, `/${lib}/hold/2500`)];
        const during = await waitFor(async () => {
          const s = await scrapeUrl(r.metricsUrl);
          return total(s, 'poolscope_pool_long_held', poolLabel(lib)) === 2 &&
            total(s, 'poolscope_pool_leaks_total', route) === 2 ? s : undefined;
        }, 10_000);
        expect(total(during, 'poolscope_pool_leaks_total', poolLabel(lib))).toBe(2);
        await Promise.all(held);
        await sleep(300);
        const after = await scrapeUrl(r.metricsUrl);
        // Once per checkout however many sweeps saw it; nothing charged to any other route.
        expect(total(after, 'poolscope_pool_leaks_total', route)).toBe(2);
        expect(total(after, 'poolscope_pool_leaks_total', poolLabel(lib))).toBe(2);
        expect(total(after, 'poolscope_pool_long_held', poolLabel(lib))).toBe(0);
        const logged = lines(r, lib, 'leak');
        expect(logged).toHaveLength(1);
        expect(logged[0]).toContain(`by GET /${lib}/hold/:ms`);
        expect(logged[0]).toContain('leak threshold 1.0 s');
        // Without the opt-in there is no stack, only the hint how to get one.
        expect(logged[0]).not.toContain('Acquired at');
        expect(logged[0]).toContain('POOLSCOPE_LEAK_STACK=true');
      }, 30_000);

      // Found by review: a checkout whose connection the server ended was skipped as held by no one, while the
      // pool kept its place until release: a handler without `finally` lost the slot for good, and nothing said so.
      // Sequelize destroys such a connection at once, and its pool frees the place: no leak there.
      const keptUntilRelease = lib !== 'seq';
      it(keptUntilRelease
        ? 'counts a connection the server ended while it was checked out as held, until it is released (bug: never a leak)'
        : 'ends the checkout of a connection the server ended when Sequelize destroys it, as its pool frees the place', async () => {
        const route = { ...poolLabel(lib), http_route: `/${lib}/terminated/:ms` };
        const request = get(r, `/${lib}/terminated/2000`);
        const during = keptUntilRelease
          ? await waitFor(async () => {
            const s = await scrapeUrl(r.metricsUrl);
            return total(s, 'poolscope_pool_leaks_total', route) === 1 ? s : undefined;
          }, 10_000)
          : await sleep(1500).then(() => scrapeUrl(r.metricsUrl));
        expect(total(during, 'poolscope_pool_long_held', poolLabel(lib))).toBe(keptUntilRelease ? 1 : 0);
        expect(total(during, 'db_client_connection_count', { ...poolLabel(lib), db_client_connection_state: 'used' })).toBe(keptUntilRelease ? 1 : 0);
        await request;
        await sleep(300);
        const after = await scrapeUrl(r.metricsUrl);
        expect(total(after, 'poolscope_pool_long_held', poolLabel(lib))).toBe(0);
        expect(total(after, 'poolscope_pool_leaks_total', route)).toBe(keptUntilRelease ? 1 : 0);
        // Its transaction ended with it: nothing idle in one.
        expect(total(after, 'poolscope_pool_idle_in_transaction_total', route)).toBe(0);
      }, 30_000);

      it('flags a connection idle inside an open transaction once, and a short transaction never', async () => {
        const route = { ...poolLabel(lib), http_route: `/${lib}/idle-tx/:ms` };
        await get(r, `/${lib}/idle-tx/20`);
        expect(total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_idle_in_transaction_total', poolLabel(lib))).toBe(0);
        // Idle 700 ms after its last query inside BEGIN … COMMIT; held under the 1 s leak threshold.
        await get(r, `/${lib}/idle-tx/700`);
        await sleep(300);
        const s = await scrapeUrl(r.metricsUrl);
        expect(total(s, 'poolscope_pool_idle_in_transaction_total', route)).toBe(1);
        // The earlier long holds ran no transaction: not flagged.
        expect(total(s, 'poolscope_pool_idle_in_transaction_total', poolLabel(lib))).toBe(1);
        expect(total(s, 'poolscope_pool_leaks_total', route)).toBe(0);
        const logged = lines(r, lib, 'idle');
        expect(logged).toHaveLength(1);
        expect(logged[0]).toContain(`by GET /${lib}/idle-tx/:ms`);
      }, 30_000);

      // Found by running pg-boss under the preload: the sweep runs every quarter threshold, and a hold (or an
      // idle gap in a transaction) that crossed its threshold and ended before the next sweep was never counted.
      // Here the event loop is blocked across the threshold, so no sweep can run before the release or the commit.
      it('counts a hold and an idle transaction that cross the threshold between two sweeps (bug: never counted)', async () => {
        await get(r, `/${lib}/blocked-hold/1100`);
        await get(r, `/${lib}/blocked-idle-tx/400`);
        const s = await scrapeUrl(r.metricsUrl);
        expect(total(s, 'poolscope_pool_leaks_total', { ...poolLabel(lib), http_route: `/${lib}/blocked-hold/:ms` })).toBe(1);
        expect(total(s, 'poolscope_pool_idle_in_transaction_total', { ...poolLabel(lib), http_route: `/${lib}/blocked-idle-tx/:ms` })).toBe(1);
        expect(total(s, 'poolscope_pool_leaks_total', { ...poolLabel(lib), http_route: `/${lib}/blocked-idle-tx/:ms` })).toBe(0);
      }, 30_000);

      // Found by running graphile-worker and PostGraphile's watch mode under the preload: the connection each
      // keeps for LISTEN was logged and counted as a leak a minute after every start, and long_held stayed 1.
      it('does not take a connection held for LISTEN (a notification listener on it) for a leak (bug: counted and logged)', async () => {
        const route = { ...poolLabel(lib), http_route: `/${lib}/listen/:ms` };
        const leaksBefore = total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_leaks_total', poolLabel(lib));
        const linesBefore = lines(r, lib, 'leak').length;
        const listening = get(r, `/${lib}/listen/2000`);
        await sleep(1600);
        const during = await scrapeUrl(r.metricsUrl);
        expect(total(during, 'db_client_connection_count', { ...poolLabel(lib), db_client_connection_state: 'used' })).toBe(1);
        expect(total(during, 'poolscope_pool_long_held', poolLabel(lib))).toBe(0);
        await listening;
        const after = await scrapeUrl(r.metricsUrl);
        expect(total(after, 'poolscope_pool_leaks_total', route)).toBe(0);
        expect(total(after, 'poolscope_pool_leaks_total', poolLabel(lib))).toBe(leaksBefore);
        expect(lines(r, lib, 'leak')).toHaveLength(linesBefore);
      }, 30_000);

      // Found by reviewing the release-time check above: a long-poll that removes its listener, then UNLISTENs
      // and releases past the threshold, was counted as a leak (at the release, or by a sweep during UNLISTEN).
      it('does not take a LISTEN hold for a leak when its listener is removed before the release, past the threshold (bug: counted)', async () => {
        const before = total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_leaks_total', poolLabel(lib));
        await get(r, `/${lib}/listen/900?cleanup=300`);
        expect(total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_leaks_total', poolLabel(lib))).toBe(before);
      }, 30_000);

      it('charges hold time to the route that checked the connection out, queued acquires included', async () => {
        const before = await scrapeUrl(r.metricsUrl);
        // Both connections (max 2) held first, so the five queries queue and are handed their connection
        // from inside the release of a /hold request.
        const holds = [get(r, `/${lib}/hold/300`), get(r, `/${lib}/hold/300`)];
        await sleep(100);
        await Promise.all([...Array.from({ length: 5 }, (_, i) => get(r, `/${lib}/items/${i}`)), ...holds]);
        const after = await scrapeUrl(r.metricsUrl);
        expect(held(after, lib, `/${lib}/items/:id`) - held(before, lib, `/${lib}/items/:id`)).toBe(5);
        expect(held(after, lib, `/${lib}/hold/:ms`) - held(before, lib, `/${lib}/hold/:ms`)).toBe(2);
        // Every checkout is charged to exactly one route (or none): the by-route histogram adds up to use time.
        expect(held(after, lib)).toBe(total(after, 'db_client_connection_use_time_seconds_count', poolLabel(lib)));
        expect(total(after, 'poolscope_pool_hold_time_seconds_sum', poolLabel(lib)))
          .toBeCloseTo(total(after, 'db_client_connection_use_time_seconds_sum', poolLabel(lib)), 6);
      }, 30_000);

      // Found running pg-boss, started by a service's first request: its polling, on timers made inside that
      // request, was charged to the request's route for as long as the process lived.
      it('charges no route for work a request left running after its response closed (bug: charged to that route for good)', async () => {
        const before = await scrapeUrl(r.metricsUrl);
        await get(r, `/${lib}/background/4`);
        const after = await waitFor(async () => {
          const s = await scrapeUrl(r.metricsUrl);
          return held(s, lib) - held(before, lib) >= 4 ? s : undefined;
        }, 10_000);
        await sleep(200);
        const settled = await scrapeUrl(r.metricsUrl);
        expect(held(settled, lib) - held(before, lib)).toBe(4);
        expect(held(after, lib, `/${lib}/background/:n`)).toBe(0);
        expect(held(settled, lib, `/${lib}/background/:n`)).toBe(0);
      }, 30_000);

      // Found reviewing the fix above: a request whose client gave up (its response closed, never sent) was
      // taken for done, and the checkouts its handler still made were charged to no route.
      it('charges the route for the checkouts a handler makes after its client gave up (review: charged to none)', async () => {
        const before = await scrapeUrl(r.metricsUrl);
        await fetch(`${r.appUrl}/${lib}/after-abort/3`, { signal: AbortSignal.timeout(100) }).catch(() => undefined);
        const after = await waitFor(async () => {
          const s = await scrapeUrl(r.metricsUrl);
          return held(s, lib) - held(before, lib) >= 3 ? s : undefined;
        }, 10_000);
        expect(held(after, lib, `/${lib}/after-abort/:n`) - held(before, lib, `/${lib}/after-abort/:n`)).toBe(3);
      }, 30_000);

      // Found by review: a connection released with BEGIN and no COMMIT went back to the pool holding its
      // transaction and locks, for the next caller to inherit, and nothing was said: only checkouts were watched.
      it('flags a connection released inside an open transaction at once, with a line saying so (bug: nothing said)', async () => {
        const route = { ...poolLabel(lib), http_route: `/${lib}/released-in-tx` };
        if (lib === 'pg') {
          // Released with release(true): pg-pool closes it, and its transaction with it.
          await get(r, `/${lib}/released-in-tx?discard=1`);
          expect(total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_idle_in_transaction_total', route)).toBe(0);
        }
        // pg: five pool.query() calls then take the connection inside that transaction; one forgotten COMMIT
        // is one count (review: each of their releases counted it again).
        await get(r, `/${lib}/released-in-tx${lib === 'pg' ? '?reuse=5' : ''}`);
        expect(total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_idle_in_transaction_total', route)).toBe(1);
        if (lib === 'pg') {
          // Idle past the threshold first (counted as idle), then handed back: its later holders are not counted either.
          await get(r, `/${lib}/released-in-tx?reuse=3&idle=500`);
          expect(total(await scrapeUrl(r.metricsUrl), 'poolscope_pool_idle_in_transaction_total', route)).toBe(2);
        }
        const said = r.app.stderr().split(/\n(?=\S)/).filter((l) => l.includes(`pool "${poolName(lib)}"`) && l.includes('released inside an open transaction'));
        expect(said).toEqual([expect.stringContaining(`by GET /${lib}/released-in-tx`)]);
      }, 30_000);
    });
  }
});

describe('hold time by route, for a generated route table', () => {
  /** Runs routes-many.mjs with `count` routes, those from `queryFrom` on querying, requests each once; its samples. */
  async function generated(count: number, queryFrom: number): Promise<{ hold: Map<string | undefined, number>; http: Map<string | undefined, number>; warnings: string[] }> {
    const metricsPort = await freePort();
    const app = await spawnApp('routes-many.mjs', { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), POOLSCOPE_POOL_ROUTES: 'true',
      ROUTES_QUERY_FROM: String(queryFrom), ROUTES_COUNT: String(count) });
    try {
      for (let i = 0; i < count; i++) expect((await fetch(`http://127.0.0.1:${app.port}/region-${i}/orders/${i}`)).status).toBe(200);
      const samples = await scrapeUrl(`http://127.0.0.1:${metricsPort}/metrics`);
      const byRoute = (name: string) => {
        const m = new Map<string | undefined, number>();
        for (const s of find(samples, name)) m.set(s.labels.http_route, (m.get(s.labels.http_route) ?? 0) + s.value);
        return m;
      };
      return { hold: byRoute('poolscope_pool_hold_time_seconds_count'), http: byRoute('http_server_request_duration_seconds_count'),
        warnings: app.stderr().split('\n').filter((l) => l.includes('http.route')) };
    } finally {
      app.child.kill('SIGKILL');
      await app.exit;
    }
  }
  const capLine = `poolscope: more than ${MAX_HTTP_ROUTES} distinct http.route values; further routes are recorded as http.route="${HTTP_ROUTE_OVERFLOW}".`;

  it(`keeps ${MAX_HTTP_ROUTES} routes, as request durations do, and records the rest as ${HTTP_ROUTE_OVERFLOW} with one warning`, async () => {
    const extra = 20;
    const { hold, warnings } = await generated(MAX_HTTP_ROUTES + extra, 0);
    expect(hold.size).toBe(MAX_HTTP_ROUTES + 1);
    expect(hold.get('/region-0/orders/:id')).toBe(1);
    expect(hold.has(`/region-${MAX_HTTP_ROUTES}/orders/:id`)).toBe(false);
    expect(hold.get(HTTP_ROUTE_OVERFLOW)).toBe(extra);
    expect(warnings).toEqual([capLine]);
  }, 60_000);

  it('names a route in hold time only where request durations name it (bug: past 300 routes without queries, a querying route was _OTHER in one and named in the other)', async () => {
    const { hold, http } = await generated(MAX_HTTP_ROUTES + 10, MAX_HTTP_ROUTES);
    expect(http.get(HTTP_ROUTE_OVERFLOW)).toBe(10);
    expect([...hold.entries()]).toEqual([[HTTP_ROUTE_OVERFLOW, 10]]);
  }, 60_000);
});

describe('idle in transaction after work Poolscope does not time', () => {
  let r: Running;
  beforeAll(async () => {
    r = await start({ POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '300' });
  }, 30_000);
  afterAll(() => stop(r));

  // Found by running pg-cursor's and pg-query-stream's suites under the preload: a transaction that read a
  // cursor (or a stream, or ran a COPY) for longer than the threshold was flagged idle the moment it was done,
  // measured from its last plain query.
  it('a transaction reading a cursor is busy, not idle (bug: flagged as idle since BEGIN)', async () => {
    await get(r, '/pg/cursor-tx/900/50');
    await sleep(200);
    expect(await idleFlagged(r)).toBe(0);
    expect(lines(r, 'pg', 'idle')).toEqual([]);
    // Idle for longer than the threshold once the cursor is done: flagged, once.
    await get(r, '/pg/cursor-tx/900/700');
    await sleep(200);
    expect(await idleFlagged(r)).toBe(1);
    expect(lines(r, 'pg', 'idle')).toHaveLength(1);
  }, 30_000);

  // Found by reviewing the change below: a plain query that ended while a cursor ran reset the record of the
  // cursor, and the whole read was taken for idleness since that query's end.
  it('does not take a cursor started behind an unfinished query for idleness (bug: its 900 ms read counted)', async () => {
    const before = await idleFlagged(r);
    await get(r, '/pg/pipelined-cursor/50');
    await sleep(200);
    expect(await idleFlagged(r)).toBe(before);
  }, 30_000);

  // Found by running node-postgres's suites under the preload: after a cursor, idleness was measured from the
  // last sweep that found the connection busy, up to a sweep before the cursor's end, so a shorter gap counted
  // (15 ms against a 20 ms threshold). Here nothing sees the gap: it must not be taken for more than it was.
  it('does not take a gap after a cursor for longer than it was (bug: measured from before the cursor ended)', async () => {
    const before = await idleFlagged(r);
    await get(r, '/pg/cursor-blocked-idle/250');
    await sleep(200);
    expect(await idleFlagged(r)).toBe(before);
  }, 30_000);
});

// Found by a mutation audit: an idle failed transaction was held by no test.
describe('idle failed transactions (idle-in-transaction 300 ms)', () => {
  let r: Running;
  beforeAll(async () => {
    r = await start({ POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '300' });
  }, 30_000);
  afterAll(() => stop(r));

  it('flags a connection idle in a transaction whose statement failed, as PostgreSQL holds it open until ROLLBACK', async () => {
    await get(r, '/pg/failed-tx/700');
    expect(await idleFlagged(r)).toBe(1);
  }, 30_000);
});

// With source maps on, the preload's frames point into its sources (src/), not dist/: they were kept then.
describe.each([[], ['--enable-source-maps']])('stack capture (node %s)', (...nodeArgs: string[]) => {
  let r: Running;
  beforeAll(async () => {
    // Routes off here: leaks are still counted, per pool only.
    r = await start({ POOLSCOPE_LEAK_STACK: 'true', POOLSCOPE_LEAK_THRESHOLD: '400', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '0' }, nodeArgs);
  }, 30_000);
  afterAll(() => stop(r));

  it('logs where each library\'s leaked connection was acquired, only when opted in', async () => {
    await Promise.all(LIBRARIES.map((lib) => get(r, `/${lib}/hold/1200`)));
    await sleep(200);
    const s = await scrapeUrl(r.metricsUrl);
    for (const lib of LIBRARIES) {
      expect(find(s, 'poolscope_pool_leaks_total', poolLabel(lib)).map((x) => [x.labels.http_route, x.value])).toEqual([[undefined, 1]]);
      const logged = lines(r, lib, 'leak');
      expect(logged, lib).toHaveLength(1);
      expect(logged[0]).toContain('Acquired at:');
      // The application's own frame, not only the pool's.
      expect(logged[0]).toMatch(/at .*hold .*leaks-app\.mjs:\d+/);
      // Poolscope's own frames are left out, from the bundled preload as from the unbundled modules.
      expect(logged[0]).not.toContain(fileURLToPath(new URL('../dist/', import.meta.url)));
      expect(logged[0]).not.toContain(fileURLToPath(new URL('../src/', import.meta.url)));
      expect(logged[0]).not.toContain('by GET');
    }
    expect(find(s, 'poolscope_pool_hold_time_seconds_count')).toEqual([]);
    expect(find(s, 'poolscope_pool_idle_in_transaction_total')).toEqual([]);
  }, 30_000);
});

describe('settings', () => {
  it('defaults to leaks at 60 s, idle-in-transaction at 10 s, stack and routes off; a bad value is one warning with its fallback', async () => {
    const { normalizeConfig } = await import('../src/config.js');
    const d = normalizeConfig({}, {}).config;
    expect([d.leakThresholdMillis, d.idleInTransactionThresholdMillis, d.leakStackTrace, d.poolRoutes]).toEqual([60_000, 10_000, false, false]);
    const off = normalizeConfig({}, { POOLSCOPE_LEAK_THRESHOLD: '0', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '0' }).config;
    expect([off.leakThresholdMillis, off.idleInTransactionThresholdMillis]).toEqual([0, 0]);
    const bad = normalizeConfig({ idleInTransactionThresholdMillis: -1 }, { POOLSCOPE_LEAK_THRESHOLD: '5', POOLSCOPE_POOL_ROUTES: 'yes' });
    expect(bad.config.leakThresholdMillis).toBe(60_000);
    expect(bad.config.idleInTransactionThresholdMillis).toBe(10_000);
    expect(bad.config.poolRoutes).toBe(false);
    expect(bad.warnings).toEqual([
      "poolscope: POOLSCOPE_LEAK_THRESHOLD '5' is not 0 (off) or an integer from 10 to 2147483647 (ms); using 60000.",
      "poolscope: option idleInTransactionThresholdMillis '-1' is not 0 (off) or an integer from 10 to 2147483647 (ms); using 10000.",
      "poolscope: POOLSCOPE_POOL_ROUTES 'yes' is not 'true' or 'false'; using false.",
    ]);
  });
});

describe('leak messages', () => {
  // Bug: durations were printed to a tenth of a second, so a 20 ms threshold read "checked out for 0.0 s
  // (leak threshold 0.0 s)".
  it('print durations under a second in milliseconds (bug: "0.0 s (leak threshold 0.0 s)")', async () => {
    const { lines, logger } = capturedLog();
    const detector = new LeakDetector({ leakThresholdMillis: 20, idleInTransactionThresholdMillis: 0, stackTrace: false, routes: false }, logger);
    const pool = new ObservedPool('held', 'pg-pool', () => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
    detector.poolOpened(pool);
    pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 1, 2);
    await new Promise((r) => setTimeout(r, 40));
    detector.sweep();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/checked out for \d{2,3} ms \(leak threshold 20 ms\)/);
  });

  it('say when the connection of a held checkout has closed since, as the pool keeps its place until release', async () => {
    const { lines, logger } = capturedLog();
    const detector = new LeakDetector({ leakThresholdMillis: 20, idleInTransactionThresholdMillis: 0, stackTrace: false, routes: false }, logger);
    const pool = new ObservedPool('held', 'pg-pool', () => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
    detector.poolOpened(pool);
    pool.probe.acquired({ _queryable: false }, performance.now(), 0, 'idle', undefined, 1, 2);
    await new Promise((r) => setTimeout(r, 40));
    detector.sweep();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('Its connection has closed since; the pool keeps its place until it is released.');
  });

  // Found by a mutation audit: with the detector's own limit gone, the logger's still held the lines to one a
  // minute, but the next line's "N more" lost every leak of that minute but one.
  it('say one leak a minute per pool by themselves, keeping count of the others for the next line', async () => {
    const lines: string[] = [];
    const keep = (m: string) => { lines.push(m); };
    const unlimited = createLogger(0, { warn: keep, info: keep, error: () => undefined, debug: () => undefined, verbose: () => undefined });
    const detector = new LeakDetector({ leakThresholdMillis: 20, idleInTransactionThresholdMillis: 0, stackTrace: false, routes: false }, unlimited);
    const pool = new ObservedPool('leaky', 'pg-pool', () => ({ used: 2, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
    detector.poolOpened(pool);
    pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 1, 2);
    await new Promise((r) => setTimeout(r, 40));
    detector.sweep();
    pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 2, 2);
    await new Promise((r) => setTimeout(r, 40));
    detector.sweep();
    expect(lines).toHaveLength(1);
  });
});

// Found by a helper: a pool ended (pg-pool's end(), knex.destroy(), Sequelize's close()) while a connection it
// handed out sat idle inside a transaction vanished at the call, as did its leak and idle transaction; the end
// itself waited on that connection for good, the shutdown that hangs on held locks.
describe('a pool ended while a connection is checked out', () => {
  interface Look { metrics: string; database: { pools: Array<{ used: number }> } }

  /** end-while-held.mjs for `lib` under the preload, to its end: the report it printed. */
  async function endWhileHeld<T>(lib: string, env: Record<string, string> = {}): Promise<T> {
    const port = await freePort();
    const { code, stdout, stderr } = await runToExit(process.execPath, ['--import', REGISTER, fileURLToPath(new URL('./fixtures/end-while-held.mjs', import.meta.url))], {
      env: { ...process.env, DATABASE_URL, LIB: lib, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port), ...env },
      killAfterMs: 20_000,
    });
    expect(code, stderr).toBe(0);
    const line = stdout.split('\n').find((l) => l.startsWith('REPORT '));
    expect(line, stdout + stderr).toBeDefined();
    return JSON.parse(line!.slice(7)) as T;
  }

  const usedNow = (look: Look) => find(parseExposition(look.metrics), 'db_client_connection_count', { db_client_connection_state: 'used' }).map((s) => s.value);

  it.each(['pg', 'knex', 'sequelize'])('%s: stays seen, with its leak and idle transaction, until its last connection closes (bug: it vanished at end())', async (lib) => {
    const { during, after } = await endWhileHeld<Record<'during' | 'after', Look>>(lib,
      { HOLD_MS: '1200', POOLSCOPE_LEAK_THRESHOLD: '200', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '200' });
    const samples = parseExposition(during.metrics);
    expect(usedNow(during)).toEqual([1]);
    expect(find(samples, 'poolscope_pool_leaks_total').map((s) => s.value)).toEqual([1]);
    expect(find(samples, 'poolscope_pool_idle_in_transaction_total').map((s) => s.value)).toEqual([1]);
    expect(during.database.pools.map((p) => p.used)).toEqual([1]);
    // Once its last connection closed, the pool has ended, and its series went with it.
    expect(find(parseExposition(after.metrics), 'db_client_connection_count')).toEqual([]);
    expect(after.database.pools).toEqual([]);
  });

  // Found by a helper: pg-pool drops a connection that failed to open without a 'remove' event, so a pool ended
  // while it was opening one kept its name until a scrape, and a service retrying its start counted up `#2`, `#3`.
  it('frees the name of a pg pool ended while its connection was being refused (bug: the next pools were #2, #3, #4)', async () => {
    expect((await endWhileHeld<{ names: string[] }>('pg-failing-connect')).names).toEqual(['127.0.0.1:1/nowhere']);
  });

  // Review: sequelize-pool goes on serving after destroyAllNow() without a drain (a Lambda's `finally`), and the
  // pool was taken as ended for good once its last connection went.
  it('keeps a Sequelize pool emptied by destroyAllNow() without a drain, which goes on serving (review: gone for good)', async () => {
    const { during } = await endWhileHeld<{ during: Look }>('sequelize-flush');
    expect(usedNow(during)).toEqual([1]);
    expect(during.database.pools.map((p) => p.used)).toEqual([1]);
  });
});
