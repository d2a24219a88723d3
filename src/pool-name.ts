/** The subset of pg-pool options Poolscope reads. Never serialise the whole object: it holds the password. */
export interface PoolTargetOptions {
  connectionString?: string;
  host?: string;
  port?: number | string;
  database?: string;
  poolName?: string;
}

export interface PoolTarget {
  host: string;
  port: number;
  /** The database when one is configured; pg's own fallback (the user name) is deliberately not used. */
  database: string | undefined;
  /**
   * True when the connection string is one that pg mis-reads, so that the host, port or database pg
   * would use come from the user name, the password or a query secret: those are then withheld
   * (`host` is {@link REDACTED_HOST}, the port comes from the other settings, no database).
   */
  redacted?: boolean;
}

type Env = Record<string, string | undefined>;

/** Host reported for a connection string whose host/port/database pg would take from its secrets. */
export const REDACTED_HOST = 'redacted';

/** What pg's connection-string parser yields for the three fields a pool name uses. */
interface ParsedTarget {
  host?: string | null;
  port?: string | null;
  database?: string | null;
}

const SPECIAL_SCHEMES = new Set(['http', 'https', 'ws', 'wss', 'ftp', 'file']);
/** A libpq keyword that carries a secret, written as `key=` (a keyword/value string or a query pasted into a field). */
const SECRET_KEYWORD = /(?:^|[\s&;?])(?:password|sslpassword|user|options)\s*=/i;
/** A host no server has: one with userinfo (`user:password@`) or a scheme, a connection URL given as the host. */
const HOST_WITH_CREDENTIALS = /@|:\/\//;
const PASTED_KEYWORD = /\s(?:password|sslpassword|user|options|dbname|host|hostaddr|port|passfile)\s*=/i;
/** Query keys whose values legitimately hold an `@` (`user=app@server` on Azure, option strings, file paths). */
const AT_SIGN_KEYS = new Set(['user', 'options', 'application_name', 'fallback_application_name', 'sslcert', 'sslkey', 'sslrootcert']);

/** pg's own defaults (`pg.defaults`), read at each resolution: an application may set them, as pg documents. */
let pgDefaults: { host?: unknown; port?: unknown; database?: unknown } | undefined;

/** Called with pg's defaults object as pg loads it (adapters/pg-target.ts). */
export function usePgDefaults(defaults: unknown): void {
  if (defaults !== null && typeof defaults === 'object') pgDefaults = defaults;
}

/**
 * Where a pool connects, resolved the way pg 8 resolves it (`ConnectionParameters`): a connection string
 * is parsed and its fields replace the individual options (also when empty: `postgres://h` clears a
 * `database` option), then each field falls back to its `PG*` environment variable and to `pg.defaults`.
 * When no database is configured, pg connects to the database named after the user; that name is left
 * out here, so a user name can never become a label. A connection string that pg mis-reads so that a
 * secret lands in the host, port or database (unencoded `/`, `?`, `#` or `@` in a password, a libpq
 * `key=value` string, which pg reads as a relative URL) is reported as {@link REDACTED_HOST}.
 *
 * Pure: no file is read (pg reads `sslkey`/`sslcert` files while parsing; this does not) and no process
 * warning is emitted (pg-connection-string warns about some `sslmode` values).
 */
export function resolvePoolTarget(options: PoolTargetOptions | undefined, env: Env = process.env): PoolTarget {
  const opts = (options ?? {}) as Record<string, unknown>;
  let fields: Record<string, unknown> = opts;
  let redacted = false;
  const connectionString = opts.connectionString;
  if (connectionString) {
    const parsed = typeof connectionString === 'string' ? parseTarget(connectionString as string) : undefined;
    if (parsed === undefined) {
      // pg throws on this string when a client connects; nothing of it is used here either.
    } else if (misread(connectionString as string)) {
      redacted = true;
      withhold(parsed);
      fields = { host: REDACTED_HOST, port: opts.port, database: undefined };
    } else {
      // pg's `Object.assign({}, config, parse(connectionString))`, for the three fields used here only: spreading
      // the whole config read every other getter once more than pg does (a password getter that mints an
      // IAM token minted two; found by a differential run).
      const field = (key: 'host' | 'port' | 'database') => (key in parsed ? parsed[key] : opts[key]);
      fields = { host: field('host'), port: field('port'), database: field('database') };
    }
  }
  // pg's `val()`: a falsy setting (undefined, null, '', 0) falls through to the environment, then pg.defaults.
  const host = text(fields.host) ?? text(env.PGHOST) ?? text(pgDefaults?.host) ?? 'localhost';
  const port = Number.parseInt(text(fields.port) ?? text(env.PGPORT) ?? text(pgDefaults?.port) ?? '5432', 10);
  let database = text(fields.database) ?? text(env.PGDATABASE) ?? text(pgDefaults?.database);
  let hostOut = host;
  const hostCarriesSecret = SECRET_KEYWORD.test(host) || HOST_WITH_CREDENTIALS.test(host);
  if (!redacted && (hostCarriesSecret || (database !== undefined && SECRET_KEYWORD.test(database)))) {
    // e.g. `postgres://h/db password=x` (pg connects to the database "db password=x"), or a keyword/value
    // string or a whole URL given as the host: the field carries a secret, whatever pg makes of it.
    redacted = true;
    withhold({ host, database });
    hostOut = hostCarriesSecret ? REDACTED_HOST : host;
    database = undefined;
  }
  return {
    host: hostOut,
    port: Number.isNaN(port) ? 5432 : port,
    database,
    ...(redacted ? { redacted } : {}),
  };
}

