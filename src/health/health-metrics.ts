import { ValueType, type Attributes, type BatchObservableCallback, type Meter, type Observable } from '@opentelemetry/api';
import type { ObservedPool } from '../pools/observed-pool.js';
import { ATTR_STUCK_REASON, METRIC_POOL_HEALTH_SCORE, METRIC_POOL_STUCK } from '../semconv.js';
import type { HealthMonitor } from './health.js';
import { STUCK_REASONS } from './stuck-detector.js';

/**
 * Exports what `/health/database` decides as metrics, judged at collection time exactly as the route
 * judges, so an alert on `poolscope_pool_stuck` pages for the pools that fail readiness and for no
 * other. Returns the function that unregisters them.
 */
export function registerHealthMetrics(meter: Meter, monitor: HealthMonitor): () => void {
  const stuck = meter.createObservableGauge(METRIC_POOL_STUCK, {
    unit: '{pool}',
    valueType: ValueType.INT,
    description: 'Whether the pool is stuck, 0 or 1, one series per reason: server_unreachable, acquire_timeouts, no_progress.',
  });
  const score = meter.createObservableGauge(METRIC_POOL_HEALTH_SCORE, {
    unit: '{score}',
    valueType: ValueType.INT,
    description: 'Composite pool health, 0-100, from utilization, acquire wait, connection errors and acquire timeouts; 0 when stuck.',
  });
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
  const callback: BatchObservableCallback = (result) => {
    for (const j of monitor.judge()) {
      const a = attributesOf(j.pool);
      for (let i = 0; i < STUCK_REASONS.length; i++) result.observe(stuck, j.verdict.reasons[STUCK_REASONS[i]!] ? 1 : 0, a[i]);
      result.observe(score, j.score, j.pool.attributes);
    }
  };
  const observables: Observable[] = [stuck, score];
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
