export { startPoolscope, getPoolscope, monitorPool, getPoolHealth, Poolscope } from './sdk.js';
export { PoolscopeInstrumentation } from './instrumentation.js';
export type { PoolscopeInstrumentationConfig, MonitorPoolOptions } from './instrumentation.js';
export { normalizeConfig } from './config.js';
export type { PoolscopeOptions, PoolscopeConfig, MetricsExporterName, TracesExporterName, InstrumentationName } from './config.js';
export type { HealthStatus, ServiceStatus, HealthThresholds, PoolHealth, PoolSample, DatabaseHealth, ServiceHealth, HealthRoute } from './health/health.js';
export type { PoolObserver, PoolSnapshot, AcquirePath, CloseReason } from './pools/observer.js';
export { serializeResourceMetrics, prometheusName } from './export/prometheus/exposition.js';
