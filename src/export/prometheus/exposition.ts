import type { Attributes } from '@opentelemetry/api';
import { DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

/*
 * Prometheus text exposition (format 0.0.4) of OpenTelemetry metrics, named the way the OpenTelemetry
 * → Prometheus compatibility rules name them: dots become underscores, the unit becomes a suffix
 * (`_seconds`, `_bytes`, `_ratio` for unit-1 gauges; `{annotations}` are dropped) and monotonic sums end
 * in `_total`. The collector's Prometheus exporters and Prometheus 3's OTLP receiver apply the same rules
 * by default, so a metric has one name whether it is scraped here or pushed through a collector.
 *
 * Prometheus rejects a whole scrape for one bad line, so whatever the application registers (its own
 * metrics reach us through the global MeterProvider) and whatever the resource says, the output is valid:
 * every family appears once with one type, no sample name belongs to two families (a gauge `x_count`
 * next to a histogram `x`), no two series of a family share a label set, label names are valid and never
 * the ones Prometheus gives a meaning (`le`, `quantile`), and every string is well-formed UTF-8.
 * Metrics that sanitise to the same name and type are merged into one family; what cannot be merged
 * (a different type under the same name, a second series with the same labels) is left out and reported
 * through `onConflict`, first come first served, Poolscope's own metrics first.
 */

type Kind = 'counter' | 'gauge' | 'histogram';

const UNIT_SUFFIXES: Record<string, string> = {
  s: 'seconds', ms: 'milliseconds', us: 'microseconds', ns: 'nanoseconds', min: 'minutes', h: 'hours', d: 'days',
  By: 'bytes', KiBy: 'kibibytes', MiBy: 'mebibytes', GiBy: 'gibibytes', KBy: 'kilobytes', MBy: 'megabytes',
  GBy: 'gigabytes', m: 'meters', V: 'volts', A: 'amperes', J: 'joules', W: 'watts', g: 'grams', Cel: 'celsius',
  Hz: 'hertz', '%': 'percent',
};

/** Label names that mean something to Prometheus on some metric types; an attribute may not take them. */
const RESERVED_LABELS = new Set(['le', 'quantile']);
const RESERVED_PREFIX = 'key_';
/** Produced by the resource; an application metric may not take the name. */
const TARGET_INFO = 'target_info';

/** Lone UTF-16 surrogates become U+FFFD here, not silently in the UTF-8 encoder after series were deduplicated. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
function wellFormed(text: string): string {
  return text.replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * A valid Prometheus metric name (`[a-zA-Z_][a-zA-Z0-9_]*`). Colons are valid but reserved for recording
 * rules, so they are replaced like any other character.
 */
export function sanitizeName(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_]/g, '_').replace(/_{2,}/g, '_');
  if (out === '') out = '_';
  if (/^[0-9]/.test(out)) out = `_${out}`;
  return out;
}

/** A valid label name; collapsing `__` also keeps it out of Prometheus' reserved `__*` namespace. */
export function sanitizeLabelName(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_]/g, '_').replace(/_{2,}/g, '_');
  if (out === '') out = '_';
  if (/^[0-9]/.test(out)) out = `_${out}`;
  if (RESERVED_LABELS.has(out)) out = `${RESERVED_PREFIX}${out}`;
  return out;
}

function unitSuffix(unit: string, isGauge: boolean): string {
  const stripped = unit.replace(/\{[^}]*\}/g, '').trim();
  if (stripped === '') return '';
  if (stripped === '1') return isGauge ? 'ratio' : '';
  const per = stripped.split('/');
  const main = UNIT_SUFFIXES[per[0]!] ?? per[0]!;
  if (per.length === 2 && per[1] !== '') return `${main}_per_${UNIT_SUFFIXES[per[1]!] ?? per[1]!}`;
  return main;
}

/** The Prometheus name of an OpenTelemetry metric. */
export function prometheusName(name: string, unit: string, kind: Kind): string {
  let out = sanitizeName(name);
  const suffix = unitSuffix(unit, kind === 'gauge').replace(/[^a-zA-Z0-9_]/g, '_').replace(/^_+|_+$/g, '');
  if (suffix !== '' && !out.endsWith(`_${suffix}`)) out = `${out}_${suffix}`;
  if (kind === 'counter' && !out.endsWith('_total')) out = `${out}_total`;
  return out.replace(/_{2,}/g, '_');
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return wellFormed(text).replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: unknown): string {
  const n = typeof v === 'number' ? v : Number(v);
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  return String(n);
}

function attributeText(value: unknown): string {
  if (typeof value === 'string') return wellFormed(value);
  if (Array.isArray(value)) return wellFormed(JSON.stringify(value));
  return String(value);
}

