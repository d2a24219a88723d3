import { createRequire } from 'node:module';
import type { Instrumentation } from '@opentelemetry/instrumentation';
import type { Resource } from '@opentelemetry/resources';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { InstrumentationName, PoolscopeConfig } from './config.js';
import { createOtlpSpanExporter } from './export/otlp-traces.js';
import type { PoolscopeLogger } from './logger.js';
import { kTelemetryServer } from './server/telemetry-server.js';
import { pgSpanRequestHook, redactingProcessor } from './export/span-redaction.js';

// Loaded only when traces are on: a metrics-only process never pays for the tracing SDK, the upstream
// instrumentations or their dependencies (memory and start-up time).
const require = createRequire(import.meta.url);

export interface Tracing {
  provider: NodeTracerProvider;
  instrumentations: Instrumentation[];
}

/**
 * Traces are opt-in (OTEL_TRACES_EXPORTER). Registers the global tracer provider, context manager and
 * propagators, and returns the upstream instrumentations that produce the spans. Their metrics are
 * dropped by Poolscope's views, so metrics are the same with traces on and off.
 */
export function startTracing(config: PoolscopeConfig, resource: Resource, enabled: (name: InstrumentationName) => boolean,
  logger: PoolscopeLogger): Tracing {
  const { BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor } =
    require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  const { NodeTracerProvider: Provider } = require('@opentelemetry/sdk-trace-node') as typeof import('@opentelemetry/sdk-trace-node');
  const spanProcessors = [];
  if (config.tracesExporter === 'console') {
    spanProcessors.push(redactingProcessor(new SimpleSpanProcessor(new ConsoleSpanExporter()), config.traceSqlText));
  } else {
    const exporter = createOtlpSpanExporter(config.otlpTraces, logger);
    if (exporter !== undefined) spanProcessors.push(redactingProcessor(new BatchSpanProcessor(exporter), config.traceSqlText));
  }
  const provider = new Provider({ resource, spanProcessors });
  provider.register();

  const instrumentations: Instrumentation[] = [];
  if (enabled('pg')) {
    const { PgInstrumentation } = require('@opentelemetry/instrumentation-pg') as typeof import('@opentelemetry/instrumentation-pg');
    // No pg-pool.connect spans: they double the span volume of every pooled query, and the time they
    // measure is db.client.connection.wait_time already.
    instrumentations.push(new PgInstrumentation({ ignoreConnectSpans: true, requestHook: pgSpanRequestHook }));
  }
  if (enabled('http')) {
    const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
    instrumentations.push(new HttpInstrumentation({
      ignoreIncomingRequestHook: (req) =>
        (req.socket as unknown as { server?: Record<symbol, unknown> }).server?.[kTelemetryServer] === true,
    }));
  }
  if (enabled('express')) {
    const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express') as typeof import('@opentelemetry/instrumentation-express');
    instrumentations.push(new ExpressInstrumentation());
  }
  if (enabled('fastify')) {
    const { FastifyOtelInstrumentation } = require('@fastify/otel') as typeof import('@fastify/otel');
    instrumentations.push(new FastifyOtelInstrumentation({ registerOnInitialization: true }));
  }
  return { provider, instrumentations };
}
