/** Callers waiting on connections being opened for them: how many, and since when the oldest has waited. */
export interface OpeningCallers {
  count: number;
  /** performance.now() when the oldest of these connection attempts began. */
  since: number;
}

/** Attempts kept at most; the oldest goes beyond (an attempt whose end went unseen, with nothing reading). */
const MAX_ATTEMPTS = 1_000;

/**
 * A pool's connection attempts in flight for callers, each with its own start. Pools such as pg-pool and Slonik
 * count as waiting only the callers queued at `max`; a caller whose connection is being opened waits too, from
 * when its attempt began. (A clock started when a health read first saw someone waiting joined two callers'
 * separate waits into one, and a pool whose connects took 7 s read stuck for 10.)
 */
export class OpeningAttempts {
  private readonly started = new Map<object, number>();

  begin(attempt: object, t: number): void {
    this.started.set(attempt, t);
    if (this.started.size > MAX_ATTEMPTS) this.started.delete(this.started.keys().next().value as object);
  }

  end(attempt: object): void {
    this.started.delete(attempt);
  }

  /** The attempts in flight now; `live` drops those whose end was never reported (and forgets them). */
  read(live?: (attempt: object) => boolean): OpeningCallers | undefined {
    let count = 0;
    let since = Infinity;
    for (const [attempt, t] of this.started) {
      if (live !== undefined && !live(attempt)) {
        this.started.delete(attempt);
        continue;
      }
      count++;
      if (t < since) since = t;
    }
    return count === 0 ? undefined : { count, since };
  }
}
