import { SERVER_LIMITS } from './limits.js';
import { monotonicNow } from '../native-timers.js';

/**
 * Coalesces `/metrics` collections: callers during a collection wait for it; during a flood, callers
 * shortly after get its result. Holds at most one encoded body and one collection in flight.
 */
export class SharedScrape {
  private inflight: Promise<Buffer> | undefined;
  private body: Buffer | undefined;
  private validUntil = 0;
  /** Requests in the current one-second window, to tell a flood from ordinary scrapes. */
  private windowStart = -Infinity;
  private windowRequests = 0;
  /** Collections actually run; for tests and diagnostics. */
  collections = 0;

  constructor(
    private readonly produce: () => Promise<string>,
    private readonly ttlMs: number = SERVER_LIMITS.metricsCacheMs,
    private readonly now: () => number = () => monotonicNow(),
  ) {}

  get(): Promise<Buffer> {
    const t = this.now();
    if (t - this.windowStart >= 1_000) {
      this.windowStart = t;
      this.windowRequests = 0;
    }
    this.windowRequests++;
    // Reuse only under a flood: a scrape right after a change (a test, an operator's curl) must see it.
    const flood = this.windowRequests > SERVER_LIMITS.metricsFloodRequests;
    if (flood && this.body !== undefined && t < this.validUntil) return Promise.resolve(this.body);
    if (this.inflight !== undefined) return this.inflight;
    const started = this.now();
    this.collections++;
    const run = Promise.resolve()
      .then(() => this.produce())
      .then((text) => {
        const body = Buffer.from(text, 'utf8');
        const finished = this.now();
        this.body = body;
        this.validUntil = finished + Math.max(this.ttlMs, (finished - started) * SERVER_LIMITS.metricsCacheDurationFactor);
        return body;
      })
      .finally(() => {
        if (this.inflight === run) this.inflight = undefined;
      });
    this.inflight = run;
    return run;
  }

  /** Bytes held by the cached body (0 when none). */
  cachedBytes(): number {
    return this.body?.length ?? 0;
  }

  /** Whether a collection is running now. */
  collecting(): boolean {
    return this.inflight !== undefined;
  }
}
