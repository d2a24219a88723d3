/**
 * Poolscope configuration. Every setting is resolved once, by {@link normalizeConfig}: the explicit
 * option wins, then the environment variable, then the default — the order `@opentelemetry/sdk-node`
 * uses for `OTEL_*`. Invalid values never throw: they produce one warning naming the setting and the
 * fallback, and the fallback is used.
 */

export type MetricsExporterName = 'prometheus' | 'otlp';
export type TracesExporterName = 'otlp' | 'console';

/** Instrumentations that can be switched off with `OTEL_NODE_DISABLED_INSTRUMENTATIONS`. */
export const INSTRUMENTATION_NAMES = ['pg', 'http', 'express', 'fastify'] as const;
export type InstrumentationName = (typeof INSTRUMENTATION_NAMES)[number];

export interface PoolscopeOptions {
  /**
   * Turn everything off (no patching, no server, no exporters).
   * Env: `OTEL_SDK_DISABLED`.
   * @default false
   */
  disabled?: boolean;
  /**
   * `service.name` resource attribute. `OTEL_RESOURCE_ATTRIBUTES` is honoured for the rest of the resource.
   * Env: `OTEL_SERVICE_NAME`.
   * @default 'unknown_service:node'
   */
  serviceName?: string;
  /**
   * Where metrics go: the embedded Prometheus endpoint, OTLP push, both, or neither (`[]`).
   * Env: `OTEL_METRICS_EXPORTER` (comma-separated, `none` for neither).
   * @default ['prometheus']
   */
  metricsExporters?: MetricsExporterName[];
  /**
   * Traces are off unless asked for; when on, `pg`, `http`, `express` and `fastify` spans are exported.
   * Env: `OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`).
   * @default undefined (no traces)
   */
  tracesExporter?: TracesExporterName;
  /**
   * Bind address of the telemetry HTTP server (`/metrics`, `/health`, `/health/database`).
   * Env: `OTEL_EXPORTER_PROMETHEUS_HOST`.
   * @default 'localhost'
   */
  host?: string;
  /**
   * Port of the telemetry HTTP server; `0` picks a free port (see `Poolscope.serverAddress()`).
   * Env: `OTEL_EXPORTER_PROMETHEUS_PORT`.
   * @default 9464
   */
  port?: number;
  /**
   * Serve `/health` and `/health/database` on the telemetry server; with OTLP-only export the server
   * still starts for these routes unless this is false.
   * Env: `POOLSCOPE_HEALTH_ENDPOINTS`.
   * @default true
   */
  healthEndpoints?: boolean;
  /**
   * Full OTLP/HTTP metrics URL.
   * Env: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`.
   * @default 'http://localhost:4318/v1/metrics'
   */
  otlpEndpoint?: string;
  /**
   * Full OTLP/HTTP traces URL (only used when traces are on).
   * Env: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
   * @default 'http://localhost:4318/v1/traces'
   */
  otlpTracesEndpoint?: string;
  /**
   * Interval between OTLP metric pushes, in milliseconds.
   * Env: `OTEL_METRIC_EXPORT_INTERVAL`.
   * @default 60000
   */
  exportIntervalMillis?: number;
  /**
   * Timeout of one OTLP metric push, in milliseconds (capped at the interval).
   * Env: `OTEL_METRIC_EXPORT_TIMEOUT`.
   * @default 30000
   */
  exportTimeoutMillis?: number;
  /**
   * Utilization (used / max, 0–1) from which a pool's health is `warning`.
   * Env: `POOLSCOPE_HEALTH_WARNING_THRESHOLD`.
   * @default 0.75
   */
  warningThreshold?: number;
  /**
   * Utilization (0–1) from which a pool's health is `critical` and the health routes answer 503.
   * Must be above `warningThreshold`.
   * Env: `POOLSCOPE_HEALTH_CRITICAL_THRESHOLD`.
   * @default 0.9
   */
  criticalThreshold?: number;
  /**
   * Utilization (0–1) whose crossing logs a (rate-limited) warning.
   * Env: `POOLSCOPE_LOG_UTILIZATION_THRESHOLD`.
   * @default 0.8
   */
  logUtilizationThreshold?: number;
  /**
   * How often each pool is sampled into its health history, in milliseconds.
   * Env: `POOLSCOPE_HEALTH_SAMPLE_INTERVAL`.
   * @default 5000
   */
  healthSampleIntervalMillis?: number;
  /**
   * Samples kept per pool in the health history.
   * Env: `POOLSCOPE_HEALTH_HISTORY_SIZE`.
   * @default 12
   */
  healthHistorySize?: number;
  /**
   * Base size for `poolscope.pool.overflow` (open connections above it) for pools that do not declare
   * one through `monitorPool(pool, { baseSize })`. Unset means each pool's own `min`.
   * Env: `POOLSCOPE_POOL_BASE_SIZE`.
   * @default undefined
   */
  poolBaseSize?: number;
  /**
   * Instrumentations to leave off: any of `pg`, `http`, `express`, `fastify`.
   * (`pg` here means the pool and query metrics themselves.)
   * Env: `OTEL_NODE_DISABLED_INSTRUMENTATIONS` (comma-separated).
   * @default []
   */
  disabledInstrumentations?: InstrumentationName[];
}

