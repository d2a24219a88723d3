// The stock OpenTelemetry setup Poolscope is compared against: NodeSDK + instrumentation-pg +
// instrumentation-http + the Prometheus exporter; traces only when BENCH_TRACES=1 (OTLP to the bench sink).
import { NodeSDK } from '@opentelemetry/sdk-node';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { PgInstrumentation } from '@opentelemetry/instrumentation-pg';
import { HttpInstrumentation } from '@opentelemetry/instrumentation-http';
import { ExpressInstrumentation } from '@opentelemetry/instrumentation-express';

const traces = process.env.BENCH_TRACES === '1';
const sdk = new NodeSDK({
  metricReader: new PrometheusExporter({ port: 0, host: '127.0.0.1' }),
  traceExporter: traces ? new OTLPTraceExporter() : undefined,
  instrumentations: [new PgInstrumentation(), new HttpInstrumentation(), new ExpressInstrumentation()],
});
sdk.start();
