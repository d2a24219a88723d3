// No password, user name or SQL text reaches a metric, label, health payload, log line or span, for every
// connection form pg accepts (URL, socket:, socket directory, query parameters, config objects, PG*
// environment variables, password functions), the forms pg mis-reads (libpq keyword/value strings,
// unencoded reserved characters in passwords) and every error path (authentication failures against a
// server that checks passwords, SQL errors that echo the statement, refused connections, TLS refusals).
//
// POOLSCOPE_DIST=/path/to/dist runs the spawned-app tests against another build.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort, startPostgres } from '../scripts/postgres.mjs';
import { queryTargetOf, targetOfClient, targetOfClientConfig } from '../src/adapters/pg-target.js';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { databaseErrorSummary } from '../src/export/database-errors.js';
import { redactingProcessor, redactSpan } from '../src/export/span-redaction.js';
import { defaultPoolName, resolvePoolTarget, type PoolTargetOptions } from '../src/pool-name.js';
import { killApps, ROOT, runToExit, spawnApp, waitFor, type SpawnedApp } from './helpers.js';

const require = createRequire(import.meta.url);
type Params = { host: string; port: number; database: string | undefined; user: string | undefined };
const ConnectionParameters = require('pg/lib/connection-parameters') as new (config: unknown) => Params;

const USER = 'u_SECRETUSER_x';
const PASS = 'p_SECRETPASS_x';
const SECRET = /SECRETUSER|SECRETPASS|SQLSECRET/i;

// ---------------------------------------------------------------------------------------------------------
// Generated forms
const reserved = fc.string({ unit: fc.constantFrom(...'ab1:@/?#%&= \'"[]+'), maxLength: 6 });
const secretUser = reserved.map((s) => `${USER}${s}`);
const secretPass = fc.oneof(reserved.map((s) => `${PASS}${s}`), reserved.map((s) => `1234${s}${PASS}`));
const encodeMaybe = (s: string, encode: boolean) => (encode ? encodeURIComponent(s) : s);
const hostArb = fc.constantFrom('db.example', '127.0.0.1', '[::1]', '%2Fvar%2Frun%2Fpostgresql', 'h-1', '');
const portArb = fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined });
const dbArb = fc.option(fc.constantFrom('orders', 'my db', 'x%2Fy', 'd@b', 'postgres'), { nil: undefined });

const urlForm = fc.record({
  scheme: fc.constantFrom('postgres', 'postgresql', 'socket', 'POSTGRES'),
  user: fc.option(secretUser, { nil: undefined }), pass: fc.option(secretPass, { nil: undefined }), encode: fc.boolean(),
  host: hostArb, port: portArb, db: dbArb,
  query: fc.subarray(['sslmode=disable', 'application_name=app', 'user=Q', 'password=P', 'sslpassword=P',
    'options=-c%20search_path%3Dx', 'host=%2Ftmp', 'port=6000', 'db=other']),
}).map(({ scheme, user, pass, encode, host, port, db, query }) => {
  const auth = user === undefined ? '' : `${encodeMaybe(user, encode)}${pass === undefined ? '' : `:${encodeMaybe(pass, encode)}`}@`;
  const q = query.map((p) => p.replace('=Q', `=${encodeURIComponent(USER)}`).replace('=P', `=${encodeMaybe(PASS + '&#', encode)}`));
  return `${scheme}://${auth}${host}${port === undefined ? '' : `:${port}`}${db === undefined ? '' : `/${db}`}${q.length ? `?${q.join('&')}` : ''}`;
});
const keywordValueForm = fc.tuple(secretUser, secretPass, dbArb).map(([u, p, d]) =>
  `host=db.example port=5433 user=${u} password='${p}'${d === undefined ? '' : ` dbname=${d}`}`);
