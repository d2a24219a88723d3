const SQLSTATE = /^[0-9A-Z]{5}$/;
const SYSTEM_CODE = /^E[A-Z0-9_]{1,30}$/;
const ERROR_NAME = /^[A-Za-z_$][\w$]{0,63}$/;

/**
 * node-postgres raises these as plain `Error`s with fixed messages, which made them all `error.type="Error"`: a
 * query timeout could not be told from a dropped connection. Each fixed message gets a type of its own.
 */
const PG_MESSAGES: ReadonlyMap<string, string> = new Map([
  ['Query read timeout', 'query_timeout'],
  ['Connection terminated unexpectedly', 'connection_terminated'],
  ['Connection terminated', 'connection_terminated'],
  ['Connection terminated due to connection timeout', 'connect_timeout'],
  ['timeout expired', 'connect_timeout'],
  ['timeout exceeded when trying to connect', 'acquire_timeout'],
  ['Client has encountered a connection error and is not queryable', 'client_not_queryable'],
  ['Client was closed and is not queryable', 'client_closed'],
  ['Cannot use a pool after calling end on the pool', 'pool_ended'],
]);

type Wrapped = { code?: unknown; name?: unknown; parent?: unknown; original?: unknown; cause?: unknown } | null | undefined;

/** A SQLSTATE or system code on the error itself, else on the error it wraps, a few levels down. */
function codeOf(e: Wrapped, depth: number): string | undefined {
  const code = e?.code;
  if (typeof code === 'string' && (SQLSTATE.test(code) || SYSTEM_CODE.test(code))) return code;
  if (depth === 0 || e === null || typeof e !== 'object') return undefined;
  // Sequelize wraps pg's error as `parent` (and `original`), pg-pool and others as `cause`: without looking
  // inside, a rejected password and a full server were both `SequelizeConnectionError`.
  return codeOf(e.parent as Wrapped, depth - 1) ?? codeOf(e.original as Wrapped, depth - 1) ?? codeOf(e.cause as Wrapped, depth - 1);
}

/**
 * Low-cardinality `error.type`: SQLSTATE, then Node's system error code (of the error, else of the error it
 * wraps), then node-postgres's fixed messages (PG_MESSAGES), then the error class name.
 */
export function errorType(err: unknown): string {
  const e = err as Wrapped;
  // Each read on its own: a getter that throws (a hostile error, a revoked Proxy) on what the error wraps still
  // leaves its class name.
  try {
    const code = codeOf(e, 3);
    if (code !== undefined) return code;
  } catch { /* no code to read */ }
  try {
    const name = e?.name;
    if (name === 'Error') {
      const message = (e as { message?: unknown }).message;
      const known = typeof message === 'string' ? PG_MESSAGES.get(message) : undefined;
      if (known !== undefined) return known;
    }
    if (typeof name === 'string' && ERROR_NAME.test(name)) return name;
  } catch { /* no name to read */ }
  return '_OTHER';
}

export function isSqlState(type: string): boolean {
  return SQLSTATE.test(type);
}
