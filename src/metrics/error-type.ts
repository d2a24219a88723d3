const SQLSTATE = /^[0-9A-Z]{5}$/;
const SYSTEM_CODE = /^E[A-Z0-9_]{1,30}$/;
const ERROR_NAME = /^[A-Za-z_$][\w$]{0,63}$/;

/** Low-cardinality `error.type`: SQLSTATE, then Node's system error code, then the error class name. */
export function errorType(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null | undefined;
  const code = e?.code;
  if (typeof code === 'string' && (SQLSTATE.test(code) || SYSTEM_CODE.test(code))) return code;
  const name = e?.name;
  if (typeof name === 'string' && ERROR_NAME.test(name)) return name;
  return '_OTHER';
}

export function isSqlState(type: string): boolean {
  return SQLSTATE.test(type);
}
