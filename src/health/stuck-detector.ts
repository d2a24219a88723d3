import type { PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolObserver, PoolSnapshot } from '../pools/observer.js';
import { PoolStates } from '../pools/pool-states.js';
import { errorType } from '../metrics/error-type.js';
import { monotonicNow } from '../native-timers.js';

/**
 * Why a pool is stuck, most fundamental first: a server that cannot be reached explains timeouts, and
 * timeouts explain a queue that does not move.
 */
export type StuckReason = 'server_unreachable' | 'acquire_timeouts' | 'no_progress';
export const STUCK_REASONS: readonly StuckReason[] = ['server_unreachable', 'acquire_timeouts', 'no_progress'];

export interface StuckRules {
  /** How long a pool may go without progress, and how long a timeout or a failed connect counts. */
  windowMillis: number;
  /** Acquire timeouts within the window that make a pool stuck. */
  timeouts: number;
}

export const DEFAULT_STUCK_RULES: StuckRules = { windowMillis: 10_000, timeouts: 1 };

/** Event totals at one instant; the difference of two is what happened in between. */
interface Totals {
  at: number;
  acquires: number;
  /** Seconds waited by acquires that completed and by those that timed out. */
  waitSeconds: number;
  timeouts: number;
  connects: number;
  failures: number;
}

/**
 * The detector's own state for one pool. Times are monotonicNow() milliseconds. Completed acquires (their
 * count, wait and last time) are the pool's probe's; the rest come from the observer's rare events.
 */
interface Progress {
  /** When the pool was first seen. */
  at: number;
  timeouts: number;
  /** Seconds waited by acquires that timed out. */
  timeoutWaitSeconds: number;
  connects: number;
  failures: number;
  lastConnectAt: number;
  lastFailureAt: number;
  /** The last failure's `error.type` (a SQLSTATE, a system code): a wrong password is not a server down. */
  lastFailureType: string | undefined;
  /** The last `rules.timeouts` timeout times, a ring. */
  timeoutTimes: Float64Array;
  timeoutNext: number;
  /** When the callers waiting at the last read started to wait (see judge). */
  waitingSince: number | undefined;
  /** The last read: a spell of waiting that began before it was seen over by then, if that read saw none. */
  lastLook: number;
  /** Totals at each health sample, oldest first: the score looks back to the oldest. */
  checkpoints: Totals[];
  /** The reason judged last, so a stuck pool is one warning and its recovery one line. */
  logged: StuckReason | undefined;
  /** Spells of being stuck so far; whether the current one was logged; when the last logged one began. */
  spells: number;
  spellLogged: boolean;
  lastSpellLoggedAt: number;
  /** Spells since the last logged one that were not logged. */
  unloggedSpells: number;
}

/**
 * At most one stuck spell is logged per pool in this long. The logger's own per-key limit would do it, but it
 * also cut the recovery lines apart from their spells: a second spell within the minute went unlogged while its
 * end could be, and the reader of the log could not tell.
 */
const SPELL_LOG_INTERVAL_MS = 60_000;

/** What the detector concludes about one pool at one instant. */
export interface PoolVerdict {
  /** Each rule on its own (several can hold at once). */
  reasons: Record<StuckReason, boolean>;
  /** The most fundamental reason that holds, if any. */
  stuckReason: StuckReason | undefined;
  /** Over the score window (see {@link StuckDetector.checkpoint}). */
  window: {
    acquires: number;
    timeouts: number;
    connects: number;
    failures: number;
    /** Mean wait of completed and timed-out acquires, seconds; 0 without any. */
    meanWaitSeconds: number;
  };
  /**
   * How long the callers waiting now have waited: those queued, since the queue last moved; those whose own
   * connection is being opened, since the oldest such attempt began. Seconds, 0 without either.
   */
  stalledSeconds: number;
}

const now = monotonicNow;
/** A duration for a log line, to a tenth of a second. */
const secondsOf = (ms: number): string => `${Math.round(ms / 100) / 10} s`;

