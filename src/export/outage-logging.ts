import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describeEndpoint } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';

/**
 * One signal's collector outages, as log lines: one when an outage starts, one when it ends. Keyed per
 * outage, so the logger's rate limit never swallows the end of a short second outage.
 */
export class OutageLog {
  private failing = false;
  private outages = 0;
  private readonly endpoint: string;

  constructor(endpoint: string, private readonly logger: PoolscopeLogger, private readonly signal: 'metric' | 'span',
    private readonly meanwhile: string) {
    this.endpoint = describeEndpoint(endpoint);
  }

  /** True while the last export failed. */
  get inOutage(): boolean {
    return this.failing;
  }

  /** `lost`: what the recovery line adds about the outage (spans dropped meanwhile, say). */
  note(result: ExportResult, lost = ''): void {
    if (result.code === ExportResultCode.SUCCESS) {
      if (this.failing) this.logger.warn(`otlp:${this.signal}:recovered:${this.outages}`, `poolscope: OTLP ${this.signal} export to ${this.endpoint} recovered${lost}.`);
      this.failing = false;
      return;
    }
    if (!this.failing) {
      this.outages++;
      this.logger.warn(`otlp:${this.signal}:failing:${this.outages}`, `poolscope: OTLP ${this.signal} export to ${this.endpoint} failed ` +
        `(${describeError(result.error)}); ${this.meanwhile}, one line when it recovers.`);
    }
    this.failing = true;
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
  ) {
    this.log = new OutageLog(endpoint, logger, 'metric', 'retrying every export interval');
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    try {
      this.inner.export(this.transform(metrics), (result) => {
        this.log.note(result);
        resultCallback({ code: ExportResultCode.SUCCESS });
      });
    } catch (err) {
      this.log.note({ code: ExportResultCode.FAILED, error: err as Error });
      resultCallback({ code: ExportResultCode.SUCCESS });
    }
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
