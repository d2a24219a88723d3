import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { PoolscopeLogger } from '../logger.js';

/** The attribute the SDK (and LocalHistogram) put on the one series that takes every attribute set past its limit. */
const OVERFLOW_ATTRIBUTE = 'otel.metric.overflow';

/**
 * Says once per metric when its series went past the cardinality limit (2,000 attribute sets): from then on new
 * sets are counted together under `otel_metric_overflow="true"`, which the SDK does without a word. An
 * application that made thousands of distinct error types (a type parser throwing errors named after values),
 * or of pool names (a pool per tenant database), had its series merged silently (found by hostile-input review).
 * Runs on every collection, after the other transforms: one attribute read per data point.
 */
export function noteCardinalityOverflow(logger: PoolscopeLogger): (metrics: ResourceMetrics) => ResourceMetrics {
  const said = new Set<string>();
  return (metrics) => {
    for (const scope of metrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        const name = metric.descriptor.name;
        if (said.has(name)) continue;
        if (!(metric.dataPoints as Array<{ attributes: Record<string, unknown> }>).some((p) => p.attributes[OVERFLOW_ATTRIBUTE] === true)) continue;
        said.add(name);
        logger.warn(`cardinality:${name}`, `poolscope: ${name} has reached its limit of 2000 series; further attribute sets are ` +
          'counted together under otel_metric_overflow="true". One of its labels takes unbounded values (error types, pool ' +
          'names, routes): see README, Series per pool.');
      }
    }
    return metrics;
  };
}
