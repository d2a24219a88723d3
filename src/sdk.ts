import { randomUUID } from 'node:crypto';
import { context, createNoopMeter, metrics, propagation, trace, type MeterProvider as ApiMeterProvider, type TracerProvider } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import { registerMeterProviderUnlessOwned, tracedElsewhere } from './global-providers.js';
import { registerInstrumentations, type Instrumentation } from '@opentelemetry/instrumentation';
import { defaultResource, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  InstrumentType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type MetricReader,
  type ResourceMetrics,
  type ViewOptions,
} from '@opentelemetry/sdk-metrics';
import { DEFAULTS, normalizeConfig, type InstrumentationName, type PoolscopeConfig, type PoolscopeOptions } from './config.js';
import { localHealthMetrics } from './health/health-metrics.js';
import { createHealthHandler, HealthMonitor, type DatabaseHealth, type HealthRoute, type ServiceHealth } from './health/health.js';
import { isPgLoaded } from './adapters/shared.js';
import { createLogger, ensureDiagLogger, errorText, type PoolscopeLogger } from './logger.js';
import { ApplicationMeters } from './export/application-meters.js';
import { createOtlpMetricExporter } from './export/otlp-metrics.js';
import { PoolscopeInstrumentation, type MonitorPoolOptions } from './instrumentation.js';
import { PrometheusPullReader } from './export/prometheus/reader.js';
import { LocalMetricProducer } from './metrics/local-histogram.js';
import { noteCardinalityOverflow } from './metrics/cardinality-overflow.js';
import { dropEndedPoolSeries } from './metrics/pool-metrics.js';
import { PoolRegistry } from './pools/registry.js';
import { ServerLimitCheck } from './recorders/server-limit.js';
import { HttpServerMetricsInstrumentation } from './http-metrics.js';
import { TelemetryServer } from './server/telemetry-server.js';
import { leavePortToWorkers } from './server/cluster-primary.js';
import { startTracing } from './tracing/start-tracing.js';
import { LeakDetector } from './recorders/leak-detector.js';
import { VERSION } from './version.js';
import { processState, whenInUse } from './process-state.js';
import { toolProcess } from './process-role.js';
import { pollUntil } from './native-timers.js';

const NOOP_METER_PROVIDER: ApiMeterProvider = { getMeter: () => createNoopMeter() };

/**
 * Views: with traces on, the upstream http instrumentation runs for its spans only and gets a no-op meter.
 * These views are the safety net should an upstream instrumentation reach the SDK anyway (an application
 * registering its own through the global meter provider): instrumentation-pg's pool gauges are running
 * totals fed by events (wrong with several pools, stale after load) and its operation histogram misses
 * `error.type` on the promise path; instrumentation-http's would duplicate ours (and count our own OTLP
 * pushes as client requests).
 */
function views(): ViewOptions[] {
  return [
    { meterName: '@opentelemetry/instrumentation-pg', instrumentName: '*', aggregation: { type: AggregationType.DROP } },
    { meterName: '@opentelemetry/instrumentation-http', instrumentName: '*', aggregation: { type: AggregationType.DROP } },
  ];
}

/**
 * The resource as normalizeConfig resolved it. Not upstream's env detector: on one bad entry it drops all
 * of `OTEL_RESOURCE_ATTRIBUTES` with a debug-level line only; the config reads it by the same rules and says so.
 */
function buildResource(config: PoolscopeConfig): Resource {
  return defaultResource()
    .merge(resourceFromAttributes({ 'service.instance.id': randomUUID() }))
    .merge(resourceFromAttributes({ ...config.resourceAttributes, 'service.name': config.serviceName }));
}

/**
 * A running Poolscope: instrumentation, exporters, telemetry server and health. Created by
 * {@link startPoolscope}; `node --import poolscope/register` creates one from the environment.
 */
export class Poolscope {
  private readonly started: Promise<void>;
  private stopped = false;

  /** @internal */
  constructor(
    readonly config: PoolscopeConfig,
    private readonly logger: PoolscopeLogger,
    private readonly meterProvider: MeterProvider | undefined,
    private readonly tracerProvider: (TracerProvider & { shutdown(): Promise<void>; forceFlush(): Promise<void> }) | undefined,
    private readonly instrumentation: PoolscopeInstrumentation | undefined,
    private readonly unload: () => void,
    private readonly prometheus: PrometheusPullReader | undefined,
    private readonly healthMonitor: HealthMonitor,
    private readonly server: TelemetryServer | undefined,
    /** Whether a pool was ever observed or a request measured: see {@link observedAnything}. */
    private readonly active: () => boolean,
  ) {
    this.healthMonitor.start();
    this.started = server?.start() ?? Promise.resolve();
  }

