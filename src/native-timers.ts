import { performance as perfHooks } from 'node:perf_hooks';
/*
 * The timer functions as they were when Poolscope loaded. Test suites install fake timers (sinon, Jest,
 * Vitest) by replacing the globals: Poolscope's own timers (the leak sweep, the health sampler, the telemetry
 * server's deadlines, the exit-time export) must keep running on real time under them, and clearing a timer
 * made before the fake clock through the fake clearTimeout makes fake-timers warn (found by running
 * Sequelize's own suite under the preload). Captured at load, which under `--import` is before any
 * application code.
 */
export const nativeTimers = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
  setImmediate: globalThis.setImmediate,
};

/**
 * Calls `then` once, when `condition()` holds: checked now, every `everyMillis` on an unref'd timer, and at each
 * `check()`; `cancel()` stops it. For what is said only once it matters (a taken port, a worker that loads pg).
 */
export function pollUntil(condition: () => boolean, then: () => void, everyMillis: number): { check: () => void; cancel: () => void } {
  let done = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  const cancel = () => {
    done = true;
    if (timer !== undefined) nativeTimers.clearInterval(timer);
  };
  const check = () => {
    if (done || !condition()) return;
    cancel();
    then();
  };
  check();
  if (!done) {
    timer = nativeTimers.setInterval(check, everyMillis);
    timer.unref();
  }
  return { check, cancel };
}

/** Resolves with true once `work` settles either way, or with false after `millis` (an unref'd timer): never rejects. */
export function settledWithin(work: Promise<unknown>, millis: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = nativeTimers.setTimeout(() => resolve(false), millis);
    timer.unref();
    const settled = () => {
      nativeTimers.clearTimeout(timer);
      resolve(true);
    };
    work.then(settled, settled);
  });
}

/**
 * `performance.now` as it was at load. An application that replaced `globalThis.performance` (or its `now`)
 * made pg fail under the preload, and a standalone client's query crashed the process; fake timers that replace
 * it would fake every duration. Bound once, it is also a little cheaper per call than the global lookup.
 */
export const monotonicNow: () => number = capturedClock();

function capturedClock(): () => number {
  // From perf_hooks, not the global: a --require file that ran before the preload may have replaced the global
  // (the preload then failed to load, and the application with it). If `now` itself was replaced with something
  // that does not work, a monotonic clock of the same unit.
  try {
    const now = perfHooks.now.bind(perfHooks);
    if (Number.isFinite(now())) return now;
  } catch { /* not usable */ }
  const base = process.hrtime.bigint();
  return () => Number(process.hrtime.bigint() - base) / 1e6;
}

const NativeDate = Date;
/**
 * The wall clock as it was at load, for timestamps: sinon's fake timers replace `Date` (from 1970 by default), and
 * /health reported a negative uptime and 1970 timestamps in a test suite under the preload (found by a review
 * of test runners).
 */
export function wallClock(): Date {
  return new NativeDate();
}

/** Milliseconds since the epoch from the wall clock as it was at load (see wallClock). */
export function wallMillis(): number {
  return NativeDate.now();
}
