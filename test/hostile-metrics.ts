/*
 * Generators of hostile metric input for the exposition: names and label keys drawn from a small
 * alphabet so that different inputs sanitise to the same Prometheus name, names that collide with
 * type suffixes, reserved label names, label values and help texts with quotes, backslashes, newlines,
 * NUL and lone UTF-16 surrogates, odd units, NaN/±Inf, malformed histograms.
 */
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  DataPointType,
  InstrumentType,
  type MetricData,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { ValueType, type Attributes } from '@opentelemetry/api';
import fc from 'fast-check';

const NAME_UNITS = ['a', 'b', 'x', 'A', '.', '_', '-', '/', '1', ':', 'ä', '€', ' ', '\u0000'];
const VALUE_UNITS = ['a', '"', '\\', '\n', '\r', '\t', '\u0000', '\uD800', '\uDC00', '\uD83D\uDE00', 'é', ';', ' ', '{', '}', '=', ',', '#'];

export const metricNameArb = fc.oneof(
  { arbitrary: fc.constantFrom('x', 'x_count', 'x_total', 'x.sum', 'x_bucket', 'a.b', 'a_b'), weight: 3 },
  fc.constantFrom('a.b', 'a_b', 'a-b', 'a/b', 'a__b', 'x', 'x_total', 'x.total', 'x_count', 'x_sum', 'x_bucket', 'x.bucket',
    'target_info', 'target.info', 'ä', 'ö', '1abc', '_1abc', '', '_', '__name__', 'db.client.connection.count',
    'db.client.operation.duration', 'x_seconds', 'x_seconds_total'),
  fc.string({ unit: fc.constantFrom(...NAME_UNITS), maxLength: 6 }),
);

export const labelKeyArb = fc.oneof(
  fc.constantFrom('le', 'quantile', '__name__', '__x', '', '1x', '_1x', 'a.b', 'a_b', 'a-b', 'job', 'instance', 'service.name',
    'Le', 'key_le', 'pool.name', 'exported_job'),
  fc.string({ unit: fc.constantFrom(...NAME_UNITS), maxLength: 4 }),
);

export const textArb = fc.string({ unit: fc.constantFrom(...VALUE_UNITS), maxLength: 8 });

export const attributeValueArb = fc.oneof(
  textArb,
  fc.integer(),
  fc.boolean(),
  fc.double(),
  fc.array(textArb, { maxLength: 2 }),
);

export const attributesArb: fc.Arbitrary<Attributes> = fc.oneof(
  // Few distinct label sets, so that series of colliding metrics collide too.
  { arbitrary: fc.constantFrom<Attributes>({}, { a: '1' }, { 'a.b': '1' }, { a_b: '1' }, { a: '' }, { a: '\uD800' }, { a: '\uDC00' }), weight: 2 },
  { arbitrary: fc.dictionary(labelKeyArb, attributeValueArb, { maxKeys: 4 }) as fc.Arbitrary<Attributes>, weight: 3 },
);

export const unitArb = fc.constantFrom('', 's', 'ms', '1', 'By', '{request}', 'm/s', '%', '°C', '{', 'x/y/z', '/s', 'total', '_', 'seconds', 'a b');

export const numberArb = fc.oneof(fc.double(), fc.integer(), fc.constantFrom(NaN, Infinity, -Infinity, -0, 1e21, 5e-324));

const histogramArb: fc.Arbitrary<HostileHistogram> = fc.record({
  boundaries: fc.array(fc.oneof(fc.double(), fc.constantFrom(0, 1, 1, 10, Infinity, -Infinity, NaN)), { maxLength: 4 }),
  counts: fc.array(fc.nat(1000), { maxLength: 6 }),
  count: fc.nat(5000),
  sum: fc.option(numberArb, { nil: undefined }),
});

export interface HostileHistogram { boundaries: number[]; counts: number[]; count: number; sum: number | undefined }

export type HostileKind = 'counter' | 'updowncounter' | 'gauge' | 'histogram';

export interface HostileMetric {
  name: string;
  unit: string;
  description: string;
  kind: HostileKind;
  points: Array<{ attributes: Attributes; value: number; histogram: HostileHistogram }>;
}

export const hostileMetricArb: fc.Arbitrary<HostileMetric> = fc.record({
  name: metricNameArb,
  unit: unitArb,
  description: textArb,
  kind: fc.constantFrom<HostileKind>('counter', 'updowncounter', 'gauge', 'histogram'),
  points: fc.array(fc.record({ attributes: attributesArb, value: numberArb, histogram: histogramArb }), { maxLength: 3 }),
});

export const scopeNameArb = fc.constantFrom('poolscope', 'poolscope-http', 'app', 'app2');

export interface HostileInput {
  resource: Record<string, unknown>;
  scopes: Array<{ scope: string; metrics: HostileMetric[] }>;
}

export const hostileInputArb: fc.Arbitrary<HostileInput> = fc.record({
  resource: fc.dictionary(fc.oneof(labelKeyArb, fc.constantFrom('service.name', 'service.instance.id', 'k8s.pod.name')), attributeValueArb, { maxKeys: 5 }),
  scopes: fc.array(fc.record({ scope: scopeNameArb, metrics: fc.array(hostileMetricArb, { maxLength: 8 }) }), { maxLength: 3 }),
});

const t0: [number, number] = [1_700_000_000, 0];

function metricData(m: HostileMetric): MetricData {
  const descriptor = {
    name: m.name, description: m.description, unit: m.unit, valueType: ValueType.DOUBLE,
    type: m.kind === 'histogram' ? InstrumentType.HISTOGRAM : m.kind === 'gauge' ? InstrumentType.GAUGE
      : m.kind === 'counter' ? InstrumentType.COUNTER : InstrumentType.UP_DOWN_COUNTER,
  };
  const base = { descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE };
  if (m.kind === 'histogram') {
    return {
      ...base,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: m.points.map((p) => {
        const counts = Array.from({ length: p.histogram.boundaries.length + 1 }, (_, i) => p.histogram.counts[i] ?? 0);
        return {
          startTime: t0, endTime: t0, attributes: p.attributes,
          value: { buckets: { boundaries: p.histogram.boundaries, counts }, count: p.histogram.count, sum: p.histogram.sum },
        };
      }),
    } as MetricData;
  }
  return {
    ...base,
    dataPointType: m.kind === 'gauge' ? DataPointType.GAUGE : DataPointType.SUM,
    isMonotonic: m.kind === 'counter',
    dataPoints: m.points.map((p) => ({ startTime: t0, endTime: t0, attributes: p.attributes, value: p.value })),
  } as MetricData;
}

/** The generated input as the SDK would hand it to a reader (or a metric producer could). */
export function toResourceMetrics(input: HostileInput): ResourceMetrics {
  return {
    resource: resourceFromAttributes(input.resource as Attributes),
    scopeMetrics: input.scopes.map((s) => ({ scope: { name: s.scope }, metrics: s.metrics.map(metricData) })),
  };
}
