// The connection budget, Poolscope's side, against a real PostgreSQL (max_connections=200, see
// scripts/postgres.mjs): every pool library names its server on `poolscope.pool.info`, and a pool whose
// max alone is more than the server accepts gets one start-up warning, read with one statement per server
// on a short-lived connection of its own, invisible to the application's metrics and never on its connections.
import type { DiagLogger } from '@opentelemetry/api';
import net from 'node:net';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { normalizeConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { ServerLimitCheck, SERVER_LIMIT_QUERY } from '../src/recorders/server-limit.js';
import { find, inProcess, spawnApp, value, waitFor } from './helpers.js';

const url = inject('databaseUrl');
const u = new URL(url);
const server = { server_address: u.hostname, server_port: u.port };
const connection = { host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), database: u.pathname.slice(1) };
const kQueryOriginal = Symbol.for('poolscope.query-patched');

let ps: ReturnType<typeof inProcess>;
let knexFactory: typeof import('knex').default;
let SequelizeCtor: typeof import('sequelize').Sequelize;
/** Statements run through pg's unpatched query: only Poolscope's own check goes that way. */
const rawQueries: string[] = [];
let maxConnections = 0;
let reservedConnections = 0;

beforeAll(async () => {
  ps = inProcess({ localAggregation: true });
  knexFactory = (await import('knex')).default;
  SequelizeCtor = (await import('sequelize')).Sequelize;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const { rows } = await c.query(`SELECT current_setting('max_connections')::int AS max,
    current_setting('superuser_reserved_connections')::int + coalesce(current_setting('reserved_connections', true)::int, 0) AS reserved`);
  await c.end();
  maxConnections = rows[0].max;
  reservedConnections = rows[0].reserved;
  return () => ps.close();
});

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((f) => f().catch(() => undefined)));
});

function newPool(config: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, ...config });
  cleanups.push(() => (pool.ending ? Promise.resolve() : pool.end()));
  return pool;
}

/** Counts Poolscope's own statements by wrapping pg's original query, which only the check calls directly. */
function countRawQueries(): () => void {
  const proto = pg.Client.prototype as unknown as Record<symbol, unknown>;
  const original = proto[kQueryOriginal] as (this: unknown, ...a: unknown[]) => unknown;
  expect(typeof original, 'pg.Client#query is patched by Poolscope').toBe('function');
  Object.defineProperty(proto, kQueryOriginal, {
    configurable: true, enumerable: false, writable: true,
    value: function (this: unknown, ...args: unknown[]) { rawQueries.push(String(args[0])); return original.apply(this, args); },
  });
  return () => Object.defineProperty(proto, kQueryOriginal, { configurable: true, enumerable: false, writable: true, value: original });
}

/** Server labels of the live pools named after their target (`host:port[/database]`), i.e. not named by a test. */
function unnamedInfo(samples: Awaited<ReturnType<typeof ps.scrape>>): Array<Record<string, string>> {
  return find(samples, 'poolscope_pool_info')
    .filter((i) => i.labels.db_client_connection_pool_name!.startsWith(`${u.hostname}:${u.port}`))
    .map(({ labels: { server_address, server_port } }) => ({ server_address: server_address!, server_port: server_port! }));
}

