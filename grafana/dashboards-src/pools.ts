// Pool overview: is any pool running out of connections, and is anyone waiting for one?
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import {
  baseDashboard, POOL, POOL_LABEL, POOL_SIGNALS, poolVariables, quantile, row, statPanel, sumRate, timeseriesPanel,
  UTILIZATION_CRITICAL, UTILIZATION_WARNING,
} from './lib.js';

const BY_POOL = ['job', POOL_LABEL];
const POOL_LEGEND = `{{job}} / {{${POOL_LABEL}}}`;
/** Per replica, then the busiest replica per pool: shares and pool sizes only make sense within one pool. */
const BY_REPLICA = `job, instance, ${POOL_LABEL}`;
const busiest = (perReplica: string) => `max by (job, ${POOL_LABEL}) (${perReplica})`;
const replicaRate = (metric: string, filter: string) =>
  `sum by (${BY_REPLICA}) (rate(${metric}{${filter}}[$__rate_interval]))`;
const ABNORMAL_CLOSES = `${POOL}, poolscope_close_reason=~"error|server_terminated"`;

/** Highest utilization of each pool across its replicas: the number the health status and alerts use. */
const UTILIZATION = `max by (job, ${POOL_LABEL}) (poolscope_pool_utilization_ratio{${POOL}})`;

/**
 * Critical first: a value on a boundary takes the more severe status (the first matching mapping wins).
 * Bounds are explicit numbers: Grafana compares `null` bounds as 0, so `to: null` would never match.
 * Utilization cannot exceed 1; the critical range is open-ended in practice.
 */
const UNBOUNDED = 1000;
const HEALTH_MAPPINGS: dashboard.ValueMapping[] = [
  {
    type: dashboard.MappingType.RangeToText,
    options: { from: UTILIZATION_CRITICAL, to: UNBOUNDED, result: { text: 'Critical', color: 'red', index: 0 } },
  },
  {
    type: dashboard.MappingType.RangeToText,
    options: { from: UTILIZATION_WARNING, to: UTILIZATION_CRITICAL, result: { text: 'Warning', color: 'orange', index: 1 } },
  },
  {
    type: dashboard.MappingType.RangeToText,
    options: { from: 0, to: UTILIZATION_WARNING, result: { text: 'Healthy', color: 'green', index: 2 } },
  },
];

