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
  /** Values made once per process by the first copy that asks for them, by name: see {@link shared}. */
  readonly values: Map<string, unknown>;
}

export const processState: ProcessState = (() => {
  const g = globalThis as Record<symbol, ProcessState | undefined>;
  const existing = g[kState];
  if (existing !== undefined) return existing;
  const state: ProcessState = {
    running: undefined, context: undefined, pgLoaded: false, lateStartWarned: false, http2CoreApiSaid: false, values: new Map(),
  };
  Object.defineProperty(g, kState, { value: state, writable: false, configurable: true, enumerable: false });
  return state;
})();

/** The process's value under `name`, made by `make` if no copy made it yet. */
export function shared<T>(name: string, make: () => T): T {
  if (!processState.values.has(name)) processState.values.set(name, make());
  return processState.values.get(name) as T;
}
