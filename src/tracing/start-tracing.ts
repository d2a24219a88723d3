import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import type { Instrumentation } from '@opentelemetry/instrumentation';
import type { Resource } from '@opentelemetry/resources';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { setQuerySpans } from '../adapters/pg-client.js';
import type { InstrumentationName, PoolscopeConfig } from '../config.js';
import { createOtlpSpanExporter } from '../export/otlp-traces.js';
import { withEnv } from '../export/upstream-env.js';
import { registerTracingRefusingLater } from '../global-providers.js';
import { OWN_SCOPE, redactingProcessor } from '../export/span-redaction.js';
import type { PoolscopeLogger } from '../logger.js';
import { routeOf, type RoutedRequest } from '../http/route.js';
import { knownMethod } from '../http/request-state.js';
import { ATTR_ERROR_TYPE, ATTR_HTTP_ROUTE } from '../semconv.js';
import { VERSION } from '../version.js';
import { PgQuerySpans } from './pg-query-spans.js';
import { QuerySummaries } from '../metrics/query-summary.js';
import { toolTraffic } from '../process-role.js';

// Loaded only when traces are on: a metrics-only process never pays for the tracing SDK, the upstream
// instrumentations or their dependencies (memory and start-up time).
const require = createRequire(import.meta.url);

export interface Tracing {
  provider: NodeTracerProvider;
  instrumentations: Instrumentation[];
  /** Stops Poolscope's own query spans. */
  stop(): void;
}

/**
 * Traces are opt-in (OTEL_TRACES_EXPORTER). Registers the global tracer provider, context manager and
 * propagators, installs Poolscope's own query spans, and returns the upstream instrumentations that make
 * the HTTP and framework spans. They run with a no-op meter (sdk.ts), so metrics are the same with traces
 * on and off.
 */
export function startTracing(config: PoolscopeConfig, resource: Resource, enabled: (name: InstrumentationName) => boolean,
  logger: PoolscopeLogger, onError: (err: unknown) => void, serviceOnly = false): Tracing {
  // A test runner's or dev server's own requests (see HttpServerMetricsConfig.serviceOnly) get no spans either.
  const toolOwn = serviceOnly ? toolTraffic : () => false;
  const { BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor } =
    require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  // The tracing SDK reports through the global error handler of its own copy of @opentelemetry/core, not
  // the copy bundled into Poolscope that sdk.ts sets: left alone, it wrote each error as a raw JSON line.
  (createRequire(require.resolve('@opentelemetry/sdk-trace-base'))('@opentelemetry/core') as typeof import('@opentelemetry/core'))
    .setGlobalErrorHandler(onError);
  const { NodeTracerProvider: Provider } = require('@opentelemetry/sdk-trace-node') as typeof import('@opentelemetry/sdk-trace-node');
  const spanProcessors: SpanProcessor[] = [];
  if (config.tracesExporter === 'console') {
    spanProcessors.push(redactingProcessor(new SimpleSpanProcessor(new ConsoleSpanExporter()), config.traceSqlText));
  } else {
    const exporter = createOtlpSpanExporter(config.otlpTraces, logger);
    if (exporter !== undefined) spanProcessors.push(redactingProcessor(new BatchSpanProcessor(exporter), config.traceSqlText));
  }
  // The provider reads the sampler's variables itself: a ratio it would refuse is given as the fallback already said.
  const provider = withEnv(config.samplerArgReplacement === undefined ? {} : { OTEL_TRACES_SAMPLER_ARG: config.samplerArgReplacement },
    () => new Provider({ resource, spanProcessors }));
  const unwatchGlobal = registerTracingRefusingLater(() => provider.register(), logger);

  const instrumentations: Instrumentation[] = [];
  let stop = unwatchGlobal;
  if (enabled('pg')) {
    // Query spans come from Poolscope's own query wrapper (see PgQuerySpans), not instrumentation-pg.
    // The summary's overflow is warned about by the metrics recorder, which sees the same statements.
    const summaries = config.querySummary ? new QuerySummaries(() => undefined) : undefined;
    const spans = new PgQuerySpans(provider.getTracer(OWN_SCOPE, VERSION), config.traceSqlText, summaries);
    setQuerySpans(spans);
    stop = () => {
      unwatchGlobal();
      setQuerySpans(undefined, spans);
    };
  }
  if (enabled('http')) {
    const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
    instrumentations.push(new HttpInstrumentation({
      // Requests handed to a server by hand (`server.emit('request', mock, …)` in tests) without a real socket get
      // no span: upstream read their socket's address and their response's listeners, and threw into the
      // application on a mock that had none. (The telemetry server's requests never reach it: see plainEmit.)
      ignoreIncomingRequestHook: (req) => !(req.socket instanceof Socket) || toolOwn(),
      ignoreOutgoingRequestHook: () => toolOwn(),
      // Upstream adds a 'close' listener of its own to every response, right after this hook: an application
      // with ten of its own got a MaxListenersExceededWarning it would not have had. One more is allowed.
      responseHook: (_span, response) => {
        const res = response as { getMaxListeners?: () => number; setMaxListeners?: (n: number) => unknown };
        if (typeof res.getMaxListeners !== 'function' || typeof res.setMaxListeners !== 'function') return;
        const max = res.getMaxListeners();
        if (max > 0 && Number.isFinite(max)) res.setMaxListeners(max + 1);
      },
      // The server span takes the route the metrics record, from every framework Poolscope reads routes of
      // (the upstream instrumentation knows only what a framework instrumentation tells it).
      applyCustomAttributesOnSpan: (span, request, response) => {
        // A server's request (IncomingMessage) has an HTTP version, a client's (ClientRequest) none. Not by
        // `instanceof`: importing node:http here, at load, stopped Node 22 under --jitless (undici without
        // WebAssembly), with traces off too (found by the runtime-flags tests).
        const server = typeof (request as { httpVersion?: unknown }).httpVersion === 'string';
        // The conventions' error.type for a failed status (5xx served, 4xx and 5xx received), which upstream
        // puts on its metrics only: server spans answering 500 had an error status and no error.type (review).
        const status = (response as { statusCode?: unknown }).statusCode;
        if (typeof status === 'number' && status >= (server ? 500 : 400)) span.setAttribute(ATTR_ERROR_TYPE, String(status));
        const route = server ? routeOf(request as RoutedRequest) : undefined;
        if (route === undefined) return;
        span.setAttribute(ATTR_HTTP_ROUTE, route);
        // A method the conventions do not know is named `HTTP` (it is `_OTHER` in http.request.method):
        // `PROPFIND /any` broke that MUST (review).
        const method = knownMethod(request.method);
        span.updateName(`${method === '_OTHER' ? 'HTTP' : method} ${route}`);
      },
    }));
  }
  if (enabled('express')) {
    const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express') as typeof import('@opentelemetry/instrumentation-express');
    instrumentations.push(new ExpressInstrumentation());
  }
  // No Fastify instrumentation: @fastify/otel registers itself as a plugin of every application, and that
  // changed what the application does (plugin names, the reply to a thrown null or Symbol, hook validation:
  // 25 of Fastify's own tests failed with traces on). Fastify requests get the server span, named by route.
  return { provider, instrumentations, stop };
}