  /**
   * Resolves once the telemetry server is listening (or has given up with a warning). Under `--import` with
   * `serverStart: 'auto'` the port is bound once the process makes a pg pool or connection, or an HTTP server of its own listens;
   * asking for `ready` binds it now (a caller waiting for the server needs it).
   */
  get ready(): Promise<void> {
    this.server?.startNow();
    return this.started;
  }

  /**
   * @internal True once any pool was observed (even if all have ended since), any query or any HTTP request
   * measured: the process had telemetry to export and to serve. A CLI that never touches any (`npm`,
   * `node -p`, `knex --version`) is told nothing about exports or ports it never needed.
   */
  get observedAnything(): boolean {
    return this.active();
  }

  /**
   * Monitors a pool created before Poolscope started (or by a pg-pool copy it could not patch). After
   * {@link shutdown} it does nothing and returns undefined.
   */
  monitorPool(pool: unknown, options?: MonitorPoolOptions): string | undefined {
    if (this.stopped) {
      this.logger.warn('monitorPool:stopped', 'poolscope: monitorPool() called after shutdown(); ignored.');
      return undefined;
    }
    return this.instrumentation?.monitorPool(pool, options);
  }

  /** Per-pool health, as served on `/health/database`. */
  getPoolHealth(): DatabaseHealth {
    return this.healthMonitor.database();
  }

  /** Service summary, as served on `/health`. */
  getServiceHealth(): ServiceHealth {
    return this.healthMonitor.service();
  }

  /** A `(req, res)` handler to mount the health routes in the application's own router. */
  healthHandler(route: HealthRoute = 'database') {
    return createHealthHandler(this.healthMonitor, route);
  }

  /**
   * The Prometheus exposition, as served on `/metrics`; undefined when the Prometheus exporter is off or after
   * {@link shutdown} (the reader is shut then, and collecting from it rejected).
   */
  scrape(): Promise<string> | undefined {
    return this.stopped ? undefined : this.prometheus?.scrape();
  }

  /** Where the telemetry server listens, once `ready` has resolved. */
  serverAddress(): { host: string; port: number } | undefined {
    return this.server?.address();
  }

  /** Pushes current metrics (and spans) to OTLP now; nothing after {@link shutdown}. Never rejects. */
  async forceFlush(): Promise<void> {
    if (this.stopped) return;
    await Promise.allSettled([this.meterProvider?.forceFlush(), this.tracerProvider?.forceFlush()]);
  }

