import { diag, type DiagLogger } from '@opentelemetry/api';

/**
 * Poolscope logs through OpenTelemetry `diag` so the host application decides where log lines go.
 * Every warning carries a key; a key is logged at most once per `intervalMs`, so a failing
 * collector or a pool stuck at 100 % cannot flood the application's logs.
 */
export interface PoolscopeLogger {
  warn(key: string, message: string): void;
  info(key: string, message: string): void;
  debug(message: string): void;
}

export function createLogger(intervalMs = 60_000, base?: DiagLogger): PoolscopeLogger {
  const target = base ?? diag;
  const lastLogged = new Map<string, number>();

  const allowed = (key: string): boolean => {
    const now = Date.now();
    const last = lastLogged.get(key);
    if (last !== undefined && now - last < intervalMs) return false;
    lastLogged.set(key, now);
    // Keys are a small fixed vocabulary plus pool names; cap anyway so churned pools cannot grow it.
    if (lastLogged.size > 1_000) lastLogged.delete(lastLogged.keys().next().value as string);
    return true;
  };

  return {
    warn(key, message) {
      if (allowed(key)) target.warn(message);
    },
    info(key, message) {
      if (allowed(key)) target.info(message);
    },
    debug(message) {
      target.debug(message);
    },
  };
}
