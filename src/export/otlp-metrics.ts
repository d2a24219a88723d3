import { createRequire } from 'node:module';
import { AggregationTemporality, InstrumentType, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { OtlpMetricsConfig, OtlpProtocol } from '../config.js';
import { errorText, type PoolscopeLogger } from '../logger.js';
import { cumulativeToDelta } from './delta-histograms.js';
import { OutageLoggingExporter } from './outage-logging.js';
import { withEnvHidden } from './upstream-env.js';

// Only the exporter of the configured protocol is loaded, and only when OTLP is on: the default
// (Prometheus pull) path loads none of them, and gRPC's dependencies are never paid for over HTTP.
const require = createRequire(import.meta.url);

const MODULES: Record<OtlpProtocol, string> = {
  'http/protobuf': '@opentelemetry/exporter-metrics-otlp-proto',
  'http/json': '@opentelemetry/exporter-metrics-otlp-http',
  grpc: '@opentelemetry/exporter-metrics-otlp-grpc',
};

type ExporterClass = new (config: { url?: string; timeoutMillis?: number }) => PushMetricExporter;

/**
 * The upstream OTLP metric exporter for the configured protocol, wrapped so that an outage is logged once.
 * Only the endpoint is always passed (Poolscope resolved and validated it from the same variables); the
 * request timeout only when no `OTEL_EXPORTER_OTLP_(METRICS_)TIMEOUT` is set. Headers, compression,
 * certificates, `INSECURE` and the temporality preference are left to the exporter, which reads the
 * user's variables itself. Returns undefined (after one warning) if the exporter cannot be created.
 */
export function createOtlpMetricExporter(
  otlp: OtlpMetricsConfig,
  logger: PoolscopeLogger,
  transform?: (metrics: ResourceMetrics) => ResourceMetrics,
  /** The reader's export timeout: an export still unanswered just before it fails (see OutageLoggingExporter). */
  exportTimeoutMillis = 30_000,
): PushMetricExporter | undefined {
  try {
    const { OTLPMetricExporter } = require(MODULES[otlp.protocol]) as { OTLPMetricExporter: ExporterClass };
    const userTimeout = otlp.userEnv.some((name) => name.endsWith('_TIMEOUT'));
    const exporter = withEnvHidden(otlp.hiddenEnv, () => new OTLPMetricExporter({
      url: otlp.endpoint,
      ...(userTimeout ? {} : { timeoutMillis: otlp.timeoutMillis }),
    }));
    const delta = (type: InstrumentType) => exporter.selectAggregationTemporality?.(type) === AggregationTemporality.DELTA;
    const kinds = {
      histogram: delta(InstrumentType.HISTOGRAM),
      counter: delta(InstrumentType.OBSERVABLE_COUNTER),
      upDownCounter: delta(InstrumentType.OBSERVABLE_UP_DOWN_COUNTER),
      gauge: delta(InstrumentType.OBSERVABLE_GAUGE),
    };
    const toDelta = Object.values(kinds).some((k) => k) ? cumulativeToDelta(kinds) : undefined;
    const pipeline = toDelta === undefined ? transform : (m: ResourceMetrics) => toDelta(transform === undefined ? m : transform(m));
    return new OutageLoggingExporter(exporter, otlp.endpoint, logger, pipeline, otlp.protocol, Math.max(1, exportTimeoutMillis - 1));
  } catch (err) {
    logger.warn('otlp:create', `poolscope: the OTLP metric exporter (${otlp.protocol}) could not be created ` +
      `(${errorText(err, 160)}); metrics are not pushed.`);
    return undefined;
  }
}
