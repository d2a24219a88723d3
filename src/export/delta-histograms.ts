import type { Attributes, HrTime } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  type GaugeMetricData,
  type HistogramMetricData,
  type MetricData,
  type ResourceMetrics,
  type SumMetricData,
} from '@opentelemetry/sdk-metrics';

interface Previous { counts: number[]; sum: number; count: number; endTime: HrTime }
interface PreviousValue { value: number; startTime: HrTime; endTime: HrTime }

/** Most series remembered: the local histograms cap their own cardinality at 2000 each, four of them. */
const MAX_SERIES = 10_000;

/** Which kinds of Poolscope's own cumulative metrics the exporter wants as deltas (its temporality selector). */
export interface DeltaKinds {
  histogram?: boolean;
  /** Monotonic sums: the SDK's ObservableCounter. */
  counter?: boolean;
  /** Non-monotonic sums: the SDK's ObservableUpDownCounter. */
  upDownCounter?: boolean;
  gauge?: boolean;
}

/**
 * Poolscope's own histograms and pool gauges (aggregated and observed outside the SDK, see
 * src/metrics/local-histogram.ts and local-gauges.ts) are always cumulative; the SDK turns its own
 * instruments to delta when the exporter asks for it, not these. When the user chose delta or lowmemory
 * (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`), this turns every cumulative metric of a kind the
 * exporter wants as delta into the change since the previous push, so a push says what the SDK would have
 * said for the same instruments. Min and max of an interval cannot be derived from totals and are left out.
 */
export function cumulativeToDelta(kinds: DeltaKinds): (metrics: ResourceMetrics) => ResourceMetrics {
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
  /*
   * The previous push's values only: a series missing from a push has ended (its pool is gone), so what is
   * remembered is bounded by the live series however many pools come and go.
   */
  let values = new Map<string, PreviousValue>();
  let next = new Map<string, PreviousValue>();
  /*
   * As the SDK reports an observable instrument with delta temporality: every series observed now, a sum as
   * its change since the previous push (a monotonic one whose value went down restarted: its value as is),
   * and each series that was in the previous push starting where that push ended.
   */
  const convertValues = <M extends SumMetricData | GaugeMetricData>(metric: M): M => {
    const difference = metric.dataPointType === DataPointType.SUM;
    const dataPoints = metric.dataPoints.map((point) => {
      const key = `${metric.descriptor.name}\u0000${attributesKey(point.attributes)}`;
      const before = values.get(key);
      next.set(key, { value: point.value, startTime: point.startTime, endTime: point.endTime });
      if (before === undefined) return point;
      // A new pool under an ended pool's name starts its series again (a new start time), whatever its value.
      const restarted = difference && (point.startTime[0] !== before.startTime[0] || point.startTime[1] !== before.startTime[1] ||
        ((metric as SumMetricData).isMonotonic && point.value < before.value));
      return {
        ...point,
        startTime: restarted ? point.startTime : before.endTime,
        value: difference && !restarted ? point.value - before.value : point.value,
      };
    });
    return { ...metric, aggregationTemporality: AggregationTemporality.DELTA, dataPoints };
  };
  const wanted = (m: MetricData): boolean => {
    if (m.aggregationTemporality !== AggregationTemporality.CUMULATIVE) return false;
    if (m.dataPointType === DataPointType.HISTOGRAM) return kinds.histogram === true;
    if (m.dataPointType === DataPointType.GAUGE) return kinds.gauge === true;
    if (m.dataPointType === DataPointType.SUM) return (m.isMonotonic ? kinds.counter : kinds.upDownCounter) === true;
    return false;
  };
  return (metrics) => {
    const out = {
      ...metrics,
      scopeMetrics: metrics.scopeMetrics.map((scope) => ({
        ...scope,
        metrics: scope.metrics.map((m): MetricData => {
          if (!wanted(m)) return m;
          return m.dataPointType === DataPointType.HISTOGRAM ? convert(m) : convertValues(m as SumMetricData | GaugeMetricData);
        }),
      })),
    };
    values = next;
    next = new Map();
    return out;
  };
}

function attributesKey(attributes: Attributes): string {
  return JSON.stringify(Object.keys(attributes).sort().map((k) => [k, attributes[k]]));
}
