// Pool libraries that are not pg-pool: knex (tarn) and Sequelize (sequelize-pool), against a real
// PostgreSQL. Each library is imported after the instrumentation exists, as `--import` would arrange, so
// its pool class is the hooked one; the gauges must equal the library's own counters at the same instant.
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { find, inProcess, value, waitFor } from './helpers.js';

const url = inject('databaseUrl');
const u = new URL(url);
const target = `${u.hostname}:${u.port}${u.pathname}`;
const connection = { host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), database: u.pathname.slice(1) };

let ps: ReturnType<typeof inProcess>;
let knexFactory: typeof import('knex').default;
let SequelizeCtor: typeof import('sequelize').Sequelize;

beforeAll(async () => {
  ps = inProcess({ localAggregation: true });
  knexFactory = (await import('knex')).default;
  SequelizeCtor = (await import('sequelize')).Sequelize;
  return () => ps.close();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f().catch(() => undefined)));
});

const pool = (name: string) => ({ db_client_connection_pool_name: name });

/** A counter's value now, 0 when absent: pools to the same target share a name, so tests compare deltas. */
async function counterNow(name: string, labels: Record<string, string>): Promise<number> {
  const found = find(await ps.scrape(), name, labels);
  return found.length === 1 ? found[0]!.value : 0;
}

function deferred() {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => { release = resolve; });
  return { promise, release };
}

describe('knex (tarn)', () => {
  function newKnex(poolOptions: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 4, ...poolOptions }, ...extra });
    cleanups.push(() => k.destroy());
    return k;
  }

  it('reports its pool as host:port/database with gauges equal to tarn\'s counters while saturated', async () => {
    const creates0 = await counterNow('db_client_connection_create_time_seconds_count', pool(target));
    const waits0 = await counterNow('db_client_connection_wait_time_seconds_count', pool(target));
    const uses0 = await counterNow('db_client_connection_use_time_seconds_count', pool(target));
    const k = newKnex();
    await k.raw('select 1');
    const gate = deferred();
    const held = Array.from({ length: 4 }, () => k.transaction(async (trx) => { await trx.raw('select 1'); await gate.promise; }));
    const tarn = k.client.pool;
    await waitFor(() => tarn.numUsed() === 4 || undefined);
    // knex builders run when awaited: `then` starts them.
    const queued = Array.from({ length: 3 }, () => k.raw('select 2').then((r) => r));
    await waitFor(() => tarn.numPendingAcquires() === 3 || undefined);

    const s = await ps.scrape();
    expect(value(s, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'used' }))
      .toBe(tarn.numUsed() + tarn.numPendingCreates());
    expect(value(s, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'idle' })).toBe(tarn.numFree());
    expect(value(s, 'db_client_connection_pending_requests', pool(target))).toBe(3);
    expect(value(s, 'db_client_connection_max', pool(target))).toBe(4);
    expect(value(s, 'poolscope_pool_utilization_ratio', pool(target))).toBe(1);

    gate.release();
    await Promise.all([...held, ...queued]);
    const after = await ps.scrape();
    expect(value(after, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'used' })).toBe(0);
    expect(value(after, 'db_client_connection_pending_requests', pool(target))).toBe(0);
    // Every acquire was timed, every release ended a use, every connection was timed once.
    const waits = value(after, 'db_client_connection_wait_time_seconds_count', pool(target)) - waits0;
    expect(waits).toBe(8);
    expect(value(after, 'db_client_connection_use_time_seconds_count', pool(target)) - uses0).toBe(waits);
    expect(value(after, 'db_client_connection_create_time_seconds_count', pool(target)) - creates0).toBe(4);
    // Queries through the pool carry its name.
    const queries = find(after, 'db_client_operation_duration_seconds_count', { ...pool(target), db_operation_name: 'select' });
    expect(queries.length + find(after, 'db_client_operation_duration_seconds_count', { ...pool(target), db_operation_name: 'SELECT' }).length)
      .toBeGreaterThan(0);
  });

  it('counts each acquire timeout exactly once', async () => {
    const timeouts0 = await counterNow('db_client_connection_timeouts_total', pool(target));
    const k = newKnex({ max: 1 }, { acquireConnectionTimeout: 150 });
    const gate = deferred();
    const held = k.transaction(async () => { await gate.promise; });
    await waitFor(() => k.client.pool.numUsed() === 1 || undefined);
    const results = await Promise.allSettled([1, 2, 3].map(() => k.raw('select 1').then((r) => r)));
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    gate.release();
    await held;
    const s = await ps.scrape();
    expect(value(s, 'db_client_connection_timeouts_total', pool(target)) - timeouts0).toBe(3);
  });

  it('drops the pool\'s series when knex is destroyed, and takes a user-chosen name', async () => {
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 2 } });
    await k.raw('select 1');
    expect(ps.instrumentation.monitorPool(k.client.pool, { name: 'orders' })).toBe('orders');
    let s = await ps.scrape();
    expect(value(s, 'db_client_connection_max', pool('orders'))).toBe(2);
    await k.destroy();
    s = await ps.scrape();
    expect(find(s, 'db_client_connection_max', pool('orders'))).toEqual([]);
  });

  // Found by a new user's audit: monitorPool() returned undefined for a knex or Sequelize pool named before
  // its first connection, though the name was kept and the README said it returns the reported name.
  it('returns the name a knex or Sequelize pool is given before its first connection, and reports it under that name', async () => {
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 3 } });
    cleanups.push(() => k.destroy());
    const q = new SequelizeCtor(connection.database, connection.user, '', {
      dialect: 'postgres', host: connection.host, port: connection.port, logging: false, pool: { min: 0, max: 5 },
    });
    cleanups.push(() => q.close());
    expect(ps.instrumentation.monitorPool(k.client.pool, { name: 'early-knex' })).toBe('early-knex');
    const sequelizePool = (q.connectionManager as unknown as { pool: unknown }).pool;
    expect(ps.instrumentation.monitorPool(sequelizePool, { name: 'early-sequelize' })).toBe('early-sequelize');
    await k.raw('select 1');
    await q.query('select 1');
    const s = await ps.scrape();
    expect(value(s, 'db_client_connection_max', pool('early-knex'))).toBe(3);
    expect(value(s, 'db_client_connection_max', pool('early-sequelize'))).toBe(5);
  });
});

