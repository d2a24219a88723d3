import { createRequire } from 'node:module';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { OtlpProtocol, OtlpSignalConfig } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';
import { withOwnSpanEncoding, type SpanSerializer } from './own-span-encoding.js';
import { withEnvHidden } from './upstream-env.js';

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
    if (otlp.protocol === 'http/protobuf') return withEnvHidden(otlp.hiddenEnv, () => protobufExporter(otlp.endpoint));
    const { OTLPTraceExporter } = require(MODULES[otlp.protocol]) as { OTLPTraceExporter: ExporterClass };
    return withEnvHidden(otlp.hiddenEnv, () => new OTLPTraceExporter({ url: otlp.endpoint }));
  } catch (err) {
    logger.warn('otlp:create-traces', `poolscope: the OTLP span exporter (${otlp.protocol}) could not be created ` +
      `(${String((err as Error)?.message ?? err).replace(/[^\x20-\x7e]+/g, ' ').slice(0, 160)}); spans are not exported.`);
    return undefined;
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
