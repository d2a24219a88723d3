import type { PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolObserver } from '../pools/observer.js';

/** What an ordinary (non-superuser) role may open on one server, as the server itself reports it. */
export interface ServerConnectionLimit {
  maxConnections: number;
  /** `superuser_reserved_connections` + `reserved_connections` (PostgreSQL 16+; 0 before). */
  reserved: number;
  /** `maxConnections - reserved`: the most connections a pool of an ordinary role can ever hold. */
  allowed: number;
  /** The connecting role's `CONNECTION LIMIT`, when it has one (superusers are exempt, and read none). */
  roleLimit?: number;
  /** The database's `CONNECTION LIMIT`, when it has one. */
  databaseLimit?: number;
}

interface ServerState {
  readonly label: string;
  limit: ServerConnectionLimit | undefined;
  inFlight: boolean;
  attempts: number;
  /** Pools waiting for this key's limits; emptied once they are known or given up on. */
  readonly waiting: Set<ObservedPool>;
}

/**
 * One statement, read-only, that cannot fail on any supported server: `current_setting(name, true)`
 * returns NULL for `reserved_connections` before PostgreSQL 16 instead of raising, so the query never
 * aborts a transaction a connection might have been released in.
 */
export const SERVER_LIMIT_QUERY = "SELECT current_setting('max_connections') AS max_connections, " +
  "current_setting('superuser_reserved_connections') AS superuser_reserved, " +
  "current_setting('reserved_connections', true) AS reserved, " +
  // Readable by every role. A role's or database's CONNECTION LIMIT refuses connections (53300) long before
  // max_connections: a pool of max 8 for a role limited to 5 failed 38 % of its calls, and the check, which
  // read max_connections only, said nothing (found by an operator-scenario review).
  // Neither limit binds a superuser. The session's role: the one the limit counts (a `SET ROLE` does not move it).
  '(SELECT CASE WHEN rolsuper THEN -1 ELSE rolconnlimit END FROM pg_catalog.pg_roles WHERE rolname = session_user) AS role_limit, ' +
  '(SELECT CASE WHEN (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user) THEN -1 ELSE datconnlimit END ' +
  'FROM pg_catalog.pg_database WHERE datname = current_database()) AS database_limit';

/** A failed read (refused connection, a pooler refusing the statement) is retried on later releases, this often. */
const MAX_ATTEMPTS = 3;
/** Distinct servers checked per process: a process talking to more is already unusual, and memory stays bounded. */
const MAX_SERVERS = 64;

const kQueryOriginal = Symbol.for('poolscope.query-patched');

type RawQuery = (this: object, text: string, callback: (err: unknown, result: unknown) => void) => unknown;

/**
 * The start-up warning for a pool whose `max` alone is more than its server accepts. PostgreSQL does not
 * announce `max_connections` (it is not among the parameters a server reports in ParameterStatus at
 * start-up), so the one way to know it from inside the process is to ask. This asks as little as
 * possible: one read-only statement per server per process, once the application has released its first
 * connection there (the server is reachable and the credentials work), on a short-lived connection of
 * its own opened with that connection's parameters and ended right after, through pg's unpatched `query`
 * so it shows in no metric or span. It used to ask on the released connection itself: pg's upstream tests
 * then caught the statement queued behind or in front of the application's next query (pg's
 * "already executing a query" DeprecationWarning, and one round trip of delay for that caller). The
 * application's connections now never carry a statement of ours. The server-side truth for dashboards and
 * alerts comes from the collector's postgresql receiver, not from this. Opt-in (`serverLimitCheck`): a
 * review showed the connection can take the slot an application's own connect needed, where a role or a
 * pooler caps connections.
 */
export class ServerLimitCheck implements PoolObserver {
  /**
   * Per server, database and role (a role's CONNECTION LIMIT is its own: keyed by server and database only, one
   * role's limit was applied to every pool there, or missed; found by review). The role is a key, never said.
   */
  private readonly servers = new Map<string, ServerState>();
  /** Pools not compared yet; each is at its next release, with the limits its connection's role reads. While empty, a release costs one comparison. */
  private readonly uncompared = new Set<ObservedPool>();

  constructor(private readonly log: PoolscopeLogger) {}

  poolOpened(pool: ObservedPool): void {
    if (pool.server !== undefined) this.uncompared.add(pool);
  }