describe('Sequelize (sequelize-pool)', () => {
  function newSequelize(poolOptions: Record<string, unknown> = {}) {
    const s = new SequelizeCtor(connection.database, connection.user, '', {
      dialect: 'postgres', host: connection.host, port: connection.port, logging: false,
      pool: { min: 0, max: 4, ...poolOptions },
    });
    cleanups.push(() => s.close());
    return s;
  }

  it('reports its pool with gauges equal to sequelize-pool\'s counters while saturated', async () => {
    const creates0 = await counterNow('db_client_connection_create_time_seconds_count', pool(target));
    const waits0 = await counterNow('db_client_connection_wait_time_seconds_count', pool(target));
    const uses0 = await counterNow('db_client_connection_use_time_seconds_count', pool(target));
    const sq = newSequelize();
    await sq.query('select 1');
    const gate = deferred();
    const held = Array.from({ length: 4 }, () => sq.transaction(async () => { await gate.promise; }));
    const sp = (sq.connectionManager as unknown as { pool: { using: number; available: number; waiting: number; size: number } }).pool;
    await waitFor(() => sp.using === 4 || undefined);
    const queued = Array.from({ length: 2 }, () => sq.query('select 2'));
    await waitFor(() => sp.waiting === 2 || undefined);

    const s = await ps.scrape();
    expect(value(s, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'used' })).toBe(sp.size - sp.available);
    expect(value(s, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'idle' })).toBe(sp.available);
    expect(value(s, 'db_client_connection_pending_requests', pool(target))).toBe(2);
    expect(value(s, 'db_client_connection_max', pool(target))).toBe(4);

    gate.release();
    await Promise.all([...held, ...queued]);
    const after = await ps.scrape();
    expect(value(after, 'db_client_connection_count', { ...pool(target), db_client_connection_state: 'used' })).toBe(0);
    expect(value(after, 'db_client_connection_create_time_seconds_count', pool(target)) - creates0).toBe(4);
    const waits = value(after, 'db_client_connection_wait_time_seconds_count', pool(target)) - waits0;
    expect(waits).toBeGreaterThanOrEqual(7);
    expect(value(after, 'db_client_connection_use_time_seconds_count', pool(target)) - uses0).toBe(waits);
    expect(find(after, 'db_client_operation_duration_seconds_count', pool(target)).length).toBeGreaterThan(0);
  });

  it('counts each acquire timeout exactly once, and drops the pool when closed', async () => {
    const timeouts0 = await counterNow('db_client_connection_timeouts_total', pool(target));
    const sq = newSequelize({ max: 1, acquire: 150 });
    const gate = deferred();
    const held = sq.transaction(async () => { await gate.promise; });
    const sp = (sq.connectionManager as unknown as { pool: { using: number } }).pool;
    await waitFor(() => sp.using === 1 || undefined);
    const results = await Promise.allSettled([sq.query('select 1'), sq.query('select 1')]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    gate.release();
    await held;
    let s = await ps.scrape();
    expect(value(s, 'db_client_connection_timeouts_total', pool(target)) - timeouts0).toBe(2);
    await sq.close();
    s = await ps.scrape();
    expect(find(s, 'db_client_connection_max', pool(target))).toEqual([]);
  });

  it('types a failed connection by the SQLSTATE Sequelize wraps (bug: every failure was SequelizeConnectionError)', async () => {
    const pg = (await import('pg')).default;
    const admin = new pg.Client(connection);
    await admin.connect();
    try {
      await admin.query("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'seq_one') THEN CREATE ROLE seq_one LOGIN; END IF; END $$");
      await admin.query('ALTER ROLE seq_one CONNECTION LIMIT 1');
    } finally {
      await admin.end();
    }
    const sq = new SequelizeCtor(connection.database, 'seq_one', '', {
      dialect: 'postgres', host: connection.host, port: connection.port, logging: false, pool: { min: 0, max: 2 },
    });
    cleanups.push(() => sq.close());
    await sq.query('select 1');
    const name = (await ps.scrape()).find((x) => x.name === 'db_client_connection_max' && x.labels.db_client_connection_pool_name?.startsWith(target))
      ?.labels.db_client_connection_pool_name;
    const errors0 = await counterNow('poolscope_pool_errors_total', { ...pool(name!), error_type: '53300' });
    const gate = deferred();
    const held = sq.transaction(async () => { await gate.promise; });
    const second = await sq.transaction(async () => undefined).then(() => undefined, (err: { parent?: { code?: string } }) => err);
    gate.release();
    await held;
    // The role's one connection is held: the second connect is refused with 53300, wrapped by Sequelize.
    expect(second?.parent?.code).toBe('53300');
    const s = await ps.scrape();
    expect(value(s, 'poolscope_pool_errors_total', { ...pool(name!), error_type: '53300' }) - errors0).toBe(1);
    expect(find(s, 'poolscope_pool_errors_total', { error_type: 'SequelizeConnectionError' })).toEqual([]);
  });
});

