/*
 * What every checkout and query of one pool changes, written in one place by the adapter's wrappers and read
 * by the recorders at collection and on their own timers: HikariCP's shape, where the pool calls its
 * IMetricsTracker directly and PoolStats are read when metrics are collected.
 *
 * Why not the observer's calls: with each default recorder handling acquire, release and query itself (the
 * metrics, leak, stuck and log-policy recorders), a checkout was a fan-out of four calls per event, each
 * recorder looking its state up and reading the pool's counters: the worst case measured 1.11–1.13× CPU per
 * query, and 1.06–1.08× with this probe (BENCHMARKS.md, eighth and ninth sessions).
 * The observer still carries every rare event, and the hot events too for a recorder added with
 * addRecorder() that implements them.
 *
 * The probe keeps no running total that an instrument reports as a level: the counts in use come from the
 * library's own counters, passed in by the adapter at each event. What it accumulates are event counts and
 * durations (acquires by path, wait time), which are cumulative by nature.
 */
import { WindowPeak } from './window-peak.js';
import type { AcquirePath } from './observer.js';

/** Where the probe records a duration: a histogram cell, pointed at by the recorder that exports it. */
export interface DurationSink {
  record(seconds: number): void;
}

/**
 * A one-way level alarm on a pool's utilization: `fire` is called when a checkout finds used/max at or above
 * `high`, once, and re-armed by a later checkout that finds it below `low`.
 */
export interface UtilizationAlarm {
  readonly high: number;
  readonly low: number;
  /** False: not a crossing after all (the alarm stays armed). */
  fire(used: number, max: number): boolean | void;
}

/**
 * Past-threshold checks at the two moments a sweep may miss: a release, and a query's start after an idle gap.
 * A checkout held past the threshold and released before the next sweep (or a transaction idle past it that
 * went on before one) was never counted. Reached only when a threshold is crossed.
 */
export interface OverdueWatch {
  /** Use time (ms) from which a release is checked as a leak; Infinity when leak detection is off. */
  readonly leakAfterMs: number;
  /** Idle time (ms) from which a release or a query's start is checked as idle in transaction; Infinity when off. */
  readonly idleAfterMs: number;
  /** Called before `c` is released at `t`, or before a query starts on it at `t` (`releasing` false). */
  check(c: Checkout, t: number, releasing: boolean): void;
  /**
   * Whether `checkedOut` goes back to its pool inside an open transaction; asked at every release the pool keeps
   * (undefined when idle-in-transaction detection is off). Then `check` is called too.
   */
  readonly openTransaction: ((checkedOut: object) => boolean) | undefined;
}

// Symbol.for: a second copy of Poolscope in the process (an ESM and a CommonJS build) reads the records the
// other's probe wrote, as the query wrappers of one and the pool wrappers of the other may meet on one client.
const kCheckout = Symbol.for('poolscope.checkout');
/** Records of checked-out objects that cannot carry a property (frozen, sealed, non-extensible). */
const unmarkable = new WeakMap<object, Checkout>();
let anyUnmarkable = false;
/** How many times the pool's max the checked-out list may reach before its oldest entries are taken as stale. */
const STALE_SLACK = 2;

/** One checked-out object's record, reused for each of its checkouts: a warm pool allocates nothing per checkout. */
export class Checkout {
  /** The probe of the pool it is checked out from; undefined while it is not checked out. */
  probe: PoolProbe | undefined = undefined;
  /** Index in that probe's `out` while checked out. */
  index = -1;
  /** Bumped at each checkout, so a reader can tell one checkout from the next of the same connection. */
  serial = 0;
  /** performance.now() of the checkout, and of the last query it ran. */
  since = 0;
  lastActivity = 0;
  /** When this checkout last started a cursor, query stream or COPY (a submittable, whose end is not seen). */
  submittedAt = -Infinity;
  /** What the acquire's caller left (see PoolObserver.acquireOrigin); dropped at release. */
  origin: object | undefined = undefined;
  constructor(readonly client: object) {}
}

/** The record of `checkedOut`, if it was ever checked out from a probed pool. */
export function checkoutRecord(checkedOut: object): Checkout | undefined {
  const c = (checkedOut as { [kCheckout]?: Checkout })[kCheckout];
  return c !== undefined || !anyUnmarkable ? c : unmarkable.get(checkedOut);
}