  poolClosed(pool: ObservedPool): void {
    if (!this.uncompared.delete(pool)) return;
    for (const s of this.servers.values()) s.waiting.delete(pool);
  }

  released(pool: ObservedPool, client: object): void {
    if (this.uncompared.size === 0 || !this.uncompared.has(pool)) return;
    const server = pool.server!;
    const role = (client as { connectionParameters?: { user?: unknown } }).connectionParameters?.user;
    const key = `${server.address}\u0000${server.port}\u0000${pool.namespace ?? ''}\u0000${typeof role === 'string' ? role : ''}`;
    let s = this.servers.get(key);
    if (s === undefined) {
      if (this.servers.size >= MAX_SERVERS) {
        this.uncompared.delete(pool);
        return;
      }
      s = { label: `${server.address}:${server.port}`, limit: undefined, inFlight: false, attempts: 0, waiting: new Set() };
      this.servers.set(key, s);
    }
    if (s.limit !== undefined || s.attempts >= MAX_ATTEMPTS) {
      this.uncompared.delete(pool);
      if (s.limit !== undefined) this.compare(pool, s, s.limit);
      return;
    }
    s.waiting.add(pool);
    if (s.inFlight) return;
    const probe = probeFor(client);
    if (probe === undefined) {
      // Not a connection the check can copy (see probeFor): this pool is not checked, and costs no more releases.
      s.waiting.delete(pool);
      this.uncompared.delete(pool);
      return;
    }
    s.inFlight = true;
    s.attempts++;
    let settled = false;
    const settle = (err: unknown, result: unknown) => {
      if (settled) return;
      settled = true;
      // The server refused this role another connection, or the login: asking again cannot do better.
      if (isFinalRefusal(err)) s.attempts = MAX_ATTEMPTS;
      this.settle(s, err, result);
      try {
        probe.end(() => undefined);
      } catch {
        // already closed
      }
    };
    try {
      probe.connect((err: unknown) => {
        if (err) return settle(err, undefined);
        const query = rawQuery(probe);
        if (query === undefined) return settle(new Error('not a pg client'), undefined);
        query.call(probe, SERVER_LIMIT_QUERY, settle);
      });
    } catch (err) {
      settle(err, undefined);
    }
  }

  private settle(s: ServerState, err: unknown, result: unknown): void {
    s.inFlight = false;
    const limit = err === undefined || err === null ? parseLimit(result) : undefined;
    if (limit === undefined) {
      if (s.attempts < MAX_ATTEMPTS) return;
      // Said, not only at debug level: the check was asked for, and a refusal here (53300) is itself the sign.
      this.log.warn(`server-limit-unread:${s.label}`,
        `poolscope: POOLSCOPE_SERVER_LIMIT_CHECK could not read the connection limits of ${s.label} (${describe(err)}); not checked.`);
      this.release(s);
      return;
    }
    s.limit = limit;
    for (const pool of s.waiting) this.compare(pool, s, limit);
    this.release(s);
  }

  private release(s: ServerState): void {
    for (const pool of s.waiting) this.uncompared.delete(pool);
    s.waiting.clear();
  }

  private compare(pool: ObservedPool, s: ServerState, limit: ServerConnectionLimit): void {
    const max = pool.snapshot()?.max;
    if (max === undefined) return;
    const pooler = '(Behind a pooler such as PgBouncer this compares with the database server\'s limit, not the pooler\'s: ' +
      'set POOLSCOPE_SERVER_LIMIT_CHECK=false there.)';
    // The tightest limit that binds; the role is never named (user names stay out of logs).
    const tighter = [
      { n: limit.roleLimit, what: 'its role\'s CONNECTION LIMIT', fix: 'raise it (ALTER ROLE … CONNECTION LIMIT)' },
      { n: limit.databaseLimit, what: 'the database\'s CONNECTION LIMIT', fix: 'raise it (ALTER DATABASE … CONNECTION LIMIT)' },
    ].filter((l): l is { n: number; what: string; fix: string } => l.n !== undefined && l.n < limit.allowed && max > l.n)
      .sort((a, b) => a.n - b.n)[0];
    if (tighter !== undefined) {
      this.log.warn(`server-limit:${pool.name}`,
        `poolscope: pool ${pool.name} may open ${max} connections, but ${s.label} accepts at most ${tighter.n} ` +
        `(${tighter.what}, shared with every other connection under it); under load this pool alone fails with ` +
        `"too many connections" (53300). Lower the pool's max, or ${tighter.fix}. ${pooler}`);
      return;
    }
    if (max <= limit.allowed) return;
    this.log.warn(`server-limit:${pool.name}`,
      `poolscope: pool ${pool.name} may open ${max} connections, but ${s.label} accepts at most ${limit.allowed} ` +
      `from an ordinary role (max_connections ${limit.maxConnections} minus ${limit.reserved} reserved); ` +
      `under load this pool alone fails with "too many clients". Lower the pool's max, or raise max_connections. ${pooler}`);
  }
}