/**
 * Tells a stuck pool from a busy one. A busy pool, even at 100 %, keeps handing out connections; a stuck
 * one does not: its callers wait and no acquire completes for the window, or its acquires time out, or
 * every connection attempt fails with nothing succeeding in the window (the server is unreachable).
 *
 * It judges from the application's own traffic and never opens a connection or runs a query itself:
 * completed acquires as the pool's probe counts them, rare events (timeouts, connects, failures) as the
 * observer reports them, all read when health or metrics are read.
 */
export class StuckDetector implements PoolObserver {
  private readonly progress = new PoolStates<Progress>((): Progress => ({
    at: now(), timeouts: 0, timeoutWaitSeconds: 0, connects: 0, failures: 0,
    lastConnectAt: -Infinity, lastFailureAt: -Infinity, lastFailureType: undefined,
    timeoutTimes: new Float64Array(this.rules.timeouts).fill(-Infinity), timeoutNext: 0,
    waitingSince: undefined, lastLook: -Infinity, checkpoints: [], logged: undefined,
    spells: 0, spellLogged: false, lastSpellLoggedAt: -Infinity, unloggedSpells: 0,
  }));

  constructor(
    readonly rules: StuckRules,
    /** Checkpoints kept per pool: the score's look-back in health samples. */
    private readonly checkpoints: number,
    private readonly logger?: PoolscopeLogger,
  ) {}

  poolOpened(pool: ObservedPool): void {
    const p = this.progress.of(pool);
    // The score's window starts at the pool's birth: from its first health sample (up to an interval later), a
    // pool that failed at boot scored 100 again, what happened before that sample forgotten.
    if (p.checkpoints.length === 0) p.checkpoints.push(this.totals(pool, p, now()));
  }

  poolClosed(pool: ObservedPool): void {
    this.progress.delete(pool);
  }

  acquireTimedOut(pool: ObservedPool, waitSeconds: number): void {
    const p = this.progress.of(pool);
    p.timeouts++;
    p.timeoutWaitSeconds += waitSeconds;
    p.timeoutTimes[p.timeoutNext] = now();
    p.timeoutNext = (p.timeoutNext + 1) % p.timeoutTimes.length;
  }

  connectionCreated(pool: ObservedPool): void {
    const p = this.progress.of(pool);
    p.connects++;
    p.lastConnectAt = now();
  }

  connectionFailed(pool: ObservedPool, error: unknown): void {
    const p = this.progress.of(pool);
    p.failures++;
    p.lastFailureAt = now();
    p.lastFailureType = errorType(error);
  }

  /** Records the pool's totals for the score window; called once per health sample. */
  checkpoint(pool: ObservedPool, at = now()): void {
    const p = this.progress.of(pool);
    p.checkpoints.push(this.totals(pool, p, at));
    if (p.checkpoints.length > this.checkpoints) p.checkpoints.splice(0, p.checkpoints.length - this.checkpoints);
  }