export interface PoolscopeConfig {
  disabled: boolean;
  serviceName: string;
  metricsExporters: MetricsExporterName[];
  tracesExporter: TracesExporterName | undefined;
  host: string;
  port: number;
  healthEndpoints: boolean;
  otlpEndpoint: string;
  otlpTracesEndpoint: string;
  exportIntervalMillis: number;
  exportTimeoutMillis: number;
  warningThreshold: number;
  criticalThreshold: number;
  logUtilizationThreshold: number;
  healthSampleIntervalMillis: number;
  healthHistorySize: number;
  poolBaseSize: number | undefined;
  disabledInstrumentations: InstrumentationName[];
}

export const DEFAULTS = {
  serviceName: 'unknown_service:node',
  metricsExporters: ['prometheus'] as MetricsExporterName[],
  host: 'localhost',
  port: 9464,
  otlpBase: 'http://localhost:4318',
  exportIntervalMillis: 60_000,
  exportTimeoutMillis: 30_000,
  warningThreshold: 0.75,
  criticalThreshold: 0.9,
  logUtilizationThreshold: 0.8,
  healthSampleIntervalMillis: 5_000,
  healthHistorySize: 12,
} as const;

export interface NormalizedConfig {
  config: PoolscopeConfig;
  /** One message per rejected setting, naming it and the fallback used. */
  warnings: string[];
}

type Env = Record<string, string | undefined>;

