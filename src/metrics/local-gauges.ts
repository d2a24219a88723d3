import type { Attributes, HrTime, Meter, Observable, ValueType } from '@opentelemetry/api';
import { hrTime } from '@opentelemetry/core';
import { AggregationTemporality, DataPointType, type DataPoint, type MetricData } from '@opentelemetry/sdk-metrics';

/**
 * What an observable instrument is, for both ways of exporting it: created on a meter (the SDK path), or
 * described in the data a producer hands to readers (see {@link LocalGauges}).
 */
export interface ObservableDefinition {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly valueType: ValueType;
  /** `updown`: a non-monotonic sum (the SDK's ObservableUpDownCounter); `counter`: a monotonic sum. */
  readonly kind: 'gauge' | 'updown' | 'counter';
}

/** Creates the SDK's observable instrument for a definition: the path of an application's own SDK. */
export function createObservable(meter: Meter, d: ObservableDefinition): Observable {
  const options = { description: d.description, unit: d.unit, valueType: d.valueType };
  if (d.kind === 'gauge') return meter.createObservableGauge(d.name, options);
  if (d.kind === 'updown') return meter.createObservableUpDownCounter(d.name, options);
  return meter.createObservableCounter(d.name, options);
}

/** Receives one observation: the instrument's key in its definitions, the value, the series' attributes. */
export type Emit<K extends string> = (instrument: K, value: number, attributes: Attributes) => void;

/** Reads live state and emits every observation once; called at each collection. */
export type Observe<K extends string> = (emit: Emit<K>) => void;

/**
 * Observable instruments collected by Poolscope itself instead of the SDK's meter. The SDK hashes the
 * attribute set of every observation and keeps every set it ever saw; at 100 pools that hashing was most
 * of a collection (BENCHMARKS.md, collection). Here an observation is one array push carrying the caller's
 * own frozen attribute object, so the exposition's label cache (keyed by that object) hits as well.
 *
 * The data is what the SDK reports for the same observable instruments with cumulative temporality: the
 * values observed at this collection only (a series not observed now is not reported: nothing lingers for
 * an ended pool), and each series' start time fixed at its first collection.
 */
export class LocalGauges<K extends string> {
  /** Where observations come from; unset while no recorder is attached (then nothing is reported). */
  source: Observe<K> | undefined;
  /** First collection of each attribute object: a series' start time, stable across collections as the SDK's. */
  private readonly startTimes = new WeakMap<Attributes, HrTime>();
  private readonly keys: K[];
  private points: Map<K, DataPoint<number>[]> = new Map();
  private endTime: HrTime = [0, 0];
  private readonly emit: Emit<K> = (instrument, value, attributes) => {
    let startTime = this.startTimes.get(attributes);
    if (startTime === undefined) this.startTimes.set(attributes, (startTime = this.endTime));
    this.points.get(instrument)?.push({ attributes, startTime, endTime: this.endTime, value });
  };

  constructor(readonly definitions: Readonly<Record<K, ObservableDefinition>>) {
    this.keys = Object.keys(definitions) as K[];
  }

  toMetricData(endTime: HrTime = hrTime()): MetricData[] {
    const source = this.source;
    if (source === undefined) return [];
    this.endTime = endTime;
    const points = new Map<K, DataPoint<number>[]>();
    for (const k of this.keys) points.set(k, []);
    this.points = points;
    source(this.emit);
    const out: MetricData[] = [];
    for (const k of this.keys) {
      const dataPoints = points.get(k)!;
      if (dataPoints.length === 0) continue;
      const d = this.definitions[k];
      const descriptor = { name: d.name, description: d.description, unit: d.unit, valueType: d.valueType };
      out.push(d.kind === 'gauge'
        ? { descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.GAUGE, dataPoints }
        : {
          descriptor,
          aggregationTemporality: AggregationTemporality.CUMULATIVE,
          dataPointType: DataPointType.SUM,
          isMonotonic: d.kind === 'counter',
          dataPoints,
        });
    }
    return out;
  }
}
