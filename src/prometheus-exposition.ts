import type { Attributes } from '@opentelemetry/api';
import { DataPointType, type MetricData, type ResourceMetrics } from '@opentelemetry/sdk-metrics';

/*
 * Prometheus text exposition (format 0.0.4) of OpenTelemetry metrics, named the way the OpenTelemetry
 * → Prometheus compatibility rules name them: dots become underscores, the unit becomes a suffix
 * (`_seconds`, `_bytes`, `_ratio` for unit-1 gauges; `{annotations}` are dropped) and monotonic sums end
 * in `_total`. The collector's Prometheus exporters and Prometheus 3's OTLP receiver apply the same rules
 * by default, so a metric has one name whether it is scraped here or pushed through a collector.
 */

const UNIT_SUFFIXES: Record<string, string> = {
  s: 'seconds', ms: 'milliseconds', us: 'microseconds', ns: 'nanoseconds', min: 'minutes', h: 'hours', d: 'days',
  By: 'bytes', KiBy: 'kibibytes', MiBy: 'mebibytes', GiBy: 'gibibytes', KBy: 'kilobytes', MBy: 'megabytes',
  GBy: 'gigabytes', m: 'meters', V: 'volts', A: 'amperes', J: 'joules', W: 'watts', g: 'grams', Cel: 'celsius',
  Hz: 'hertz', '%': 'percent',
};

export function sanitizeName(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_:]/g, '_').replace(/_{2,}/g, '_');
  if (/^[0-9]/.test(out)) out = `_${out}`;
  return out;
}

function sanitizeLabel(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_]/g, '_').replace(/_{2,}/g, '_');
  if (/^[0-9]/.test(out)) out = `_${out}`;
  return out;
}

function unitSuffix(unit: string, isGauge: boolean): string {
  const stripped = unit.replace(/\{[^}]*\}/g, '').trim();
  if (stripped === '') return '';
  if (stripped === '1') return isGauge ? 'ratio' : '';
  const per = stripped.split('/');
  const main = UNIT_SUFFIXES[per[0]!] ?? sanitizeLabel(per[0]!);
  if (per.length === 2 && per[1] !== '') return `${main}_per_${UNIT_SUFFIXES[per[1]!] ?? sanitizeLabel(per[1]!)}`.replace(/^_+/, '');
  return main;
}

/** The Prometheus name of an OpenTelemetry metric. */
export function prometheusName(name: string, unit: string, kind: 'counter' | 'gauge' | 'histogram'): string {
  let out = sanitizeName(name);
  const suffix = unitSuffix(unit, kind === 'gauge');
  if (suffix !== '' && !out.endsWith(`_${suffix}`)) out = `${out}_${suffix}`;
  if (kind === 'counter' && !out.endsWith('_total')) out = `${out}_total`;
  return out;
}

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelPairs(attributes: Attributes): string[] {
  const pairs: string[] = [];
  for (const key of Object.keys(attributes)) {
    const value = attributes[key];
    if (value === undefined || value === null) continue;
    const text = Array.isArray(value) ? JSON.stringify(value) : String(value);
    pairs.push(`${sanitizeLabel(key)}="${escapeLabelValue(text)}"`);
  }
  return pairs;
}

function labels(pairs: string[], extra?: string): string {
  const all = extra === undefined ? pairs : [...pairs, extra];
  return all.length === 0 ? '' : `{${all.join(',')}}`;
}

function serializeMetric(metric: MetricData, lines: string[]): void {
  const { descriptor } = metric;
  let kind: 'counter' | 'gauge' | 'histogram';
  if (metric.dataPointType === DataPointType.SUM) kind = metric.isMonotonic ? 'counter' : 'gauge';
  else if (metric.dataPointType === DataPointType.GAUGE) kind = 'gauge';
  else if (metric.dataPointType === DataPointType.HISTOGRAM) kind = 'histogram';
  else return; // exponential histograms have no text-format equivalent
  if (metric.dataPoints.length === 0) return;

  const name = prometheusName(descriptor.name, descriptor.unit, kind);
  if (descriptor.description !== '') lines.push(`# HELP ${name} ${escapeHelp(descriptor.description)}`);
  lines.push(`# TYPE ${name} ${kind}`);

  if (metric.dataPointType === DataPointType.HISTOGRAM) {
    for (const point of metric.dataPoints) {
      const pairs = labelPairs(point.attributes);
      const { boundaries, counts } = point.value.buckets;
      let cumulative = 0;
      for (let i = 0; i < boundaries.length; i++) {
        cumulative += counts[i] ?? 0;
        lines.push(`${name}_bucket${labels(pairs, `le="${formatValue(boundaries[i]!)}"`)} ${cumulative}`);
      }
      lines.push(`${name}_bucket${labels(pairs, 'le="+Inf"')} ${point.value.count}`);
      lines.push(`${name}_sum${labels(pairs)} ${formatValue(point.value.sum ?? 0)}`);
      lines.push(`${name}_count${labels(pairs)} ${point.value.count}`);
    }
    return;
  }
  for (const point of metric.dataPoints) {
    lines.push(`${name}${labels(labelPairs(point.attributes))} ${formatValue(point.value as number)}`);
  }
}

/** One complete exposition, `target_info` (the resource) first. */
export function serializeResourceMetrics(resourceMetrics: ResourceMetrics): string {
  const lines: string[] = [
    '# HELP target_info Target metadata',
    '# TYPE target_info gauge',
    `target_info${labels(labelPairs(resourceMetrics.resource.attributes))} 1`,
  ];
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) serializeMetric(metric, lines);
  }
  lines.push('');
  return lines.join('\n');
}
