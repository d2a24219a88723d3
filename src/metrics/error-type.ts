const SQLSTATE = /^[0-9A-Z]{5}$/;
const SYSTEM_CODE = /^E[A-Z0-9_]{1,30}$/;
const ERROR_NAME = /^[A-Za-z_$][\w$]{0,63}$/;

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
 * wraps), then the error class name.
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
    if (typeof name === 'string' && ERROR_NAME.test(name)) return name;
  } catch { /* no name to read */ }
  return '_OTHER';
}

export function isSqlState(type: string): boolean {
  return SQLSTATE.test(type);
}
