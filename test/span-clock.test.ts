// Span times from monotonic readings (src/tracing/span-clock.ts): on the wall clock the SDK stamps the
// application's spans by, also after that clock moved while the process ran.
import { afterEach, describe, expect, it, vi } from 'vitest';

const RealDate = Date;
let ahead = 0;
class MovableDate extends RealDate {
  constructor(...args: []) { if (args.length === 0) super(RealDate.now() + ahead); else super(...(args as [])); }
  static override now() { return RealDate.now() + ahead; }
}

async function freshClock() {
  vi.resetModules();
  // The module captures Date at load, as the preload does before the application runs.
  globalThis.Date = MovableDate as DateConstructor;
  try {
    const timers = await import('../src/native-timers.js');
    const clock = await import('../src/tracing/span-clock.js');
    return { ...clock, monotonicNow: timers.monotonicNow };
  } finally {
    globalThis.Date = RealDate;
  }
}

const millisOf = ([s, ns]: [number, number]) => s * 1000 + ns / 1e6;

afterEach(() => { ahead = 0; });

describe('span clock', () => {
  it('puts a monotonic reading on the wall clock to well under a millisecond, nanoseconds below one second', async () => {
    ahead = 5_000;
    const { epochHrTime, monotonicNow } = await freshClock();
    const before = RealDate.now() + ahead;
    const t = epochHrTime(monotonicNow()) as [number, number];
    const after = RealDate.now() + ahead;
    expect(t[1]).toBeGreaterThanOrEqual(0);
    expect(t[1]).toBeLessThan(1e9);
    expect(millisOf(t)).toBeGreaterThanOrEqual(before);
    expect(millisOf(t)).toBeLessThanOrEqual(after + 1);
  });

  it('follows the wall clock when it moved after the first span (bug: one offset for the life of the process)', async () => {
    const { epochHrTime, monotonicNow } = await freshClock();
    epochHrTime(monotonicNow());
    ahead = 60_000;
    // The offset is read again at most once a second.
    await new Promise((r) => setTimeout(r, 1_100));
    const before = RealDate.now() + ahead;
    const t = millisOf(epochHrTime(monotonicNow()) as [number, number]);
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(RealDate.now() + ahead + 1);
  });
});