const schemelessForm = fc.tuple(secretUser, secretPass, dbArb).map(([u, p, d]) => `${u}:${p}@db.example/${d ?? ''}`);
const socketDirForm = fc.tuple(fc.constantFrom('/var/run/postgresql', '/tmp'), dbArb, fc.boolean())
  .map(([dir, d, extra]) => `${dir}${d === undefined ? '' : ` ${d}`}${extra ? ` user=${USER} password=${PASS}` : ''}`);
const pastedForm = fc.tuple(fc.constantFrom('postgres://db.example/orders', 'postgresql://db.example'), secretPass)
  .map(([url, p]) => `${url} user=${USER} password=${p}`);
const connectionString = fc.oneof(urlForm, urlForm, keywordValueForm, schemelessForm, socketDirForm, pastedForm);

const configObject = fc.record({
  host: fc.option(fc.constantFrom('db.example', '/var/run/postgresql', '::1'), { nil: undefined }),
  port: fc.option(fc.oneof(fc.integer({ min: 1, max: 65535 }), fc.constantFrom('5433', '')), { nil: undefined }),
  database: fc.option(fc.constantFrom('orders', ''), { nil: undefined }),
  user: fc.option(secretUser, { nil: undefined }),
  password: fc.option(fc.oneof(secretPass, fc.constant(() => PASS)), { nil: undefined }),
}, { requiredKeys: [] });
const envArb = fc.record({
  PGHOST: fc.option(fc.constantFrom('envhost', '/run/pg'), { nil: undefined }),
  PGPORT: fc.option(fc.constantFrom('6543', 'x'), { nil: undefined }),
  PGDATABASE: fc.option(fc.constant('envdb'), { nil: undefined }),
  PGUSER: fc.option(secretUser, { nil: undefined }),
  PGPASSWORD: fc.option(secretPass, { nil: undefined }),
}, { requiredKeys: [] });

