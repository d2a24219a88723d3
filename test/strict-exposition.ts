/*
 * A strict checker for Prometheus text exposition 0.0.4: stricter than Prometheus' own parser, so that
 * whatever passes here is ingested whole by a real scrape. It throws on the first violation, naming it.
 */

export interface CheckedSample {
  family: string;
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface CheckedExposition {
  families: Map<string, { type: string; help?: string }>;
  samples: CheckedSample[];
}

const METRIC_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const FLOAT = /^(?:NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string, line: string): number {
  if (!FLOAT.test(text)) throw new Error(`invalid value ${JSON.stringify(text)} in: ${line}`);
  if (text === 'NaN') return NaN;
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

/** Parses `{k="v",...}` with only the three escapes the format defines. */
function parseLabels(text: string, line: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`label without value in: ${line}`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`invalid label name ${JSON.stringify(name)} in: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`unquoted label value in: ${line}`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      if (j >= text.length) throw new Error(`unterminated label value in: ${line}`);
      const c = text[j]!;
      if (c === '"') break;
      if (c === '\n') throw new Error(`raw newline in label value: ${line}`);
      if (c === '\\') {
        const e = text[j + 1];
        if (e === '\\') value += '\\';
        else if (e === '"') value += '"';
        else if (e === 'n') value += '\n';
        else throw new Error(`invalid escape \\${e} in: ${line}`);
        j += 2;
        continue;
      }
      value += c;
      j++;
    }
    pairs.push([name, value]);
    j++;
    if (j < text.length) {
      if (text[j] !== ',') throw new Error(`expected , after label value in: ${line}`);
      j++;
    }
    i = j;
  }
  return pairs;
}

function sampleSuffixes(type: string): string[] {
  if (type === 'histogram') return ['_bucket', '_sum', '_count'];
  if (type === 'summary') return ['', '_sum', '_count'];
  return [''];
}

export function checkExposition(text: string): CheckedExposition {
  if (Buffer.from(text, 'utf8').toString('utf8') !== text) throw new Error('exposition is not well-formed UTF-16/UTF-8');
  if (text !== '' && !text.endsWith('\n')) throw new Error('exposition does not end with a newline');
  const families = new Map<string, { type: string; help?: string }>();
  const closed = new Set<string>();
  const sampleOwner = new Map<string, string>();
  const identities = new Set<string>();
  const samples: CheckedSample[] = [];
  const typed = new Set<string>();
  const withSamples = new Set<string>();
  let current: string | undefined;

  const open = (family: string, line: string) => {
    if (current === family) return;
    if (closed.has(family)) throw new Error(`family ${family} appears twice (not contiguous): ${line}`);
    if (current !== undefined) closed.add(current);
    current = family;
  };

  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) continue; // plain comment
      const [, kind, family, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(family)) throw new Error(`invalid family name in: ${line}`);
      open(family, line);
      const entry = families.get(family) ?? { type: 'untyped' };
      if (kind === 'TYPE') {
        if (typed.has(family)) throw new Error(`second TYPE for ${family}`);
        if (!TYPES.has(rest)) throw new Error(`invalid type in: ${line}`);
        if (withSamples.has(family)) throw new Error(`TYPE after samples for ${family}`);
        entry.type = rest;
        typed.add(family);
        for (const suffix of sampleSuffixes(rest)) {
          const owner = sampleOwner.get(family + suffix);
          if (owner !== undefined && owner !== family) throw new Error(`sample name ${family + suffix} belongs to ${owner} and ${family}`);
          sampleOwner.set(family + suffix, family);
        }
      } else {
        if (entry.help !== undefined) throw new Error(`second HELP for ${family}`);
        if (rest.replace(/\\[\\n]/g, '').includes('\\')) throw new Error(`invalid escape in HELP: ${line}`);
        entry.help = rest;
      }
      families.set(family, entry);
      continue;
    }
    const m = /^([^\s{]+)(?:\{([\s\S]*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable sample line: ${line}`);
    const name = m[1]!;
    if (!METRIC_NAME.test(name)) throw new Error(`invalid metric name in: ${line}`);
    const owner = sampleOwner.get(name);
    const family = owner ?? name;
    if (owner === undefined) {
      // An untyped sample opens its own family, which must not shadow a typed one's samples.
      if (families.has(name) && families.get(name)!.type !== 'untyped') throw new Error(`sample ${name} does not fit family type`);
      sampleOwner.set(name, name);
      if (!families.has(name)) families.set(name, { type: 'untyped' });
    }
    open(family, line);
    const type = families.get(family)!.type;
    const pairs = parseLabels(m[2] ?? '', line);
    const labels: Record<string, string> = {};
    for (const [k, v] of pairs) {
      if (k.startsWith('__')) throw new Error(`reserved label name ${k} in: ${line}`);
      if (k in labels) throw new Error(`label ${k} twice in: ${line}`);
      if (k === 'quantile' && type !== 'summary') throw new Error(`quantile label outside a summary: ${line}`);
      if (k === 'le' && !(type === 'histogram' && name === `${family}_bucket`)) throw new Error(`le label outside histogram buckets: ${line}`);
      labels[k] = v;
    }
    if (type === 'histogram' && name === `${family}_bucket` && labels.le === undefined) throw new Error(`bucket without le: ${line}`);
    const value = parseValue(m[3]!, line);
    // Prometheus treats an empty label value as an absent label.
    const identity = name + JSON.stringify(Object.entries(labels).filter(([, v]) => v !== '').sort(([a], [b]) => (a < b ? -1 : 1)));
    if (identities.has(identity)) throw new Error(`duplicate series: ${line}`);
    identities.add(identity);
    samples.push({ family, name, labels, value });
    withSamples.add(family);
  }

  for (const [family, { type }] of families) {
    if (type !== 'histogram') continue;
    const bySeries = new Map<string, { buckets: Array<[number, number]>; count?: number }>();
    for (const s of samples.filter((x) => x.family === family)) {
      const { le, ...rest } = s.labels;
      const key = JSON.stringify(Object.entries(rest).sort(([a], [b]) => (a < b ? -1 : 1)));
      const entry = bySeries.get(key) ?? { buckets: [] };
      bySeries.set(key, entry);
      if (s.name === `${family}_bucket`) entry.buckets.push([parseValue(le!, `le of ${family}`), s.value]);
      if (s.name === `${family}_count`) entry.count = s.value;
    }
    for (const [key, { buckets, count }] of bySeries) {
      for (let i = 1; i < buckets.length; i++) {
        if (!(buckets[i]![0] > buckets[i - 1]![0])) throw new Error(`${family}${key}: le not increasing`);
        if (buckets[i]![1] < buckets[i - 1]![1]) throw new Error(`${family}${key}: buckets not cumulative`);
      }
      const last = buckets[buckets.length - 1];
      if (last === undefined || last[0] !== Infinity) throw new Error(`${family}${key}: no +Inf bucket`);
      if (count !== undefined && count !== last[1]) throw new Error(`${family}${key}: _count ${count} != +Inf bucket ${last[1]}`);
    }
  }
  return { families, samples };
}