export function poolsDashboard(): dashboard.Dashboard {
  const d = baseDashboard(
    'poolscope-pools',
    'Poolscope / Pool overview',
    'node-postgres connection pools: utilization, connections, waiting requests, acquire wait and timeouts, per service and pool.',
  );
  for (const v of poolVariables()) d.withVariable(v);

  d.withRow(row('Health'))
    .withPanel(statPanel({
      title: 'Pool health',
      description: `Status of each pool from its highest utilization across replicas: Healthy below ${UTILIZATION_WARNING * 100} %, ` +
        `Warning from ${UTILIZATION_WARNING * 100} %, Critical from ${UTILIZATION_CRITICAL * 100} % ` +
        '(the PoolUtilizationWarning/Critical alert thresholds).',
      unit: 'percentunit',
      thresholds: [UTILIZATION_WARNING, UTILIZATION_CRITICAL],
      mappings: HEALTH_MAPPINGS,
      queries: [{ expr: UTILIZATION, legend: POOL_LEGEND }],
      width: 8,
      height: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Pool utilization',
      description: 'Connections in use divided by the pool maximum (poolscope_pool_utilization_ratio), highest replica per pool. ' +
        'Shaded: warning from 75 %, critical from 90 %.',
      unit: 'percentunit',
      min: 0,
      max: 1,
      thresholds: [UTILIZATION_WARNING, UTILIZATION_CRITICAL],
      queries: [{ expr: UTILIZATION, legend: POOL_LEGEND }],
      width: 16,
      height: 8,
    }));

  d.withRow(row('Connections'))
    .withPanel(timeseriesPanel({
      title: 'Connections: used, idle, max',
      description: 'Open connections by state (db_client_connection_count), summed over replicas, against the configured ' +
        'maximum (db_client_connection_max) and minimum idle (db_client_connection_idle_min).',
      unit: 'short',
      min: 0,
      queries: [
        {
          expr: `sum by (job, ${POOL_LABEL}, db_client_connection_state) (db_client_connection_count{${POOL}})`,
          legend: `${POOL_LEGEND} {{db_client_connection_state}}`,
        },
        { expr: `sum by (job, ${POOL_LABEL}) (db_client_connection_max{${POOL}})`, legend: `${POOL_LEGEND} max` },
        { expr: `sum by (job, ${POOL_LABEL}) (db_client_connection_idle_min{${POOL}})`, legend: `${POOL_LEGEND} idle min` },
      ],
    }))
    .withPanel(timeseriesPanel({
      title: 'Pending requests',
      description: 'Requests queued waiting for a connection (db_client_connection_pending_requests), summed over replicas. ' +
        'Anything above zero for long means the pool is too small or connections are held too long.',
      unit: 'short',
      min: 0,
      queries: [{ expr: `sum by (job, ${POOL_LABEL}) (db_client_connection_pending_requests{${POOL}})`, legend: POOL_LEGEND }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Overflow connections',
      description: 'Connections open beyond the pool\'s base size (poolscope_pool_overflow), summed over replicas: ' +
        'burst capacity in use.',
      unit: 'short',
      min: 0,
      queries: [{ expr: `sum by (job, ${POOL_LABEL}) (poolscope_pool_overflow{${POOL}})`, legend: POOL_LEGEND }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Connection hold and create time (p95)',
      description: '95th percentile of how long a checked-out connection is held before release ' +
        '(db_client_connection_use_time_seconds) and of how long opening a new connection takes ' +
        '(db_client_connection_create_time_seconds).',
      unit: 's',
      min: 0,
      queries: [
        { expr: quantile(0.95, 'db_client_connection_use_time_seconds', POOL, BY_POOL), legend: `${POOL_LEGEND} hold` },
        { expr: quantile(0.95, 'db_client_connection_create_time_seconds', POOL, BY_POOL), legend: `${POOL_LEGEND} create` },
      ],
    }));

  d.withRow(row('Acquiring connections'))
    .withPanel(timeseriesPanel({
      title: 'Acquire wait (p95)',
      description: '95th percentile of the time a request waited for a connection (db_client_connection_wait_time_seconds).',
      unit: 's',
      min: 0,
      queries: [{ expr: quantile(0.95, 'db_client_connection_wait_time_seconds', POOL, BY_POOL), legend: POOL_LEGEND }],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Acquire timeouts',
      description: 'Requests per second that gave up waiting for a connection (db_client_connection_timeouts_total): ' +
        'each one is an error the application saw.',
      unit: 'cps',
      min: 0,
      queries: [{ expr: sumRate('db_client_connection_timeouts_total', POOL, BY_POOL), legend: POOL_LEGEND }],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Pool errors',
      description: 'Pool errors per second by error type (poolscope_pool_errors_total): connect failures, idle-client errors, ' +
        'acquire timeouts.',
      unit: 'cps',
      min: 0,
      queries: [{
        expr: sumRate('poolscope_pool_errors_total', POOL, [...BY_POOL, 'error_type']),
        legend: `${POOL_LEGEND} {{error_type}}`,
      }],
      width: 8,
    }));

  // The event-fed signals: what happened between two scrapes (peaks, time at capacity), how acquires were
  // served and why connections left. Lines at the thresholds of prometheus/rules/pool-signals.yml.
  d.withRow(row('Peaks and time at capacity'))
    .withPanel(timeseriesPanel({
      title: 'Connections in use: peak vs sampled',
      description: 'Most connections in use at once in the last 65 to 70 s (poolscope_pool_used_peak) against ' +
        'the value sampled at the scrape (db_client_connection_count, state used) and the maximum, busiest replica per ' +
        'pool. A peak at max while the sampled line looks comfortable is a burst between scrapes.',
      unit: 'short',
      min: 0,
      queries: [
        { expr: busiest(`poolscope_pool_used_peak{${POOL}}`), legend: `${POOL_LEGEND} peak` },
        { expr: busiest(`db_client_connection_count{${POOL}, db_client_connection_state="used"}`), legend: `${POOL_LEGEND} sampled` },
        { expr: busiest(`db_client_connection_max{${POOL}}`), legend: `${POOL_LEGEND} max` },
      ],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Waiting requests: peak vs sampled',
      description: 'Most callers waiting for a connection at once in the last 65 to 70 s (poolscope_pool_pending_peak) ' +
        'against the value sampled at the scrape (db_client_connection_pending_requests), busiest replica per pool.',
      unit: 'short',
      min: 0,
      queries: [
        { expr: busiest(`poolscope_pool_pending_peak{${POOL}}`), legend: `${POOL_LEGEND} peak` },
        { expr: busiest(`db_client_connection_pending_requests{${POOL}}`), legend: `${POOL_LEGEND} sampled` },
      ],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Time at capacity',
      description: 'Share of the time every connection was checked out (rate of poolscope_pool_saturated_time_seconds_total), ' +
        `busiest replica per pool, bursts between scrapes included. PoolSaturatedSustained warns above ${POOL_SIGNALS.saturatedShare * 100} % ` +
        'of a 5m window for 5m (the line).',
      unit: 'percentunit',
      min: 0,
      max: 1,
      thresholds: [POOL_SIGNALS.saturatedShare],
      queries: [{ expr: busiest(`rate(poolscope_pool_saturated_time_seconds_total{${POOL}}[$__rate_interval])`), legend: POOL_LEGEND }],
      width: 8,
    }));

  d.withRow(row('Acquire paths and closes'))
    .withPanel(timeseriesPanel({
      title: 'Acquires by path',
      description: 'Acquires per second by how they were served (poolscope_pool_acquires_total, poolscope_acquire_path): ' +
        'an idle connection, a newly opened one, or after waiting in the queue; summed over replicas.',
      unit: 'cps',
      min: 0,
      stack: true,
      queries: [{
        expr: sumRate('poolscope_pool_acquires_total', POOL, [...BY_POOL, 'poolscope_acquire_path']),
        legend: `${POOL_LEGEND} {{poolscope_acquire_path}}`,
      }],
    }))
    .withPanel(timeseriesPanel({
      title: 'New connections per acquire',
      description: 'Share of acquires that opened a new connection instead of reusing an idle one, busiest replica per pool. ' +
        `PoolConnectionCloseStorm (cause churn) warns above ${POOL_SIGNALS.churnNewShare * 100} % (the line) over 10m, ` +
        'at more than one new connection a second.',
      unit: 'percentunit',
      min: 0,
      max: 1,
      thresholds: [POOL_SIGNALS.churnNewShare],
      queries: [{
        expr: busiest(`${replicaRate('poolscope_pool_acquires_total', `${POOL}, poolscope_acquire_path="new"`)} / ` +
          replicaRate('poolscope_pool_acquires_total', POOL)),
        legend: POOL_LEGEND,
      }],
    }))
    .withPanel(timeseriesPanel({
      title: 'Connection closes by reason',
      description: 'Connections closed per second by reason (poolscope_pool_closes_total, poolscope_close_reason): idle timeout, ' +
        'max lifetime, max uses, error, failed query (pg-pool discards the connection), terminated by the server, pool closed; summed over replicas.',
      unit: 'cps',
      min: 0,
      stack: true,
      queries: [{
        expr: sumRate('poolscope_pool_closes_total', POOL, [...BY_POOL, 'poolscope_close_reason']),
        legend: `${POOL_LEGEND} {{poolscope_close_reason}}`,
      }],
    }))
    .withPanel(timeseriesPanel({
      title: `Closes by error or server, in pool sizes per ${POOL_SIGNALS.closeStormWindowSeconds / 60}m`,
      description: 'Connections closed by an error or terminated by the server, at the current rate, per ' +
        `${POOL_SIGNALS.closeStormWindowSeconds / 60} minutes, divided by the pool's max: busiest replica per pool. ` +
        `A failover reaches at most 1; PoolConnectionCloseStorm (cause errors) warns above ${POOL_SIGNALS.closeStormPools} for 2m (the line).`,
      unit: 'short',
      min: 0,
      thresholds: [POOL_SIGNALS.closeStormPools],
      queries: [{
        expr: busiest(`${replicaRate('poolscope_pool_closes_total', ABNORMAL_CLOSES)} * ${POOL_SIGNALS.closeStormWindowSeconds} ` +
          `/ on (${BY_REPLICA}) max by (${BY_REPLICA}) (db_client_connection_max{${POOL}})`),
        legend: POOL_LEGEND,
      }],
    }));

  // Health beyond utilization: stuck (the one state that fails readiness and pages through PoolStuck,
  // prometheus/rules/pool-health.yml), the composite score, and what holds the connections.
  d.withRow(row('Stuck, health score and leaks'))
    .withPanel(timeseriesPanel({
      title: 'Stuck pools',
      description: 'poolscope_pool_stuck by reason, any replica per pool: 1 while the pool is stuck by the rules of ' +
        '/health/database (no acquire completing while callers wait, acquire timeouts, server unreachable). ' +
        'PoolStuck pages when it stays 1 for 10s. A busy but progressing pool stays 0.',
      unit: 'short',
      min: 0,
      max: 1,
      queries: [{
        expr: `max by (job, ${POOL_LABEL}, poolscope_stuck_reason) (poolscope_pool_stuck{${POOL}})`,
        legend: `${POOL_LEGEND} {{poolscope_stuck_reason}}`,
      }],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Health score',
      description: 'Composite pool health 0–100 (poolscope_pool_health_score, the score of /health/database), worst ' +
        'replica per pool: 0 when stuck, lowered by utilization, waiting, acquire wait and errors.',
      unit: 'short',
      min: 0,
      max: 100,
      queries: [{ expr: `min by (job, ${POOL_LABEL}) (poolscope_pool_health_score{${POOL}})`, legend: POOL_LEGEND }],
      width: 8,
    }))
    .withPanel(timeseriesPanel({
      title: 'Leaks, long-held connections and idle transactions',
      description: 'Checkouts held past the leak threshold (poolscope_pool_leaks_total, by route when POOLSCOPE_POOL_ROUTES ' +
        'is on) and idle inside a transaction (poolscope_pool_idle_in_transaction_total), at the current rate per 5 minutes, and connections ' +
        'held past the threshold right now (poolscope_pool_long_held), summed over replicas.',
      unit: 'short',
      min: 0,
      queries: [
        {
          expr: `${sumRate('poolscope_pool_leaks_total', POOL, [...BY_POOL, 'http_route'])} * 300`,
          legend: `${POOL_LEGEND} leaks {{http_route}}`,
        },
        {
          expr: `${sumRate('poolscope_pool_idle_in_transaction_total', POOL, BY_POOL)} * 300`,
          legend: `${POOL_LEGEND} idle in transaction`,
        },
        { expr: `sum by (job, ${POOL_LABEL}) (poolscope_pool_long_held{${POOL}})`, legend: `${POOL_LEGEND} held now` },
      ],
      width: 8,
    }));

  d.withRow(row('Hold time by route'))
    .withPanel(timeseriesPanel({
      title: 'Connection hold time by route (p95)',
      description: '95th percentile of how long a connection was held, by the http.route that acquired it ' +
        '(poolscope_pool_hold_time_seconds). Empty unless the service runs with POOLSCOPE_POOL_ROUTES=true.',
      unit: 's',
      min: 0,
      queries: [{
        expr: quantile(0.95, 'poolscope_pool_hold_time_seconds', POOL, [...BY_POOL, 'http_route']),
        legend: `${POOL_LEGEND} {{http_route}}`,
      }],
      width: 24,
    }));

  // The fleet against the server (recording rules of prometheus/rules/budget.yml, which need the
  // collector's postgresql receiver): per server, for the servers the selected pools connect to
  // (poolscope_pool_info carries each pool's server_address/server_port).
  const ofSelectedPools = (series: string) =>
    `${series} and on (server_address, server_port) group by (server_address, server_port) (poolscope_pool_info{${POOL}})`;
  d.withRow(row('Server connection budget'))
    .withPanel(timeseriesPanel({
      title: 'Fleet pool max vs server connections',
      description: 'Per PostgreSQL server that the selected pools connect to: the sum of every instance\'s pool max (server:db_client_connection_max:sum), ' +
        'what ordinary roles may open (server:postgresql_connection_available:max = max_connections − 3 reserved) and ' +
        'the backends open now (server:postgresql_backends:sum). FleetPoolsCanExceedServer pages when the first ' +
        'exceeds the second; ServerConnectionsNearLimit warns when backends reach 90 % of it.',
      unit: 'short',
      min: 0,
      queries: [
        { expr: ofSelectedPools('server:db_client_connection_max:sum'), legend: '{{server_address}}:{{server_port}} Σ pool max' },
        { expr: ofSelectedPools('server:postgresql_connection_available:max'), legend: '{{server_address}}:{{server_port}} available' },
        { expr: ofSelectedPools('server:postgresql_backends:sum'), legend: '{{server_address}}:{{server_port}} backends' },
      ],
      width: 24,
    }));

  return d.build();
}
