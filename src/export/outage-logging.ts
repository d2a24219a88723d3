import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describeEndpoint } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';

/**
 * Wraps an OTLP metric exporter (any protocol) so that a collector outage costs one warning when it starts
 * and one line when it ends, instead of an error per export interval. Results are reported to the reader
 * as success: the reader would only log them again. With the default cumulative temporality nothing is
 * lost by a failed push (the next successful one carries the totals), and nothing queues up meanwhile.
 */
export class OutageLoggingExporter implements PushMetricExporter {
  private failing = false;
  private outages = 0;
  private readonly endpoint: string;

  constructor(
    private readonly inner: PushMetricExporter,
    endpoint: string,
    private readonly logger: PoolscopeLogger,
    private readonly transform: (metrics: ResourceMetrics) => ResourceMetrics = (m) => m,
  ) {
    this.endpoint = describeEndpoint(endpoint);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    try {
      this.inner.export(this.transform(metrics), (result) => {
        this.note(result);
        resultCallback({ code: ExportResultCode.SUCCESS });
      });
    } catch (err) {
      this.note({ code: ExportResultCode.FAILED, error: err as Error });
      resultCallback({ code: ExportResultCode.SUCCESS });
    }
  }

  private note(result: ExportResult): void {
    if (result.code === ExportResultCode.SUCCESS) {
      // Keyed per outage: the logger's rate limit must not swallow the end of a short second outage.
      if (this.failing) this.logger.warn(`otlp:recovered:${this.outages}`, `poolscope: OTLP metric export to ${this.endpoint} recovered.`);
      this.failing = false;
      return;
    }
    if (!this.failing) {
      this.outages++;
      this.logger.warn(`otlp:failing:${this.outages}`, `poolscope: OTLP metric export to ${this.endpoint} failed (${describeError(result.error)}); ` +
        'retrying every export interval, one line when it recovers.');
    }
    this.failing = true;
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
