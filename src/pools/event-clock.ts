/*
 * One clock reading per pool event, shared by the adapter that times it and every recorder that needs
 * "now" while handling it. A `pool.query()` used to read the clock nine times (adapter wait, use and query
 * timing, plus the leak detector, stuck detector and idle-in-transaction bookkeeping each on their own);
 * in the worst-case profile clock_gettime and performance.now were a tenth of Poolscope's overhead.
 *
 * An adapter that has just read the clock for its own timing (`readClock`) hands that reading to the
 * dispatch that follows; a dispatch without a fresh reading takes its own (`dispatchClock`), so a
 * recorder never sees a stale time whatever the adapter does. Recorders read `eventTime()` only inside a
 * dispatch; timers and collections read the clock themselves.
 */
let at = 0;
let fresh = false;

/** The clock, for an adapter's own timing; the next dispatch reuses this reading. */
export function readClock(): number {
  fresh = true;
  at = performance.now();
  return at;
}

/** Called by the observer fan-out as a hot event starts: the adapter's fresh reading, else a new one. */
export function dispatchClock(): void {
  if (!fresh) at = performance.now();
  fresh = false;
}

/** performance.now() of the event being dispatched. */
export function eventTime(): number {
  return at;
}
