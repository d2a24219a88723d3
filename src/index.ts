export { startPoolscope, getPoolscope, monitorPool, getPoolHealth, Poolscope } from './sdk.js';
export { PoolscopeInstrumentation } from './pg-instrumentation.js';
export type { PoolscopeInstrumentationConfig, MonitorPoolOptions } from './pg-instrumentation.js';
export { normalizeConfig } from './config.js';
export type { PoolscopeOptions, PoolscopeConfig, MetricsExporterName, TracesExporterName, InstrumentationName } from './config.js';
export { createHealthHandler, statusFor } from './health.js';
export type { HealthStatus, HealthThresholds, PoolHealth, DatabaseHealth, ServiceHealth, HealthRoute } from './health.js';
export type { PoolSample } from './pool-registry.js';
export { serializeResourceMetrics, prometheusName } from './prometheus-exposition.js';
