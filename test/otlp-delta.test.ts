import { AggregationTemporality, DataPointType, type HistogramMetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { emptyResource } from '@opentelemetry/resources';
import { describe, expect, it } from 'vitest';
import { cumulativeToDelta } from '../src/export/delta-histograms.js';

/** One push of a cumulative histogram with one series per `{ attributes, counts }`. */
function push(end: number, series: Array<{ op: string; counts: number[]; sum: number }>): ResourceMetrics {
  const metric: HistogramMetricData = {
    descriptor: { name: 'db.client.operation.duration', description: '', unit: 's', valueType: 1 },
    aggregationTemporality: AggregationTemporality.CUMULATIVE,
    dataPointType: DataPointType.HISTOGRAM,
    dataPoints: series.map((s) => ({
      attributes: { 'db.operation.name': s.op },
      startTime: [100, 0],
      endTime: [end, 0],
      value: { buckets: { boundaries: [0.1], counts: s.counts }, sum: s.sum, count: s.counts[0]! + s.counts[1]!, min: 0, max: 1 },
    })),
  };
  return { resource: emptyResource(), scopeMetrics: [{ scope: { name: 'poolscope' }, metrics: [metric] }] };
}

const points = (m: ResourceMetrics) => (m.scopeMetrics[0]!.metrics[0] as HistogramMetricData);

describe('cumulative histograms turned into deltas for a delta-preferring exporter', () => {
  it('pushes the change since the previous push, from its end, without min and max', () => {
    const toDelta = cumulativeToDelta({ histogram: true });
    const first = points(toDelta(push(110, [{ op: 'SELECT', counts: [2, 1], sum: 0.5 }])));
    expect(first.aggregationTemporality).toBe(AggregationTemporality.DELTA);
    expect(first.dataPoints[0]).toMatchObject({ startTime: [100, 0], value: { count: 3, sum: 0.5 } });
    const second = points(toDelta(push(120, [{ op: 'SELECT', counts: [5, 1], sum: 0.8 }, { op: 'INSERT', counts: [1, 0], sum: 0.01 }])));
    const select = second.dataPoints.find((p) => p.attributes['db.operation.name'] === 'SELECT')!;
    expect(select).toMatchObject({ startTime: [110, 0], endTime: [120, 0], value: { count: 3, buckets: { counts: [3, 0] } } });
    expect(select.value.sum).toBeCloseTo(0.3);
    expect(select.value.min).toBeUndefined();
    expect(second.dataPoints.find((p) => p.attributes['db.operation.name'] === 'INSERT')).toMatchObject({ value: { count: 1 } });
  });

  it('leaves out series without new recordings, and starts over for a series whose totals went down', () => {
    const toDelta = cumulativeToDelta({ histogram: true });
    toDelta(push(110, [{ op: 'SELECT', counts: [2, 1], sum: 0.5 }]));
    expect(points(toDelta(push(120, [{ op: 'SELECT', counts: [2, 1], sum: 0.5 }]))).dataPoints).toEqual([]);
    expect(points(toDelta(push(130, [{ op: 'SELECT', counts: [1, 0], sum: 0.05 }]))).dataPoints[0]).toMatchObject({ value: { count: 1 } });
  });
});