describe('poolscope.pool.info', () => {
  it('names the server of a pg-pool, one series per pool, gone when the pool ends', async () => {
    const pool = newPool({ max: 3 });
    const name = ps.instrumentation.monitorPool(pool, { name: 'info-pg' })!;
    await pool.query('SELECT 1');
    const s = await ps.scrape();
    const info = find(s, 'poolscope_pool_info', { db_client_connection_pool_name: name });
    expect(info).toHaveLength(1);
    expect(info[0]!.labels).toEqual({ db_client_connection_pool_name: 'info-pg', ...server });
    expect(info[0]!.value).toBe(1);
    // The pool metrics themselves keep their semantic-convention labels: the server is on the info series only.
    expect(find(s, 'db_client_connection_max', { db_client_connection_pool_name: name })[0]!.labels).toEqual({ db_client_connection_pool_name: 'info-pg' });
    await pool.end();
    expect(find(await ps.scrape(), 'poolscope_pool_info', { db_client_connection_pool_name: name })).toEqual([]);
  });

  it('names the server of a knex (tarn) pool once its first connection shows the target', async () => {
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: 4 } });
    cleanups.push(() => k.destroy());
    await k.raw('select 1');
    expect(unnamedInfo(await ps.scrape())).toEqual([server]);
  });

  it('names the server of a Sequelize (sequelize-pool) pool', async () => {
    const seq = new SequelizeCtor({ dialect: 'postgres', ...connection, username: connection.user, logging: false, pool: { max: 3, min: 0 } });
    cleanups.push(() => seq.close());
    await seq.query('select 1');
    expect(unnamedInfo(await ps.scrape())).toEqual([server]);
  });

  it('lets Prometheus sum pool max per server: joining max and info by pool gives each pool\'s max with its server', async () => {
    const a = newPool({ max: 7 });
    const b = newPool({ max: 5 });
    ps.instrumentation.monitorPool(a, { name: 'sum-a' });
    ps.instrumentation.monitorPool(b, { name: 'sum-b' });
    await Promise.all([a.query('SELECT 1'), b.query('SELECT 1')]);
    const s = await ps.scrape();
    let sum = 0;
    for (const i of find(s, 'poolscope_pool_info', server)) {
      if (!['sum-a', 'sum-b'].includes(i.labels.db_client_connection_pool_name!)) continue;
      sum += value(s, 'db_client_connection_max', { db_client_connection_pool_name: i.labels.db_client_connection_pool_name! });
    }
    expect(sum).toBe(12);
  });
});