/**
 * Attributes as label pairs sorted by name. Keys that sanitise to the same label are merged as the
 * compatibility specification says: values joined by `;` in the order of the original keys. An empty
 * value is the same as no label to Prometheus, so it is left out here and does not count for identity.
 */
function labelPairs(attributes: Attributes): Array<[string, string]> {
  const groups = new Map<string, Array<[string, string]>>();
  for (const key of Object.keys(attributes)) {
    const raw = attributes[key];
    if (raw === undefined || raw === null) continue;
    const text = attributeText(raw);
    if (text === '') continue;
    const label = sanitizeLabelName(key);
    let group = groups.get(label);
    if (group === undefined) groups.set(label, (group = []));
    group.push([key, text]);
  }
  const pairs: Array<[string, string]> = [];
  for (const [label, group] of groups) {
    group.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    pairs.push([label, group.map((g) => g[1]).join(';')]);
  }
  return pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Label pairs as the text between the braces of a sample (`a="x",b="y"`), '' when there are none. */
function renderInner(pairs: Array<[string, string]>): string {
  let out = '';
  for (const [k, v] of pairs) out += `${out === '' ? '' : ','}${k}="${escapeLabelValue(v)}"`;
  return out;
}

/**
 * Rendered labels of Poolscope's own attribute sets, by object. Each of them is built once per pool (or per
 * pool and operation) and never changed, and each scrape of 100 pools renders about 2,000 of them again:
 * sorting, sanitising and escaping was most of the collection time (BENCHMARKS.md, collection). An
 * application's attribute objects are not cached: nothing says it does not mutate them between scrapes.
 */
const ownLabels = new WeakMap<Attributes, string>();

function labelsOf(attributes: Attributes, own: boolean): string {
  if (!own) return renderInner(labelPairs(attributes));
  let inner = ownLabels.get(attributes);
  if (inner === undefined) ownLabels.set(attributes, (inner = renderInner(labelPairs(attributes))));
  return inner;
}

function braced(inner: string): string {
  return inner === '' ? '' : `{${inner}}`;
}

interface Family {
  kind: Kind;
  help: string;
  /** Series identity (rendered attribute labels) → exposition lines, joined. */
  series: Map<string, string>;
}

function kindOf(metric: MetricData): Kind | undefined {
  if (metric.dataPointType === DataPointType.SUM) return metric.isMonotonic ? 'counter' : 'gauge';
  if (metric.dataPointType === DataPointType.GAUGE) return 'gauge';
  if (metric.dataPointType === DataPointType.HISTOGRAM) return 'histogram';
  return undefined; // exponential histograms have no text-format equivalent
}

function sampleNames(name: string, kind: Kind): string[] {
  return kind === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
}

/** Bucket boundaries in use (finite and increasing; the others fold into the next bucket), with their `le` text. */
interface BucketPlan { index: number[]; le: string[] }
const bucketPlans = new WeakMap<number[], BucketPlan>();

function bucketPlan(boundaries: number[]): BucketPlan {
  let plan = bucketPlans.get(boundaries);
  if (plan !== undefined) return plan;
  plan = { index: [], le: [] };
  let previous = -Infinity;
  for (let i = 0; i < boundaries.length; i++) {
    const bound = boundaries[i]!;
    if (!Number.isFinite(bound) || bound <= previous) continue;
    previous = bound;
    plan.index.push(i);
    plan.le.push(formatValue(bound));
  }
  // Only frozen arrays are kept: a boundaries array that could still change must be planned again.
  if (Object.isFrozen(boundaries)) bucketPlans.set(boundaries, plan);
  return plan;
}

interface HistogramValue { buckets: { boundaries: number[]; counts: number[] }; count: number; sum?: number }

/**
 * Rendered text of frozen histogram values, by object. Poolscope's local histograms hand out the same frozen
 * value while nothing was recorded (src/metrics/local-histogram.ts), which is most series of a 100-pool
 * process between two scrapes; rendering their ~7,000 lines again was half of the exposition's time
 * (BENCHMARKS.md, collection). Name and labels are part of the entry: the same value could be shown under
 * another family or label set (a merge of two metrics).
 */
const histogramTexts = new WeakMap<object, { name: string; inner: string; text: string }>();

function histogramText(name: string, inner: string, value: HistogramValue): string {
  const frozen = Object.isFrozen(value) && Object.isFrozen(value.buckets) && Object.isFrozen(value.buckets.counts) &&
    Object.isFrozen(value.buckets.boundaries);
  if (!frozen) return histogramLines(name, inner, value).join('\n');
  const hit = histogramTexts.get(value);
  if (hit !== undefined && hit.name === name && hit.inner === inner) return hit.text;
  const text = histogramLines(name, inner, value).join('\n');
  histogramTexts.set(value, { name, inner, text });
  return text;
}

/** Cumulative buckets, then the sum and the count. */
function histogramLines(name: string, inner: string, value: HistogramValue): string[] {
  const lines: string[] = [];
  const { boundaries, counts } = value.buckets;
  const plan = bucketPlan(boundaries);
  const bucket = `${name}_bucket{${inner === '' ? '' : `${inner},`}le="`;
  let cumulative = 0;
  let next = 0;
  for (let p = 0; p < plan.index.length; p++) {
    const upTo = plan.index[p]!;
    for (; next <= upTo; next++) cumulative += Number(counts[next] ?? 0) || 0;
    lines.push(`${bucket}${plan.le[p]}"} ${formatValue(cumulative)}`);
  }
  for (; next < boundaries.length; next++) cumulative += Number(counts[next] ?? 0) || 0;
  const count = Math.max(Number(value.count) || 0, cumulative);
  lines.push(`${bucket}+Inf"} ${formatValue(count)}`);
  const labels = braced(inner);
  lines.push(`${name}_sum${labels} ${formatValue(value.sum ?? 0)}`);
  lines.push(`${name}_count${labels} ${formatValue(count)}`);
  return lines;
}

/** Poolscope's own scopes are serialised first, so an application metric cannot displace one of ours. */
function isOwnScope(name: string): boolean {
  return name === 'poolscope' || name.startsWith('poolscope-');
}

export type ConflictReporter = (message: string) => void;

/** One complete exposition, `target_info` (the resource) first. */
export function serializeResourceMetrics(resourceMetrics: ResourceMetrics, onConflict: ConflictReporter = () => undefined): string {
  const families = new Map<string, Family>();
  /** Every sample name in use → the family it belongs to. */
  const owners = new Map<string, string>();
  const targetLabels = braced(renderInner(labelPairs(resourceMetrics.resource.attributes)));
  families.set(TARGET_INFO, { kind: 'gauge', help: 'Target metadata', series: new Map([['', `${TARGET_INFO}${targetLabels} 1`]]) });
  owners.set(TARGET_INFO, TARGET_INFO);

  const ordered = [
    ...resourceMetrics.scopeMetrics.filter((s) => isOwnScope(s.scope.name)),
    ...resourceMetrics.scopeMetrics.filter((s) => !isOwnScope(s.scope.name)),
  ];
  for (const scope of ordered) {
    const own = isOwnScope(scope.scope.name);
    for (const metric of scope.metrics) {
      const kind = kindOf(metric);
      if (metric.dataPoints.length === 0) continue;
      if (kind === undefined) {
        // An exponential histogram (a view of the application's own SDK): the text format has no such type.
        onConflict(`metric "${metric.descriptor.name}" is left out of /metrics: an exponential histogram has no form in the ` +
          'Prometheus text format (give it explicit buckets with a view, or push it with OTLP)');
        continue;
      }
      const { descriptor } = metric;
      const name = prometheusName(descriptor.name, descriptor.unit, kind);
      let family = families.get(name);
      if (family === undefined) {
        const taken = [name, ...sampleNames(name, kind)].find((s) => owners.has(s));
        if (taken !== undefined) {
          onConflict(`metric "${descriptor.name}" (${kind}) is left out of /metrics: "${taken}" is already used by ${owners.get(taken)}`);
          continue;
        }
        family = { kind, help: '', series: new Map() };
        families.set(name, family);
        owners.set(name, name);
        for (const s of sampleNames(name, kind)) owners.set(s, name);
      } else if (name === TARGET_INFO) {
        onConflict(`metric "${descriptor.name}" (${kind}) is left out of /metrics: ${name} is reserved for the resource`);
        continue;
      } else if (family.kind !== kind) {
        onConflict(`metric "${descriptor.name}" (${kind}) is left out of /metrics: ${name} is already a ${family.kind}`);
        continue;
      }
      if (family.help === '' && descriptor.description !== '') family.help = descriptor.description;

      let duplicates = 0;
      for (const point of metric.dataPoints) {
        const identity = labelsOf(point.attributes, own);
        if (family.series.has(identity)) {
          duplicates++;
          continue;
        }
        family.series.set(identity, kind === 'histogram'
          ? histogramText(name, identity, point.value as never)
          : `${name}${braced(identity)} ${formatValue(point.value)}`);
      }
      if (duplicates > 0) {
        onConflict(`metric "${descriptor.name}": ${duplicates} series left out of /metrics, ${name} already has series with the same labels`);
      }
    }
  }

  const lines: string[] = [];
  for (const [name, family] of families) {
    if (family.series.size === 0) continue;
    if (family.help !== '') lines.push(`# HELP ${name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${name} ${family.kind}`);
    for (const series of family.series.values()) lines.push(series);
  }
  lines.push('');
  return lines.join('\n');
}
