import { errorText, type PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolObserver } from '../pools/observer.js';
import { PoolStates } from '../pools/pool-states.js';
import { monotonicNow } from '../native-timers.js';

interface LogState {
  /** monotonicNow() of the last utilization warning. */
  loggedAt: number;
  overflowActive: boolean;
}

/** Utilization has to fall this far below the threshold before another crossing counts. */
const HYSTERESIS = 0.1;
const UTILIZATION_LOG_INTERVAL_MS = 60_000;
/**
 * Pools whose crossing is logged per interval, whichever they are: a process with many small pools (a pool of
 * one per tenant is at 100 % on every query) wrote a line per pool, 150 for 150 pools.
 */
const UTILIZATION_POOLS_PER_INTERVAL = 10;

/**
 * The log policy: one rate-limited warning when a pool crosses the utilization threshold (with
 * hysteresis, so a pool hovering at the threshold is one crossing, not one per checkout) and one when it
 * goes into overflow. Utilization is watched by an alarm on the pool's probe, checked on checkout only,
 * where utilization rises: a pool that fell back below the threshold minus the hysteresis is re-armed by
 * its next checkout, which still counts below it. (Checking on release too read the pool on every release
 * of a busy pool, for no message.)
 */
export class LogPolicyRecorder implements PoolObserver {
  private readonly state = new PoolStates<LogState>(() => ({ loggedAt: -Infinity, overflowActive: false }));

  /** Crossings logged in the current interval, across pools, and when it began. */
  private crossingsLogged = 0;
  private crossingsSince = -Infinity;

  constructor(private readonly log: PoolscopeLogger, private readonly threshold: number) {}

  poolOpened(pool: ObservedPool): void {
    pool.probe.alarm = {
      high: this.threshold,
      low: this.threshold - HYSTERESIS,
      fire: (used, max) => {
        try {
          return this.crossed(pool, used, max);
        } catch (err) {
          this.log.warn('record', `poolscope: the utilization warning failed: ${errorText(err)}`);
          return true;
        }
      },
    };
  }

  poolClosed(pool: ObservedPool): void {
    this.state.delete(pool);
  }

  connectionCreated(pool: ObservedPool): void {
    this.checkOverflow(pool);
  }

  connectionClosed(pool: ObservedPool): void {
    this.checkOverflow(pool);
  }

  /**
   * A checkout found the pool at or above the threshold, the first since it was last below it minus the
   * hysteresis. False when that is not a crossing to count.
   */
  private crossed(pool: ObservedPool, used: number, max: number): boolean {
    const pending = pool.snapshot()?.pending ?? 0;
    // A pool of one connection is at 100 % whenever it is used: a migration CLI's (drizzle-kit's) printed the line
    // on every run (found by a review of process fleets). Said only when callers wait for it.
    if (max <= 1 && pending === 0) return false;
    const state = this.state.of(pool);
    const t = monotonicNow();
    if (t - state.loggedAt < UTILIZATION_LOG_INTERVAL_MS) return true;
    state.loggedAt = t;
    if (t - this.crossingsSince >= UTILIZATION_LOG_INTERVAL_MS) {
      this.crossingsSince = t;
      this.crossingsLogged = 0;
    }
    if (++this.crossingsLogged > UTILIZATION_POOLS_PER_INTERVAL) {
      if (this.crossingsLogged === UTILIZATION_POOLS_PER_INTERVAL + 1) {
        this.log.warn('utilization:more-pools', `poolscope: more than ${UTILIZATION_POOLS_PER_INTERVAL} pools reached ` +
          `${Math.round(this.threshold * 100)}% utilization within a minute; further pools' crossings are not logged ` +
          'until the minute is over (poolscope.pool.utilization has them all).');
      }
      return true;
    }
    this.log.warn(`utilization:${pool.name}`,
      `poolscope: pool "${pool.name}" is at ${Math.round((used / max) * 100)}% utilization ` +
      `(${used}/${max} connections in use, ${pending} waiting).`);
    return true;
  }

  private checkOverflow(pool: ObservedPool): void {
    const s = pool.snapshot();
    if (s === undefined) return;
    const base = pool.baseSize(s);
    // Overflow only means something when a base was declared or the pool keeps a minimum.
    if (base <= 0) return;
    const total = s.used + s.idle;
    const state = this.state.of(pool);
    const active = total > base;
    if (active && !state.overflowActive) {
      this.log.warn(`overflow:${pool.name}`,
        `poolscope: pool "${pool.name}" is in overflow: ${total} connections open, base size ${base}.`);
    }
    state.overflowActive = active;
  }
}
