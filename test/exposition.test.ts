import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { operationName } from '../src/metrics/operation-name.js';
import { defaultPoolName, resolvePoolTarget } from '../src/pool-name.js';
import { prometheusName } from '../src/prometheus-exposition.js';
import { PrometheusPullReader } from '../src/prometheus-reader.js';
import { parseExposition, value } from './helpers.js';

describe('Prometheus names', () => {
  it('follows the OpenTelemetry to Prometheus naming rules the collector and Prometheus 3 apply', () => {
    expect(prometheusName('db.client.operation.duration', 's', 'histogram')).toBe('db_client_operation_duration_seconds');
    expect(prometheusName('db.client.connection.timeouts', '{timeout}', 'counter')).toBe('db_client_connection_timeouts_total');
    expect(prometheusName('poolscope.pool.utilization', '1', 'gauge')).toBe('poolscope_pool_utilization_ratio');
    expect(prometheusName('db.client.connection.count', '{connection}', 'gauge')).toBe('db_client_connection_count');
    expect(prometheusName('process.memory', 'By', 'gauge')).toBe('process_memory_bytes');
    expect(prometheusName('requests_total', '', 'counter')).toBe('requests_total');
    expect(prometheusName('latency.seconds', 's', 'histogram')).toBe('latency_seconds');
  });

  it('writes valid exposition with escaped label values and cumulative buckets', async () => {
    const reader = new PrometheusPullReader(createLogger());
    const provider = new MeterProvider({ resource: resourceFromAttributes({ 'service.name': 'svc "quoted"\nline' }), readers: [reader] });
    const meter = provider.getMeter('t');
    const h = meter.createHistogram('op.duration', { unit: 's', advice: { explicitBucketBoundaries: [0.1, 1] } });
    h.record(0.05, { 'pool.name': 'a\\b' });
    h.record(0.5, { 'pool.name': 'a\\b' });
    h.record(5, { 'pool.name': 'a\\b' });
    meter.createCounter('hits').add(3);
    const text = await reader.scrape();
    const s = parseExposition(text);
    expect(value(s, 'target_info', { service_name: 'svc "quoted"\nline' })).toBe(1);
    expect(value(s, 'op_duration_seconds_bucket', { pool_name: 'a\\b', le: '0.1' })).toBe(1);
    expect(value(s, 'op_duration_seconds_bucket', { pool_name: 'a\\b', le: '1' })).toBe(2);
    expect(value(s, 'op_duration_seconds_bucket', { pool_name: 'a\\b', le: '+Inf' })).toBe(3);
    expect(value(s, 'op_duration_seconds_count', { pool_name: 'a\\b' })).toBe(3);
    expect(value(s, 'op_duration_seconds_sum', { pool_name: 'a\\b' })).toBeCloseTo(5.55);
    expect(value(s, 'hits_total')).toBe(3);
    expect(text).toContain('# TYPE hits_total counter');
    expect(text).toContain('# TYPE op_duration_seconds histogram');
    await provider.shutdown();
  });
});

describe('operationName', () => {
  it.each([
    ['SELECT 1', 'SELECT'],
    ['  select * from t', 'SELECT'],
    ['-- comment\nINSERT INTO t VALUES (1)', 'INSERT'],
    ['/* a */ /* b */ update t set x=1', 'UPDATE'],
    ['(SELECT 1) UNION (SELECT 2)', 'SELECT'],
    ['WITH x AS (SELECT 1) SELECT * FROM x', 'WITH'],
    ['SELEKT 1', undefined],
    ['my_secret_table', undefined],
    ['', undefined],
    ['/* unterminated', undefined],
    ['ÜPDATE', undefined],
  ])('%j → %s', (sql, expected) => {
    expect(operationName(sql)).toBe(expected);
  });

  it('scans a bounded prefix of very large statements', () => {
    const big = `${' '.repeat(10_000_000)}SELECT 1`;
    expect(operationName(big)).toBeUndefined();
    expect(operationName(`SELECT ${'x'.repeat(10_000_000)}`)).toBe('SELECT');
  });
});

describe('pool names', () => {
  it('resolves a target the way pg does, connection string first', () => {
    expect(resolvePoolTarget({ connectionString: 'postgres://u:p@db.example:6543/orders', host: 'ignored' }, {}))
      .toEqual({ host: 'db.example', port: 6543, database: 'orders' });
    expect(resolvePoolTarget({ host: 'h', database: 'd' }, { PGPORT: '5433' })).toEqual({ host: 'h', port: 5433, database: 'd' });
    // pg would connect to the database named after the user; that name must not become a label.
    expect(resolvePoolTarget({}, { PGHOST: 'envhost', PGUSER: 'app' })).toEqual({ host: 'envhost', port: 5432, database: undefined });
    expect(defaultPoolName(resolvePoolTarget({ user: 'alice' } as never, { PGHOST: 'db' }))).toBe('db:5432');
    expect(resolvePoolTarget({ connectionString: 'postgresql:///mydb?host=/var/run/postgresql' }, {}))
      .toEqual({ host: '/var/run/postgresql', port: 5432, database: 'mydb' });
  });

  it('formats host:port/database and brackets IPv6 hosts', () => {
    expect(defaultPoolName({ host: '::1', port: 5432, database: 'x' })).toBe('[::1]:5432/x');
    expect(defaultPoolName({ host: 'db', port: 5432, database: 'x' })).toBe('db:5432/x');
  });

  it('survives an unparseable connection string', () => {
    expect(resolvePoolTarget({ connectionString: 'postgres://%zz' }, {})).toMatchObject({ port: 5432 });
  });
});
