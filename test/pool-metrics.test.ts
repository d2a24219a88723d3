import pg from 'pg';
import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import path from 'node:path';
import { find, inProcess, REGISTER, ROOT, runToExit, value, waitFor } from './helpers.js';

const url = inject('databaseUrl');
const target = (() => {
  const u = new URL(url);
  return `${u.hostname}:${u.port}${u.pathname}`;
})();

// Every behaviour holds for both histogram paths: the SDK's instruments (PoolscopeInstrumentation inside an
// application's own SDK) and Poolscope's local aggregation (what startPoolscope and register use).
describe.each([false, true])('with localAggregation=%s', (localAggregation) => {
  let ps: ReturnType<typeof inProcess>;
  const pools: pg.Pool[] = [];
  function newPool(config: pg.PoolConfig = {}): pg.Pool {
    const pool = new pg.Pool({ connectionString: url, ...config });
    pools.push(pool);
    return pool;
  }

  beforeEach(() => {
    ps = inProcess({ localAggregation });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => (p.ending ? undefined : p.end().catch(() => undefined))));
    await ps.close();
  });

  describe('pool gauges', () => {
    it('reports used, idle and max read from the live pool at collection time', async () => {
      const pool = newPool({ max: 5 });
      const name = ps.instrumentation.monitorPool(pool)!;
      const a = await pool.connect();
      const b = await pool.connect();
      const c = await pool.connect();
      c.release();
      let s = await ps.scrape();
      const attrs = { db_client_connection_pool_name: name };
      expect(value(s, 'db_client_connection_count', { ...attrs, db_client_connection_state: 'used' })).toBe(2);
      expect(value(s, 'db_client_connection_count', { ...attrs, db_client_connection_state: 'idle' })).toBe(1);
      expect(value(s, 'db_client_connection_max', attrs)).toBe(5);
      expect(value(s, 'db_client_connection_idle_max', attrs)).toBe(5);
      expect(value(s, 'db_client_connection_idle_min', attrs)).toBe(0);
      expect(value(s, 'poolscope_pool_utilization_ratio', attrs)).toBeCloseTo(0.4);
      a.release();
      b.release();
      // Regression (stock instrumentation-pg): gauges fed by 'release' events stuck at used=1 on an idle pool.
      s = await ps.scrape();
      expect(value(s, 'db_client_connection_count', { ...attrs, db_client_connection_state: 'used' })).toBe(0);
      expect(value(s, 'db_client_connection_count', { ...attrs, db_client_connection_state: 'idle' })).toBe(3);
    });

    // Found by adversarial review: max was read as a count, so 2.5 (pg-pool allows 3) was reported as 2, and an
    // unbounded pool (Infinity, or a string that is no number) as 10: 12 connections were "120 %" and critical.
    it('reads max as pg-pool compares it: 2.5 allows 3, a numeric string is its number, Infinity has no limit (bug: 2, and 10)', async () => {
      const cases: Array<[unknown, number | undefined]> = [[2.5, 3], ['0x3', 3], [Infinity, undefined], ['lots', undefined]];
      for (const [max, reported] of cases) {
        const pool = newPool({ max: max as number });
        const name = ps.instrumentation.monitorPool(pool, { name: `max-${String(max)}` })!;
        const held = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
        const s = await ps.scrape();
        const attrs = { db_client_connection_pool_name: name };
        expect(value(s, 'db_client_connection_count', { ...attrs, db_client_connection_state: 'used' })).toBe(3);
        expect(find(s, 'db_client_connection_max', attrs).map((x) => x.value)).toEqual(reported === undefined ? [] : [reported]);
        expect(value(s, 'poolscope_pool_utilization_ratio', attrs)).toBe(reported === undefined ? 0 : 1);
        held.forEach((c) => c.release());
      }
    });

    it('counts pending requests while the pool is exhausted', async () => {
      const pool = newPool({ max: 2 });
      const name = ps.instrumentation.monitorPool(pool)!;
      const held = [await pool.connect(), await pool.connect()];
      const waiting = [pool.query('SELECT 1'), pool.query('SELECT 2'), pool.query('SELECT 3')];
      const s = await ps.scrape();
      const attrs = { db_client_connection_pool_name: name };
      expect(value(s, 'db_client_connection_pending_requests', attrs)).toBe(3);
      expect(value(s, 'poolscope_pool_utilization_ratio', attrs)).toBe(1);
      held.forEach((c) => c.release());
      await Promise.all(waiting);
      expect(value(await ps.scrape(), 'db_client_connection_pending_requests', attrs)).toBe(0);
    });

    it('labels a same-tick burst on idle connections by the path each request took, and its waiters in the pending peak (such a burst was once all "idle", and the peak missed it)', async () => {
      const pool = newPool({ max: 2 });
      const name = ps.instrumentation.monitorPool(pool)!;
      const warm = [await pool.connect(), await pool.connect()];
      warm.forEach((c) => c.release());
      const attrs = { db_client_connection_pool_name: name };
      const acquires = (s: Awaited<ReturnType<typeof ps.scrape>>, path: string) =>
        find(s, 'poolscope_pool_acquires_total', { ...attrs, poolscope_acquire_path: path }).reduce((a, x) => a + x.value, 0);
      const before = await ps.scrape();
      // Six requests in one tick on two idle connections: pg-pool queues all six and serves two on the next tick.
      const burst = Array.from({ length: 6 }, () => pool.query('SELECT pg_sleep(0.05)'));
      expect(pool.waitingCount).toBe(6);
      await Promise.all(burst);
      const s = await ps.scrape();
      expect(acquires(s, 'idle') - acquires(before, 'idle')).toBe(2);
      expect(acquires(s, 'queued') - acquires(before, 'queued')).toBe(4);
      expect(value(s, 'poolscope_pool_pending_peak', attrs)).toBe(6);
    });

    // Found by running TypeORM, Drizzle and Prisma apps under the preload: with one idle connection and room for
    // two more, a burst of eight was counted idle 1, new 7, where pg-pool served 1 idle, opened 2 and queued 5.
    it('labels a same-tick burst on a pool with room by what pg-pool does: idle, then new while it has room, then queued (bug: new for every request while below max)', async () => {
      const pool = newPool({ max: 3 });
      const name = ps.instrumentation.monitorPool(pool)!;
      (await pool.connect()).release();
      const attrs = { db_client_connection_pool_name: name };
      const acquires = (s: Awaited<ReturnType<typeof ps.scrape>>, path: string) =>
        find(s, 'poolscope_pool_acquires_total', { ...attrs, poolscope_acquire_path: path }).reduce((a, x) => a + x.value, 0);
      const before = await ps.scrape();
      await Promise.all(Array.from({ length: 8 }, () => pool.query('SELECT pg_sleep(0.05)')));
      const s = await ps.scrape();
      expect(pool.totalCount).toBe(3);
      expect([acquires(s, 'idle') - acquires(before, 'idle'), acquires(s, 'new') - acquires(before, 'new'), acquires(s, 'queued') - acquires(before, 'queued')])
        .toEqual([1, 2, 5]);
      expect(value(s, 'db_client_connection_create_time_seconds_count', attrs)).toBe(3);
    });

    it('reports overflow above the declared base size, and above min by default', async () => {
      const declared = newPool({ max: 4 });
      const byMin = newPool({ max: 4, min: 1 });
      const n1 = ps.instrumentation.monitorPool(declared, { name: 'declared', baseSize: 1 })!;
      const n2 = ps.instrumentation.monitorPool(byMin, { name: 'by-min' })!;
      const held = [await declared.connect(), await declared.connect(), await declared.connect(), await byMin.connect(), await byMin.connect()];
      const s = await ps.scrape();
      expect(value(s, 'poolscope_pool_overflow', { db_client_connection_pool_name: n1 })).toBe(2);
      expect(value(s, 'poolscope_pool_overflow', { db_client_connection_pool_name: n2 })).toBe(1);
      held.forEach((c) => c.release());
      // Open connections, idle ones included: released, they are still above the base (a mutation audit found
      // this unheld).
      const idle = await ps.scrape();
      expect(value(idle, 'poolscope_pool_overflow', { db_client_connection_pool_name: n1 })).toBe(2);
      expect(value(idle, 'poolscope_pool_overflow', { db_client_connection_pool_name: n2 })).toBe(1);
    });

    it('keeps two pools to the same server separate (regression: upstream contrib #3354 shared one counter)', async () => {
      const a = newPool({ max: 3 });
      const b = newPool({ max: 7 });
      const nameA = ps.instrumentation.monitorPool(a)!;
      const nameB = ps.instrumentation.monitorPool(b)!;
      expect(nameA).toBe(target);
      expect(nameB).toBe(`${target}#2`);
      const held = [await a.connect(), await a.connect()];
      const s = await ps.scrape();
      expect(value(s, 'db_client_connection_count', { db_client_connection_pool_name: nameA, db_client_connection_state: 'used' })).toBe(2);
      expect(value(s, 'db_client_connection_count', { db_client_connection_pool_name: nameB, db_client_connection_state: 'used' })).toBe(0);
      expect(value(s, 'db_client_connection_max', { db_client_connection_pool_name: nameB })).toBe(7);
      held.forEach((c) => c.release());
    });

    it('names a connectionString pool host:port/database and never includes the user or password', async () => {
      const u = new URL(url);
      u.username = 'postgres';
      u.password = 's3cr3t-pw';
      const pool = new pg.Pool({ connectionString: u.toString() });
      pools.push(pool);
      const name = ps.instrumentation.monitorPool(pool)!;
      expect(name).toBe(target);
      const text = await ps.scrapeText();
      expect(text).not.toContain('s3cr3t-pw');
      expect(text).not.toContain('postgres@');
    });

    it('uses the name given through monitorPool or the poolName option', async () => {
      const named = newPool({ poolName: 'orders' } as pg.PoolConfig);
      expect(ps.instrumentation.monitorPool(named)).toBe('orders');
      const explicit = newPool();
      expect(ps.instrumentation.monitorPool(explicit, { name: 'reports' })).toBe('reports');
    });

    // Found by adversarial review: a pool name is written into log lines, and a newline in it forged a line.
    it('replaces control characters in a pool name, given or derived (bug: a newline forged a log line)', async () => {
      const named = newPool({ poolName: 'orders\nFAKE LOG LINE \u001b[31mred' } as pg.PoolConfig);
      expect(ps.instrumentation.monitorPool(named)).toBe('orders?FAKE LOG LINE ?[31mred');
      expect(ps.instrumentation.monitorPool(newPool(), { name: 'x\ry\u0085z' })).toBe('x?y?z');
      expect(ps.instrumentation.monitorPool(newPool({ connectionString: undefined, host: '127.0.0.1', port: 5432, database: 'db\nx' }))).toBe('127.0.0.1:5432/db?x');
    });

    it('stops reporting a pool once it has ended, and frees its name', async () => {
      const pool = newPool();
      const name = ps.instrumentation.monitorPool(pool)!;
      await pool.query('SELECT 1');
      expect(find(await ps.scrape(), 'db_client_connection_max', { db_client_connection_pool_name: name })).toHaveLength(1);
      await pool.end();
      expect(find(await ps.scrape(), 'db_client_connection_max', { db_client_connection_pool_name: name })).toHaveLength(0);
      expect(ps.registry.size).toBe(0);
      expect(ps.instrumentation.monitorPool(newPool())).toBe(name);
    });

    it('frees a pool name at end(), so pools churned between scrapes reuse one set of series', async () => {
      for (let i = 0; i < 5; i++) {
        const pool = newPool({ max: 1 });
        expect(ps.instrumentation.monitorPool(pool)).toBe(target);
        await pool.query('SELECT 1');
        await pool.end();
      }
      const s = await ps.scrape();
      const names = new Set(find(s, 'db_client_connection_wait_time_seconds_count').map((x) => x.labels.db_client_connection_pool_name));
      expect([...names]).toEqual([target]);
      // The name's histograms count every pool that had it, ended ones included (the README's limitation on
      // ended pools points users at them); the acquires counter, a series of the pool's own, left with it.
      const byName = { db_client_connection_pool_name: target };
      expect(value(s, 'db_client_connection_wait_time_seconds_count', byName)).toBe(5);
      expect(value(s, 'db_client_connection_use_time_seconds_count', byName)).toBe(5);
      expect(value(s, 'db_client_connection_create_time_seconds_count', byName)).toBe(5);
      expect(find(s, 'db_client_operation_duration_seconds_count', byName).reduce((n, x) => n + x.value, 0)).toBe(5);
      expect(find(s, 'poolscope_pool_acquires_total', byName)).toEqual([]);
    });

    it('registers a pool once however often it is monitored', async () => {
      const pool = newPool();
      const first = ps.instrumentation.monitorPool(pool);
      expect(ps.instrumentation.monitorPool(pool)).toBe(first);
      expect(ps.registry.size).toBe(1);
    });
  });

  describe('acquire timing and failures', () => {
    // Found by differential fuzzing of pg-pool with and without the preload.
    it('calls on an ended pool were counted as failed connection attempts (error_type pool_ended), though none was made', async () => {
      const pool = newPool({ max: 2 });
      const name = ps.instrumentation.monitorPool(pool)!;
      await pool.query('SELECT 1');
      const before = await ps.scrape();
      const acquires = find(before, 'poolscope_pool_acquires_total', { db_client_connection_pool_name: name }).reduce((n, x) => n + x.value, 0);
      await pool.end();
      const calls = await Promise.allSettled([pool.connect(), pool.query('SELECT 1'),
        new Promise((resolve, reject) => pool.connect((err) => (err ? reject(err) : resolve(undefined))))]);
      expect(calls.map((r) => r.status === 'rejected' && (r.reason as Error).message)).toEqual(Array(3).fill('Cannot use a pool after calling end on the pool'));
      const s = await ps.scrape();
      expect(find(s, 'poolscope_pool_errors_total', { db_client_connection_pool_name: name })).toEqual([]);
      expect(find(s, 'poolscope_pool_acquires_total', { db_client_connection_pool_name: name }).reduce((n, x) => n + x.value, 0)).toBeLessThanOrEqual(acquires);
    });

    it('counts every acquire timeout exactly once', async () => {
      const pool = newPool({ max: 1, connectionTimeoutMillis: 100 });
      const name = ps.instrumentation.monitorPool(pool)!;
      const held = await pool.connect();
      const results = await Promise.allSettled([
        pool.connect(),
        pool.query('SELECT 1'),
        new Promise((resolve, reject) => pool.connect((err, client, done) => (err ? reject(err) : (done(), resolve(client))))),
        pool.query('SELECT 2'),
      ]);
      expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
      held.release();
      const s = await ps.scrape();
      expect(value(s, 'db_client_connection_timeouts_total', { db_client_connection_pool_name: name })).toBe(4);
      expect(find(s, 'poolscope_pool_errors_total')).toHaveLength(0);
    });

    it('records wait, use and create time', async () => {
      const pool = newPool({ max: 1 });
      const name = ps.instrumentation.monitorPool(pool)!;
      const client = await pool.connect();
      const queued = pool.connect();
      await new Promise((r) => setTimeout(r, 120));
      client.release();
      (await queued).release();
      const s = await ps.scrape();
      const attrs = { db_client_connection_pool_name: name };
      expect(value(s, 'db_client_connection_wait_time_seconds_count', attrs)).toBe(2);
      expect(value(s, 'db_client_connection_wait_time_seconds_sum', attrs)).toBeGreaterThanOrEqual(0.1);
      expect(value(s, 'db_client_connection_use_time_seconds_count', attrs)).toBe(2);
      expect(value(s, 'db_client_connection_use_time_seconds_sum', attrs)).toBeGreaterThanOrEqual(0.1);
      expect(value(s, 'db_client_connection_create_time_seconds_count', attrs)).toBe(1);
      expect(value(s, 'db_client_connection_create_time_seconds_bucket', { ...attrs, le: '+Inf' })).toBe(1);
    });

    it('names the pool on the queries of its onConnect hook (bug: they were counted without the pool\'s name)', async () => {
      const onConnect = async (client: pg.PoolClient) => { await client.query("SET application_name = 'hooked'"); };
      const pool = newPool({ max: 2, onConnect } as pg.PoolConfig);
      const name = ps.instrumentation.monitorPool(pool, { name: 'hooked' })!;
      await Promise.all([pool.query('SELECT 1'), pool.query('SELECT 1')]);
      const s = await ps.scrape();
      const sets = find(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SET' });
      expect(sets.map((x) => [x.labels.db_client_connection_pool_name, x.value])).toEqual([[name, 2]]);
    });

    it('times a connection checked out while its pool is renamed, under the new name (bug: the probe lost it)', async () => {
      const pool = newPool({ max: 2 });
      ps.instrumentation.monitorPool(pool);
      const client = await pool.connect();
      const renamed = ps.instrumentation.monitorPool(pool, { name: 'renamed-while-held' });
      expect(renamed).toBe('renamed-while-held');
      await new Promise((r) => setTimeout(r, 60));
      client.release();
      const s = await ps.scrape();
      const attrs = { db_client_connection_pool_name: 'renamed-while-held' };
      expect(value(s, 'db_client_connection_use_time_seconds_count', attrs)).toBe(1);
      expect(value(s, 'db_client_connection_use_time_seconds_sum', attrs)).toBeGreaterThanOrEqual(0.05);
    });

    it('counts failed connects by error.type', async () => {
      const u = new URL(url);
      u.port = '1'; // nothing listens on port 1
      const pool = new pg.Pool({ connectionString: u.toString() });
      pools.push(pool);
      const name = ps.instrumentation.monitorPool(pool)!;
      await expect(pool.query('SELECT 1')).rejects.toThrow();
      const s = await ps.scrape();
      expect(value(s, 'poolscope_pool_errors_total', { db_client_connection_pool_name: name, error_type: 'ECONNREFUSED' })).toBe(1);
    });

    // Found by adversarial review: Poolscope's observation of emit() and release() threw into the application
    // on hand-made arguments; thrown from release, it left the pool short a connection and the next
    // connect() waited forever.
    it('takes hand-made emit() and release() arguments as pg-pool does: no throw, no lost connection (bug: TypeError, then a hung connect)', async () => {
      const pool = newPool({ max: 1 });
      ps.instrumentation.monitorPool(pool);
      await pool.query('SELECT 1');
      for (const arg of [undefined, 42, null, Object.freeze({})]) expect(pool.emit('connect', arg)).toBe(false);
      const revoked = Proxy.revocable({}, {});
      revoked.revoke();
      expect(() => pool.emit('error', revoked.proxy, undefined)).toThrow(); // pg-pool's own: no 'error' listener
      const client = await pool.connect();
      client.release(revoked.proxy as unknown as Error);
      const next = await Promise.race([pool.connect(), new Promise<'hung'>((r) => setTimeout(() => r('hung'), 2_000))]);
      expect(next).not.toBe('hung');
      (next as pg.PoolClient).release();
    });

    // Found by adversarial review: a wrapper called detached failed on reading its own state, with an error
    // of its own instead of pg's.
    it('lets a method called detached fail with pg\'s own error (bug: "Cannot convert undefined or null to object")', async () => {
      const pool = newPool();
      ps.instrumentation.monitorPool(pool);
      const client = await pool.connect();
      client.release();
      const pgError = /^Cannot read properties of undefined \(reading '[A-Za-z_]+'\)$/;
      const { connect, end, emit } = pool;
      const { query } = client;
      for (const detached of [() => connect(), () => end(), () => emit('connect'), () => query('SELECT 1')]) {
        let message = '';
        try {
          const r = detached() as unknown;
          if (r instanceof Promise) await r;
        } catch (err) {
          message = (err as Error).message;
        }
        expect(message).toMatch(pgError);
      }
    });

    it('counts idle-client errors without adding an error listener to the pool', async () => {
      const pool = newPool();
      const name = ps.instrumentation.monitorPool(pool)!;
      expect(pool.listenerCount('error')).toBe(0);
      const seen: Error[] = [];
      pool.on('error', (err) => seen.push(err));
      const client = await pool.connect();
      const pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      client.release();
      const killer = new pg.Client({ connectionString: url });
      await killer.connect();
      await killer.query('SELECT pg_terminate_backend($1)', [pid]);
      await killer.end();
      await waitFor(() => seen.length > 0 || undefined);
      const s = await ps.scrape();
      expect(value(s, 'poolscope_pool_errors_total', { db_client_connection_pool_name: name, error_type: '57P01' })).toBe(1);
    });
  });

  describe('query duration', () => {
    it('records db.operation.name and error.type on both the promise and the callback path', async () => {
      const pool = newPool();
      const name = ps.instrumentation.monitorPool(pool)!;
      await pool.query('SELECT 1');
      await pool.query('  /* hint */ select 2');
      await expect(pool.query('SELECT * FROM no_such_table')).rejects.toThrow(/does not exist/);
      const client = await pool.connect();
      await expect(client.query('SELECT 1/0')).rejects.toThrow(/division by zero/);
      await new Promise<void>((resolve) => {
        client.query('SELEKT 1', (err: Error | null) => {
          expect(err).toBeTruthy();
          resolve();
        });
      });
      await new Promise<void>((resolve) => pool.query('UPDATE no_such_table SET x = 1', () => resolve()));
      client.release();
      const s = await ps.scrape();
      const base = { db_client_connection_pool_name: name, db_system_name: 'postgresql' };
      const count = 'db_client_operation_duration_seconds_count';
      expect(find(s, count, { ...base, db_operation_name: 'SELECT' }).filter((x) => !x.labels.error_type)[0]?.value).toBe(2);
      expect(value(s, count, { ...base, db_operation_name: 'SELECT', error_type: '42P01' })).toBe(1);
      expect(value(s, count, { ...base, db_operation_name: 'SELECT', error_type: '22012', db_response_status_code: '22012' })).toBe(1);
      expect(value(s, count, { ...base, db_operation_name: 'UPDATE', error_type: '42P01' })).toBe(1);
      const syntax = find(s, count, { ...base, error_type: '42601' });
      expect(syntax).toHaveLength(1);
      expect(syntax[0]!.labels.db_operation_name).toBeUndefined();
    });

    it('never puts SQL text into attributes', async () => {
      const pool = newPool();
      ps.instrumentation.monitorPool(pool);
      await pool.query("SELECT 'very-secret-literal' AS x");
      await pool.query({ text: 'SELECT $1::text AS y', values: ['another-secret'], name: 'named-stmt' });
      const text = await ps.scrapeText();
      expect(text).not.toMatch(/very-secret-literal|another-secret|named-stmt|AS x/);
    });
  });
});

// Found by a review of the README's promises: a pool the preload attached as it was built kept counting overflow
// from its min, the base size given to monitorPool() dropped without a word.
describe('monitorPool(pool, { baseSize }) on a pool attached as it was built', () => {
  it('reports overflow above that base size, and warns once of an invalid one, which changes nothing (bug: ignored)', async () => {
    const r = await runToExit(process.execPath, ['--import', REGISTER, path.join(ROOT, 'test', 'fixtures', 'base-size.mjs')], {
      env: { ...process.env, DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: '0', POOLSCOPE_HEALTH_ENDPOINTS: 'false' },
      killAfterMs: 30_000,
    });
    const line = /^RESULT (.*)$/m.exec(r.stdout);
    expect(line, r.stderr).not.toBeNull();
    expect(JSON.parse(line![1]!)).toEqual({ name: target, before: 3, declared: 2, afterInvalid: 2 });
    expect(r.stderr.trim().split('\n')).toEqual([
      'poolscope: monitorPool() baseSize -3 is not an integer from 0 to 262143; ignored (POOLSCOPE_POOL_BASE_SIZE, else the pool\'s min, is used).',
    ]);
  });
});
