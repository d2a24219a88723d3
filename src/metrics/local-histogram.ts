import type { Attributes, HrTime } from '@opentelemetry/api';
import { hrTime } from '@opentelemetry/core';
import {
  AggregationTemporality,
  DataPointType,
  type CollectionResult,
  type Histogram,
  type MetricData,
  type MetricProducer,
} from '@opentelemetry/sdk-metrics';
import { ValueType } from '@opentelemetry/api';
import { emptyResource } from '@opentelemetry/resources';
import { VERSION } from '../version.js';

/** One attribute set's cumulative histogram state; the hot path records into it directly. */
export class HistogramCell {
  readonly counts: number[];
  sum = 0;
  count = 0;
  min = Infinity;
  max = -Infinity;
  /** The value last exported, with the count it had: reused while nothing was recorded since. */
  exported: { count: number; value: Histogram } | undefined = undefined;

  constructor(readonly attributes: Attributes, private readonly boundaries: readonly number[]) {
    this.counts = new Array<number>(boundaries.length + 1).fill(0);
  }

  record(value: number): void {
    const b = this.boundaries;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }
}

/** Most distinct attribute sets per histogram; further sets share one `otel.metric.overflow` cell, as the SDK does. */
const CARDINALITY_LIMIT = 2_000;

/**
 * A cumulative explicit-bucket histogram aggregated by Poolscope itself. The hot path holds a direct
 * reference to its cell, so recording is a bucket search and four additions — no attribute hashing,
 * which is most of what a query costs in the SDK's own histogram (see BENCHMARKS.md). The data reaches
 * readers through {@link LocalMetricProducer}, with the same names, units and buckets.
 */
export class LocalHistogram {
  private readonly cells = new Map<string, HistogramCell>();
  private readonly startTime = hrTime();
  private overflow: HistogramCell | undefined;
  /** Shared by every data point, and frozen so the exposition can keep its rendered `le` labels per array. */
  private readonly exportedBoundaries: number[];

  constructor(
    readonly name: string,
    readonly description: string,
    readonly unit: string,
    readonly boundaries: readonly number[],
  ) {
    this.exportedBoundaries = Object.freeze([...boundaries]) as number[];
  }

  /** True once anything was recorded (a cell exists only for a value about to be recorded). */
  get recorded(): boolean {
    return this.cells.size > 0 || this.overflow !== undefined;
  }

  /** The cell for `key`, created with `attributes()` on first use. */
  cell(key: string, attributes: () => Attributes): HistogramCell {
    let cell = this.cells.get(key);
    if (cell === undefined) {
      if (this.cells.size >= CARDINALITY_LIMIT) {
        this.overflow ??= this.newCell({ 'otel.metric.overflow': true });
        return this.overflow;
      }
      cell = this.newCell(attributes());
      this.cells.set(key, cell);
    }
    return cell;
  }

  private newCell(attributes: Attributes): HistogramCell {
    return new HistogramCell(attributes, this.boundaries);
  }

  /**
   * The cell's value, frozen, and the same object as last time while nothing was recorded since (every
   * record counts): most series of a 100-pool process are idle between two scrapes, and the exposition
   * keeps the text it rendered for a frozen value instead of rendering ~1 KB of bucket lines again.
   */
  private valueOf(c: HistogramCell): Histogram {
    if (c.exported !== undefined && c.exported.count === c.count) return c.exported.value;
    const value: Histogram = Object.freeze({
      buckets: Object.freeze({ boundaries: this.exportedBoundaries, counts: Object.freeze([...c.counts]) as number[] }),
      sum: c.sum,
      count: c.count,
      min: c.min,
      max: c.max,
    });
    c.exported = { count: c.count, value };
    return value;
  }

  toMetricData(endTime = hrTime()): MetricData | undefined {
    const all = this.overflow === undefined ? [...this.cells.values()] : [...this.cells.values(), this.overflow];
    const dataPoints = all.filter((c) => c.count > 0).map((c) => ({
      attributes: c.attributes,
      startTime: this.startTime,
      endTime,
      value: this.valueOf(c),
    }));
    if (dataPoints.length === 0) return undefined;
    return {
      descriptor: {
        name: this.name,
        description: this.description,
        unit: this.unit,
        valueType: ValueType.DOUBLE,
      },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints,
    };
  }
}

/** Anything aggregated or observed by Poolscope itself: a {@link LocalHistogram}, or {@link LocalGauges}. */
export interface LocalMetricSource {
  toMetricData(endTime: HrTime): MetricData | MetricData[] | undefined;
}

/** Feeds local metrics to a MetricReader (`metricProducers` option) under one instrumentation scope (`poolscope` by default). */
export class LocalMetricProducer implements MetricProducer {
  constructor(private readonly sources: readonly LocalMetricSource[], private readonly scope = 'poolscope') {}

  async collect(): Promise<CollectionResult> {
    const endTime = hrTime();
    const metrics: MetricData[] = [];
    const errors: unknown[] = [];
    for (const source of this.sources) {
      // A source that fails costs its own metrics only, as a failing observable callback does in the SDK: a
      // rejection here would fail the reader's whole collection (/metrics 500, no OTLP push).
      try {
        const m = source.toMetricData(endTime);
        if (Array.isArray(m)) metrics.push(...m);
        else if (m !== undefined) metrics.push(m);
      } catch (err) {
        errors.push(err);
      }
    }
    return {
      resourceMetrics: {
        resource: emptyResource(),
        scopeMetrics: metrics.length === 0 ? [] : [{ scope: { name: this.scope, version: VERSION }, metrics }],
      },
      errors,
    };
  }
}
