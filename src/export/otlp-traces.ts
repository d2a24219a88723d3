import { createRequire } from 'node:module';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import type { OtlpProtocol, OtlpSignalConfig } from '../config.js';
import type { PoolscopeLogger } from '../logger.js';
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
    const { OTLPTraceExporter } = require(MODULES[otlp.protocol]) as { OTLPTraceExporter: ExporterClass };
    return withEnvHidden(otlp.hiddenEnv, () => new OTLPTraceExporter({ url: otlp.endpoint }));
  } catch (err) {
    logger.warn('otlp:create-traces', `poolscope: the OTLP span exporter (${otlp.protocol}) could not be created ` +
      `(${String((err as Error)?.message ?? err).replace(/[^\x20-\x7e]+/g, ' ').slice(0, 160)}); spans are not exported.`);
    return undefined;
  }
}
