export { startPoolscope, getPoolscope, monitorPool, getPoolHealth, Poolscope } from './sdk.js';
export { PoolscopeInstrumentation } from './instrumentation.js';
export type { PoolscopeInstrumentationConfig, MonitorPoolOptions } from './instrumentation.js';
export { normalizeConfig } from './config.js';
export type {
  PoolscopeOptions, PoolscopeConfig, NormalizedConfig, OtlpSignalConfig, OtlpMetricsConfig, MetricsExporterName, TracesExporterName,
  InstrumentationName, OtlpProtocol, OtlpCompression, TemporalityPreference, LogLevel, EsmLoaderThread, ServerStart,
} from './config.js';
export type {
  HealthStatus, ServiceStatus, HealthThresholds, PoolHealth, PoolSample, DatabaseHealth, ServiceHealth, HealthRoute, StuckReason, StuckRules,
} from './health/health.js';
export type { PoolObserver, PoolSnapshot, AcquirePath, CloseReason, QueryTarget } from './pools/observer.js';
export type { ObservedPool } from './pools/observed-pool.js';
export type { PoolRegistry } from './pools/registry.js';
export { serializeResourceMetrics, prometheusName } from './export/prometheus/exposition.js';