/** pg's own reading of `config` under `env`: what a client of this pool connects to. */
function pgTarget(config: unknown, env: Record<string, string | undefined>): Params | undefined {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (k.startsWith('PG')) delete process.env[k];
  delete process.env.USER;
  for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  try {
    return new ConnectionParameters(config);
  } catch {
    return undefined; // pg throws when a client of this pool connects
  } finally {
    for (const k of Object.keys(process.env)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

describe('pool target and name', () => {
  // pg-connection-string warns once about some sslmode values when pg (not Poolscope) parses them.
  beforeAll(() => { process.removeAllListeners('warning'); process.on('warning', () => {}); });

  it('the default pool name never contains a user name, password or query secret, for any generated form', () => {
    fc.assert(fc.property(connectionString, configObject, envArb, (cs, config, env) => {
      const name = defaultPoolName(resolvePoolTarget({ ...config, connectionString: cs } as PoolTargetOptions, env));
      expect(name).not.toMatch(SECRET);
    }), { numRuns: 3000 });
  });

  it('withholds the target of a client made before Poolscope saw pg, from a keyword/value string pg mis-reads (its password once reached span names and labels)', () => {
    const client = new pg.Client({ connectionString: `host=127.0.0.1 port=5432 user=someone password=${PASS}kv dbname=appdb` });
    // The fallback path: pg's own parameters, no target resolved by Poolscope when they were made.
    expect(Object.getOwnPropertySymbols((client as unknown as { connectionParameters: object }).connectionParameters)).toEqual([]);
    expect(targetOfClientConfig(client as never)).toEqual({ host: 'redacted', port: 5432, database: undefined, redacted: true });
    expect(queryTargetOf(client as never)).toEqual({});
    expect(JSON.stringify(targetOfClient(client as never))).not.toContain(PASS);
  });

  it('matches what pg connects to (host, port, configured database) whenever nothing is withheld', () => {
    let compared = 0;
    fc.assert(fc.property(fc.option(connectionString, { nil: undefined }), configObject, envArb, (cs, config, env) => {
      const options = { ...config, ...(cs === undefined ? {} : { connectionString: cs }) };
      const ours = resolvePoolTarget(options as PoolTargetOptions, env);
      const theirs = pgTarget(options, env);
      if (ours.redacted || theirs === undefined) return;
      compared++;
      expect(ours.host).toBe(theirs.host);
      expect(ours.port).toBe(Number.isNaN(theirs.port) ? 5432 : theirs.port);
      // Unconfigured, pg falls back to the user name: never reported.
      if (ours.database === undefined) expect(theirs.database === theirs.user || theirs.database === undefined).toBe(true);
      else expect(ours.database).toBe(theirs.database);
    }), { numRuns: 3000 });
    expect(compared).toBeGreaterThan(1000);
  });

  it.each([
    ['postgres://u_SECRETUSER_x:1234/p_SECRETPASS_x@db.example/orders', 'unencoded / in the password'],
    ['postgres://u_SECRETUSER_x:12?a=p_SECRETPASS_x@db.example/orders', 'unencoded ? in the password'],
    ['postgres://u_SECRETUSER_x:12#p_SECRETPASS_x@db.example/orders', 'unencoded # in the password'],
    ['postgres://u_SECRETUSER_x/x@db.example/orders', 'unencoded / in the user name'],
    ['host=db.example user=u_SECRETUSER_x password=p_SECRETPASS_x dbname=orders', 'a libpq keyword/value string'],
    ['u_SECRETUSER_x:p_SECRETPASS_x@db.example/orders', 'no scheme'],
    ['postgres://db.example/orders password=p_SECRETPASS_x', 'keywords pasted after a URL'],
  ])('withholds what pg would take from secrets: %s (%s)', (cs) => {
    const target = resolvePoolTarget({ connectionString: cs }, {});
    expect(target.redacted).toBe(true);
    expect(defaultPoolName(target)).not.toMatch(SECRET);
    // pg itself is fooled: its host, port or database hold a secret (the reason for withholding).
    const theirs = pgTarget({ connectionString: cs }, {});
    expect(`${theirs?.host}:${theirs?.port}/${theirs?.database}`).toMatch(/SECRETUSER|SECRETPASS|^base:|^u_/);
  });

  // Found by adversarial review: a connection URL, or user:password@host, given as the host (PGHOST or the
  // host option) became the pool name, password included, in labels, /health and log lines.
  it.each([
    [{ host: 'postgres://u_SECRETUSER_x:p_SECRETPASS_x@db.example:5432/app' }, {}, 'a URL in host'],
    [{ host: 'u_SECRETUSER_x:p_SECRETPASS_x@127.0.0.1' }, {}, 'userinfo in host'],
    [{}, { PGHOST: 'postgresql://u_SECRETUSER_x:p_SECRETPASS_x@db.example/app' }, 'a URL in PGHOST'],
  ] as Array<[PoolTargetOptions, Record<string, string>, string]>)('withholds a host that carries credentials: %j %j (%s) (bug: the password became the pool name)', (options, env) => {
    const target = resolvePoolTarget(options, env);
    expect(target).toMatchObject({ host: 'redacted', redacted: true });
    expect(defaultPoolName(target)).not.toMatch(SECRET);
  });

  // Found by a differential run: the config was spread whole, so a client's password getter (one that mints
  // an IAM token, say) ran twice per client under the preload, once without.
  it('reads no field of a client config but host, port and database, so the password getter runs only for pg (bug: read twice)', () => {
    const reads: string[] = [];
    const config = {
      connectionString: 'postgres://h:5433/db',
      get password() { reads.push('password'); return 'x'; },
      get user() { reads.push('user'); return 'u'; },
      get ssl() { reads.push('ssl'); return false; },
    };
    expect(resolvePoolTarget(config as PoolTargetOptions, {})).toEqual({ host: 'h', port: 5433, database: 'db' });
    expect(reads).toEqual([]);
  });

  it('reads PG* variables, socket directories and empty connection-string fields the way pg does', () => {
    expect(resolvePoolTarget({ connectionString: 'postgres://db.example', database: 'ignored' }, { PGDATABASE: 'envdb' }))
      .toEqual({ host: 'db.example', port: 5432, database: 'envdb' });
    expect(resolvePoolTarget({ connectionString: '/var/run/postgresql orders', port: 6000 }, {}))
      .toEqual({ host: '/var/run/postgresql', port: 6000, database: 'orders' });
    expect(resolvePoolTarget({ connectionString: 'socket:/var/run/pg?db=orders' }, { PGPORT: '6001' }))
      .toEqual({ host: '/var/run/pg', port: 6001, database: 'orders' });
    expect(resolvePoolTarget({ connectionString: 'postgres://u:p@h/db?host=%2Ftmp&port=7000&user=x@corp' }, {}))
      .toEqual({ host: '/tmp', port: 7000, database: 'db' });
    expect(resolvePoolTarget({ host: '', port: 0 } as PoolTargetOptions, { PGHOST: 'envhost', PGUSER: USER }))
      .toEqual({ host: 'envhost', port: 5432, database: undefined });
  });
});

describe('span redaction', () => {
  // Found by adversarial review: on a database span of the application's own, only the status message was
  // sanitized; the exception event kept PostgreSQL's message (which echoes values) and its events kept SQL.
  it('reduces a database span\'s exception events to the sanitized error and drops statements from its events (bug: message and SQL kept)', () => {
    const message = 'invalid input syntax for type integer: "LITSECRET"';
    const span = {
      name: 'own db work', kind: 0, instrumentationScope: { name: 'app' }, spanContext: () => ({ traceId: 't', spanId: 's', traceFlags: 1 }),
      attributes: { 'db.system.name': 'postgresql' }, status: { code: 2, message },
      events: [
        { name: 'exception', time: [0, 0], attributes: { 'exception.type': '22P02', 'exception.message': message, 'exception.stacktrace': `error: ${message}\n    at Parser.parseErrorMessage (parser.js:1:1)` } },
        { name: 'query', time: [0, 0], attributes: { 'db.statement': "SELECT 'LITSECRET'::int", 'db.operation.name': 'SELECT' } },
      ],
      links: [], startTime: [0, 0], endTime: [0, 0], duration: [0, 0], ended: true, resource: {}, droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0,
    } as unknown as ReadableSpan;
    const out = redactSpan(span, false);
    expect(JSON.stringify({ name: out.name, attributes: out.attributes, status: out.status, events: out.events })).not.toContain('LITSECRET');
    expect(out.events[0]!.attributes).toEqual({ 'exception.type': '22P02', 'exception.message': 'PostgreSQL error',
      'exception.stacktrace': '22P02: PostgreSQL error\n    at Parser.parseErrorMessage (parser.js:1:1)' });
    expect(out.events[1]!.attributes).toEqual({ 'db.operation.name': 'SELECT' });
  });
});

// Found by review: the first detection took any error with `sql`, or `query` and `params`, or a SQLSTATE-shaped
// code beside a severity, for a database error (a GraphQL client's error lost its message), and rewrote errors
// an application recorded through its own provider built from the same SDK class.
describe('database errors recorded on other spans', () => {
  const pgError = (message: string) => Object.assign(new Error(message), { name: 'error', severity: 'ERROR', code: '22P02', routine: 'pg_strtoint32', file: 'numutils.c', line: '1' });

  it('are recognised by pg\'s error fields, through wrappers, and nothing looser (bug: any `query` with `params`)', () => {
    const raw = pgError('invalid input syntax for type integer: "SECRET"');
    expect(databaseErrorSummary(raw)).toBe('PostgreSQL error, SQLSTATE 22P02');
    for (const key of ['cause', 'original', 'parent', 'driverError', 'nativeError']) {
      expect(databaseErrorSummary(Object.assign(new Error('wrapped'), { [key]: raw })), key).toBe('PostgreSQL error, SQLSTATE 22P02');
    }
    class DrizzleQueryError extends Error {}
    expect(databaseErrorSummary(new DrizzleQueryError('Failed query: select $1\nparams: SECRET'))).toBe('Database error');
    expect(databaseErrorSummary(Object.assign(new Error('x'), { name: 'PrismaClientKnownRequestError', code: 'P2002' }))).toBe('Database error');
    const own = [
      Object.assign(new Error('GraphQL request failed'), { query: '{ me { id } }', params: { id: 1 } }),
      Object.assign(new Error('report failed'), { sql: 'SELECT 1' }),
      Object.assign(new Error('charge failed'), { code: 'E1234', severity: 'error' }),
      new Proxy({}, { get() { throw new Error('hostile'); } }),
      'a string', null, 42,
    ];
    for (const e of own) expect(databaseErrorSummary(e)).toBeUndefined();
  });

  it('are rewritten on spans of Poolscope\'s provider only, not on an application\'s own provider of the same SDK (bug: rewritten there too)', async () => {
    const ours = new InMemorySpanExporter();
    const theirs = new InMemorySpanExporter();
    const poolscope = new BasicTracerProvider({ spanProcessors: [redactingProcessor(new SimpleSpanProcessor(ours), false)] });
    const app = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(theirs)] });
    for (const provider of [poolscope, app]) {
      const span = provider.getTracer('t').startSpan('work');
      span.recordException(pgError('invalid input syntax for type integer: "SECRET"'));
      span.recordException(Object.assign(new Error('GraphQL request failed'), { query: '{ me }', params: {} }));
      span.end();
    }
    const messages = (e: InMemorySpanExporter) => e.getFinishedSpans()[0]!.events.map((ev) => ev.attributes?.['exception.message']);
    expect(messages(ours)).toEqual(['PostgreSQL error, SQLSTATE 22P02', 'GraphQL request failed']);
    expect(messages(theirs)).toEqual(['invalid input syntax for type integer: "SECRET"', 'GraphQL request failed']);
    await Promise.all([poolscope.shutdown(), app.shutdown()]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Spawned apps: every output scanned
const DATABASE_URL = inject('databaseUrl');
const DIST = process.env.POOLSCOPE_DIST ?? path.join(ROOT, 'dist');
const PRELOAD = ['--import', path.join(DIST, 'register.js')];

// Found by a hostile-input review: with traces on, `GET /login?password=…` reached the HTTP server span's
// url.query as typed (upstream redacts only a few signature parameters).
describe('query strings in HTTP spans', () => {
  const apps: SpawnedApp[] = [];
  afterEach(() => killApps(apps));

  it('keep their keys and lose every value, in a real server span', async () => {
    const app = await spawnApp('rel-app.mjs', {
      DATABASE_URL, OTEL_TRACES_EXPORTER: 'console', OTEL_EXPORTER_PROMETHEUS_PORT: '0',
    }, PRELOAD);
    apps.push(app);
    // Review: upstream hands a bare token over as `token=`, which kept it as a key.
    const res = await fetch(`http://127.0.0.1:${app.port}/state?password=QSECRET1&user=alice%40example.com&flag&eyJhbGciOiJIUzI1NiJ9.QSECRET2`);
    expect(res.status).toBe(200);
    await waitFor(() => (app.stdout().includes("'url.query'") ? true : undefined), 10_000);
    app.child.kill('SIGTERM');
    await app.exit;
    expect(app.stdout()).toContain("'url.query': 'password=REDACTED&user=REDACTED&flag=&REDACTED'");
    expect(app.stdout()).not.toContain('QSECRET1');
    expect(app.stdout()).not.toContain('QSECRET2');
    expect(app.stdout()).not.toContain('alice');
  });

  it('are redacted the same way in url.full and the older http.target and http.url', () => {
    const span = {
      name: 'GET', kind: 2, instrumentationScope: { name: 'app' }, spanContext: () => ({ traceId: 't', spanId: 's', traceFlags: 1 }),
      attributes: { 'url.full': 'https://api.example/v1?api_key=K3Y&q=x#frag', 'http.target': '/a?token=T0K', 'http.url': 'http://h/p', 'url.query': '',
        // Review: a token sent as a bare key.
        'url.path': '/verify', 'http.route': '/verify' },
      status: { code: 0 }, events: [], links: [], startTime: [0, 0], endTime: [0, 0], duration: [0, 0], ended: true, resource: {},
      droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0,
    } as unknown as ReadableSpan;
    expect(redactSpan(span, true).attributes).toEqual({
      'url.full': 'https://api.example/v1?api_key=REDACTED&q=REDACTED#frag', 'http.target': '/a?token=REDACTED', 'http.url': 'http://h/p', 'url.query': '',
      'url.path': '/verify', 'http.route': '/verify',
    });
    const bare = { ...span, attributes: { 'url.query': 'eyJhbGciOiJIUzI1NiJ9.SECRETJWT&debug', 'url.full': 'http://h/verify?eyJhbGciOiJIUzI1NiJ9.SECRETJWT' } } as unknown as ReadableSpan;
    expect(redactSpan(bare, false).attributes).toEqual({ 'url.query': 'REDACTED&debug', 'url.full': 'http://h/verify?REDACTED' });
  });
});

// Found by a review of traces: instrumentation-express records the error a handler passes on, and PostgreSQL's
// message (bound values, role names; knex's with the statement in front, Drizzle's with statement and
// parameters) reached the exporter on the handler's span, as it did on a span the application recorded it on.
describe('database errors recorded on spans that are not database spans', () => {
  const apps: SpawnedApp[] = [];
  afterEach(() => killApps(apps));

  it('carry the SQLSTATE in place of the message, from pg, knex, Sequelize, Drizzle and a failed connect; an application\'s own error keeps its message', async () => {
    const secret = `DBERRSECRET${Math.random().toString(36).slice(2, 8)}`;
    const app = await spawnApp('db-errors-on-spans.mjs', {
      DATABASE_URL, SECRET: secret, OTEL_TRACES_EXPORTER: 'console', OTEL_EXPORTER_PROMETHEUS_PORT: '0',
    }, PRELOAD);
    apps.push(app);
    const routes = ['bound-value', 'raised', 'knex', 'sequelize', 'drizzle', 'wrong-user', 'own-span', 'app-error'];
    for (const route of routes) expect((await fetch(`http://127.0.0.1:${app.port}/${route}`)).status, route).toBe(500);
    await waitFor(() => (app.stdout().includes('APP-MESSAGE-KEPT') && app.stdout().includes("name: 'own work'") ? true : undefined), 10_000);
    app.child.kill('SIGTERM');
    await app.exit;
    const output = `${app.stdout()}\n${app.stderr()}`;
    const leaked = routes.filter((route) => output.includes(`${secret}-${route}`));
    expect(leaked).toEqual([]);
    expect(output).not.toContain('Failed query');
    // The errors were recorded, as what may be said of them.
    for (const code of ['22P02', 'P0001', '28000']) expect(output).toContain(`PostgreSQL error, SQLSTATE ${code}`);
    expect(output).toContain("'exception.type': 'SequelizeDatabaseError'");
    expect(output).toContain("message: 'APP-MESSAGE-KEPT'");
  }, 60_000);
});

describe('no secret in any output of an instrumented app', () => {
  const tag = Math.random().toString(36).slice(2, 8);
  const user = `${USER}${tag}`;
  const password = `${PASS}${tag}:@/?#%&= '"`;
  const sql = `SQLSECRET${tag}`;
  const apps: SpawnedApp[] = [];
  let secured: { url: string; port: number; dataDir: string; stop: () => Promise<void> };
  let trustPort: number;

  beforeAll(async () => {
    // A server that checks passwords (the shared one trusts everyone): scram for every role but postgres.
    secured = await startPostgres();
    const admin = new pg.Client({ connectionString: secured.url });
    await admin.connect();
    await admin.query(`CREATE ROLE ${pg.escapeIdentifier(user)} LOGIN PASSWORD ${pg.escapeLiteral(password)}`);
    await admin.query(`CREATE DATABASE appdb OWNER ${pg.escapeIdentifier(user)}`);
    writeFileSync(path.join(secured.dataDir, 'pg_hba.conf'),
      'local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n');
    await admin.query('SELECT pg_reload_conf()');
    await admin.end();
    trustPort = Number(new URL(DATABASE_URL).port);
  }, 90_000);
  afterAll(async () => { await secured?.stop(); });
  afterEach(async () => {
    for (const app of apps.splice(0)) {
      if (app.child.exitCode === null && app.child.signalCode === null) { app.child.kill('SIGKILL'); await app.exit; }
    }
  });

  const enc = () => `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
  const needles = () => [user, encodeURIComponent(user), password, encodeURIComponent(password), `SECRETUSER`, `SECRETPASS`, sql];

  async function scan(env: Record<string, string>) {
    const deadPort = await freePort();
    const p = secured.port;
    const configs = [
      { connectionString: `postgres://${enc()}@127.0.0.1:${p}/appdb` },                                   // URL, right password
      { connectionString: `postgresql://${enc()}@127.0.0.1:${p}/appdb?application_name=app&sslmode=disable` },
      { connectionString: `postgres://${encodeURIComponent(user)}:wrong${tag}@127.0.0.1:${p}/appdb` },      // authentication failure
      { connectionString: `postgres://127.0.0.1:${p}/appdb?user=${encodeURIComponent(user)}&password=${encodeURIComponent(password)}` },
      { connectionString: `postgres://${enc()}@127.0.0.1:${p}` },                                            // no database: user-named db
      { connectionString: `postgres://${enc()}@%2Ftmp%2Fnone/appdb` },                                      // socket directory (absent)
      { connectionString: `socket:/tmp/none?db=appdb&user=${encodeURIComponent(user)}` },
      { connectionString: `host=127.0.0.1 port=${p} user=${user} password=${password} dbname=appdb` },     // keyword/value: mis-read
      { connectionString: `postgres://${user}:1234/${PASS}${tag}@127.0.0.1:${p}/appdb` },                 // unencoded /: mis-read
      { host: '127.0.0.1', port: p, database: 'appdb', user, password },                                     // config object
      { host: '127.0.0.1', port: p, database: 'appdb', user, passwordFn: `wrong${tag}` },                    // password function, wrong
      { host: '127.0.0.1', port: p, user, password },                                                        // no database
      { host: '127.0.0.1', port: trustPort, database: 'postgres', user: 'postgres', password, ssl: true }, // TLS refused
      { host: '127.0.0.1', port: deadPort, database: 'appdb', user, password },                             // refused
      { host: '127.0.0.1', port: p, database: 'appdb' },                                                     // PGUSER/PGPASSWORD
    ];
    const metricsPort = await freePort();
    const app = await spawnApp('secrets-forms.mjs', {
      POOL_CONFIGS: JSON.stringify(configs), SQL_MARKER: sql, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      PGUSER: user, PGPASSWORD: password, OTEL_LOG_LEVEL: 'all', OTEL_TRACES_EXPORTER: 'console', ...env,
    }, PRELOAD);
    apps.push(app);
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    const outputs: Record<string, string> = {
      '/metrics': await (await fetch(`${metricsUrl}/metrics`)).text(),
      '/health': await (await fetch(`${metricsUrl}/health`)).text(),
      '/health/database': await (await fetch(`${metricsUrl}/health/database`)).text(),
    };
    app.child.kill('SIGTERM');
    await app.exit;
    outputs.stdout = app.stdout();
    outputs.stderr = app.stderr();
    return outputs;
  }

  function leaks(outputs: Record<string, string>, allowSqlIn: string[] = []): string[] {
    const found: string[] = [];
    for (const [where, text] of Object.entries(outputs)) {
      for (const needle of needles()) {
        if (needle === sql && allowSqlIn.includes(where)) continue;
        const at = text.indexOf(needle);
        if (at !== -1) found.push(`${where} contains ${JSON.stringify(needle)}: …${text.slice(Math.max(0, at - 120), at + 60)}…`);
      }
    }
    return found;
  }

  it('metrics, health, logs (OTEL_LOG_LEVEL=all) and console spans carry no user name, password or SQL text', async () => {
    const outputs = await scan({});
    // The outputs are not empty: queries ran and failed, pools were measured, spans were printed.
    expect(outputs.stdout).toMatch(/done ok=[1-9]\d* failed=[1-9]\d*/);
    expect(outputs['/metrics']).toContain('error_type="28P01"'); // authentication failed
    expect(outputs['/metrics']).toContain('error_type="42601"'); // syntax error
    expect(outputs['/metrics']).toContain('error_type="ECONNREFUSED"');
    expect(outputs['/health/database']).toContain(`127.0.0.1:${secured.port}/appdb`);
    expect(outputs['/health/database']).toContain('redacted:');
    expect(outputs.stdout).toContain("name: 'SELECT appdb'");
    expect(leaks(outputs)).toEqual([]);
  }, 90_000);

  it('spans of an application\'s own instrumentation-pg are redacted on their way out as well', async () => {
    const outputs = await scan({ FOREIGN_PG_SPANS: '1' });
    expect(outputs.stdout).toMatch(/done ok=[1-9]\d* failed=[1-9]\d*/);
    // Both kinds of query span were printed: Poolscope's and the application's instrumentation-pg's.
    expect(outputs.stdout).toContain("name: 'SELECT appdb'");
    expect(outputs.stdout).toContain("name: 'pg.query:SELECT appdb'");
    expect(leaks(outputs)).toEqual([]);
  }, 90_000);

  // Found by adversarial review: instrumentation-pg no longer records db.user, so the database pg fills in
  // with the user's name when none is configured went out as db.namespace and in span names.
  it('the user-named database of a client with none configured stays out of an application\'s own instrumentation-pg spans (bug: db.namespace)', async () => {
    const nsUser = `NSUSER${tag}`;
    const r = await runToExit(process.execPath, [...PRELOAD, path.join(ROOT, 'test', 'fixtures', 'foreign-pg-spans.cjs')], {
      env: { ...process.env, DATABASE_URL, FIXTURE_USER: nsUser, OTEL_TRACES_EXPORTER: 'console', OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
      killAfterMs: 30_000,
    });
    expect(r.stdout).toContain("name: 'pg.connect'"); // the application's spans were printed
    expect(r.stdout).toContain('query failed: 28000'); // no such role: pg still named the database after it
    expect(`${r.stdout}\n${r.stderr}`).not.toContain(nsUser);
  }, 60_000);

  it('POOLSCOPE_TRACE_SQL_TEXT=true opts in to SQL text on spans, and nothing else: no bound value, not even through an error message', async () => {
    const value = `BOUNDVALUE${tag}`;
    // Poolscope's spans and an application's own instrumentation-pg with bound values on, both opted in.
    // Review: a password written into a statement went out with it, also on Poolscope's own spans.
    const outputs = await scan({ POOLSCOPE_TRACE_SQL_TEXT: 'true', FOREIGN_PG_SPANS: '1', VALUE_MARKER: value, PASSWORD_MARKER: password });
    expect(outputs.stdout).toContain(`'db.query.text': "CREATE ROLE ${sql}_role LOGIN PASSWORD 'REDACTED'"`);
    expect(outputs.stdout).toContain(`/* ${sql} */`);
    expect(outputs.stdout).toContain(`'db.query.text': "SELECT '${sql}'::int"`);
    expect(outputs.stdout).toContain(`'db.query.text': 'SELECT $1::int AS n'`);
    expect(outputs['/metrics']).toContain('error_type="22P02"'); // the value was sent, and PostgreSQL echoed it
    // Spans (stdout) carry SQL text by request; bound values, user names and passwords are still withheld everywhere.
    expect(leaks(outputs, ['stdout'])).toEqual([]);
    expect(Object.entries(outputs).filter(([, text]) => text.includes(value)).map(([where]) => where)).toEqual([]);
  }, 90_000);
});