/** A query ran on `checkedOut` at `t`: what idle-in-transaction detection measures from. */
export function touchCheckout(checkedOut: object, t: number, submitted = false): void {
  const c = checkoutRecord(checkedOut);
  if (c === undefined || c.probe === undefined) return;
  c.lastActivity = t;
  // Not cleared by a plain query's end: one started before the submittable may end while it runs.
  if (submitted) c.submittedAt = t;
}

/** A query starts on `checkedOut` at `t`: a gap since its last activity past the idle threshold is checked. */
export function checkIdleGap(checkedOut: object, t: number): void {
  const c = checkoutRecord(checkedOut);
  const watch = c?.probe?.overdue;
  if (watch === undefined || t - c!.lastActivity < watch.idleAfterMs) return;
  try {
    watch.check(c!, t, false);
  } catch {
    // A log line is never worth an exception in the host's query.
  }
}

function recordOf(checkedOut: object): Checkout {
  let c = checkoutRecord(checkedOut);
  if (c === undefined) {
    c = new Checkout(checkedOut);
    if (Object.isExtensible(checkedOut)) {
      // Non-enumerable, so the record never shows up in console.log, JSON or crash dumps.
      Object.defineProperty(checkedOut, kCheckout, { value: c, writable: true, configurable: true, enumerable: false });
    } else {
      // A pool whose resources are frozen still has them timed and watched; defining on one would throw.
      anyUnmarkable = true;
      unmarkable.set(checkedOut, c);
    }
  }
  return c;
}

export class PoolProbe {
  /** Wait and use time, recorded where the metrics recorder points them; undefined while nothing exports them. */
  wait: DurationSink | undefined = undefined;
  use: DurationSink | undefined = undefined;
  /** Set by the log policy; undefined when nothing watches utilization. */
  alarm: UtilizationAlarm | undefined = undefined;
  /** Set by the leak detector; undefined when nothing watches holds and idle transactions. */
  overdue: OverdueWatch | undefined = undefined;
  private alarmArmed = true;

  /** Acquires served, by path. */
  idleAcquires = 0;
  newAcquires = 0;
  queuedAcquires = 0;
  /** Seconds waited by every completed acquire. */
  waitSeconds = 0;
  /** performance.now() of the last completed acquire. */
  lastAcquireAt = -Infinity;
  /**
   * performance.now() of the latest request that queued with no one else waiting: the start of the current (or
   * last) spell of waiting, for how long the callers waiting now have waited.
   */
  waitingSince = -Infinity;

  /** Most used and most pending seen by any event in the last 65 to 70 s (window-peak.ts). */
  readonly peakUsed = new WindowPeak();
  readonly peakPending = new WindowPeak();
  /** performance.now() since when the pool has had every connection in use; undefined while below. */
  capacitySince: number | undefined = undefined;
  /** Seconds spent at capacity before `capacitySince`. */
  capacitySeconds = 0;

  /** The pool's max as its last acquire saw it. */
  private lastMax = Infinity;
  /** The checked-out objects, in no order (swap-removal). */
  readonly out: Checkout[] = [];

  /** `read` gives the pool's counters now; called only when a release may end a spell at capacity. */
  constructor(private readonly read: () => { used: number; pending: number; max: number } | undefined) {}

  get acquires(): number {
    return this.idleAcquires + this.newAcquires + this.queuedAcquires;
  }

  /**
   * An acquire is requested at `t`, to be served by `path`: `waiting` callers were already waiting, and `used`
   * connections were in use (read only for a new connection, which is in use from the moment it starts opening:
   * a storm of connects that all fail is a peak too).
   */
  requested(t: number, path: AcquirePath, waiting: number, used?: number): void {
    const queued = path === 'queued';
    this.peakPending.note(queued ? waiting + 1 : waiting, t);
    if (queued && waiting === 0) this.waitingSince = t;
    if (used !== undefined && path === 'new') this.peakUsed.note(used + 1, t);
  }

