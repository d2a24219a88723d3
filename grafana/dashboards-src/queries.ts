// Queries: how many, how fast and how often failing, per pool and operation.
import type * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import { baseDashboard, POOL, POOL_LABEL, poolVariables, quantile, row, sumRate, timeseriesPanel } from './lib.js';

const METRIC = 'db_client_operation_duration_seconds';
const BY_OPERATION = ['job', POOL_LABEL, 'db_operation_name'];
const OPERATION_LEGEND = `{{job}} / {{${POOL_LABEL}}} {{db_operation_name}}`;

/** Failed operations carry error_type; successful ones do not have the label at all. */
const FAILED = `${POOL}, error_type!=""`;

function latency(q: number, warning: number, critical: number) {
  const p = Math.round(q * 100);
  return timeseriesPanel({
    title: `Query latency p${p} by operation`,
    description: `${p}th percentile of query duration (${METRIC}) per pool and operation. ` +
      (q === 0.95 ? 'Shaded at the QueryLatencyHigh alert thresholds (500 ms warning, 2 s critical).' : ''),
    unit: 's',
    min: 0,
    thresholds: [warning, critical],
    queries: [{ expr: quantile(q, METRIC, POOL, BY_OPERATION), legend: OPERATION_LEGEND }],
    width: 8,
  });
}

export function queriesDashboard(): dashboard.Dashboard {
  const d = baseDashboard(
    'poolscope-queries',
    'Poolscope / Queries',
    'Database operations through node-postgres: throughput, latency percentiles and error ratio by pool and operation.',
  );
  for (const v of poolVariables()) d.withVariable(v);

  d.withRow(row('Throughput and errors'))
    .withPanel(timeseriesPanel({
      title: 'Query throughput by operation',
      description: `Database operations per second (${METRIC}_count) by pool and operation (SELECT, INSERT, …).`,
      unit: 'ops',
      min: 0,
      queries: [{ expr: sumRate(`${METRIC}_count`, POOL, BY_OPERATION), legend: OPERATION_LEGEND }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Query error ratio by operation',
      description: 'Share of operations that failed (those with an error_type) per pool and operation. ' +
        'Shaded at the QueryErrorRatio alert thresholds (5 % warning, 10 % critical).',
      unit: 'percentunit',
      min: 0,
      thresholds: [0.05, 0.1],
      queries: [{
        expr: `${sumRate(`${METRIC}_count`, FAILED, BY_OPERATION)} / ${sumRate(`${METRIC}_count`, POOL, BY_OPERATION)}`,
        legend: OPERATION_LEGEND,
      }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Query errors by type',
      description: 'Failed operations per second by pool and error type (the error_type label: SQLSTATE or exception class).',
      unit: 'ops',
      min: 0,
      queries: [{
        expr: sumRate(`${METRIC}_count`, FAILED, ['job', POOL_LABEL, 'error_type']),
        legend: `{{job}} / {{${POOL_LABEL}}} {{error_type}}`,
      }],
      width: 24,
    }));

  d.withRow(row('Latency'))
    .withPanel(latency(0.5, 0.5, 2))
    .withPanel(latency(0.95, 0.5, 2))
    .withPanel(latency(0.99, 0.5, 2));

  return d.build();
}