/**
 * Values pg will report for mis-read connection strings (client.host, client.port, connectionParameters
 * .database): pieces of user names or passwords. Other outputs (query metrics' server.address, spans)
 * check them with {@link isWithheld}. Bounded: one entry per field of a few mis-configured pools.
 */
const withheld = new Set<string>();
const WITHHELD_LIMIT = 256;

function withhold(target: ParsedTarget): void {
  for (const [key, value] of Object.entries(target)) {
    if (typeof value !== 'string' || value === '' || value === REDACTED_HOST) continue;
    if (withheld.size >= WITHHELD_LIMIT) withheld.delete(withheld.values().next().value as string);
    withheld.add(key === 'port' ? `:${value}` : value);
  }
}

/**
 * The database pg fills in when none was configured is the user's name: withheld like a mis-read secret, so
 * that spans of an application's own instrumentation-pg (`db.namespace`, the span name) never carry it.
 */
export function withholdUserDatabase(database: unknown): void {
  if (typeof database === 'string') withhold({ database });
}

/** True when `value` (a host or database as pg reports it) came from a secret in a mis-read connection string. */
export function isWithheld(value: unknown): boolean {
  return withheld.size > 0 && typeof value === 'string' && withheld.has(value);
}

/** True when the port pg reports came from a secret in a mis-read connection string. */
export function isWithheldPort(port: unknown): boolean {
  return withheld.size > 0 && (typeof port === 'number' || typeof port === 'string') && withheld.has(`:${port}`);
}

/** True for text that holds a libpq `password=`/`user=`/`options=` keyword: a pasted connection string. */
export function carriesSecretKeyword(value: unknown): boolean {
  return typeof value === 'string' && SECRET_KEYWORD.test(value);
}

/** Default pool name: `host:port/database`, or `host:port` when no database is configured. */
export function defaultPoolName(target: PoolTarget): string {
  const host = target.host.includes(':') && !target.host.startsWith('/') ? `[${target.host}]` : target.host;
  return target.database === undefined ? `${host}:${target.port}` : `${host}:${target.port}/${target.database}`;
}

function text(value: unknown): string | undefined {
  if (value === undefined || value === null || value === '' || value === 0 || value === false) return undefined;
  return typeof value === 'string' ? value : String(value);
}

/**
 * The host, port and database pg-connection-string 2.x returns for `str`, or undefined when it throws
 * (pg then fails to connect). Mirrors its steps, including the quirks: a string starting with `/` is
 * `socket-dir database`, anything else goes through WHATWG URL resolved against `postgres://base`, query
 * parameters override the authority, the path is decoded with decodeURI (so `%2F` stays).
 */
