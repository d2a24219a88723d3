import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { AggregationTemporality, InstrumentType, PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { PoolscopeLogger } from './logger.js';

/** Endpoint for log lines: origin and path only, never credentials or query strings. */
export function describeEndpoint(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

/**
 * Wraps the OTLP exporter so that a collector outage costs one warning when it starts and one info line
 * when it ends, instead of an error per export interval. Results are reported to the reader as success:
 * the reader would only log them again. Metrics are cumulative, so nothing is lost by a failed push:
 * the next successful one carries the totals, and nothing queues up while the collector is away.
 */
export class OutageLoggingExporter implements PushMetricExporter {
  private failing = false;
  private outages = 0;

  constructor(
    private readonly inner: PushMetricExporter,
    private readonly endpoint: string,
    private readonly logger: PoolscopeLogger,
    private readonly transform: (metrics: ResourceMetrics) => ResourceMetrics = (m) => m,
  ) {}

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
      if (this.failing) this.logger.warn(`otlp:recovered:${this.outages}`, `poolscope: OTLP metric export to ${describeEndpoint(this.endpoint)} recovered.`);
      this.failing = false;
      return;
    }
    if (!this.failing) {
      const reason = (result.error?.message ?? 'unknown error').replace(/\/\/[^/@\s]*@/g, '//').slice(0, 160);
      this.outages++;
      this.logger.warn(`otlp:failing:${this.outages}`, `poolscope: OTLP metric export to ${describeEndpoint(this.endpoint)} failed (${reason}); ` +
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
