/*
 * The exposition against the real consumers: generated hostile inputs serialised and fed to
 * `promtool check metrics`, and a live application under the preload, registering hostile metric names
 * and attributes through the OpenTelemetry API with hostile resource attributes, scraped by a real
 * Prometheus 3 that must report the target up and ingest every series of the scrape.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { serializeResourceMetrics } from '../../src/export/prometheus/exposition.js';
import { spawnApp, waitFor, type SpawnedApp } from '../helpers.js';
import { tool } from './stack-tools.js';
import { attributesArb, hostileInputArb, metricNameArb, numberArb, textArb, toResourceMetrics, unitArb } from '../hostile-metrics.js';
import { checkExposition } from '../strict-exposition.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'poolscope-expofuzz-'));
const children: ChildProcess[] = [];
const apps: SpawnedApp[] = [];


afterAll(async () => {
  for (const app of apps) app.child.kill('SIGTERM');
  for (const c of children) c.kill('SIGTERM');
  await Promise.all([...apps.map((a) => a.exit), ...children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r))))]);
});

/*
 * promtool lints style as well as validity. These findings are about names the application chose (or the
 * OpenTelemetry naming rules produce, e.g. `db_client_connection_count`) and do not stop a scrape; any
 * other finding (parse errors, "metric not unique", ...) fails the test.
 */
const STYLE_LINTS = [
  /metric names should be written in 'snake_case' not 'camelCase'$/,
  /label names should be written in 'snake_case' not 'camelCase'$/,
  /no help text$/,
  /non-histogram (and non-summary )?metrics should not have "_(count|sum|bucket)" suffix$/,
  /metric names should not contain abbreviated units$/,
  /use base unit "[^"]+" instead of "[^"]+"$/,
  /metric name should not include type '[^']+'$/,
  /counter metrics should have "_total" suffix$/, // an updown counter named `*_total` is a gauge to us
  /non-counter metrics should not have "_total" suffix$/,
];

function promtool(text: string): { status: number | null; findings: string[] } {
  const r = spawnSync(tool('promtool'), ['check', 'metrics'], { input: text, encoding: 'utf8' });
  const findings = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
  return { status: r.status, findings };
}

describe('promtool check metrics on generated hostile expositions', () => {
  it('finds nothing but naming style in any of them', () => {
    const inputs = fc.sample(hostileInputArb, { numRuns: 150, seed: 20261128 });
    let checked = 0;
    for (const input of inputs) {
      const text = serializeResourceMetrics(toResourceMetrics(input));
      const { status, findings } = promtool(text);
      const serious = findings.filter((f) => !STYLE_LINTS.some((re) => re.test(f)));
      expect(serious, `promtool on:\n${text}`).toEqual([]);
      expect([0, 3], `promtool exit status on:\n${text}\n${findings.join('\n')}`).toContain(status);
      checked++;
    }
    expect(checked).toBe(150);
  });

  it('catches a duplicate family and an invalid line (promtool can fail here)', () => {
    const dup = promtool('# HELP a x\n# TYPE a gauge\na 1\n# HELP a x\n# TYPE a gauge\na 2\n');
    expect(dup.findings.filter((f) => !STYLE_LINTS.some((re) => re.test(f))).length).toBeGreaterThan(0);
    const invalid = promtool('# HELP a x\n# TYPE a gauge\na{b="\\t"} 1\n');
    expect(invalid.status).not.toBe(0);
    expect(invalid.findings.filter((f) => !STYLE_LINTS.some((re) => re.test(f))).length).toBeGreaterThan(0);
  });
});

