import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describeEndpoint } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';
import { nativeTimers, settledWithin } from '../native-timers.js';
import { collectorUnreachable, PROBE_LIMIT_MS } from './collector-probe.js';

/**
 * One signal's collector outages, as log lines: one when an outage starts, one when it ends. Keyed per
 * outage, so the logger's rate limit never swallows the end of a short second outage.
 */
export class OutageLog {
  /** What the last export found: undefined before the first. */
  private reached: boolean | undefined;
  private outages = 0;
  private readonly shown: string;

  constructor(private readonly endpoint: string, private readonly logger: PoolscopeLogger, private readonly signal: 'metric' | 'span',
    private readonly meanwhile: string, private readonly protocol?: string) {
    this.shown = describeEndpoint(endpoint);
  }

  /** True while the last export failed. */
  get inOutage(): boolean {
    return this.reached === false;
  }

  /**
   * Runs `send` at once when the last export reached the collector; before the first export and during an
   * outage, only once the collector accepts a TCP connection (collector-probe.ts), else `fail` gets the
   * export's failure. Upstream retries a failed export with referenced timers for up to its timeout, so a
   * script whose collector was down outlived its work by up to 10 s (traces) or an export interval (metrics),
   * as soon as it had exported once (Express's own test suite under the preload: 3 s became 9 s). A refused
   * connection is known in a millisecond. `send` throwing is the export failing; `fail` may not throw: this
   * runs outside the host's stack.
   */
  whenReachable(send: () => void, fail: (result: ExportResult) => void): void {
    const attempt = () => {
      try {
        send();
      } catch (err) {
        fail({ code: ExportResultCode.FAILED, error: err as Error });
      }
    };
    if (this.reached === true) {
      attempt();
      return;
    }
    void collectorUnreachable(this.endpoint, PROBE_LIMIT_MS, this.protocol).then((why) => {
      if (why === undefined) attempt();
      else fail({ code: ExportResultCode.FAILED, error: new Error(why === 'timeout' ? `no connection within ${PROBE_LIMIT_MS / 1000} s` : `connect ${why}`) });
    }).catch(() => undefined);
  }

  /** `lost`: what the recovery line adds about the outage (spans dropped meanwhile, say). */
  note(result: ExportResult, lost = ''): void {
    if (result.code === ExportResultCode.SUCCESS) {
      if (this.reached === false) this.logger.warn(`otlp:${this.signal}:recovered:${this.outages}`, `poolscope: OTLP ${this.signal} export to ${this.shown} recovered${lost}.`);
      this.reached = true;
      return;
    }
    if (this.reached !== false) {
      this.outages++;
      this.logger.warn(`otlp:${this.signal}:failing:${this.outages}`, `poolscope: OTLP ${this.signal} export to ${this.shown} failed ` +
        `(${describeError(result.error)}); ${this.meanwhile}, one line when it recovers.`);
    }
    this.reached = false;
  }
}

/**
 * Wraps an OTLP metric exporter (any protocol) so that a collector outage costs one warning when it starts
 * and one line when it ends, instead of an error per export interval. Results are reported to the reader
 * as success: the reader would only log them again. With the default cumulative temporality nothing is
 * lost by a failed push (the next successful one carries the totals), and nothing queues up meanwhile.
 */
export class OutageLoggingExporter implements PushMetricExporter {
  private readonly log: OutageLog;
  /** Exports whose deadline passed and that the exporter has not answered since. */
  private unanswered = 0;

  constructor(
    private readonly inner: PushMetricExporter,
    endpoint: string,
    logger: PoolscopeLogger,
    private readonly transform: (metrics: ResourceMetrics) => ResourceMetrics = (m) => m,
    protocol?: string,
    /**
     * Longest an export may go unanswered, on Poolscope's own timer. The reader's export timeout is on the global
     * `setTimeout` of the moment: under an application's fake timers (sinon's fake `nextTick` held the request
     * up) it never fired, the export never ended, and every later one waited on it: pushes stopped for the
     * process's life (found by a review of test runners).
     */
    private readonly deadlineMillis = 30_000,
  ) {
    this.log = new OutageLog(endpoint, logger, 'metric', 'retrying every export interval', protocol);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    let settled = false;
    let late = false;
    const deadline = nativeTimers.setTimeout(() => {
      late = true;
      this.unanswered++;
      done({ code: ExportResultCode.FAILED, error: new Error(`no answer within ${this.deadlineMillis} ms`) });
    }, this.deadlineMillis);
    deadline.unref();
    const done = (result: ExportResult) => {
      if (settled) {
        if (late) this.unanswered--;
        late = false;
        return;
      }
      settled = true;
      nativeTimers.clearTimeout(deadline);
      this.log.note(result);
      resultCallback({ code: ExportResultCode.SUCCESS });
    };
    this.log.whenReachable(() => this.inner.export(this.transform(metrics), done), done);
  }

  // Bounded too: upstream's waits for every request in flight, and one held up for good (a fake nextTick)
  // made the exit-time export wait its whole limit and be reported lost.
  forceFlush(): Promise<void> {
    return this.bounded(this.inner.forceFlush());
  }

  shutdown(): Promise<void> {
    return this.bounded(this.inner.shutdown());
  }

  private bounded(work: Promise<void>): Promise<void> {
    // Upstream's flush would wait on an export past its deadline, which may never answer: what it carried is
    // lost already, and waiting (on an unref'd timer) let the process end mid-flush.
    if (this.unanswered > 0) {
      work.catch(() => undefined);
      return Promise.resolve();
    }
    return settledWithin(work, this.deadlineMillis).then(() => undefined);
  }

  selectAggregationTemporality(instrumentType: InstrumentType): AggregationTemporality {
    return this.inner.selectAggregationTemporality!(instrumentType);
  }
}

/** An exporter error for a log line: no credentials in URLs, no query strings, no control characters, bounded. */
function describeError(error: Error | undefined): string {
  const message = String(error?.message ?? 'unknown error');
  return message
    .replace(/\/\/[^/@\s]*@/g, '//')
    .replace(/\?[^\s)]*/g, '')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .slice(0, 160);
}
