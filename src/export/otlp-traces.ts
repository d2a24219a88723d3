import { createRequire } from 'node:module';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { OtlpProtocol, OtlpSignalConfig } from '../config.js';
import { errorText, type PoolscopeLogger } from '../logger.js';
import { OutageLog } from './outage-logging.js';
import { withOwnSpanEncoding, type SpanSerializer } from './own-span-encoding.js';
import { withEnvHidden } from './upstream-env.js';
import { monotonicNow } from '../native-timers.js';

// Loaded only when traces go to OTLP, and only the configured protocol's exporter.
const require = createRequire(import.meta.url);

const MODULES: Record<OtlpProtocol, string> = {
  'http/protobuf': '@opentelemetry/exporter-trace-otlp-proto',
  'http/json': '@opentelemetry/exporter-trace-otlp-http',
  grpc: '@opentelemetry/exporter-trace-otlp-grpc',
};

type ExporterClass = new (config: { url?: string }) => SpanExporter;

/**
 * The upstream OTLP span exporter for the configured protocol. Only the resolved endpoint is passed;
 * every other `OTEL_EXPORTER_OTLP_*` variable (timeout, headers, compression, certificates) is read by the
 * exporter itself. Returns undefined (after one warning) if the exporter cannot be created.
 */
export function createOtlpSpanExporter(otlp: OtlpSignalConfig, logger: PoolscopeLogger): SpanExporter | undefined {
  try {
    const exporter = withEnvHidden(otlp.hiddenEnv, () => {
      if (otlp.protocol === 'http/protobuf') return protobufExporter(otlp.endpoint);
      const { OTLPTraceExporter } = require(MODULES[otlp.protocol]) as { OTLPTraceExporter: ExporterClass };
      return new OTLPTraceExporter({ url: otlp.endpoint });
    });
    return new OutageAwareSpanExporter(exporter, new OutageLog(otlp.endpoint, logger, 'span',
      `spans are dropped while it is down, with one export attempt every ${OUTAGE_ATTEMPT_MILLIS / 1000} s`, otlp.protocol), logger);
  } catch (err) {
    logger.warn('otlp:create-traces', `poolscope: the OTLP span exporter (${otlp.protocol}) could not be created ` +
      `(${errorText(err, 160)}); spans are not exported.`);
    return undefined;
  }
}

/** While the collector is down, one batch is offered to it this often; the others are dropped at once. */
export const OUTAGE_ATTEMPT_MILLIS = 30_000;

/**
 * A span exporter that gives up on a collector that is down instead of retrying every batch. Upstream
 * retries each batch with referenced timers for up to the export timeout, and the BatchSpanProcessor
 * exports one batch after the other: a script of 5,000 queries traced to a collector that was down stayed
 * alive 40 s after its work was done, and every failed batch went to the global error handler of the
 * SDK's own copy of @opentelemetry/core as a raw JSON line. Now an outage costs one line when it starts
 * and one when it ends, with the number of spans it dropped, and at most one batch in flight every
 * {@link OUTAGE_ATTEMPT_MILLIS}.
 */
export class OutageAwareSpanExporter implements SpanExporter {
  private lastAttempt = -Infinity;
  private dropped = 0;

  constructor(private readonly inner: SpanExporter, private readonly log: OutageLog, private readonly logger: PoolscopeLogger,
    private readonly now: () => number = monotonicNow) {}

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    const now = this.now();
    if (this.log.inOutage && now - this.lastAttempt < OUTAGE_ATTEMPT_MILLIS) {
      this.dropped += spans.length;
      resultCallback({ code: ExportResultCode.SUCCESS });
      return;
    }
    this.lastAttempt = now;
    const done = (result: ExportResult) => {
      if (result.code !== ExportResultCode.SUCCESS) this.dropped += spans.length;
      this.log.note(result, this.dropped > 0 ? ` (${this.dropped} spans were dropped while it was down)` : '');
      if (result.code === ExportResultCode.SUCCESS) this.dropped = 0;
      resultCallback({ code: ExportResultCode.SUCCESS });
    };
    this.log.whenReachable(() => this.inner.export(spans, done), done);
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.().catch(() => undefined) ?? Promise.resolve();
  }

  shutdown(): Promise<void> {
    // Said once more at the end: an outage that never recovered has no recovery line to carry the count.
    if (this.dropped > 0) this.logger.warn('otlp:span:dropped-at-shutdown', `poolscope: ${this.dropped} spans were not exported: the collector was down.`);
    this.dropped = 0;
    return this.inner.shutdown().catch(() => undefined);
  }
}

/**
 * The upstream http/protobuf span exporter, put together from the same parts and the very copies it uses
 * (resolved from the exporter itself), with Poolscope's own query spans encoded from cached bytes
 * (own-span-encoding.ts). Everything else, transport, retries, headers, compression, timeouts and the
 * `OTEL_EXPORTER_OTLP_*` variables, is upstream's, as it would be for OTLPTraceExporter.
 */
function protobufExporter(url: string | undefined): SpanExporter {
  const fromExporter = createRequire(require.resolve(MODULES['http/protobuf']));
  const { OTLPExporterBase } = fromExporter('@opentelemetry/otlp-exporter-base') as {
    OTLPExporterBase: new (delegate: unknown) => SpanExporter;
  };
  const http = fromExporter('@opentelemetry/otlp-exporter-base/node-http') as {
    createOtlpHttpExportDelegate(options: unknown, serializer: SpanSerializer, componentType: string, metricsHelper: unknown): unknown;
    convertLegacyHttpOptions(config: { url?: string }, signal: string, path: string, headers: Record<string, string>): unknown;
  };
  const { ProtobufTraceSerializer, TraceExporterMetricsHelper } = fromExporter('@opentelemetry/otlp-transformer') as {
    ProtobufTraceSerializer: SpanSerializer; TraceExporterMetricsHelper: unknown;
  };
  return new OTLPExporterBase(http.createOtlpHttpExportDelegate(
    http.convertLegacyHttpOptions({ url }, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' }),
    withOwnSpanEncoding(ProtobufTraceSerializer), 'otlp_http_span_exporter', TraceExporterMetricsHelper));
}