describe('start-up warning: one pool larger than its server', () => {
  let restore: () => void;
  beforeAll(() => { restore = countRawQueries(); });
  afterAll(() => restore());

  /** A check of its own, added to the running instrumentation, with its own warnings. */
  function freshCheck(): { check: ServerLimitCheck; warnings: string[] } {
    const warnings: string[] = [];
    const capture: DiagLogger = {
      error: (m) => warnings.push(m), warn: (m) => warnings.push(m), info: () => undefined, debug: () => undefined, verbose: () => undefined,
    };
    const check = new ServerLimitCheck(createLogger(60_000, capture));
    ps.instrumentation.addRecorder(check);
    // Removed after its test: a check left on would probe the next test's new servers and databases too, and
    // take connections from a role or database limited to a few.
    cleanups.push(async () => (ps.instrumentation as unknown as { _events: { remove(o: object): void } })._events.remove(check));
    return { check, warnings };
  }
  const oversized = (warnings: string[]) => warnings.filter((w) => w.includes(' may open '));

  it('PostgreSQL does not announce max_connections at start-up, so it has to be asked', async () => {
    const c = new pg.Client({ connectionString: url });
    const announced: string[] = [];
    (c as unknown as { connection: { on(e: string, f: (m: { parameterName: string }) => void): void } })
      .connection.on('parameterStatus', (m) => announced.push(m.parameterName));
    await c.connect();
    await c.end();
    expect(announced).toContain('server_version');
    expect(announced).not.toContain('max_connections');
    expect(announced).not.toContain('superuser_reserved_connections');
  });

  it('warns once for a pg-pool, naming the pool, its max and what the server allows; one statement per server, in no metric', async () => {
    const { warnings } = freshCheck();
    const allowed = maxConnections - reservedConnections;
    const before = rawQueries.length;
    const big = newPool({ max: maxConnections + 50 });
    const small = newPool({ max: 5 });
    ps.instrumentation.monitorPool(big, { name: 'too-big' });
    ps.instrumentation.monitorPool(small, { name: 'fits' });
    for (let i = 0; i < 5; i++) await Promise.all([big.query('SELECT 1'), small.query('SELECT 1')]);
    await waitFor(() => oversized(warnings).length > 0 || undefined, 10_000);
    expect(oversized(warnings)).toEqual([expect.stringContaining(`pool too-big may open ${maxConnections + 50} connections`)]);
    expect(warnings[0]).toContain(`${u.hostname}:${u.port} accepts at most ${allowed} from an ordinary role`);
    expect(warnings[0]).toContain(`max_connections ${maxConnections} minus ${reservedConnections} reserved`);
    expect(warnings[0]).not.toContain(`${connection.user}@`);
    // Both pools go to one server: one statement, whatever the number of pools and releases.
    expect(rawQueries.slice(before)).toEqual([SERVER_LIMIT_QUERY]);
    // The application's own five queries only: the check is no query of the pool.
    const ops = find(await ps.scrape(), 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: 'too-big' });
    expect(ops.reduce((n, o) => n + o.value, 0)).toBe(5);
    // A pool opened later against the same server is compared at once, without asking again.
    const later = newPool({ max: allowed + 1 });
    ps.instrumentation.monitorPool(later, { name: 'too-big-later' });
    await later.query('SELECT 1');
    expect(oversized(warnings).filter((w) => w.includes('pool too-big-later may open'))).toHaveLength(1);
    // Exactly at the limit is fine.
    const exact = newPool({ max: allowed });
    ps.instrumentation.monitorPool(exact, { name: 'exactly-allowed' });
    await exact.query('SELECT 1');
    expect(oversized(warnings)).toHaveLength(2);
    expect(rawQueries.slice(before)).toEqual([SERVER_LIMIT_QUERY]);
  });

  // Found by an operator-scenario review: a pool of max 8 for a role limited to 5 failed 38 % of its calls
  // with 53300, and the check, which read max_connections only, said nothing.
  it('compares with the role\'s and the database\'s CONNECTION LIMIT, naming neither role nor user (bug: max_connections only)', async () => {
    const { warnings } = freshCheck();
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      await admin.query('DROP DATABASE IF EXISTS poolscope_budget_db');
      await admin.query('DROP ROLE IF EXISTS poolscope_budget_role');
      await admin.query('CREATE ROLE poolscope_budget_role LOGIN CONNECTION LIMIT 3');
      await admin.query('CREATE DATABASE poolscope_budget_db CONNECTION LIMIT 2');
      await admin.query('GRANT ALL ON DATABASE poolscope_budget_db TO poolscope_budget_role');
    } finally {
      await admin.end();
    }
    const as = (user: string, database: string) => { const t = new URL(url); t.username = user; t.pathname = `/${database}`; return t.href; };
    const roleLimited = newPool({ connectionString: as('poolscope_budget_role', connection.database), max: 8 });
    ps.instrumentation.monitorPool(roleLimited, { name: 'role-limited' });
    await roleLimited.query('SELECT 1');
    await waitFor(() => oversized(warnings).length > 0 || undefined, 10_000);
    expect(oversized(warnings)).toEqual([expect.stringContaining(`pool role-limited may open 8 connections, but ${u.hostname}:${u.port} accepts at most 3 (its role's CONNECTION LIMIT`)]);
    // The limited role opens a pool to the limited database: the database's limit is the tighter one.
    const databaseLimited = newPool({ connectionString: as('poolscope_budget_role', 'poolscope_budget_db'), max: 3 });
    ps.instrumentation.monitorPool(databaseLimited, { name: 'database-limited' });
    await databaseLimited.query('SELECT 1');
    await waitFor(() => oversized(warnings).length > 1 || undefined, 10_000);
    expect(oversized(warnings)[1]).toContain('pool database-limited may open 3 connections, but');
    expect(oversized(warnings)[1]).toContain("accepts at most 2 (the database's CONNECTION LIMIT");
    expect(warnings.join('\n')).not.toContain('poolscope_budget_role');
    await Promise.all([roleLimited.end(), databaseLimited.end()]);
  });

  // Found by review: keyed by server and database only, the first released pool's role limit was applied to
  // every pool there: a pool of an unlimited role beside a limited one was warned, or the limited one was not.
  it('compares each pool with its own role\'s limit, whichever pool releases first (bug: the first role\'s limit for all)', async () => {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      for (const role of ['poolscope_budget_tight', 'poolscope_budget_free']) await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.query('CREATE ROLE poolscope_budget_tight LOGIN CONNECTION LIMIT 2');
      await admin.query('CREATE ROLE poolscope_budget_free LOGIN');
    } finally {
      await admin.end();
    }
    const as = (user: string) => { const t = new URL(url); t.username = user; return t.href; };
    for (const first of ['free', 'tight']) {
      const { warnings } = freshCheck();
      const pools = {
        tight: newPool({ connectionString: as('poolscope_budget_tight'), max: 5 }),
        free: newPool({ connectionString: as('poolscope_budget_free'), max: 5 }),
      };
      ps.instrumentation.monitorPool(pools.tight, { name: `tight-${first}-first` });
      ps.instrumentation.monitorPool(pools.free, { name: `free-${first}-first` });
      const second = first === 'free' ? 'tight' : 'free';
      await pools[first as 'free' | 'tight'].query('SELECT 1');
      await new Promise((r) => setTimeout(r, 300));
      await pools[second as 'free' | 'tight'].query('SELECT 1');
      await waitFor(() => oversized(warnings).length > 0 || undefined, 10_000);
      await new Promise((r) => setTimeout(r, 500));
      expect(oversized(warnings), `${first} first`).toEqual([expect.stringContaining(`pool tight-${first}-first may open 5 connections, but`)]);
      await Promise.all([pools.tight.end(), pools.free.end()]);
    }
  });

  it('asks once a knex (tarn) connection is handed back', async () => {
    const { warnings } = freshCheck();
    const before = rawQueries.length;
    const k = knexFactory({ client: 'pg', connection, pool: { min: 0, max: maxConnections + 1 } });
    cleanups.push(() => k.destroy());
    await k.raw('select 1');
    await k.raw('select 2');
    await waitFor(() => oversized(warnings).length > 0 || undefined, 10_000);
    expect(oversized(warnings)).toEqual([expect.stringContaining(` may open ${maxConnections + 1} connections, but ${u.hostname}:${u.port} accepts`)]);
    expect(rawQueries.slice(before)).toEqual([SERVER_LIMIT_QUERY]);
  });

  it('asks once a Sequelize (sequelize-pool) connection is handed back', async () => {
    const { warnings } = freshCheck();
    const before = rawQueries.length;
    const seq = new SequelizeCtor({
      dialect: 'postgres', ...connection, username: connection.user, logging: false, pool: { max: maxConnections + 2, min: 0 },
    });
    cleanups.push(() => seq.close());
    await seq.query('select 1');
    await seq.query('select 2');
    await waitFor(() => oversized(warnings).length > 0 || undefined, 10_000);
    expect(oversized(warnings)).toEqual([expect.stringContaining(` may open ${maxConnections + 2} connections, but ${u.hostname}:${u.port} accepts`)]);
    expect(rawQueries.slice(before)).toEqual([SERVER_LIMIT_QUERY]);
  });

  it('never disturbs the application: a caller handed that connection at once gets its own result', async () => {
    const { warnings } = freshCheck();
    const before = rawQueries.length;
    const pool = newPool({ max: 1 });
    ps.instrumentation.monitorPool(pool, { name: 'handed-over' });
    // max 1 and two callers: the second is handed the connection the check runs on.
    const [r1, r2] = await Promise.all([pool.query('SELECT 1 AS one'), pool.query('SELECT 2 AS two')]);
    expect(r1.rows).toEqual([{ one: 1 }]);
    expect(r2.rows).toEqual([{ two: 2 }]);
    // The check asks on its own connection, after the first release: wait for it, so it is this test's.
    await waitFor(() => rawQueries.length > before || undefined, 10_000);
    expect(oversized(warnings)).toEqual([]);
  });

  it('runs nothing on the application\'s connections (bug: it asked on the released one, and pg warned of a query queued behind the app\'s)', async () => {
    freshCheck();
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const before = rawQueries.length;
      const pool = newPool({ max: 1 });
      ps.instrumentation.monitorPool(pool, { name: 'own-connection' });
      // pg's idle-timeout test: a query fired and the client released at once, before the query ends.
      await new Promise<void>((resolve, reject) => {
        pool.connect((err, client, done) => {
          if (err) return reject(err);
          client!.query('SELECT 1').then(() => resolve(), reject);
          done();
        });
      });
      // The next caller is handed a connection with nothing of ours queued or running on it.
      const client = await pool.connect();
      const c = client as unknown as { _queryQueue: unknown[]; _activeQuery: unknown };
      expect(c._queryQueue.length + (c._activeQuery ? 1 : 0)).toBe(0);
      await client.query('BEGIN');
      await client.query('CREATE TEMP TABLE budget_probe (x int) ON COMMIT DROP');
      await Promise.all([client.query('INSERT INTO budget_probe VALUES (1)'), client.query('INSERT INTO budget_probe VALUES (2)')]);
      expect((await client.query('SELECT count(*)::int AS n FROM budget_probe')).rows).toEqual([{ n: 2 }]);
      await client.query('COMMIT');
      client.release();
      await waitFor(() => rawQueries.length > before || undefined, 10_000);
      expect(rawQueries.slice(before)).toEqual([SERVER_LIMIT_QUERY]);
      await new Promise((r) => setImmediate(r));
      expect(warnings.map((w) => `${w.name}: ${w.message}`)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('never probes a server the application reaches through a stream of its own (bug: it sent the password to the configured host)', async () => {
    const { warnings } = freshCheck();
    // What the parameters name: a server that records whatever reaches it.
    const received: Buffer[] = [];
    const decoy = net.createServer((socket) => { socket.on('data', (d) => received.push(d)); socket.on('error', () => undefined); });
    await new Promise<void>((resolve) => decoy.listen(0, '127.0.0.1', resolve));
    const decoyPort = (decoy.address() as net.AddressInfo).port;
    try {
      const before = rawQueries.length;
      const pool = newPool({
        connectionString: `postgres://${u.username}:stream-secret@127.0.0.1:${decoyPort}${u.pathname}`,
        max: maxConnections + 5,
        // Where the connection really goes, as a cloud SQL connector or a tunnel does it.
        stream: () => {
          const socket = new net.Socket();
          const connect = socket.connect.bind(socket) as (port: number, host: string) => net.Socket;
          // pg calls connect(port, host) with the configured ones; this stream goes to the real server.
          (socket as unknown as { connect: () => net.Socket }).connect = () => connect(Number(u.port), u.hostname);
          return socket;
        },
      } as pg.PoolConfig);
      ps.instrumentation.monitorPool(pool, { name: 'own-stream' });
      for (let i = 0; i < 3; i++) expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      await new Promise((r) => setTimeout(r, 300));
      expect(Buffer.concat(received).toString('latin1')).not.toContain('stream-secret');
      expect(received).toEqual([]);
      expect(rawQueries.slice(before)).toEqual([]);
      expect(oversized(warnings)).toEqual([]);
    } finally {
      await new Promise((r) => decoy.close(r));
    }
  });

  // The giving up used to be said at debug level only (an operator-scenario review: the check was asked for, and
  // its connection refused with 53300 was the very sign to tell).
  it('gives up after three refused attempts on one server with one warning, and never rejects (bug: said at debug level only)', async () => {
    const { warnings } = freshCheck();
    const rejections: unknown[] = [];
    const onRejection = (r: unknown) => rejections.push(r);
    process.on('unhandledRejection', onRejection);
    // A proxy to the test server that forwards the application's connections and refuses the check's.
    let forwarding = true;
    const proxy = net.createServer((socket) => {
      socket.on('error', () => undefined);
      if (!forwarding) return socket.destroy();
      const upstream = net.connect(Number(u.port), u.hostname);
      upstream.on('error', () => socket.destroy());
      socket.pipe(upstream).pipe(socket);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const proxyPort = (proxy.address() as net.AddressInfo).port;
    try {
      const before = rawQueries.length;
      for (let i = 0; i < 4; i++) {
        forwarding = true;
        const pool = newPool({ connectionString: `postgres://${u.username}@127.0.0.1:${proxyPort}${u.pathname}`, max: maxConnections + 9 });
        ps.instrumentation.monitorPool(pool, { name: `refused-${i}` });
        const { rows } = await pool.query('SELECT 3 AS three');
        // The check connects after the release that resolved this query: refused from here on.
        forwarding = false;
        expect(rows).toEqual([{ three: 3 }]);
        await new Promise((r) => setTimeout(r, 150));
        await pool.end();
      }
      await new Promise((r) => setTimeout(r, 200));
      expect(rejections).toEqual([]);
      // Refused before any statement: none was sent, and no warning was made up.
      expect(rawQueries.slice(before)).toEqual([]);
      expect(oversized(warnings)).toEqual([]);
      expect(warnings.filter((w) => w.includes('127.0.0.1:' + proxyPort))).toEqual([expect.stringMatching(new RegExp(
        `^poolscope: POOLSCOPE_SERVER_LIMIT_CHECK could not read the connection limits of 127\\.0\\.0\\.1:${proxyPort} \\((error [A-Z0-9]+|query failed)\\); not checked\\.$`))]);
    } finally {
      process.off('unhandledRejection', onRejection);
      await new Promise((r) => proxy.close(r));
    }
  });
});

describe('the serverLimitCheck setting', () => {
  it('is off by default (bug: on by default, its connection could take the slot the application needed), on with POOLSCOPE_SERVER_LIMIT_CHECK=true, and a bad value is one warning naming it', () => {
    expect(normalizeConfig({}, {}).config.serverLimitCheck).toBe(false);
    expect(normalizeConfig({}, { POOLSCOPE_SERVER_LIMIT_CHECK: 'true' }).config.serverLimitCheck).toBe(true);
    expect(normalizeConfig({ serverLimitCheck: false }, { POOLSCOPE_SERVER_LIMIT_CHECK: 'true' }).config.serverLimitCheck).toBe(false);
    const bad = normalizeConfig({}, { POOLSCOPE_SERVER_LIMIT_CHECK: 'maybe' });
    expect(bad.config.serverLimitCheck).toBe(false);
    expect(bad.warnings).toHaveLength(1);
    expect(bad.warnings[0]).toContain('POOLSCOPE_SERVER_LIMIT_CHECK');
  });

  it.each([
    ['warns under the preload with POOLSCOPE_SERVER_LIMIT_CHECK=true', { POOLSCOPE_SERVER_LIMIT_CHECK: 'true' }, true],
    ['is silent by default', {}, false],
  ])('%s', async (_what, env, expected) => {
    const app = await spawnApp('budget-script.mjs', {
      DATABASE_URL: url, OTEL_EXPORTER_PROMETHEUS_PORT: '0', POOL_MAX: String(maxConnections + 100), ...env,
    });
    const exit = await app.exit;
    expect(exit.code).toBe(0);
    expect(app.stdout()).toContain('answer=42');
    expect(app.stderr().includes(`may open ${maxConnections + 100} connections`), app.stderr()).toBe(expected);
  });
});

