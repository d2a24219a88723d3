/*
 * What every Poolscope copy in a process shares (an ES-module and a CommonJS build, two versions side by side):
 * one slot on globalThis, made when this module is evaluated, in every thread that loads it.
 *
 * One slot, and made at load: hapi's test runner (lab) reports as leaks the globals a test run adds, by
 * comparing globalThis with that of a fresh worker thread, which runs the same `--import` but where Poolscope
 * does not start. Slots made only when Poolscope started, or when pg was loaded, existed in the main thread
 * alone, and every lab suite failed under the preload.
 */
const kState = Symbol.for('poolscope.process-state');

export interface ProcessState {
  /** The running Poolscope (sdk.ts). */
  running: unknown;
  /** The context adapters report to (adapters/shared.ts). */
  context: unknown;
  /** pg was loaded (adapters/shared.ts): a Poolscope started later must know it. */
  pgLoaded: boolean;
  /** The late-start warning was given (adapters/late-attach.ts): once per process. */
  lateStartWarned: boolean;
  /** An HTTP/2 core-API server was said to be unmeasured (http/server-duration.ts): once per process. */
  http2CoreApiSaid: boolean;
  /**
   * This process made a pg pool or connection, or an HTTP server of its own listens: it is the service, not one of the other node
   * processes that inherit NODE_OPTIONS (npm, a cluster's primary, a CLI wrapper such as tsx). See
   * {@link whenInUse}. Absent in the state of an older copy.
   */
  inUse?: boolean;
  /** Values made once per process by the first copy that asks for them, by name: see {@link shared}. */
  readonly values: Map<string, unknown>;
}

export const processState: ProcessState = (() => {
  const g = globalThis as Record<symbol, ProcessState | undefined>;
  const existing = g[kState];
  if (existing !== undefined) return existing;
  const state: ProcessState = {
    running: undefined, context: undefined, pgLoaded: false, lateStartWarned: false, http2CoreApiSaid: false, inUse: false,
    values: new Map(),
  };
  Object.defineProperty(g, kState, { value: state, writable: false, configurable: true, enumerable: false });
  return state;
})();

/** The process's value under `name`, made by `make` if no copy made it yet. */
export function shared<T>(name: string, make: () => T): T {
  if (!processState.values.has(name)) processState.values.set(name, make());
  return processState.values.get(name) as T;
}

const inUseWaiters = () => shared('in-use-waiters', () => new Set<() => void>());

/** Says the process is in use (pg loaded, or an application server listening); runs what waited for it. */
export function markInUse(): void {
  if (processState.inUse === true) return;
  processState.inUse = true;
  const waiting = [...inUseWaiters()];
  inUseWaiters().clear();
  // Called from inside pg's require() and a server's emit: nothing may reach the application from here.
  for (const run of waiting) {
    try { run(); } catch { /* the waiter's own failure stays its own */ }
  }
}

/** Runs `run` once the process is in use, at once if it is; returns a function that cancels the wait. */
export function whenInUse(run: () => void): () => void {
  if (processState.inUse === true) {
    run();
    return () => undefined;
  }
  const waiting = inUseWaiters();
  waiting.add(run);
  return () => { waiting.delete(run); };
}
