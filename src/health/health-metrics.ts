import { ValueType, type Attributes } from '@opentelemetry/api';
import { LocalGauges, type Observe } from '../metrics/local-gauges.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import { ATTR_STUCK_REASON, METRIC_POOL_HEALTH_SCORE, METRIC_POOL_STUCK } from '../semconv.js';
import type { HealthMonitor } from './health.js';
import { STUCK_REASONS } from './stuck-detector.js';

const HEALTH_GAUGES = {
  stuck: { unit: '{pool}', valueType: ValueType.INT, kind: 'gauge', name: METRIC_POOL_STUCK,
    description: 'Whether the pool is stuck, 0 or 1, one series per reason: server_unreachable, acquire_timeouts, no_progress.' },
  score: { unit: '{score}', valueType: ValueType.INT, kind: 'gauge', name: METRIC_POOL_HEALTH_SCORE,
    description: 'Composite pool health, 0-100, from utilization, acquire wait, connection errors and acquire timeouts; 0 when stuck.' },
} as const;

type HealthGauge = keyof typeof HEALTH_GAUGES;

/**
 * What `/health/database` decides, judged at collection time exactly as the route judges, so an alert on
 * `poolscope_pool_stuck` pages for the pools that fail readiness and for no other.
 */
function observeHealth(monitor: HealthMonitor): Observe<HealthGauge> {
  // Attribute sets per pool and reason, built once per pool.
  const attributes = new WeakMap<ObservedPool, Attributes[]>();
  const attributesOf = (pool: ObservedPool): Attributes[] => {
    let a = attributes.get(pool);
    if (a === undefined) {
      a = STUCK_REASONS.map((r) => Object.freeze({ ...pool.attributes, [ATTR_STUCK_REASON]: r }));
      attributes.set(pool, a);
    }
    return a;
  };
  return (emit) => {
    for (const j of monitor.judge()) {
      const a = attributesOf(j.pool);
      for (let i = 0; i < STUCK_REASONS.length; i++) emit('stuck', j.verdict.reasons[STUCK_REASONS[i]!] ? 1 : 0, a[i]!);
      emit('score', j.score, j.pool.attributes);
    }
  };
}

/**
 * The health metrics, observed by Poolscope itself for a LocalMetricProducer: 400 observations at 100
 * pools, which the SDK's meter hashed at every collection.
 */
export function localHealthMetrics(monitor: HealthMonitor): LocalGauges<HealthGauge> {
  const gauges = new LocalGauges<HealthGauge>(HEALTH_GAUGES);
  gauges.source = observeHealth(monitor);
  return gauges;
}