function parseTarget(input: string): ParsedTarget | undefined {
  if (input.charAt(0) === '/') {
    const words = input.split(' ');
    return { host: words[0], database: words[1] };
  }
  let str = input;
  if (/ |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(str)) str = encodeURI(str).replace(/%25(\d\d)/g, '%$1');
  try {
    let url: URL;
    let dummyHost = false;
    try {
      url = new URL(str, 'postgres://base');
    } catch {
      url = new URL(str.replace('@/', '@___DUMMY___/'), 'postgres://base');
      dummyHost = true;
    }
    const query: Record<string, string> = Object.create(null) as Record<string, string>;
    for (const [key, value] of url.searchParams) query[key] = value;
    // pg decodes these and throws on malformed escapes; decoded only for that, never kept.
    if (!query.user) decodeURIComponent(url.username);
    if (!query.password) decodeURIComponent(url.password);
    if (url.protocol === 'socket:') {
      // Only the keys pg sets: without `?port=` the `port` option stays in force.
      const socket: ParsedTarget = { host: decodeURI(url.pathname), database: url.searchParams.get('db') };
      if (query.port !== undefined) socket.port = query.port;
      return socket;
    }
    const hostname = (dummyHost ? '' : url.hostname).replace(/^\[(.+)\]$/, '$1');
    let host = query.host;
    if (!host) host = decodeURIComponent(hostname);
    else if (hostname && /^%2f/i.test(hostname)) url.pathname = hostname + url.pathname;
    const port = query.port ? query.port : url.port;
    const path = url.pathname.slice(1) || null;
    return { host, port, database: path ? decodeURI(path) : null };
  } catch {
    return undefined;
  }
}

/**
 * True when pg would take the host, port or database of `str` from text that was meant as user name,
 * password or query secret. Correct URLs keep every secret in the authority's userinfo (before its last
 * `@`) or in query values; mis-reads show up as an `@` after the authority ends, a missing `//`, or
 * keyword=value text.
 */
function misread(str: string): boolean {
  if (str.charAt(0) === '/') {
    const [socketDir = '', database = ''] = str.split(' ');
    return /[=@]/.test(socketDir) || /[=@]/.test(database);
  }
  // libpq keywords after whitespace: pg-connection-string has no keyword/value syntax, so wherever such
  // text ends up (path, userinfo, or host when a value holds an `@`), it was not meant as a URL part.
  if (PASTED_KEYWORD.test(str)) return true;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(str);
  // No scheme: a keyword/value string or `user:pass@host`, which pg resolves as a relative URL.
  if (scheme === null) return true;
  const afterScheme = str.slice(scheme[0].length);
  if (!afterScheme.startsWith('//')) {
    // `socket:/dir?db=x` is pg's own form; any other opaque URL (`user:pass@host/db`) is a mis-read.
    return scheme[1]!.toLowerCase() !== 'socket' || /[@=]/.test(afterScheme.split(/[?#]/, 1)[0]!);
  }
  const rest = afterScheme.slice(2);
  const delimiters = SPECIAL_SCHEMES.has(scheme[1]!.toLowerCase()) ? /[/?#\\]/ : /[/?#]/;
  const match = delimiters.exec(rest);
  if (match === null) return false;
  const tail = rest.slice(match.index);
  if (!tail.includes('@')) return false;
  // An `@` after the authority is legitimate only inside the value of a known query parameter.
  const hashAt = tail.indexOf('#');
  const queryAt = tail.indexOf('?');
  if (queryAt === -1 || (hashAt !== -1 && hashAt < queryAt)) return true;
  const beforeQuery = tail.slice(0, queryAt);
  const query = hashAt === -1 ? tail.slice(queryAt + 1) : tail.slice(queryAt + 1, hashAt);
  if (beforeQuery.includes('@') || (hashAt !== -1 && tail.slice(hashAt).includes('@'))) return true;
  for (const pair of query.split('&')) {
    if (!pair.includes('@')) continue;
    const eq = pair.indexOf('=');
    if (eq === -1 || pair.indexOf('@') < eq) return true;
    let key: string;
    try {
      key = decodeURIComponent(pair.slice(0, eq).replace(/\+/g, ' '));
    } catch {
      return true;
    }
    // `user=x@h/db` looks like an authority that lost its `//`: treat as a mis-read.
    if (!AT_SIGN_KEYS.has(key) || pair.slice(pair.indexOf('@')).includes('/')) return true;
  }
  return false;
}

/**
 * Hands out unique pool names: the second live pool to the same target becomes `name#2`, and a name
 * is free again once its pool has ended, so churned pools reuse names instead of minting new series.
 */
export class PoolNameAllocator {
  private readonly taken = new Set<string>();

  acquire(base: string): string {
    if (!this.taken.has(base)) {
      this.taken.add(base);
      return base;
    }
    for (let i = 2; ; i++) {
      const candidate = `${base}#${i}`;
      if (!this.taken.has(candidate)) {
        this.taken.add(candidate);
        return candidate;
      }
    }
  }

  release(name: string): void {
    this.taken.delete(name);
  }
}
