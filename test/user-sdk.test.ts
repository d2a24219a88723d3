// PoolscopeInstrumentation inside an application's own OpenTelemetry SDK: what that path gives and what it lacks
// (README, Programmatic use and Limitations), and how the application serves Poolscope's metric names from it.
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { PoolscopeInstrumentation, prometheusName, serializeResourceMetrics } from '../src/index.js';
import { parseExposition } from './helpers.js';

/** A reader as an application would configure one for its own exporter. */
class AppReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

describe('PoolscopeInstrumentation in an application\'s own SDK', () => {
  const reader = new AppReader();
  const provider = new MeterProvider({ readers: [reader] });
  const instrumentation = new PoolscopeInstrumentation();
  instrumentation.setMeterProvider(provider);
  const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 2, poolName: 'own-sdk' } as pg.PoolConfig);
  afterAll(async () => {
    await pool.end();
    instrumentation.disable();
    await provider.shutdown();
  });

  it('gives the pool gauges, counters and histograms under the names of Poolscope\'s /metrics through serializeResourceMetrics, and no health or leak series', async () => {
    await pool.query('select 1');
    await pool.query('select nope').catch(() => undefined);
    const { resourceMetrics } = await reader.collect();
    const families = new Set(parseExposition(serializeResourceMetrics(resourceMetrics))
      .filter((s) => s.labels.db_client_connection_pool_name === 'own-sdk' || s.name.startsWith('db_client_operation'))
      .map((s) => s.name.replace(/_(bucket|sum)$/, '').replace(/(_seconds)_count$/, '$1')));
    // The list the README's Limitations give for this path.
    expect([...families].sort()).toEqual([
      'db_client_connection_count', 'db_client_connection_create_time_seconds', 'db_client_connection_idle_max',
      'db_client_connection_idle_min', 'db_client_connection_max', 'db_client_connection_pending_requests',
      'db_client_connection_use_time_seconds', 'db_client_connection_wait_time_seconds', 'db_client_operation_duration_seconds',
      'poolscope_pool_acquires_total', 'poolscope_pool_info', 'poolscope_pool_overflow', 'poolscope_pool_pending_peak',
      'poolscope_pool_saturated_time_seconds_total', 'poolscope_pool_used_peak', 'poolscope_pool_utilization_ratio',
    ]);
    expect(prometheusName('db.client.connection.wait_time', 's', 'histogram')).toBe('db_client_connection_wait_time_seconds');
  });
});