  /** An acquire completed at `t`; `used` and `max` are the pool's counters as it completed. */
  acquired(checkedOut: object, t: number, waitSeconds: number, path: AcquirePath, origin: object | undefined, used: number, max: number): void {
    this.wait?.record(waitSeconds);
    if (path === 'idle') this.idleAcquires++;
    else if (path === 'new') this.newAcquires++;
    else this.queuedAcquires++;
    this.waitSeconds += waitSeconds;
    this.lastAcquireAt = t;
    this.peakUsed.note(used, t);
    this.lastMax = max;
    if (max > 0) {
      if (this.capacitySince === undefined && used >= max) this.capacitySince = t;
      if (this.alarm !== undefined) this.checkAlarm(this.alarm, used, max);
    }
    const c = recordOf(checkedOut);
    // Checked out again without its release being seen (destroyed, or moved between pools): the old entry goes.
    if (c.probe !== undefined) c.probe.remove(c);
    c.probe = this;
    c.index = this.out.length;
    this.out.push(c);
    c.serial++;
    c.since = t;
    c.lastActivity = t;
    c.submittedAt = -Infinity;
    c.origin = origin;
    if (this.out.length > STALE_SLACK * max + STALE_SLACK && max > 0) this.dropOldest();
  }

  /**
   * Released at `t` (`discarded`: the pool closes the connection rather than keep it); returns the checkout's use
   * time in seconds, or undefined if its checkout was not seen.
   */
  released(checkedOut: object, t: number, discarded = false): number | undefined {
    const c = checkoutRecord(checkedOut);
    if (c === undefined || c.probe !== this) return undefined;
    const watch = this.overdue;
    if (watch !== undefined && (t - c.since >= watch.leakAfterMs || t - c.lastActivity >= watch.idleAfterMs ||
      (!discarded && watch.openTransaction?.(checkedOut) === true))) {
      try {
        watch.check(c, t, true);
      } catch {
        // A log line is never worth an exception in the host's release.
      }
    }
    // The level this release ends was held until now: a hold longer than the peak window, released and scraped
    // at once, read a peak of 0 (found by review). The probe's own count, not the pool's: no read per release
    // (capped at the pool's max, as the list may still hold a checkout whose release never came).
    this.peakUsed.note(Math.min(this.out.length, this.lastMax), t);
    this.remove(c);
    c.origin = undefined;
    const seconds = (t - c.since) / 1000;
    this.use?.record(seconds);
    if (this.capacitySince !== undefined) this.leaveCapacity(t);
    return seconds;
  }

  /** Seconds at capacity up to `t`, with the current spell folded in (and restarted at `t` if still full). */
  capacityUntil(t: number, stillFull: boolean): number {
    if (this.capacitySince !== undefined) {
      this.capacitySeconds += (t - this.capacitySince) / 1000;
      this.capacitySince = stillFull ? t : undefined;
    }
    return this.capacitySeconds;
  }

  /**
   * Takes over the connections `previous` has checked out: the same pool registered anew under another name,
   * whose checkouts in flight must still be timed and watched when they come back. What was counted stays
   * with `previous`: the new registration's series start from zero. (Not for a pool moved to a restarted
   * Poolscope: releases while nothing ran went unseen, and its list would hold connections long returned.)
   */
  adopt(previous: PoolProbe): void {
    for (const c of previous.out) {
      c.probe = this;
      c.index = this.out.length;
      this.out.push(c);
    }
    previous.out.length = 0;
  }

  /**
   * A pool never has more than `max` connections out, so a list this much longer holds connections whose
   * release never came (destroyed while checked out, say): the oldest goes, so memory stays bounded.
   */
  private dropOldest(): void {
    let oldest = this.out[0]!;
    for (const c of this.out) if (c.since < oldest.since) oldest = c;
    this.remove(oldest);
    oldest.origin = undefined;
  }

  private remove(c: Checkout): void {
    const i = c.index;
    c.probe = undefined;
    c.index = -1;
    const out = this.out;
    if (out[i] !== c) return;
    const last = out.pop()!;
    if (last !== c) {
      out[i] = last;
      last.index = i;
    }
  }

  /** The releasing connection still counts as used; a waiter takes it over and the pool stays full. */
  private leaveCapacity(t: number): void {
    const s = this.read();
    if (s !== undefined && (s.used - 1 >= s.max || s.pending > 0)) return;
    this.capacitySeconds += (t - this.capacitySince!) / 1000;
    this.capacitySince = undefined;
  }

  private checkAlarm(alarm: UtilizationAlarm, used: number, max: number): void {
    const u = used / max;
    if (!this.alarmArmed) {
      if (u < alarm.low) this.alarmArmed = true;
      return;
    }
    if (u < alarm.high) return;
    this.alarmArmed = false;
    try {
      // A crossing the policy did not count (a one-connection pool nobody waits for) leaves the alarm armed.
      if (alarm.fire(used, max) === false) this.alarmArmed = true;
    } catch {
      // A log line is never worth an exception in the host's checkout.
    }
  }
}