type ProbeClient = {
  connect(cb: (err: unknown) => void): void;
  end(cb: () => void): void;
  on(event: string, listener: (...a: unknown[]) => void): unknown;
  connection?: { stream?: { unref?: () => void } };
};

/** Longest the check may wait for its connection; it never keeps a finished script alive either way. */
const PROBE_CONNECT_TIMEOUT_MS = 5_000;

/**
 * A new client of the released client's own class (pg.Client, or a subclass the app uses), opened with
 * the same connection parameters (host, port, database, user, password, TLS, options). Its socket is
 * unref'd, so a script that ends its pool exits without waiting for the check.
 */
function probeFor(client: object): ProbeClient | undefined {
  const c = client as {
    constructor?: unknown;
    connectionParameters?: Record<string, unknown> & { password?: unknown; host?: unknown; port?: unknown };
    connection?: { stream?: { remotePort?: unknown } };
  };
  const Client = c.constructor as (new (config: object) => ProbeClient) | undefined;
  const params = c.connectionParameters;
  // pg-native clients and anything else that is not pg's JavaScript client are not asked.
  if (typeof Client !== 'function' || params === undefined || params === null || c.connection === undefined) return undefined;
  // A client connected through a stream of the application's own (a cloud SQL connector, a tunnel) does
  // not reach the host and port in its parameters: a probe there would reach another server, with the
  // password. Only a client whose socket goes to its configured port (or a unix socket) is copied.
  const isUnixSocket = typeof params.host === 'string' && params.host.startsWith('/');
  if (!isUnixSocket && c.connection.stream?.remotePort !== params.port) return undefined;
  try {
    const probe = new Client({
      ...params,
      // Not enumerable on ConnectionParameters, so not in the spread.
      password: params.password,
      application_name: 'poolscope server limit check',
      connectionTimeoutMillis: PROBE_CONNECT_TIMEOUT_MS,
    });
    // An error on this connection is the check's own: never an 'error' event the application sees unhandled.
    probe.on('error', () => undefined);
    probe.connection?.stream?.unref?.();
    return probe;
  } catch {
    return undefined;
  }
}

/** too_many_connections, and the login failures (invalid authorization, invalid password). */
const FINAL_REFUSALS = new Set(['53300', '28000', '28P01']);
function isFinalRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && FINAL_REFUSALS.has(code);
}

/** pg's own query, under Poolscope's patch; undefined when `client` is not a pg client. */
function rawQuery(client: object): RawQuery | undefined {
  const c = client as { query?: unknown; [kQueryOriginal]?: unknown; connection?: unknown };
  if (typeof c.query !== 'function' || c.connection === undefined) return undefined;
  const original = c[kQueryOriginal];
  return (typeof original === 'function' ? original : c.query) as RawQuery;
}

function toCount(value: unknown): number | undefined {
  if (value === null || value === undefined) return undefined;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

export function parseLimit(result: unknown): ServerConnectionLimit | undefined {
  const row = (result as { rows?: Array<Record<string, unknown>> } | undefined)?.rows?.[0];
  if (row === undefined) return undefined;
  const maxConnections = toCount(row.max_connections);
  const superuserReserved = toCount(row.superuser_reserved);
  if (maxConnections === undefined || maxConnections === 0 || superuserReserved === undefined) return undefined;
  const reserved = superuserReserved + (toCount(row.reserved) ?? 0);
  // -1 (no limit) and a missing row read as none.
  const roleLimit = toCount(row.role_limit);
  const databaseLimit = toCount(row.database_limit);
  return {
    maxConnections, reserved, allowed: Math.max(0, maxConnections - reserved),
    ...(roleLimit === undefined ? {} : { roleLimit }), ...(databaseLimit === undefined ? {} : { databaseLimit }),
  };
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null | undefined;
  if (typeof e?.code === 'string') return `error ${e.code}`;
  return err === undefined || err === null ? 'unexpected result' : 'query failed';
}