describe('sequelize-pool used directly', () => {
  it('keeps the caller\'s factory: class methods, live max/min, writes through this (bug: a spread copy lost all three and `new Pool(new MyFactory())` threw)', async () => {
    const { Pool } = await import('sequelize-pool');
    const pg = (await import('pg')).default;
    class PgFactory {
      name = 'class-factory';
      max = 1;
      min = 0;
      destroyed = 0;
      async create() {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        return c;
      }
      async destroy(c: InstanceType<typeof pg.Client>) {
        this.destroyed++;
        await c.end();
      }
      validate() {
        return true;
      }
    }
    const creates0 = await counterNow('db_client_connection_create_time_seconds_count', pool(target));
    const factory = new PgFactory();
    const p = new Pool(factory as never);
    cleanups.push(async () => { await p.drain(); await p.destroyAllNow(); });
    factory.max = 3;
    expect(p.maxSize).toBe(3);
    const c = await p.acquire();
    await (c as InstanceType<typeof pg.Client>).query('SELECT 1');
    await p.destroy(c);
    expect(factory.destroyed).toBe(1);
    // Still observed: the create was timed for the pool of its target.
    expect(await counterNow('db_client_connection_create_time_seconds_count', pool(target))).toBe(creates0 + 1);
  });

  it('works with a frozen factory and with a class whose methods and getters use #private fields (bugs: a Proxy broke both; an object inheriting from the factory broke its getters)', async () => {
    const { Pool } = await import('sequelize-pool');
    const pg = (await import('pg')).default;
    type PgClient = InstanceType<typeof pg.Client>;
    class PrivateFactory {
      readonly #url = url;
      #destroyed = 0;
      readonly #max = 2;
      name = 'private-factory';
      get max() { return this.#max; }
      min = 0;
      async create() { const c = new pg.Client({ connectionString: this.#url }); await c.connect(); return c; }
      async destroy(c: PgClient) { this.#destroyed++; await c.end(); }
      validate() { return this.#url !== ''; }
      destroyedCount() { return this.#destroyed; }
    }
    const frozen = Object.freeze({
      name: 'frozen-factory', max: 1, min: 0,
      create: async () => { const c = new pg.Client({ connectionString: url }); await c.connect(); return c; },
      destroy: async (c: PgClient) => { await c.end(); },
      validate: () => true,
    });
    const createsToTarget = async () => find(await ps.scrape(), 'db_client_connection_create_time_seconds_count')
      .filter((x) => x.labels.db_client_connection_pool_name!.startsWith(target)).reduce((n, x) => n + x.value, 0);
    const creates0 = await createsToTarget();
    const priv = new PrivateFactory();
    for (const factory of [priv, frozen]) {
      const p = new Pool(factory as never);
      cleanups.push(async () => { await p.drain(); await p.destroyAllNow(); });
      const c = await p.acquire() as PgClient;
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await p.destroy(c);
    }
    expect(priv.destroyedCount()).toBe(1);
    // Both pools live at once: the second is named `<target>#2`.
    expect(await createsToTarget()).toBe(creates0 + 2);
  });
});

/** The prototype in `o`'s chain that defines `key` itself: the library's class, below Poolscope's subclass. */
function definingProto(o: object, key: string): Record<string, any> {
  for (let p = Object.getPrototypeOf(o); p !== null; p = Object.getPrototypeOf(p)) {
    if (Object.prototype.hasOwnProperty.call(p, key)) return p;
  }
  throw new Error(`no prototype defines ${key}`);
}

/** Spies on `proto[key]` until the returned function restores it; returns the spy's call count reader. */
function spyOn(proto: Record<string, any>, key: string): { calls: () => number; restore: () => void } {
  const original = proto[key];
  let calls = 0;
  proto[key] = function (this: unknown, ...args: unknown[]) { calls++; return original.apply(this, args); };
  return { calls: () => calls, restore: () => { proto[key] = original; } };
}

describe('pools as their libraries made them', () => {
  // Bug: the instance wrappers called the methods they found at attach time, so a spy or patch put on the
  // library's prototype afterwards (sinon.stub, jest.spyOn, another agent) was never reached; sequelize-pool's
  // wrappers were anonymous.
  it('reach spies put on tarn\'s and sequelize-pool\'s prototypes after the pool was made, with names and arities kept (bug: attach-time originals, anonymous wrappers)', async () => {
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 1 } });
    cleanups.push(() => k.destroy());
    await k.raw('SELECT 1');
    const tarnPool = (k.client as unknown as { pool: Record<string, any> }).pool;
    const tarnProto = definingProto(tarnPool, '_executeEventHandlers');
    for (const key of ['_executeEventHandlers', 'destroy']) {
      expect([tarnPool[key].name, tarnPool[key].length]).toEqual([tarnProto[key].name, tarnProto[key].length]);
    }
    const events = spyOn(tarnProto, '_executeEventHandlers');
    const destroy = spyOn(tarnProto, 'destroy');
    try {
      await k.raw('SELECT 1');
      await k.destroy();
    } finally {
      events.restore();
      destroy.restore();
    }
    expect(events.calls()).toBeGreaterThan(0);
    expect(destroy.calls()).toBe(1);

    const { Pool } = await import('sequelize-pool');
    const p = new Pool({ name: 'spied', max: 1, min: 0, create: async () => ({}), destroy: async () => undefined, validate: () => true });
    cleanups.push(async () => { await p.drain(); await p.destroyAllNow(); });
    const seqProto = definingProto(p, 'acquire');
    for (const key of ['acquire', 'release', 'destroy', 'drain', 'destroyAllNow']) {
      const own = (p as unknown as Record<string, any>)[key];
      expect([own.name, own.length]).toEqual([seqProto[key].name, seqProto[key].length]);
    }
    const acquire = spyOn(seqProto, 'acquire');
    const release = spyOn(seqProto, 'release');
    try {
      p.release(await p.acquire());
    } finally {
      acquire.restore();
      release.restore();
    }
    expect([acquire.calls(), release.calls()]).toEqual([1, 1]);
  });
});
