/**
 * Poolscope configuration. Every setting is resolved once, by {@link normalizeConfig}: the explicit
 * option wins, then the environment variable, then the default — the order `@opentelemetry/sdk-node`
 * uses for `OTEL_*`. Invalid values never throw: they produce one warning naming the setting and the
 * fallback, and the fallback is used. Every number is bounded by what the runtime can hold (timers take
 * at most 2^31-1 ms), and a default that depends on another setting is derived from it, so a fallback
 * never contradicts a value the user chose.
 */
import { describePositions, droppedHeaderEntries, MAX_RESOURCE_ATTRIBUTE_LENGTH, parseResourceAttributes } from './key-value-env.js';

export type MetricsExporterName = 'prometheus' | 'otlp';
export type TracesExporterName = 'otlp' | 'console';
/** OTLP transports, named as in `OTEL_EXPORTER_OTLP_PROTOCOL`. */
export const OTLP_PROTOCOLS = ['http/protobuf', 'http/json', 'grpc'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];
export const LOG_LEVELS = ['none', 'error', 'warn', 'info', 'debug', 'verbose', 'all'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const TEMPORALITY_PREFERENCES = ['cumulative', 'delta', 'lowmemory'] as const;
export type TemporalityPreference = (typeof TEMPORALITY_PREFERENCES)[number];
export type OtlpCompression = 'none' | 'gzip';
export const ESM_LOADER_THREAD_MODES = ['auto', 'always', 'never'] as const;
export type EsmLoaderThread = (typeof ESM_LOADER_THREAD_MODES)[number];
export const SERVER_START_MODES = ['auto', 'immediate'] as const;
export type ServerStart = (typeof SERVER_START_MODES)[number];

/** Instrumentations that can be switched off with `OTEL_NODE_DISABLED_INSTRUMENTATIONS`. */
export const INSTRUMENTATION_NAMES = ['pg', 'http', 'express', 'fastify'] as const;
export type InstrumentationName = (typeof INSTRUMENTATION_NAMES)[number];

/** The longest delay `setTimeout`/`setInterval` can hold; beyond it Node warns and fires after 1 ms. */
export const MAX_TIMER_MILLIS = 2 ** 31 - 1;
/** PostgreSQL's own ceiling for `max_connections`: no pool can usefully be larger. */
export const MAX_POOL_SIZE = 262_143;

export interface PoolscopeOptions {
  /**
   * Turn everything off (no patching, no server, no exporters).
   * Env: `OTEL_SDK_DISABLED`.
   * @default false
   */
  disabled?: boolean | undefined;
  /**
   * `service.name` resource attribute, at most 255 characters. `OTEL_RESOURCE_ATTRIBUTES` is honoured for the
   * rest of the resource (and for `service.name` when neither this nor `OTEL_SERVICE_NAME` is set).
   * Env: `OTEL_SERVICE_NAME`.
   * @default 'unknown_service:node'
   */
  serviceName?: string | undefined;
  /**
   * Where metrics go: the embedded Prometheus endpoint, OTLP push, both, or neither (`[]`).
   * Env: `OTEL_METRICS_EXPORTER` (comma-separated, `none` for neither).
   * @default ['prometheus']
   */
  metricsExporters?: MetricsExporterName[] | undefined;
  /**
   * Traces are off unless asked for; when on, `pg`, `http` and `express` spans are exported (Fastify requests
   * as their server span, named by route).
   * Env: `OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`).
   * @default undefined (no traces)
   */
  tracesExporter?: TracesExporterName | undefined;
  /**
   * Bind address of the telemetry HTTP server (`/metrics`, `/health`, `/health/database`): a host name or
   * an IP address, at most 253 characters.
   * Env: `OTEL_EXPORTER_PROMETHEUS_HOST`.
   * @default 'localhost'
   */
  host?: string | undefined;
  /**
   * Port of the telemetry HTTP server, 0–65535; `0` picks a free port (see `Poolscope.serverAddress()`).
   * Env: `OTEL_EXPORTER_PROMETHEUS_PORT`.
   * @default 9464
   */
  port?: number | undefined;
  /**
   * Serve `/health` and `/health/database` on the telemetry server; with OTLP-only export the server
   * still starts for these routes unless this is false.
   * Env: `POOLSCOPE_HEALTH_ENDPOINTS`.
   * @default true
   */
  healthEndpoints?: boolean | undefined;
  /**
   * Under `--import`, when the telemetry server binds its port. `auto`: once this process makes a `pg` pool or connection, or an
   * HTTP server of its own starts listening, so that the other node processes that inherit `NODE_OPTIONS`
   * (npm running the start script, a cluster's primary, a CLI wrapper such as tsx) leave the port to the
   * service; `immediate`: as the preload starts. Awaiting `Poolscope.ready` binds at once, and so does
   * {@link startPoolscope} without the preload.
   * Env: `POOLSCOPE_SERVER_START`.
   * @default 'auto'
   */
  serverStart?: ServerStart | undefined;
  /**
   * OTLP transport for metrics: `http/protobuf`, `http/json` or `grpc`.
   * Env: `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
   * @default 'http/protobuf' (the OTLP specification's default)
   */
  otlpProtocol?: OtlpProtocol | undefined;
  /**
   * OTLP metrics endpoint, used as is: the full URL for the http protocols; for `grpc` a URL or
   * `host:port` (without a scheme, `OTEL_EXPORTER_OTLP_INSECURE` decides on TLS, as upstream).
   * Env: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/metrics`
   * for the http protocols).
   * @default 'http://localhost:4318/v1/metrics' (http protocols), 'http://localhost:4317' (grpc)
   */
  otlpEndpoint?: string | undefined;
  /**
   * OTLP transport for traces (only used when `tracesExporter` is `otlp`).
   * Env: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
   * @default 'http/protobuf'
   */
  otlpTracesProtocol?: OtlpProtocol | undefined;
  /**
   * OTLP traces endpoint, as {@link otlpEndpoint} with `/v1/traces`.
   * Env: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`).
   * @default 'http://localhost:4318/v1/traces' (http protocols), 'http://localhost:4317' (grpc)
   */
  otlpTracesEndpoint?: string | undefined;
  /**
   * Interval between OTLP metric pushes, in milliseconds (1 – 2^31-1).
   * Env: `OTEL_METRIC_EXPORT_INTERVAL`.
   * @default 60000
   */
  exportIntervalMillis?: number | undefined;
  /**
   * Time one OTLP metric push may take, in milliseconds (1 – the interval).
   * Env: `OTEL_METRIC_EXPORT_TIMEOUT`.
   * @default 30000, capped at the interval; raised above a longer `OTEL_EXPORTER_OTLP_(METRICS_)TIMEOUT`
   */
  exportTimeoutMillis?: number | undefined;
  /**
   * Utilization (used / max, above 0 and below 1) from which a pool's health is `warning`.
   * Env: `POOLSCOPE_HEALTH_WARNING_THRESHOLD`.
   * @default 0.75, or 5/6 of `criticalThreshold` when that is set at or below 0.75
   */
  warningThreshold?: number | undefined;
  /**
   * Utilization (0.01 – 1) from which a pool's health is `critical` (reported, not answered with 503:
   * only a stuck pool is). Must be above `warningThreshold`.
   * Env: `POOLSCOPE_HEALTH_CRITICAL_THRESHOLD`.
   * @default 0.9, or 1 when `warningThreshold` is 0.9 or above
   */
  criticalThreshold?: number | undefined;
  /**
   * Utilization (above 0, at most 1) whose crossing logs a (rate-limited) warning.
   * Env: `POOLSCOPE_LOG_UTILIZATION_THRESHOLD`.
   * @default 0.8, moved into [warningThreshold, criticalThreshold] when outside it
   */
  logUtilizationThreshold?: number | undefined;
  /**
   * How often each pool is sampled into its health history, in milliseconds (100 – 2^31-1).
   * Env: `POOLSCOPE_HEALTH_SAMPLE_INTERVAL`.
   * @default 5000
   */
  healthSampleIntervalMillis?: number | undefined;
  /**
   * Samples kept per pool in the health history (1–1000).
   * Env: `POOLSCOPE_HEALTH_HISTORY_SIZE`.
   * @default 12
   */
  healthHistorySize?: number | undefined;
  /**
   * How long a pool may have callers waiting without one acquire completing before it is stuck
   * (`/health/database` answers 503); also how long an acquire timeout or a failed connection attempt
   * counts. In milliseconds, 100 – 2^31-1.
   * Env: `POOLSCOPE_HEALTH_STUCK_WINDOW`.
   * @default 10000
   */
  stuckWindowMillis?: number | undefined;
  /**
   * Acquire timeouts within `stuckWindowMillis` that make a pool stuck, 1–1000.
   * Env: `POOLSCOPE_HEALTH_STUCK_TIMEOUTS`.
   * @default 1
   */
  stuckTimeouts?: number | undefined;
  /**
   * Base size for `poolscope.pool.overflow` (open connections above it) for pools that do not declare
   * one through `monitorPool(pool, { baseSize })`, 0–262143. Unset means each pool's own `min`.
   * Env: `POOLSCOPE_POOL_BASE_SIZE`.
   * @default undefined
   */
  poolBaseSize?: number | undefined;
  /**
   * Instrumentations to leave off: any of `pg`, `http`, `express`, `fastify`.
   * (`pg` here means the pool and query metrics themselves.)
   * Env: `OTEL_NODE_DISABLED_INSTRUMENTATIONS` (comma-separated).
   * @default []
   */
  disabledInstrumentations?: InstrumentationName[] | undefined;
  /**
   * Keep SQL text (and, on spans of other instrumentations, statement names) on spans (traces on only). Off,
   * spans carry the operation and the SQLSTATE only. Bound values, database error messages (they echo values)
   * and user names are never kept, whatever this says.
   * Env: `POOLSCOPE_TRACE_SQL_TEXT`.
   * @default false
   */
  traceSqlText?: boolean | undefined;
  /**
   * Under `--import`, on runtimes without in-thread module hooks (Node 20, 22 before 22.22.3, 24 before
   * 24.11.1): whether to start the ES-module loader thread (about 11 MB). `auto` starts it when Slonik is
   * installed where the application can import it, traces are on, or another loader runs; `always` also for
   * layouts where an installed Slonik is not found (Yarn Plug'n'Play) and for CommonJS packages that an ES
   * module imports after a `require()` loaded them; `never` leaves ES-module-only packages (Slonik) unseen.
   * Env: `POOLSCOPE_ESM_LOADER_THREAD`.
   * @default 'auto'
   */
  esmLoaderThread?: EsmLoaderThread | undefined;
  /**
   * Add `db.query.summary` (operations and their tables, e.g. `INSERT audit SELECT orders`; no values) to
   * `db.client.operation.duration`, for per-table latency, and to query spans, which it then names. Each
   * distinct summary is a series: at most 500 per process, later ones are recorded as `_OTHER`.
   * Env: `POOLSCOPE_QUERY_SUMMARY`.
   * @default false
   */
  querySummary?: boolean | undefined;
  /**
   * Warn once at start-up when a pool's `max` alone is more than its server accepts from an ordinary role
   * (`max_connections` minus the reserved slots). PostgreSQL does not announce `max_connections`, so this
   * opens one short connection per server per process, with the pool's own parameters, to read it. Off by
   * default: that connection takes a slot and a login the application did not ask for (where a role or a
   * pooler caps connections, the application's own connect can fail for it), and the fleet-wide alert
   * `FleetPoolsCanExceedServer` reports the same problem from the server's side without it.
   * Env: `POOLSCOPE_SERVER_LIMIT_CHECK`.
   * @default false
   */
  serverLimitCheck?: boolean | undefined;
  /**
   * Leak detection: a connection checked out longer than this (ms) is counted once in `poolscope.pool.leaks`
   * and logged once (at most one line per pool per minute). `0` turns it off; otherwise 10 – 2^31-1.
   * Env: `POOLSCOPE_LEAK_THRESHOLD`.
   * @default 60000 (longer than the usual 30–60 s proxy and load-balancer request timeouts: a hold past it
   * outlives any request that could still be using it)
   */
  leakThresholdMillis?: number | undefined;
  /**
   * Log the stack of the code that acquired a leaked or idle-in-transaction connection. Captures a stack on
   * every acquire, so it costs on every checkout; turn it on to find a leak, not permanently.
   * Env: `POOLSCOPE_LEAK_STACK`.
   * @default false
   */
  leakStackTrace?: boolean | undefined;
  /**
   * A checked-out connection that sits idle inside an open transaction longer than this (ms) since its last
   * query is counted once in `poolscope.pool.idle_in_transaction` and logged. `0` turns it off; otherwise
   * 10 – 2^31-1.
   * Env: `POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD`.
   * @default 10000
   */
  idleInTransactionThresholdMillis?: number | undefined;
  /**
   * Charge connection hold time (`poolscope.pool.hold_time`), leaks and idle-in-transaction checkouts to
   * the `http.route` of the request that acquired the connection. Runs every HTTP request in an
   * AsyncLocalStorage context (see BENCHMARKS.md for its cost).
   * Env: `POOLSCOPE_POOL_ROUTES`.
   * @default false
   */
  poolRoutes?: boolean | undefined;
}

/** How one signal is pushed over OTLP. */
export interface OtlpSignalConfig {
  /** @default 'http/protobuf' */
  protocol: OtlpProtocol;
  /** Full URL (http protocols) or gRPC target, as handed to the exporter. */
  endpoint: string;
  /**
   * Per-request timeout of the exporter, in milliseconds (1 – 2^31-1). For metrics it defaults to just
   * under `exportTimeoutMillis`, so a hanging collector ends in one exporter failure rather than a reader
   * timeout per interval; for traces to the exporter's own 10000.
   */
  timeoutMillis: number;
  /** Set by `OTEL_EXPORTER_OTLP_(<SIGNAL>_)COMPRESSION`. @default 'none' */
  compression: OtlpCompression;
  /**
   * OTLP variables the upstream exporter reads by itself and that were set to a valid value: Poolscope
   * passes no exporter option for these, so the user's value is never overridden.
   */
  userEnv: string[];
  /**
   * OTLP variables the exporter must not see while it is constructed: the endpoint variables (the
   * resolved `endpoint` is passed instead) and every variable Poolscope rejected, which it has already
   * warned about with the fallback it uses (the exporter would otherwise warn again, echoing the raw value).
   */
  hiddenEnv: string[];
}

export interface OtlpMetricsConfig extends OtlpSignalConfig {
  /** `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`. @default 'cumulative' */
  temporalityPreference: TemporalityPreference;
}

export interface PoolscopeConfig {
  /** @default false */
  disabled: boolean;
  /**
   * Level of the diag logger installed by the `register` entry point (`OTEL_LOG_LEVEL`). With
   * `startPoolscope()` the application owns `diag` and this is informational.
   * @default 'warn'
   */
  logLevel: LogLevel;
  /** @default 'unknown_service:node' */
  serviceName: string;
  /** The rest of the resource, from `OTEL_RESOURCE_ATTRIBUTES` (`service.name` is {@link serviceName}). @default {} */
  resourceAttributes: Record<string, string>;
  /** @default ['prometheus'] */
  metricsExporters: MetricsExporterName[];
  /** @default undefined */
  tracesExporter: TracesExporterName | undefined;
  /** @default 'localhost' */
  host: string;
  /** @default 9464 */
  port: number;
  /** @default true */
  healthEndpoints: boolean;
  /** OTLP metrics push (resolved even when OTLP is off, but only warned about when on). */
  otlpMetrics: OtlpMetricsConfig;
  /** OTLP traces push (resolved even when traces are off, but only warned about when on). */
  otlpTraces: OtlpSignalConfig;
  /**
   * What the tracing SDK is given for `OTEL_TRACES_SAMPLER_ARG` in place of a value it would refuse for a ratio
   * sampler (it read it itself and said so twice: the value, then "blank"); undefined leaves the variable as set.
   * @default undefined
   */
  samplerArgReplacement: string | undefined;
  /** @default 60000 */
  exportIntervalMillis: number;
  /** @default 30000, capped at `exportIntervalMillis` */
  exportTimeoutMillis: number;
  /** @default 0.75 */
  warningThreshold: number;
  /** @default 0.9 */
  criticalThreshold: number;
  /** @default 0.8 */
  logUtilizationThreshold: number;
  /** @default 5000 */
  healthSampleIntervalMillis: number;
  /** @default 12 */
  healthHistorySize: number;
  /** @default 10000 */
  stuckWindowMillis: number;
  /** @default 1 */
  stuckTimeouts: number;
  /** @default undefined */
  poolBaseSize: number | undefined;
  /** @default [] */
  disabledInstrumentations: InstrumentationName[];
  /** @default false */
  traceSqlText: boolean;
  /** @default 'auto' */
  esmLoaderThread: EsmLoaderThread;
  /** @default 'auto' */
  serverStart: ServerStart;
  /** @default false */
  querySummary: boolean;
  /** @default false */
  serverLimitCheck: boolean;
  /** @default 60000 (0 = off) */
  leakThresholdMillis: number;
  /** @default false */
  leakStackTrace: boolean;
  /** @default 10000 (0 = off) */
  idleInTransactionThresholdMillis: number;
  /** @default false */
  poolRoutes: boolean;
}

export const DEFAULTS = {
  serviceName: 'unknown_service:node',
  logLevel: 'warn' as LogLevel,
  metricsExporters: ['prometheus'] as MetricsExporterName[],
  host: 'localhost',
  port: 9464,
  otlpProtocol: 'http/protobuf' as OtlpProtocol,
  otlpHttpBase: 'http://localhost:4318',
  otlpGrpcEndpoint: 'http://localhost:4317',
  /** The upstream exporters' own request timeout. */
  otlpRequestTimeoutMillis: 10_000,
  exportIntervalMillis: 60_000,
  exportTimeoutMillis: 30_000,
  warningThreshold: 0.75,
  criticalThreshold: 0.9,
  logUtilizationThreshold: 0.8,
  healthSampleIntervalMillis: 5_000,
  healthHistorySize: 12,
  leakThresholdMillis: 60_000,
  idleInTransactionThresholdMillis: 10_000,
  poolRoutes: false,
  stuckWindowMillis: 10_000,
  stuckTimeouts: 1,
} as const;

export interface NormalizedConfig {
  config: PoolscopeConfig;
  /** One message per rejected setting, naming it and the fallback used. */
  warnings: string[];
}

type Env = Record<string, string | undefined>;
type Signal = 'METRICS' | 'TRACES';

/** Resolves options, environment and defaults into a complete configuration. Never throws. */
export function normalizeConfig(options: PoolscopeOptions = {}, env: Env = process.env): NormalizedConfig {
  const warnings: string[] = [];
  const reader = new SettingReader(env, warnings);
  // Options come from code and may be of any type at run time; a non-object is no options at all.
  const o: PoolscopeOptions = options !== null && typeof options === 'object' ? options : {};

  const metricsExporters = reader.list<MetricsExporterName>(
    'metricsExporters', o.metricsExporters, 'OTEL_METRICS_EXPORTER',
    ['prometheus', 'otlp'], DEFAULTS.metricsExporters,
  );
  const traces = reader.list<TracesExporterName>(
    'tracesExporter', o.tracesExporter === undefined ? undefined : [o.tracesExporter],
    'OTEL_TRACES_EXPORTER', ['otlp', 'console'], [], 1,
  );
  const { warningThreshold, criticalThreshold } = thresholds(reader, o);
  const resourceAttributes = resourceAttributesFrom(reader);
  // The log threshold's default sits between the health thresholds, so that a pool logs on its way
  // from `warning` to `critical` whatever the thresholds are.
  const logUtilizationThreshold = reader.number('logUtilizationThreshold', o.logUtilizationThreshold,
    'POOLSCOPE_LOG_UTILIZATION_THRESHOLD',
    Math.min(Math.max(DEFAULTS.logUtilizationThreshold, warningThreshold), criticalThreshold),
    isFraction, 'a number above 0 and at most 1');

  const exportIntervalMillis = reader.number('exportIntervalMillis', o.exportIntervalMillis,
    'OTEL_METRIC_EXPORT_INTERVAL', DEFAULTS.exportIntervalMillis, isTimerMillis, `an integer from 1 to ${MAX_TIMER_MILLIS} (ms)`);
  // Read quietly first: the reader timeout's default depends on it, the warnings come with the OTLP settings.
  const userRequestTimeout = firstValid(env, requestTimeoutVars('METRICS'), parseTimerMillis);
  const defaultExportTimeout = Math.min(exportIntervalMillis,
    userRequestTimeout === undefined ? DEFAULTS.exportTimeoutMillis : Math.max(DEFAULTS.exportTimeoutMillis, userRequestTimeout + 1_000));
  let exportTimeoutMillis = reader.number('exportTimeoutMillis', o.exportTimeoutMillis,
    'OTEL_METRIC_EXPORT_TIMEOUT', defaultExportTimeout, isTimerMillis, `an integer from 1 to ${MAX_TIMER_MILLIS} (ms)`);
  if (exportTimeoutMillis > exportIntervalMillis) {
    reader.conflict('exportTimeoutMillis', 'OTEL_METRIC_EXPORT_TIMEOUT', o.exportTimeoutMillis === undefined,
      `(${exportTimeoutMillis}) must not exceed the export interval (${exportIntervalMillis})`, exportIntervalMillis);
    exportTimeoutMillis = exportIntervalMillis;
  }

  const quiet = new SettingReader(env, []);
  const otlpReader = metricsExporters.includes('otlp') ? reader : quiet;
  // Shorter than the reader's own timeout, so a hanging collector ends in an exporter failure (logged
  // once per outage) instead of a reader timeout (reported on every interval).
  const requestTimeout = Math.max(1, exportTimeoutMillis - Math.min(1_000, Math.ceil(exportTimeoutMillis / 2)));
  // A request that outlived the interval ran beside the next interval's: a collector that accepted connections and
  // never answered always had one in flight, and the process never exited. One that outlived the export timeout
  // answered an export already failed, and kept an ending process waiting for it (30 s with a 30 s request
  // timeout and a 2 s export timeout). So the user's timeout must be shorter than the export timeout, itself at
  // most the interval. The default export timeout makes room for a longer request timeout: only a timeout set
  // shorter than that is the limit.
  const shorterThan = exportTimeoutMillis < Math.min(exportIntervalMillis, defaultExportTimeout)
    ? { millis: exportTimeoutMillis, what: 'the metrics export timeout' }
    : { millis: exportIntervalMillis, what: 'the metrics export interval' };
  const otlpMetrics = otlpSignal(otlpReader, 'METRICS', o.otlpProtocol, o.otlpEndpoint, { requestTimeout, shorterThan }) as OtlpMetricsConfig;
  otlpMetrics.temporalityPreference = temporality(otlpReader, otlpMetrics);
  const otlpTraces = otlpSignal(traces[0] === 'otlp' ? reader : quiet, 'TRACES', o.otlpTracesProtocol, o.otlpTracesEndpoint, {
    requestTimeout: DEFAULTS.otlpRequestTimeoutMillis,
  });

  const config: PoolscopeConfig = {
    disabled: reader.boolean('disabled', o.disabled, 'OTEL_SDK_DISABLED', false, true),
    logLevel: reader.chain<LogLevel>('logLevel', undefined, ['OTEL_LOG_LEVEL'],
      (raw) => ((LOG_LEVELS as readonly string[]).includes(raw.trim().toLowerCase()) ? raw.trim().toLowerCase() as LogLevel : undefined),
      `one of ${LOG_LEVELS.join(', ')}`, () => DEFAULTS.logLevel, (l) => JSON.stringify(l)).value,
    serviceName: reader.chain<string>('serviceName', o.serviceName, ['OTEL_SERVICE_NAME'],
      (raw) => (raw.trim() !== '' && raw.trim().length <= MAX_RESOURCE_ATTRIBUTE_LENGTH ? raw.trim() : undefined),
      `a name of 1 to ${MAX_RESOURCE_ATTRIBUTE_LENGTH} characters`,
      () => resourceAttributes['service.name'] ?? DEFAULTS.serviceName,
      // The fallback is named by where it came from: a service name the user set is not echoed into logs.
      (n) => (n === DEFAULTS.serviceName ? JSON.stringify(n)
        : n === env.OTEL_SERVICE_NAME?.trim() ? 'OTEL_SERVICE_NAME' : 'service.name from OTEL_RESOURCE_ATTRIBUTES')).value,
    resourceAttributes,
    metricsExporters,
    tracesExporter: traces[0],
    host: reader.host('host', o.host, 'OTEL_EXPORTER_PROMETHEUS_HOST', DEFAULTS.host),
    port: reader.number('port', o.port, 'OTEL_EXPORTER_PROMETHEUS_PORT', DEFAULTS.port,
      (n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'a port number (0-65535)'),
    healthEndpoints: reader.boolean('healthEndpoints', o.healthEndpoints, 'POOLSCOPE_HEALTH_ENDPOINTS', true),
    otlpMetrics,
    otlpTraces,
    samplerArgReplacement: traces[0] === undefined ? undefined : samplerArgReplacement(reader),
    exportIntervalMillis,
    exportTimeoutMillis,
    warningThreshold,
    criticalThreshold,
    logUtilizationThreshold,
    healthSampleIntervalMillis: reader.number('healthSampleIntervalMillis', o.healthSampleIntervalMillis,
      'POOLSCOPE_HEALTH_SAMPLE_INTERVAL', DEFAULTS.healthSampleIntervalMillis,
      (n) => isTimerMillis(n) && n >= 100, `an integer from 100 to ${MAX_TIMER_MILLIS} (ms)`),
    healthHistorySize: reader.number('healthHistorySize', o.healthHistorySize,
      'POOLSCOPE_HEALTH_HISTORY_SIZE', DEFAULTS.healthHistorySize, (n) => Number.isInteger(n) && n >= 1 && n <= 1000, 'an integer from 1 to 1000'),
    stuckWindowMillis: reader.number('stuckWindowMillis', o.stuckWindowMillis, 'POOLSCOPE_HEALTH_STUCK_WINDOW',
      DEFAULTS.stuckWindowMillis, (n) => isTimerMillis(n) && n >= 100, `an integer from 100 to ${MAX_TIMER_MILLIS} (ms)`),
    stuckTimeouts: reader.number('stuckTimeouts', o.stuckTimeouts, 'POOLSCOPE_HEALTH_STUCK_TIMEOUTS', DEFAULTS.stuckTimeouts,
      (n) => Number.isInteger(n) && n >= 1 && n <= 1000, 'an integer from 1 to 1000'),
    poolBaseSize: reader.optionalNumber('poolBaseSize', o.poolBaseSize, 'POOLSCOPE_POOL_BASE_SIZE',
      (n) => Number.isInteger(n) && n >= 0 && n <= MAX_POOL_SIZE, `an integer from 0 to ${MAX_POOL_SIZE}`),
    disabledInstrumentations: reader.list<InstrumentationName>('disabledInstrumentations', o.disabledInstrumentations,
      'OTEL_NODE_DISABLED_INSTRUMENTATIONS', INSTRUMENTATION_NAMES, [], Infinity, false),
    traceSqlText: reader.boolean('traceSqlText', o.traceSqlText, 'POOLSCOPE_TRACE_SQL_TEXT', false),
    esmLoaderThread: reader.oneOf('esmLoaderThread', o.esmLoaderThread, 'POOLSCOPE_ESM_LOADER_THREAD', ESM_LOADER_THREAD_MODES, 'auto'),
    serverStart: reader.oneOf('serverStart', o.serverStart, 'POOLSCOPE_SERVER_START', SERVER_START_MODES, 'auto'),
    querySummary: reader.boolean('querySummary', o.querySummary, 'POOLSCOPE_QUERY_SUMMARY', false),
    serverLimitCheck: reader.boolean('serverLimitCheck', o.serverLimitCheck, 'POOLSCOPE_SERVER_LIMIT_CHECK', false),
    leakThresholdMillis: reader.number('leakThresholdMillis', o.leakThresholdMillis, 'POOLSCOPE_LEAK_THRESHOLD',
      DEFAULTS.leakThresholdMillis, isOffOrDetectionMillis, `0 (off) or an integer from 10 to ${MAX_TIMER_MILLIS} (ms)`),
    leakStackTrace: reader.boolean('leakStackTrace', o.leakStackTrace, 'POOLSCOPE_LEAK_STACK', false),
    idleInTransactionThresholdMillis: reader.number('idleInTransactionThresholdMillis', o.idleInTransactionThresholdMillis,
      'POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD', DEFAULTS.idleInTransactionThresholdMillis, isOffOrDetectionMillis,
      `0 (off) or an integer from 10 to ${MAX_TIMER_MILLIS} (ms)`),
    poolRoutes: reader.boolean('poolRoutes', o.poolRoutes, 'POOLSCOPE_POOL_ROUTES', DEFAULTS.poolRoutes),
  };
  return { config, warnings };
}

/**
 * The two health thresholds, warning strictly below critical. A threshold the user did not set (or set to
 * an invalid value) adapts to the one they did; only two valid values that contradict each other are
 * rejected, and then the critical one yields.
 */
function thresholds(reader: SettingReader, o: PoolscopeOptions): { warningThreshold: number; criticalThreshold: number } {
  const w = reader.peekNumber('warningThreshold', o.warningThreshold, 'POOLSCOPE_HEALTH_WARNING_THRESHOLD', (n) => n > 0 && n < 1);
  // At least 0.01, so that a warning threshold derived from it is still a usable number above 0.
  const c = reader.peekNumber('criticalThreshold', o.criticalThreshold, 'POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', (n) => n >= 0.01 && n <= 1);
  const criticalAbove = (warning: number) => (DEFAULTS.criticalThreshold > warning ? DEFAULTS.criticalThreshold : 1);
  const warningBelow = (critical: number) => (DEFAULTS.warningThreshold < critical ? DEFAULTS.warningThreshold : (critical * 5) / 6);
  let warning: number;
  let critical: number;
  if (w.value !== undefined && c.value !== undefined && c.value <= w.value) {
    warning = w.value;
    critical = criticalAbove(warning);
    reader.conflict('criticalThreshold', 'POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', c.fromEnv,
      `(${c.value}) must be above the warning threshold (${warning})`, critical);
  } else {
    warning = w.value ?? (c.value === undefined ? DEFAULTS.warningThreshold : warningBelow(c.value));
    critical = c.value ?? criticalAbove(warning);
  }
  reader.rejectPeeked(w, 'a number above 0 and below 1', warning);
  reader.rejectPeeked(c, 'a number from 0.01 to 1', critical);
  return { warningThreshold: warning, criticalThreshold: critical };
}

/** Variables that hold the per-request timeout of one signal's exporter, most specific first. */
function requestTimeoutVars(signal: Signal): string[] {
  return [`OTEL_EXPORTER_OTLP_${signal}_TIMEOUT`, 'OTEL_EXPORTER_OTLP_TIMEOUT'];
}

/** Protocol, endpoint, timeout and compression of one signal; see {@link OtlpSignalConfig}. */
function otlpSignal(reader: SettingReader, signal: Signal, protocolOption: string | undefined, endpointOption: string | undefined,
  defaults: { requestTimeout: number; shorterThan?: { millis: number; what: string } }): OtlpSignalConfig {
  const lower = signal.toLowerCase();
  const optionSuffix = signal === 'METRICS' ? '' : 'Traces';
  const userEnv: string[] = [];
  const hiddenEnv = [`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`, 'OTEL_EXPORTER_OTLP_ENDPOINT'];

  const protocol = reader.chain<OtlpProtocol>(`otlp${optionSuffix}Protocol`, protocolOption,
    [`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`, 'OTEL_EXPORTER_OTLP_PROTOCOL'],
    (raw) => (OTLP_PROTOCOLS as readonly string[]).includes(raw.trim().toLowerCase()) ? raw.trim().toLowerCase() as OtlpProtocol : undefined,
    `one of ${OTLP_PROTOCOLS.join(', ')}`, () => DEFAULTS.otlpProtocol, (p) => `${JSON.stringify(p)} for ${lower}`).value;

  const grpc = protocol === 'grpc';
  const showEndpoint = (url: string) => `${describeEndpoint(url)} for ${lower}`;
  const parseEndpoint = (raw: string) => parseOtlpEndpoint(raw, grpc);
  const specific = reader.chain<string>(`otlp${optionSuffix}Endpoint`, endpointOption, [`OTEL_EXPORTER_OTLP_${signal}_ENDPOINT`],
    parseEndpoint, grpc ? 'an http(s) URL or host:port' : 'an http(s) URL', () => generic(), showEndpoint);
  function generic(): string {
    return reader.chain<string>(`otlp${optionSuffix}Endpoint`, undefined, ['OTEL_EXPORTER_OTLP_ENDPOINT'],
      (raw) => {
        const base = parseEndpoint(raw);
        if (base === undefined || grpc) return base;
        // The per-signal path is appended to the base's path, as every OpenTelemetry SDK does (a query
        // string stays after the path).
        const u = new URL(base);
        u.pathname = `${u.pathname.replace(/\/+$/, '')}/v1/${lower}`;
        return parseEndpoint(u.toString());
      },
      grpc ? 'an http(s) URL or host:port' : 'an http(s) URL',
      () => (grpc ? DEFAULTS.otlpGrpcEndpoint : `${DEFAULTS.otlpHttpBase}/v1/${lower}`), showEndpoint).value;
  }

  const limit = defaults.shorterThan !== undefined && defaults.shorterThan.millis > 1 ? defaults.shorterThan : undefined;
  const timeout = reader.chain<number>(`otlp${optionSuffix}Timeout`, undefined, requestTimeoutVars(signal),
    (raw) => {
      const n = parseTimerMillis(raw);
      return n !== undefined && (limit === undefined || n < limit.millis) ? n : undefined;
    },
    limit === undefined ? `an integer from 1 to ${MAX_TIMER_MILLIS} (ms)` : `an integer from 1 to ${limit.millis - 1} (ms), shorter than ${limit.what}`,
    () => defaults.requestTimeout, (n) => `${n} for ${lower}`);
  const compression = reader.chain<OtlpCompression>(`otlp${optionSuffix}Compression`, undefined,
    [`OTEL_EXPORTER_OTLP_${signal}_COMPRESSION`, 'OTEL_EXPORTER_OTLP_COMPRESSION'],
    (raw) => (raw.trim() === 'gzip' || raw.trim() === 'none' ? raw.trim() as OtlpCompression : undefined),
    "'gzip' or 'none'", () => 'none', (c) => `${JSON.stringify(c)} for ${lower}`);
  for (const r of [timeout, compression]) {
    if (r.source !== undefined) userEnv.push(r.source);
    hiddenEnv.push(...r.rejected);
  }
  for (const name of [`OTEL_EXPORTER_OTLP_${signal}_HEADERS`, 'OTEL_EXPORTER_OTLP_HEADERS']) {
    const dropped = droppedHeaderEntries(reader.text(name) ?? '');
    if (dropped.length > 0) {
      reader.dropped(name, `${describePositions(dropped)} ${dropped.length === 1 ? 'is' : 'are'} not name=value with a non-empty, percent-encoded value`,
        'the other headers only');
    }
  }
  return { protocol, endpoint: specific.value, timeoutMillis: timeout.value, compression: compression.value, userEnv, hiddenEnv };
}

function resourceAttributesFrom(reader: SettingReader): Record<string, string> {
  const raw = reader.text('OTEL_RESOURCE_ATTRIBUTES');
  if (raw === undefined) return {};
  const parsed = parseResourceAttributes(raw);
  if (parsed.problem === undefined) return parsed.attributes;
  reader.dropped('OTEL_RESOURCE_ATTRIBUTES', `${parsed.problem}, so all of it is ignored, as the OpenTelemetry specification requires`,
    'no resource attributes from it');
  return {};
}

function temporality(reader: SettingReader, signal: OtlpSignalConfig): TemporalityPreference {
  const name = 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE';
  // Exactly what the exporter accepts (it lower-cases, but does not trim): a value it would reject is hidden.
  // Read untrimmed: trimmed here, ' delta' passed, and the exporter refused it, echoing the raw value.
  const exact = reader.untrimmed(name);
  const r = reader.chain<TemporalityPreference>('otlpTemporalityPreference', undefined, [name],
    (raw) => (raw === exact && (TEMPORALITY_PREFERENCES as readonly string[]).includes(raw.toLowerCase()) ? raw.toLowerCase() as TemporalityPreference : undefined),
    `one of ${TEMPORALITY_PREFERENCES.join(', ')}`, () => 'cumulative', (t) => JSON.stringify(t));
  if (r.source !== undefined) signal.userEnv.push(r.source);
  signal.hiddenEnv.push(...r.rejected);
  return r.value;
}

function isFraction(n: number): boolean {
  return n > 0 && n <= 1;
}

/** Detection thresholds: 0 is off; below 10 ms every checkout would be a "leak". */
function isOffOrDetectionMillis(n: number): boolean {
  return n === 0 || (isTimerMillis(n) && n >= 10);
}

function isTimerMillis(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= MAX_TIMER_MILLIS;
}

function parseNumber(raw: string): number {
  return /^[-+]?(\d+\.?\d*|\.\d+)$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
}

function parseTimerMillis(raw: string): number | undefined {
  const n = parseNumber(raw);
  return isTimerMillis(n) ? n : undefined;
}

/** The first of `names` set in `env` to a value `parse` accepts. */
function firstValid<T>(env: Env, names: string[], parse: (raw: string) => T | undefined): T | undefined {
  for (const name of names) {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') continue;
    const v = parse(raw);
    if (v !== undefined) return v;
  }
  return undefined;
}

/** An OTLP endpoint as the exporter takes it, or undefined. gRPC also takes `host:port` without a scheme. */
function parseOtlpEndpoint(raw: string, grpc: boolean): string | undefined {
  const text = raw.trim();
  if (text === '' || text.length > 2048 || /[\s\x00-\x1f\x7f]/.test(text)) return undefined;
  if (grpc && !/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    return /^[a-z0-9.-]+:\d{1,5}$|^\[[0-9a-f:.]+\]:\d{1,5}$/i.test(text) ? text : undefined;
  }
  try {
    const u = new URL(text);
    if ((u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '') return text;
  } catch {
    // not a URL
  }
  return undefined;
}

/**
 * An endpoint as it may appear in a log line: scheme, host and path only. User names, passwords, query
 * strings (tokens are often passed there) and fragments are dropped.
 */

/** Ratio samplers take OTEL_TRACES_SAMPLER_ARG as a probability from 0 to 1; the SDK's fallback for others is 1. */
const RATIO_SAMPLERS = new Set(['traceidratio', 'parentbased_traceidratio']);

function samplerArgReplacement(reader: SettingReader): string | undefined {
  if (!RATIO_SAMPLERS.has(reader.text('OTEL_TRACES_SAMPLER') ?? '')) return undefined;
  const raw = reader.text('OTEL_TRACES_SAMPLER_ARG');
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (Number.isFinite(n) && n >= 0 && n <= 1) return undefined;
  reader.dropped('OTEL_TRACES_SAMPLER_ARG', 'is not a probability from 0 to 1 (the ratio sampler\'s)', '1 (every trace sampled)');
  return '1';
}

/** Path segments of OTLP endpoints that say where data goes and never carry a secret. */
const PLAIN_PATH_SEGMENTS = new Set(['v1', 'metrics', 'traces', 'logs', 'otlp', 'api', 'v2', 'write']);

export function describeEndpoint(url: string): string {
  try {
    const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `grpc://${url}`);
    const scheme = u.protocol === 'grpc:' ? '' : `${u.protocol}//`;
    // Path segments other than OTLP's and Prometheus's own words are shown as '...': some ingest endpoints carry
    // a tenant key in the path, and the export-failure line printed it.
    const path = u.pathname === '/' && !url.endsWith('/') ? ''
      : u.pathname.split('/').map((s) => (s === '' || PLAIN_PATH_SEGMENTS.has(s) ? s : '...')).join('/');
    return sanitizeText(`${scheme}${u.host}${path}`, 200);
  } catch {
    return '(invalid URL)';
  }
}

/** Printable ASCII only, bounded: nothing echoed can forge a log line or flood it. */
function sanitizeText(text: string, max: number): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}…` : clean;
}

interface PeekedNumber {
  option: string;
  envName: string;
  fromEnv: boolean;
  value?: number;
  bad?: unknown;
}

/** Reads one setting at a time from option → env → default, collecting a warning for each bad value. */
class SettingReader {
  constructor(private readonly env: Env, private readonly warnings: string[]) {}

  private envValue(name: string): string | undefined {
    const raw = this.env[name];
    if (typeof raw !== 'string') return undefined;
    const trimmed = raw.trim();
    return trimmed === '' ? undefined : trimmed;
  }

  private settingName(option: string, envName: string, fromEnv: boolean): string {
    return fromEnv ? envName : `option ${option}`;
  }

  /**
   * One warning per setting: a general OTLP variable rejected for both signals is one line naming both
   * fallbacks (`using 29000 for metrics, 10000 for traces`).
   */
  private push(message: string): void {
    const cut = message.lastIndexOf('; using ');
    const setting = (w: string) => /^poolscope: (option \S+|\S+)/.exec(w)?.[1];
    const i = this.warnings.findIndex((w) => setting(w) === setting(message));
    if (i < 0) {
      this.warnings.push(message);
      return;
    }
    const fallback = message.slice(cut + '; using '.length, -1);
    const existing = this.warnings[i]!;
    if (!existing.slice(0, -1).split('; using ')[1]!.split(', ').includes(fallback)) {
      this.warnings[i] = `${existing.slice(0, -1)}, ${fallback}.`;
    }
  }

  private reject(option: string, envName: string, fromEnv: boolean, shown: unknown, expected: string, fallbackText: string): void {
    // Values are echoed only when short and plain: a mistyped variable must not smuggle a secret (or, with
    // a control character, a forged line) into the logs. URLs and host:port pairs are never echoed raw.
    const text = typeof shown === 'string' || typeof shown === 'number' || typeof shown === 'boolean' ? String(shown) : '';
    // The OTLP variables sit beside OTEL_EXPORTER_OTLP_HEADERS, and a token pasted into the wrong one (an endpoint,
    // the compression) was echoed: there, only a short word is ('zip', 'kafka').
    // Elsewhere a value mixing letters and digits past 8 characters reads as a token and is not echoed either
    // (review: a key pasted into OTEL_LOG_LEVEL was).
    const tokenLike = text.length > 8 && /[0-9]/.test(text) && /[A-Za-z]/.test(text);
    const plain = envName.startsWith('OTEL_EXPORTER_OTLP_') ? /^[A-Za-z0-9.-]{1,12}$/.test(text)
      : text !== '' && text.length <= 40 && !tokenLike && !/[:@/?#\\=&%\x00-\x1f\x7f-\uffff]/.test(text);
    const echo = plain ? ` '${text}'` : '';
    this.push(`poolscope: ${this.settingName(option, envName, fromEnv)}${echo} is not ${expected}; using ${fallbackText}.`);
  }

  /** Two settings that are each valid but contradict each other: the named one yields to `fallback`. */
  conflict(option: string, envName: string, fromEnv: boolean, problem: string, fallback: number): void {
    this.push(`poolscope: ${this.settingName(option, envName, fromEnv)} ${problem}; using ${JSON.stringify(fallback)}.`);
  }

  /**
   * A variable the SDK reads itself and would drop in part or whole without a word: `problem` says where
   * (an entry's position, the rule it breaks), never what, since these variables carry tokens.
   */
  dropped(envName: string, problem: string, fallbackText: string): void {
    this.push(`poolscope: ${envName} ${problem}; using ${fallbackText}.`);
  }

  /** A variable's value as the SDK will read it, for checks that only report. */
  text(envName: string): string | undefined {
    return this.envValue(envName);
  }

  /** A variable as set, spaces and all. */
  untrimmed(envName: string): string | undefined {
    const raw = this.env[envName];
    return typeof raw === 'string' ? raw : undefined;
  }

  /** A bind address: a host name, IPv4 or IPv6 address (brackets allowed), at most 253 characters. */
  host(option: string, value: string | undefined, envName: string, fallback: string): string {
    const fromEnv = typeof value !== 'string' || value.trim() === '';
    const candidate = fromEnv ? this.envValue(envName) : value.trim();
    if (candidate === undefined) return fallback;
    const bare = candidate.replace(/^\[(.*)\]$/, '$1');
    if (bare.length <= 253 && /^[A-Za-z0-9._:%-]+$/.test(bare) && !bare.startsWith('-')) return bare;
    this.reject(option, envName, fromEnv, candidate, 'a host name or IP address', JSON.stringify(fallback));
    return fallback;
  }

  /** One of a few words, any case. */
  oneOf<T extends string>(option: string, value: unknown, envName: string, words: readonly T[], fallback: T): T {
    return this.chain<T>(option, value, [envName],
      (raw) => ((words as readonly string[]).includes(raw.trim().toLowerCase()) ? raw.trim().toLowerCase() as T : undefined),
      `one of ${words.join(', ')}`, () => fallback, (w) => JSON.stringify(w)).value;
  }

  /**
   * `otel`: an OpenTelemetry variable, which takes `true` and `false` only (the specification: anything else is
   * false, with a warning; other SDKs in the fleet read `1` so); Poolscope's own take `1` and `0` too. An invalid
   * option falls back to the variable, then the default (explicit option, then environment, then default).
   */
  boolean(option: string, value: boolean | undefined, envName: string, fallback: boolean, otel = false): boolean {
    if (typeof value === 'boolean') return value;
    const fromEnv = value === undefined;
    const raw = fromEnv ? this.envValue(envName) : value;
    if (raw === undefined) return fallback;
    const lower = String(raw).toLowerCase();
    if (lower === 'true' || (!otel && lower === '1')) return true;
    if (lower === 'false' || (!otel && lower === '0')) return false;
    const rest = fromEnv ? fallback : this.boolean(option, undefined, envName, fallback, otel);
    this.reject(option, envName, fromEnv, raw, "'true' or 'false'", JSON.stringify(rest));
    return rest;
  }

  number(option: string, value: number | undefined, envName: string, fallback: number,
    valid: (n: number) => boolean, expected: string): number {
    return this.optionalNumber(option, value, envName, valid, expected, fallback) ?? fallback;
  }

  optionalNumber(option: string, value: number | undefined, envName: string,
    valid: (n: number) => boolean, expected: string, fallback?: number): number | undefined {
    const read = this.peekNumber(option, value, envName, valid);
    this.rejectPeeked(read, expected, read.value ?? fallback);
    return read.value ?? fallback;
  }

  /** Reads a number without judging it yet: the caller may need other settings to choose the fallback. */
  peekNumber(option: string, value: number | undefined, envName: string, valid: (n: number) => boolean): PeekedNumber {
    const fromEnv = value === undefined;
    const raw: unknown = fromEnv ? this.envValue(envName) : value;
    if (raw === undefined) return { option, envName, fromEnv };
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? parseNumber(raw) : NaN;
    if (Number.isFinite(n) && valid(n)) return { option, envName, fromEnv, value: n };
    // An invalid option falls back to the variable (`port: Number(process.env.X)` with X unset is NaN).
    const env = fromEnv ? undefined : this.peekNumber(option, undefined, envName, valid).value;
    return { option, envName, fromEnv, bad: raw, ...(env === undefined ? {} : { value: env }) };
  }

  /** Warns about a peeked number that was present but invalid, naming the fallback finally used. */
  rejectPeeked(read: PeekedNumber, expected: string, fallback: number | undefined): void {
    if (!('bad' in read)) return;
    this.reject(read.option, read.envName, read.fromEnv, read.bad, expected, fallback === undefined ? 'unset' : JSON.stringify(fallback));
  }

  /**
   * One setting with an explicit option and a chain of variables, most specific first. The first value
   * present decides; an invalid one is warned about, naming what the rest of the chain resolves to.
   */
  chain<T>(option: string, value: unknown, envNames: string[], parse: (raw: string) => T | undefined,
    expected: string, fallback: () => T, show: (v: T) => string): { value: T; source?: string; rejected: string[] } {
    const rejected: string[] = [];
    // Variables further down the chain than the one that decides may still be invalid: the exporter would
    // read (and warn about) them, so they are hidden too, without a warning of ours (they change nothing).
    const hideInvalidFrom = (i: number) => {
      for (const name of envNames.slice(i)) {
        const raw = this.envValue(name);
        if (raw !== undefined && parse(raw) === undefined) rejected.push(name);
      }
    };
    if (value !== undefined) {
      const parsed = typeof value === 'string' ? parse(value) : undefined;
      hideInvalidFrom(0);
      if (parsed !== undefined) return { value: parsed, rejected };
      const rest = this.chain(option, undefined, envNames, parse, expected, fallback, show);
      this.reject(option, envNames[0]!, false, value, expected, show(rest.value));
      return { value: rest.value, rejected: [...new Set([...rejected, ...rest.rejected])] };
    }
    for (let i = 0; i < envNames.length; i++) {
      const name = envNames[i]!;
      const raw = this.envValue(name);
      if (raw === undefined) continue;
      const parsed = parse(raw);
      if (parsed !== undefined) {
        hideInvalidFrom(i + 1);
        return { value: parsed, source: name, rejected };
      }
      rejected.push(name);
      const rest = this.chain(option, undefined, envNames.slice(i + 1), parse, expected, fallback, show);
      this.reject(option, name, true, raw, expected, show(rest.value));
      return { value: rest.value, source: rest.source, rejected: [...rejected, ...rest.rejected] };
    }
    return { value: fallback(), rejected };
  }

  /** `exporters`: a list of exporters, where `none` turns the signal off (not a list of instrumentations). */
  list<T extends string>(option: string, value: readonly string[] | undefined, envName: string,
    allowed: readonly T[], fallback: T[], most = Infinity, exporters = true): T[] {
    const fromEnv = value === undefined;
    const raw = fromEnv ? this.envValue(envName)?.split(',') : Array.isArray(value) ? value : [String(value)];
    if (raw === undefined) return [...fallback];
    const names = raw.map((s) => String(s).trim().toLowerCase()).filter((s) => s !== '');
    const shown = (list: readonly string[]) => (list.length === 0 ? 'none' : list.join(','));
    const setting = () => this.settingName(option, envName, fromEnv);
    // Commas only (a template joining two empty values): metrics went off without a word.
    if (names.length === 0 && fromEnv) {
      this.push(`poolscope: ${setting()} names nothing; using ${shown(fallback)}.`);
      return [...fallback];
    }
    // 'none' with anything else is a contradiction; the SDK's own readers disagree on it (metrics: none,
    // traces: otlp). Here 'none' wins for both: a user who wrote it meant to turn something off.
    if (exporters && names.includes('none')) {
      if (names.some((n) => n !== 'none')) this.push(`poolscope: ${setting()} combines 'none' with other exporters; using none.`);
      return [];
    }
    const unknown = names.filter((n) => !(allowed as readonly string[]).includes(n));
    let known = [...new Set(names.filter((n): n is T => (allowed as readonly string[]).includes(n)))];
    if (unknown.length > 0) {
      known = known.length > 0 ? known : [...fallback];
      this.reject(option, envName, fromEnv, unknown.join(','), `one of ${[...(exporters ? ['none'] : []), ...allowed].join(', ')}`, shown(known));
    }
    if (known.length > most) {
      this.push(`poolscope: ${setting()} names ${known.length} exporters (${known.join(',')}) where ${most} is supported; using ${shown(known.slice(0, most))}.`);
      known = known.slice(0, most);
    }
    return known;
  }
}
