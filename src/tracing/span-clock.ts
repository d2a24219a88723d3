import type { HrTime } from '@opentelemetry/api';
import { monotonicNow, wallMillis } from '../native-timers.js';

/*
 * Epoch times for spans timed on the monotonic clock. The SDK stamps the application's own spans from
 * Date.now(); converting through performance.timeOrigin instead put a query before its parent span whenever
 * the two clocks disagreed: by a fraction of a millisecond on any machine, by the whole pause after a laptop
 * or VM slept (the monotonic clock stops, the wall clock does not). A per-span Date.now() offset, as the SDK
 * takes, counts whole milliseconds and made sequential queries overlap. So one offset, read where Date.now()
 * ticks over (there the two clocks agree to a loop iteration), checked against the wall clock at each span and
 * read again when the wall clock has moved.
 */

/** Slack for a reading taken a loop iteration after the tick, in milliseconds. */
const TICK_SLACK = 0.05;
/** The wall clock is re-read at most this often (each reading waits for a tick: up to 1 ms). */
const MIN_REANCHOR_MS = 1000;

let offset: number | undefined;
let anchoredAt = -Infinity;

function anchor(): number {
  const before = wallMillis();
  // Bounded: a frozen or faked wall clock never ticks.
  const giveUp = monotonicNow() + 2;
  for (;;) {
    const mono = monotonicNow();
    const wall = wallMillis();
    if (wall !== before || mono > giveUp) return wall - mono;
  }
}

/** The epoch time of a monotonicNow() reading, on the wall clock the application's spans are stamped by. */
export function epochHrTime(monotonic: number): HrTime {
  const now = monotonicNow();
  // Date.now() is whole milliseconds: with the right offset, this reading lies in (offset − 1, offset].
  const coarse = wallMillis() - now;
  if (offset === undefined || ((coarse > offset + TICK_SLACK || coarse < offset - 1 - TICK_SLACK) && now - anchoredAt >= MIN_REANCHOR_MS)) {
    offset = anchor();
    anchoredAt = now;
  }
  const epochMillis = monotonic + offset;
  const seconds = Math.floor(epochMillis / 1000);
  const nanos = Math.round((epochMillis - seconds * 1000) * 1e6);
  return nanos >= 1e9 ? [seconds + 1, nanos - 1e9] : [seconds, nanos];
}
