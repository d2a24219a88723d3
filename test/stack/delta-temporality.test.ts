/*
 * OTLP pushes with delta temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta or lowmemory)
 * through the shipped collector config into Prometheus 3 started with the flags of docker-compose.yml. Prometheus
 * refuses delta sums and histograms without its delta-to-cumulative conversion, with an error for the whole
 * request: the collector, which batches services together, then dropped every service's metrics of that batch,
 * the cumulative ones' too (found by a review of the OTLP settings).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { REGISTER, ROOT, runToExit, waitFor } from '../helpers.js';
import { collectorEnv, StackProcesses, tool } from './stack-tools.js';

const DATABASE_URL = inject('databaseUrl');
const QUERIES = 9;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'poolscope-delta-'));
const stack = new StackProcesses(tmp);
let promUrl = '';
let otlpUrl = '';


/** docker-compose.yml's Prometheus flags, less the ones naming its paths and address in the container. */
function shippedPrometheusFlags(): string[] {
  const compose = parseYaml(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: { prometheus: { command: string[] } } };
  return compose.services.prometheus.command.filter((f) => !/^--(config\.file|storage\.tsdb\.path|web\.external-url)=/.test(f));
}

async function queriesOf(job: string): Promise<number | undefined> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(`sum(db_client_operation_duration_seconds_count{job="${job}"})`)}`);
  const body = (await res.json()) as { data: { result: Array<{ value: [number, string] }> } };
  return body.data.result.length === 1 ? Number(body.data.result[0]!.value[1]) : undefined;
}

beforeAll(async () => {
  const ports: Record<string, number> = {};
  for (const name of ['prom', 'otelHttp', 'otelGrpc', 'otelHealth', 'otelMetrics']) ports[name] = await freePort();
  promUrl = `http://127.0.0.1:${ports.prom}`;
  otlpUrl = `http://127.0.0.1:${ports.otelHttp}`;
  stack.start('prometheus', tool('prometheus'), [
    `--config.file=${path.join(ROOT, 'prometheus', 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(tmp, 'data')}`,
    `--web.listen-address=127.0.0.1:${ports.prom}`,
    ...shippedPrometheusFlags(),
  ]);
  stack.start('collector', tool('poolscope-otelcol'), ['--config', path.join(ROOT, 'collector', 'otelcol-config.yaml')], {
    ...collectorEnv(ports, promUrl),
  });
  await waitFor(async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok === true || undefined, 30_000);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${ports.otelHealth}/`).catch(() => undefined))?.ok === true || undefined, 30_000);
}, 60_000);

afterAll(async () => {
  await stack.stopAll();
  rmSync(tmp, { recursive: true, force: true });
});

describe('delta temporality through the shipped collector and Prometheus', () => {
  it('a delta service and a cumulative one pushing at once both arrive, with the queries each made (bug: every series of the batch dropped)', async () => {
    const run = (job: string, temporality: string) => runToExit(process.execPath, ['--import', REGISTER, path.join(ROOT, 'test', 'fixtures', 'push-queries.mjs')], {
      env: {
        ...process.env, DATABASE_URL, QUERIES: String(QUERIES), OTEL_SERVICE_NAME: job,
        OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_METRIC_EXPORT_INTERVAL: '500',
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: temporality, POOLSCOPE_HEALTH_ENDPOINTS: 'false',
      },
      killAfterMs: 30_000,
    });
    const results = await Promise.all([run('delta-svc', 'delta'), run('lowmemory-svc', 'lowmemory'), run('cumulative-svc', 'cumulative')]);
    for (const r of results) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
    const counts = await waitFor(async () => {
      const c = { delta: await queriesOf('delta-svc'), lowmemory: await queriesOf('lowmemory-svc'), cumulative: await queriesOf('cumulative-svc') };
      return Object.values(c).every((v) => v === QUERIES) ? c : undefined;
    }, 20_000).catch(async () => ({ delta: await queriesOf('delta-svc'), lowmemory: await queriesOf('lowmemory-svc'), cumulative: await queriesOf('cumulative-svc') }));
    expect(counts).toEqual({ delta: QUERIES, lowmemory: QUERIES, cumulative: QUERIES });
  }, 90_000);
});