/** Resolves options, environment and defaults into a complete configuration. Never throws. */
export function normalizeConfig(options: PoolscopeOptions = {}, env: Env = process.env): NormalizedConfig {
  const warnings: string[] = [];
  const reader = new SettingReader(env, warnings);

  const metricsExporters = reader.list<MetricsExporterName>(
    'metricsExporters', options.metricsExporters, 'OTEL_METRICS_EXPORTER',
    ['prometheus', 'otlp'], DEFAULTS.metricsExporters,
  );
  const traces = reader.list<TracesExporterName>(
    'tracesExporter', options.tracesExporter === undefined ? undefined : [options.tracesExporter],
    'OTEL_TRACES_EXPORTER', ['otlp', 'console'], [],
  );
  const otlpBase = trimSlash(reader.url('otlpEndpoint', undefined, 'OTEL_EXPORTER_OTLP_ENDPOINT', DEFAULTS.otlpBase));
  const warningThreshold = reader.number('warningThreshold', options.warningThreshold,
    'POOLSCOPE_HEALTH_WARNING_THRESHOLD', DEFAULTS.warningThreshold, isFraction, 'a number between 0 and 1');
  let criticalThreshold = reader.number('criticalThreshold', options.criticalThreshold,
    'POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', DEFAULTS.criticalThreshold, isFraction, 'a number between 0 and 1');
  if (criticalThreshold <= warningThreshold) {
    const fallback = Math.max(warningThreshold, DEFAULTS.criticalThreshold);
    warnings.push(`poolscope: the critical threshold (${criticalThreshold}) must be above the warning threshold ` +
      `(${warningThreshold}) (POOLSCOPE_HEALTH_CRITICAL_THRESHOLD / criticalThreshold); using ${fallback}.`);
    criticalThreshold = fallback;
  }
  const exportIntervalMillis = reader.number('exportIntervalMillis', options.exportIntervalMillis,
    'OTEL_METRIC_EXPORT_INTERVAL', DEFAULTS.exportIntervalMillis, (n) => Number.isInteger(n) && n > 0, 'a positive integer (ms)');
  const exportTimeoutMillis = Math.min(exportIntervalMillis, reader.number('exportTimeoutMillis', options.exportTimeoutMillis,
    'OTEL_METRIC_EXPORT_TIMEOUT', DEFAULTS.exportTimeoutMillis, (n) => Number.isInteger(n) && n > 0, 'a positive integer (ms)'));

  const config: PoolscopeConfig = {
    disabled: reader.boolean('disabled', options.disabled, 'OTEL_SDK_DISABLED', false),
    serviceName: reader.string('serviceName', options.serviceName, 'OTEL_SERVICE_NAME', DEFAULTS.serviceName),
    metricsExporters,
    tracesExporter: traces[0],
    host: reader.string('host', options.host, 'OTEL_EXPORTER_PROMETHEUS_HOST', DEFAULTS.host),
    port: reader.number('port', options.port, 'OTEL_EXPORTER_PROMETHEUS_PORT', DEFAULTS.port,
      (n) => Number.isInteger(n) && n >= 0 && n <= 65535, 'a port number (0-65535)'),
    healthEndpoints: reader.boolean('healthEndpoints', options.healthEndpoints, 'POOLSCOPE_HEALTH_ENDPOINTS', true),
    otlpEndpoint: reader.url('otlpEndpoint', options.otlpEndpoint, 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', `${otlpBase}/v1/metrics`),
    otlpTracesEndpoint: reader.url('otlpTracesEndpoint', options.otlpTracesEndpoint, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', `${otlpBase}/v1/traces`),
    exportIntervalMillis,
    exportTimeoutMillis,
    warningThreshold,
    criticalThreshold,
    logUtilizationThreshold: reader.number('logUtilizationThreshold', options.logUtilizationThreshold,
      'POOLSCOPE_LOG_UTILIZATION_THRESHOLD', DEFAULTS.logUtilizationThreshold, isFraction, 'a number between 0 and 1'),
    healthSampleIntervalMillis: reader.number('healthSampleIntervalMillis', options.healthSampleIntervalMillis,
      'POOLSCOPE_HEALTH_SAMPLE_INTERVAL', DEFAULTS.healthSampleIntervalMillis, (n) => Number.isInteger(n) && n >= 100, 'an integer >= 100 (ms)'),
    healthHistorySize: reader.number('healthHistorySize', options.healthHistorySize,
      'POOLSCOPE_HEALTH_HISTORY_SIZE', DEFAULTS.healthHistorySize, (n) => Number.isInteger(n) && n >= 1 && n <= 1000, 'an integer from 1 to 1000'),
    poolBaseSize: reader.optionalNumber('poolBaseSize', options.poolBaseSize, 'POOLSCOPE_POOL_BASE_SIZE',
      (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'),
    disabledInstrumentations: reader.list<InstrumentationName>('disabledInstrumentations', options.disabledInstrumentations,
      'OTEL_NODE_DISABLED_INSTRUMENTATIONS', INSTRUMENTATION_NAMES, []),
  };
  return { config, warnings };
}

function isFraction(n: number): boolean {
  return n > 0 && n <= 1;
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/** Reads one setting at a time from option → env → default, collecting a warning for each bad value. */
class SettingReader {
  constructor(private readonly env: Env, private readonly warnings: string[]) {}

  private envValue(name: string): string | undefined {
    const raw = this.env[name];
    if (raw === undefined) return undefined;
    const trimmed = raw.trim();
    return trimmed === '' ? undefined : trimmed;
  }

  private reject(option: string, envName: string, fromEnv: boolean, shown: unknown, expected: string, fallback: unknown): void {
    const setting = fromEnv ? envName : `option ${option}`;
    // Values are echoed only when short and plain: a mistyped variable must not smuggle a secret (or, with
    // a control character, a forged line) into the logs.
    const text = String(shown);
    const echo = text.length <= 40 && !/[:@/\x00-\x1f\x7f]/.test(text) ? ` '${text}'` : '';
    this.warnings.push(`poolscope: ${setting}${echo} is not ${expected}; using ${JSON.stringify(fallback) ?? 'unset'}.`);
  }

  string(_option: string, value: string | undefined, envName: string, fallback: string): string {
    if (typeof value === 'string' && value.trim() !== '') return value.trim();
    return this.envValue(envName) ?? fallback;
  }

  url(option: string, value: string | undefined, envName: string, fallback: string): string {
    const fromEnv = value === undefined;
    const candidate = value ?? this.envValue(envName);
    if (candidate === undefined) return fallback;
    try {
      const parsed = new URL(candidate);
      if (parsed.protocol === 'http:' || parsed.protocol === 'https:') return candidate;
    } catch {
      // fall through to the warning
    }
    this.reject(option, envName, fromEnv, candidate, 'an http(s) URL', fallback);
    return fallback;
  }

  boolean(option: string, value: boolean | undefined, envName: string, fallback: boolean): boolean {
    if (typeof value === 'boolean') return value;
    const raw = this.envValue(envName);
    if (raw === undefined) return fallback;
    const lower = raw.toLowerCase();
    if (lower === 'true' || lower === '1') return true;
    if (lower === 'false' || lower === '0') return false;
    this.reject(option, envName, true, raw, "'true' or 'false'", fallback);
    return fallback;
  }

  number(option: string, value: number | undefined, envName: string, fallback: number,
    valid: (n: number) => boolean, expected: string): number {
    return this.optionalNumber(option, value, envName, valid, expected, fallback) ?? fallback;
  }

  optionalNumber(option: string, value: number | undefined, envName: string,
    valid: (n: number) => boolean, expected: string, fallback?: number): number | undefined {
    const fromEnv = value === undefined;
    const raw = fromEnv ? this.envValue(envName) : value;
    if (raw === undefined) return fallback;
    const n = typeof raw === 'number' ? raw : /^[-+]?(\d+\.?\d*|\.\d+)$/.test(raw) ? Number(raw) : NaN;
    if (Number.isFinite(n) && valid(n)) return n;
    this.reject(option, envName, fromEnv, raw, expected, fallback);
    return fallback;
  }

  list<T extends string>(option: string, value: readonly string[] | undefined, envName: string,
    allowed: readonly T[], fallback: T[]): T[] {
    const fromEnv = value === undefined;
    const raw = value ?? this.envValue(envName)?.split(',');
    if (raw === undefined) return [...fallback];
    const names = raw.map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
    if (names.length === 1 && names[0] === 'none') return [];
    const unknown = names.filter((n) => !(allowed as readonly string[]).includes(n));
    const known = [...new Set(names.filter((n): n is T => (allowed as readonly string[]).includes(n)))];
    if (unknown.length > 0) {
      const kept = known.length > 0 ? known : fallback;
      this.reject(option, envName, fromEnv, unknown.join(','), `one of ${['none', ...allowed].join(', ')}`, kept);
      return [...kept];
    }
    return known;
  }
}
