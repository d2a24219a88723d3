/*
 * The composite health score, 0–100: 100 minus a penalty for each of utilization, wait, connection
 * errors and acquire timeouts. Each penalty is 0 when all is well and its full weight when that signal
 * alone says the pool is in trouble, so the number reads the same way for every pool and a dashboard can
 * rank them. A stuck pool scores 0: it is not serving, however the parts add up. The formula is written
 * out in the README ("Health score"); keep the two in step.
 */

/** Points each signal can take away; they add up to 100. */
export const SCORE_WEIGHTS = { utilization: 20, wait: 30, errors: 25, timeouts: 25 } as const;

/** Waits up to this are free (an idle hand-over, a healthy connect)… */
export const WAIT_FREE_SECONDS = 0.01;
/** …and the penalty grows with the logarithm of the wait up to this, where it is full. */
export const WAIT_FULL_SECONDS = 1;
/** The share of acquires timing out at which the timeout penalty is full: one in ten. */
export const TIMEOUT_FULL_SHARE = 0.1;

export interface ScoreInputs {
  /** used / max now, 0–1. */
  utilization: number;
  /** Utilization from which a pool is `warning`; below it utilization costs nothing. */
  warningThreshold: number;
  /** Mean acquire wait over the window, or how long the current waiters have waited, if that is longer. */
  waitSeconds: number;
  /** Completed and timed-out acquires over the window. */
  acquires: number;
  timeouts: number;
  /** Opened and failed connection attempts over the window. */
  connects: number;
  failures: number;
  stuck: boolean;
}

export interface ScoreParts {
  utilization: number;
  wait: number;
  errors: number;
  timeouts: number;
}

const clamp = (x: number): number => (Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : x > 0 ? 1 : 0);

/** Each penalty as a fraction (0–1) of its weight. */
export function penalties(i: ScoreInputs): ScoreParts {
  const attempts = i.connects + i.failures;
  const acquires = i.acquires + i.timeouts;
  return {
    utilization: i.warningThreshold < 1 ? clamp((i.utilization - i.warningThreshold) / (1 - i.warningThreshold)) : 0,
    wait: i.waitSeconds <= WAIT_FREE_SECONDS ? 0
      : clamp(Math.log10(i.waitSeconds / WAIT_FREE_SECONDS) / Math.log10(WAIT_FULL_SECONDS / WAIT_FREE_SECONDS)),
    errors: attempts > 0 ? i.failures / attempts : 0,
    timeouts: acquires > 0 ? clamp(i.timeouts / acquires / TIMEOUT_FULL_SHARE) : 0,
  };
}

/** The score, an integer from 0 (stuck or failing on every count) to 100. */
export function healthScore(i: ScoreInputs): number {
  if (i.stuck) return 0;
  const p = penalties(i);
  const lost = SCORE_WEIGHTS.utilization * p.utilization + SCORE_WEIGHTS.wait * p.wait +
    SCORE_WEIGHTS.errors * p.errors + SCORE_WEIGHTS.timeouts * p.timeouts;
  return Math.max(0, Math.min(100, Math.round(100 - lost)));
}

/** The service's score: its worst pool's (a service is as healthy as the pool it waits on); null without pools. */
export function serviceScore(scores: number[]): number | null {
  return scores.length === 0 ? null : Math.min(...scores);
}
