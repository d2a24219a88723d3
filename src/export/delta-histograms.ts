import type { Attributes, HrTime } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  type HistogramMetricData,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';

interface Previous { counts: number[]; sum: number; count: number; endTime: HrTime }

/** Most series remembered: the local histograms cap their own cardinality at 2000 each, four of them. */
const MAX_SERIES = 10_000;

/**
 * Poolscope's own histograms (aggregated outside the SDK, see src/local-histogram.ts) are always
 * cumulative; the SDK turns its own instruments to delta when the exporter asks for it, not these. When
 * the user chose delta or lowmemory (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`), this turns
 * every cumulative histogram of a push into the change since the previous push, so all histograms of one
 * push agree. Min and max of an interval cannot be derived from totals and are left out.
 */
export function cumulativeHistogramsToDelta(): (metrics: ResourceMetrics) => ResourceMetrics {
  const previous = new Map<string, Previous>();
  const convert = (metric: HistogramMetricData): HistogramMetricData => {
    const dataPoints = [];
    for (const point of metric.dataPoints) {
      const key = `${metric.descriptor.name}\u0000${attributesKey(point.attributes)}`;
      const before = previous.get(key);
      const value = point.value;
      if (previous.size < MAX_SERIES || before !== undefined) {
        previous.set(key, { counts: [...value.buckets.counts], sum: value.sum ?? 0, count: value.count, endTime: point.endTime });
      }
      // A series seen for the first time (or whose totals went down: restarted) is its own first delta.
      const restarted = before === undefined || value.count < before.count;
      const count = restarted ? value.count : value.count - before.count;
      if (count === 0) continue;
      dataPoints.push({
        attributes: point.attributes,
        startTime: restarted ? point.startTime : before.endTime,
        endTime: point.endTime,
        value: {
          buckets: {
            boundaries: value.buckets.boundaries,
            counts: restarted ? value.buckets.counts : value.buckets.counts.map((c, i) => c - (before.counts[i] ?? 0)),
          },
          sum: restarted ? value.sum : (value.sum ?? 0) - before.sum,
          count,
        },
      });
    }
    return { ...metric, aggregationTemporality: AggregationTemporality.DELTA, dataPoints };
  };
  return (metrics) => ({
    ...metrics,
    scopeMetrics: metrics.scopeMetrics.map((scope) => ({
      ...scope,
      metrics: scope.metrics.map((m): MetricData => (m.dataPointType === DataPointType.HISTOGRAM &&
        m.aggregationTemporality === AggregationTemporality.CUMULATIVE ? convert(m) : m)),
    })),
  });
}

function attributesKey(attributes: Attributes): string {
  return JSON.stringify(Object.keys(attributes).sort().map((k) => [k, attributes[k]]));
}