  /** Judges a pool from its live snapshot. Reading is what notices waiters, so every read counts. */
  judge(pool: ObservedPool, s: PoolSnapshot, t = now()): PoolVerdict {
    const p = this.progress.of(pool);
    const w = this.rules.windowMillis;

    // Queued callers seen for the first time start the clock when the first of them queued (the probe's spell),
    // else here: never earlier, so a pool idle for an hour that fills up now does not look as if it had made no
    // progress for an hour; and not later, so the score counts how long the callers waiting now have waited,
    // not how long since a health sample first saw them.
    // A spell that began before the last read, which saw no one waiting, is over: its start is not this one's.
    const spell = pool.probe.waitingSince;
    if (s.pending > 0) p.waitingSince ??= spell > p.lastLook ? Math.min(t, spell) : t;
    else p.waitingSince = undefined;
    p.lastLook = t;
    const lastAcquireAt = pool.probe.lastAcquireAt;
    const stalledSince = p.waitingSince === undefined ? t : Math.max(p.waitingSince, lastAcquireAt);
    // Callers whose connection is being opened (pg-pool and Slonik leave them out of `pending`) wait from their
    // own attempt's start, which the adapter knows. They make the pool stuck only if no acquire completed since
    // the oldest began (the pool serves otherwise), but their wait counts in the score either way: such callers
    // hung with the score at 100 while a warm connection served the rest.
    const opening = pool.opening();
    const openingSince = opening === undefined ? t : Math.min(t, opening.since);
    const waiting = s.pending + (opening?.count ?? 0);

    const oldestTimeout = p.timeoutTimes[p.timeoutNext]!;
    const lastSuccess = Math.max(lastAcquireAt, p.lastConnectAt);
    const reasons: Record<StuckReason, boolean> = {
      server_unreachable: t - p.lastFailureAt < w && t - lastSuccess >= w,
      acquire_timeouts: t - oldestTimeout < w,
      no_progress: (s.pending > 0 && t - stalledSince >= w) || (opening !== undefined && t - Math.max(openingSince, lastAcquireAt) >= w),
    };
    const stuckReason = STUCK_REASONS.find((r) => reasons[r]);
    this.logTransition(pool, p, lastSuccess, stuckReason, waiting, t);

    const totals = this.totals(pool, p, t);
    const base = p.checkpoints[0] ?? ZERO;
    const acquires = totals.acquires - base.acquires;
    const timeouts = totals.timeouts - base.timeouts;
    const finished = acquires + timeouts;
    return {
      reasons,
      stuckReason,
      window: {
        acquires,
        timeouts,
        connects: totals.connects - base.connects,
        failures: totals.failures - base.failures,
        meanWaitSeconds: finished > 0 ? (totals.waitSeconds - base.waitSeconds) / finished : 0,
      },
      stalledSeconds: (t - Math.min(stalledSince, openingSince)) / 1000,
    };
  }

  private totals(pool: ObservedPool, p: Progress, at: number): Totals {
    const probe = pool.probe;
    return { at, acquires: probe.acquires, waitSeconds: probe.waitSeconds + p.timeoutWaitSeconds, timeouts: p.timeouts,
      connects: p.connects, failures: p.failures };
  }

  private logTransition(pool: ObservedPool, p: Progress, lastSuccess: number, reason: StuckReason | undefined, waiting: number, t: number): void {
    if (reason === p.logged || this.logger === undefined) return;
    const previous = p.logged;
    p.logged = reason;
    const seconds = secondsOf(this.rules.windowMillis);
    // The end of a logged spell is said at the spell's own level: at info, the default level never showed it.
    if (reason === undefined) {
      if (p.spellLogged) this.logger.warn(`stuck:${pool.name}:${p.spells}:recovered`, `poolscope: pool "${pool.name}" is no longer stuck (was: ${previous}).`);
      return;
    }
    let earlier = '';
    if (previous === undefined) {
      p.spells++;
      p.spellLogged = t - p.lastSpellLoggedAt >= SPELL_LOG_INTERVAL_MS;
      if (!p.spellLogged) {
        p.unloggedSpells++;
        return;
      }
      p.lastSpellLoggedAt = t;
      if (p.unloggedSpells > 0) earlier = ` (${p.unloggedSpells} more spell(s) stuck since the last such line, not logged)`;
      p.unloggedSpells = 0;
    } else if (!p.spellLogged) {
      return;
    }
    // A pool that never connected is unreachable from its first failure; the window has not passed yet.
    const neverConnected = lastSuccess === -Infinity;
    const failing = `connection attempts fail (last: ${p.lastFailureType ?? 'unknown'})`;
    const unreachable = neverConnected
      ? `${failing} and none has succeeded since the pool was created ${secondsOf(t - p.at)} ago`
      : `${failing} and none succeeded for ${seconds}`;
    const why = reason === 'server_unreachable' ? unreachable
      : reason === 'acquire_timeouts' ? `${this.rules.timeouts} acquire timeout(s) within ${seconds}`
        : `${waiting} caller(s) waiting and no acquire completed for ${seconds}`;
    this.logger.warn(`stuck:${pool.name}:${p.spells}:${reason}`,
      `poolscope: pool "${pool.name}" is stuck (${reason}): ${why}; /health/database answers 503${earlier}.`);
  }
}

const ZERO: Totals = { at: 0, acquires: 0, waitSeconds: 0, timeouts: 0, connects: 0, failures: 0 };
