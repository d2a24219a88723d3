import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import type { Resource } from '@opentelemetry/resources';
import { BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { PoolscopeConfig } from './config.js';

/** Traces are opt-in (OTEL_TRACES_EXPORTER); this registers the global tracer provider and context manager. */
export function startTracing(config: PoolscopeConfig, resource: Resource): NodeTracerProvider {
  const processor = config.tracesExporter === 'console'
    ? new SimpleSpanProcessor(new ConsoleSpanExporter())
    : new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlpTracesEndpoint }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [processor] });
  provider.register();
  return provider;
}
