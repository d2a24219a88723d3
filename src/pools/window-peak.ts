/**
 * The highest value seen over the last minute and more, readable by any number of readers without consuming it.
 *
 * A peak that restarted at each collection belonged to whichever reader collected first: of two Prometheus
 * servers scraping one process (an HA pair), or an operator's curl beside them, each saw only the bursts since
 * the other's scrape, and two scrapes a few milliseconds apart disagreed. A trailing window gives every reader
 * the same answer, and any reader collecting at least once a minute sees every burst.
 */
// 65 to 70 s: a reader collecting every minute (Prometheus's default scrape interval, the OTLP reader's default
// export interval) sees every burst, with a few seconds to spare for its jitter; at 55 to 60 s, a burst in the
// 5 s slot of the previous collection had left the window at the next (found by review).
export const PEAK_WINDOW_MS = 70_000;
const SLOT_MS = 5_000;
const SLOTS = PEAK_WINDOW_MS / SLOT_MS;

export class WindowPeak {
  /** Which 5-second slot each entry holds, and its highest value. */
  private readonly slots = new Float64Array(SLOTS).fill(-Infinity);
  private readonly peaks = new Float64Array(SLOTS);

  /** `value` was reached at `t` (performance.now()). */
  note(value: number, t: number): void {
    const slot = Math.floor(t / SLOT_MS);
    const i = slot % SLOTS;
    if (this.slots[i] !== slot) {
      this.slots[i] = slot;
      this.peaks[i] = value;
    } else if (value > this.peaks[i]!) {
      this.peaks[i] = value;
    }
  }

  /** The highest value noted within the window ending at `t` (65 to 70 s back), 0 if none. */
  read(t: number): number {
    const slot = Math.floor(t / SLOT_MS);
    let peak = 0;
    for (let i = 0; i < SLOTS; i++) {
      if (slot - this.slots[i]! < SLOTS && this.peaks[i]! > peak) peak = this.peaks[i]!;
    }
    return peak;
  }
}
