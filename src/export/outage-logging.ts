import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describeEndpoint } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';
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

  constructor(
    private readonly inner: PushMetricExporter,
    endpoint: string,
    logger: PoolscopeLogger,
    private readonly transform: (metrics: ResourceMetrics) => ResourceMetrics = (m) => m,
    protocol?: string,
  ) {
    this.log = new OutageLog(endpoint, logger, 'metric', 'retrying every export interval', protocol);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    const done = (result: ExportResult) => {
      this.log.note(result);
      resultCallback({ code: ExportResultCode.SUCCESS });
    };
    this.log.whenReachable(() => this.inner.export(this.transform(metrics), done), done);
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush().catch(() => undefined);
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown().catch(() => undefined);
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