describe('a real Prometheus scrape of an application with hostile metrics and resource attributes', () => {
  it('reports the target up and ingests every series of the scrape', async () => {
    // Metrics registered through the API by the application itself, from a fixed seed.
    const instrumentArb = fc.record({
      meter: fc.constantFrom('app', 'lib', 'poolscope'),
      name: metricNameArb,
      unit: unitArb,
      description: textArb,
      kind: fc.constantFrom('counter', 'updowncounter', 'gauge', 'histogram'),
      records: fc.array(fc.record({ attributes: attributesArb, value: numberArb.map(String) }), { minLength: 1, maxLength: 3 }),
    });
    const spec = fc.sample(fc.array(instrumentArb, { minLength: 30, maxLength: 30 }), { numRuns: 1, seed: 42 })[0]!;
    const specFile = path.join(tmp, 'spec.json');
    writeFileSync(specFile, JSON.stringify(spec));
    const resource = {
      'a.b': 'dotted', a_b: 'underscored', le: '0.5', __name__: 'evil', '1x': 'digit', job: 'not-the-job', instance: 'nope',
      'service.name': 'svc "quoted" \\ back', 'ä': 'umlaut', 'k8s.pod.name': 'pod,with=chars', quantile: '',
    };
    const metricsPort = await freePort();
    const app = await spawnApp('hostile-app.mjs', {
      HOSTILE_SPEC: specFile,
      OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      OTEL_RESOURCE_ATTRIBUTES: Object.entries(resource).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join(','),
      OTEL_LOG_LEVEL: 'warn',
    });
    apps.push(app);

    // What we serve is valid by our own strict reading, and hostile enough to matter.
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    // Checked after Prometheus has had its say, so that a broken exposition shows what Prometheus makes of it.
    let strict: ReturnType<typeof checkExposition> | Error;
    try {
      strict = checkExposition(text);
    } catch (err) {
      strict = err as Error;
    }
    const seriesInText = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;

    const promPort = await freePort();
    const promDir = path.join(tmp, 'prometheus');
    writeFileSync(path.join(tmp, 'prometheus.yml'), [
      'global: { scrape_interval: 1s, scrape_timeout: 1s }',
      'scrape_configs:',
      '  - job_name: hostile',
      `    static_configs: [{ targets: ['127.0.0.1:${metricsPort}'] }]`,
      '',
    ].join('\n'));
    const log = createWriteStream(path.join(tmp, 'prometheus.log'));
    const prom = spawn(tool('prometheus'), [
      `--config.file=${path.join(tmp, 'prometheus.yml')}`, `--storage.tsdb.path=${promDir}`,
      `--web.listen-address=127.0.0.1:${promPort}`, '--log.level=debug',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    prom.stdout!.pipe(log);
    prom.stderr!.pipe(log);
    children.push(prom);
    const query = async (q: string) => {
      const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await res.json()) as { status: string; data: { result: Array<{ metric: Record<string, string>; value: [number, string] }> } };
      if (body.status !== 'success') throw new Error(`query ${q} failed`);
      return body.data.result;
    };
    // A few scrapes, so that a scrape that fails or drops samples would show.
    await waitFor(async () => {
      const r = await query('count_over_time(up{job="hostile"}[1m])').catch(() => []);
      return Number(r[0]?.value[1] ?? 0) >= 3 ? true : undefined;
    }, 60_000, 500).catch((err) => { throw new Error(`${(err as Error).message}\n${readFileSync(path.join(tmp, 'prometheus.log'), 'utf8').slice(-3000)}`); });

    expect(Number((await query('min_over_time(up{job="hostile"}[1m])'))[0]!.value[1])).toBe(1);
    expect(Number((await query('scrape_samples_scraped{job="hostile"}'))[0]!.value[1])).toBe(seriesInText);
    expect(Number((await query('scrape_samples_post_metric_relabeling{job="hostile"}'))[0]!.value[1])).toBe(seriesInText);
    // Every series of the scrape is in the TSDB: all but Prometheus' own per-target series.
    const stored = await query('count({job="hostile", __name__!~"up|scrape_.+"})');
    expect(Number(stored[0]!.value[1])).toBe(seriesInText);
    for (const name of ['prometheus_target_scrapes_sample_duplicate_timestamp_total', 'prometheus_target_scrapes_sample_out_of_order_total',
      'prometheus_target_scrapes_sample_out_of_bounds_total']) {
      expect(Number((await query(name))[0]?.value[1] ?? 0), name).toBe(0);
    }
    const promLog = readFileSync(path.join(tmp, 'prometheus.log'), 'utf8');
    expect(promLog).not.toMatch(/level=(WARN|ERROR).*(scrape|hostile|ingest|duplicate)/i);

    if (strict instanceof Error) throw strict;
    expect(strict.families.size).toBeGreaterThan(10);
    expect(strict.samples.length).toBe(seriesInText);
    expect(strict.samples.find((x) => x.name === 'target_info')!.labels)
      .toMatchObject({ a_b: 'dotted;underscored', key_le: '0.5', _name_: 'evil', _1x: 'digit' });
  });
});