  /** Flushes, stops exporting, closes the server and un-patches. Never rejects; idempotent. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (processState.running === this) processState.running = undefined;
    this.healthMonitor.stop();
    await Promise.allSettled([
      this.server?.close(),
      this.meterProvider?.shutdown(),
      this.tracerProvider?.shutdown(),
    ]);
    try {
      this.unload();
    } catch (err) {
      this.logger.warn('shutdown', `poolscope: error while removing instrumentation: ${errorText(err)}`);
    }
    // With traces, our provider's register() also set the context manager and the propagator.
    const tracer = trace.getTracerProvider() as TracerProvider & { getDelegate?: () => TracerProvider };
    if (this.tracerProvider !== undefined && tracer.getDelegate?.() === this.tracerProvider) {
      trace.disable();
      context.disable();
      propagation.disable();
    }
  }
}

/**
 * Starts Poolscope: pool, query and HTTP metrics, the telemetry server and the configured exporters.
 * Registers the global meter provider (and tracer provider when traces are on), as an SDK does. A second
 * call returns the running instance. Never throws: bad settings are warned about and replaced by defaults.
 */
export function startPoolscope(options: PoolscopeOptions = {}, /** @internal Started by `--import`. */ preload = false): Poolscope {
  const logger = createLogger();
  const running = processState.running as Poolscope | undefined;
  if (running !== undefined) {
    logger.warn('start:twice', 'poolscope: already started in this process; returning the running instance.');
    return running;
  }
  const { config, warnings } = normalizeConfig(options);
  if (!config.disabled) ensureDiagLogger(config.logLevel);
  for (const w of warnings) logger.warn(w, w);

  // Export failures surface through the global error handler (e.g. export timeouts); rate-limit them.
  const onOtelError = (err: unknown) => logger.warn('otel:error', `poolscope: OpenTelemetry SDK error: ${errorText(err)}`);
  if (!config.disabled) setGlobalErrorHandler(onOtelError);

  const registry = new PoolRegistry();
  const resource = buildResource(config);
  // Set once the HTTP instrumentation exists (below); a disabled Poolscope never serves any.
  let servedRequests = () => false;
  let sawQueries = () => false;
  let adoptUnhooked = () => {};
  const healthMonitor = new HealthMonitor(registry, {
    thresholds: { warning: config.warningThreshold, critical: config.criticalThreshold },
    historySize: config.healthHistorySize,
    sampleIntervalMillis: config.healthSampleIntervalMillis,
    serviceName: config.serviceName,
    pgInUse: isPgLoaded,
    pgInstrumented: !config.disabled && !config.disabledInstrumentations.includes('pg'),
    servedRequests: () => servedRequests(),
    sawQueries: () => sawQueries(),
    adoptUnhooked: () => adoptUnhooked(),
    stuck: { windowMillis: config.stuckWindowMillis, timeouts: config.stuckTimeouts },
    logger,
  });

  if (config.disabled) {
    const p = new Poolscope(config, logger, undefined, undefined, undefined, () => undefined, undefined, healthMonitor, undefined, () => registry.everObserved);
    processState.running = p;
    return p;
  }

  const enabled = (name: InstrumentationName) => !config.disabledInstrumentations.includes(name);
  // Histograms are aggregated by the instrumentation itself (no SDK attribute hashing per query) and
  // handed to every reader through its producer.
  const instrumentation = enabled('pg')
    ? new PoolscopeInstrumentation({
      poolBaseSize: config.poolBaseSize,
      logUtilizationThreshold: config.logUtilizationThreshold,
      localAggregation: true,
      querySummary: config.querySummary,
    }, registry)
    : undefined;
  if (instrumentation !== undefined) {
    sawQueries = () => instrumentation.sawQueries;
    adoptUnhooked = () => instrumentation.adoptUnhookedModules();
  }
  if (config.serverLimitCheck) instrumentation?.addRecorder(new ServerLimitCheck(logger));
  const metricProducers = instrumentation?.metricProducer === undefined ? [] : [instrumentation.metricProducer];
  const leakOptions = { leakThresholdMillis: config.leakThresholdMillis, idleInTransactionThresholdMillis:
    config.idleInTransactionThresholdMillis, stackTrace: config.leakStackTrace, routes: config.poolRoutes };
  const leaks = instrumentation !== undefined && LeakDetector.wanted(leakOptions) ? new LeakDetector(leakOptions, logger) : undefined;
  if (leaks !== undefined) metricProducers.push(leaks.producer);
  // Created here for its producer, enabled with the others below: it patches http.Server when enabled, and
  // that must stay after the upstream span instrumentations hooked `http` (else their server spans went missing).
  const http = enabled('http')
    ? new HttpServerMetricsInstrumentation({ fastifyRoutes: enabled('fastify'), localAggregation: true, enabled: false, serviceOnly: preload })
    : undefined;
  if (http?.metricProducer !== undefined) metricProducers.push(http.metricProducer);
  // Under the preload, a test runner's or dev server's requests (process-role.ts) are not a service's: no blind
  // line, and no export or port line in its output, for them.
  servedRequests = () => http?.sawRequests === true && !(preload && toolProcess() !== undefined);
  metricProducers.push(new LocalMetricProducer([localHealthMetrics(healthMonitor)]));

  // What every reader does to a collection before it leaves: ended pools' gauges out, an overflow said.
  const dropEnded = dropEndedPoolSeries(registry);
  const overflow = noteCardinalityOverflow(logger);
  const beforeExport = (m: ResourceMetrics) => overflow(dropEnded(m));
  const pull = config.metricsExporters.includes('prometheus');
  const exporter = config.metricsExporters.includes('otlp') ? createOtlpMetricExporter(config.otlpMetrics, logger, beforeExport, config.exportTimeoutMillis) : undefined;
  // What the application records through the API, each of Poolscope's readers with its own temporality.
  const appMeters = new ApplicationMeters(resource, views(), [
    ...(pull ? [{}] : []),
    ...(exporter === undefined ? [] : [{
      aggregationTemporalitySelector: (type: InstrumentType) => exporter.selectAggregationTemporality?.(type) ?? AggregationTemporality.CUMULATIVE,
    }]),
  ]);
  const readers: MetricReader[] = [];
  let prometheus: PrometheusPullReader | undefined;
  if (pull) {
    prometheus = new PrometheusPullReader(logger, beforeExport, [...metricProducers, appMeters.producer(readers.length)]);
    readers.push(prometheus);
  }
  if (exporter !== undefined) {
    readers.push(new PeriodicExportingMetricReader({
      exporter,
      exportIntervalMillis: config.exportIntervalMillis,
      exportTimeoutMillis: config.exportTimeoutMillis,
      metricProducers: [...metricProducers, appMeters.producer(readers.length)],
    }));
  }
  const meterProvider = new MeterProvider({ resource, readers, views: views() });
  instrumentation?.addRecorder(healthMonitor.recorder);
  const unwatchGlobal = registerMeterProviderUnlessOwned(() => metrics.setGlobalMeterProvider(appMeters.provider),
    () => appMeters.handOver(), logger);

  const tracing = config.tracesExporter === undefined || tracedElsewhere(logger) ? undefined
    : startTracing(config, resource, enabled, logger, onOtelError, preload);
  const tracerProvider = tracing?.provider;
  const instrumentations: Instrumentation[] = [];
  if (instrumentation !== undefined) instrumentations.push(instrumentation);
  if (http !== undefined) instrumentations.push(http);
  const releaseGlobal = () => {
    unwatchGlobal();
    // The API refuses a second global provider: a start after this one's shutdown() said so on stderr, and its
    // instrumentations asked the shut-down provider for meters (another line). Only ours is released.
    if (metrics.getMeterProvider() === appMeters.provider) metrics.disable();
    void appMeters.shutdown();
  };
  const unloads = [releaseGlobal, registerInstrumentations({ instrumentations, meterProvider, tracerProvider })];
  if (leaks !== undefined) unloads.push(leaks.start(meterProvider.getMeter('poolscope', VERSION), (r) => instrumentation!.addRecorder(r)));
  if (tracing !== undefined) {
    unloads.push(() => tracing.stop());
    // The upstream instrumentations run for their spans only. A no-op meter keeps them from recording
    // metrics at all: a View that drops them still pays the SDK's attribute hashing on every record.
    unloads.push(registerInstrumentations({
      instrumentations: tracing.instrumentations,
      meterProvider: NOOP_METER_PROVIDER,
      tracerProvider,
    }));
  }

  const serveMetrics = prometheus !== undefined;
  // A query without a pool (a lone pg.Client) has telemetry too: its duration, and with traces its span.
  const active = () => registry.everObserved || instrumentation?.sawQueries === true || servedRequests();
  const server = serveMetrics || config.healthEndpoints
    ? new TelemetryServer({
      host: config.host,
      port: config.port,
      metrics: prometheus === undefined ? undefined : () => prometheus.scrape(),
      health: config.healthEndpoints ? healthMonitor : undefined,
      logger,
      // Every node process started with the preload in NODE_OPTIONS (npm, a CLI, `node -p` in a build step)
      // finds the port taken by the service; said by those only once they have a pool or serve a request.
      // (node-gyp fails a `node -p` whose stderr is not empty: native-module builds broke under the preload.)
      // Test runners' workers and dev servers are never told: parallel workers with pools all tried the port, and
      // the line landed in the test report (under node --test, in its TAP output; found by a review of runners).
      announce: (say) => (preload && toolProcess() !== undefined ? () => undefined : pollUntil(active, say, 1_000).cancel),
      // Under the preload, the first node process of a tree (npm, a cluster's primary, tsx) held the port, and
      // the service, which has the pools, was told it was taken.
      startWhen: preload && config.serverStart === 'auto' ? whenInUse : undefined,
    })
    : undefined;

  if (server !== undefined && preload && config.serverStart === 'auto') {
    // From when this process binds the port: a cluster's primary leaves it to its workers while it has any.
    let stopWatching = () => {};
    const cancelWait = whenInUse(() => { stopWatching = leavePortToWorkers(server, () => registry.snapshots().length > 0, logger); });
    unloads.push(() => { cancelWait(); stopWatching(); });
  }
  const unload = () => unloads.forEach((u) => u());
  const p = new Poolscope(config, logger, meterProvider, tracerProvider, instrumentation, unload,
    prometheus, healthMonitor, server, active);
  processState.running = p;
  return p;
}

/** The Poolscope started in this process (by `register` or {@link startPoolscope}), if any. */
export function getPoolscope(): Poolscope | undefined {
  return processState.running as Poolscope | undefined;
}

const apiLogger = createLogger();

/**
 * Monitors an existing pool with the running Poolscope. Pools created after Poolscope started are
 * monitored automatically; use this for earlier pools, or to choose a name. Returns the reported name.
 */
export function monitorPool(pool: unknown, options?: MonitorPoolOptions): string | undefined {
  const p = getPoolscope();
  if (p === undefined) {
    apiLogger.warn('monitorPool:not-started', 'poolscope: monitorPool() called before Poolscope was started; ignored.');
    return undefined;
  }
  return p.monitorPool(pool, options);
}

/** Per-pool health from the running Poolscope; `unknown` when none is running (never healthy about nothing). */
export function getPoolHealth(): DatabaseHealth {
  const p = getPoolscope();
  if (p !== undefined) return p.getPoolHealth();
  return {
    status: 'unknown',
    stuck: false,
    score: null,
    reason: 'Poolscope is not running',
    timestamp: new Date().toISOString(),
    thresholds: { warning: DEFAULTS.warningThreshold, critical: DEFAULTS.criticalThreshold },
    stuckRules: { windowMillis: DEFAULTS.stuckWindowMillis, timeouts: DEFAULTS.stuckTimeouts },
    pools: [],
  };
}
