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
