/*
 * Each OTLP protocol against the real collector (built from collector/builder-config.yaml): a preloaded
 * script pushes its metrics and spans over gRPC, HTTP/protobuf or HTTP/JSON to the collector's OTLP
 * receiver, and the collector forwards them (OTLP/HTTP JSON) to a sink here that decodes what arrived.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { ROOT, spawnApp, waitFor } from '../helpers.js';

const DATABASE_URL = inject('databaseUrl');
const BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache', 'tools', 'bin');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'poolscope-otlp-'));
let collector: ChildProcess;
let sink: Server;
let collectorLog = '';
const ports: Record<string, number> = {};
/** Service names seen per signal, with the metric and span names they carried. */
const arrived = { metrics: new Map<string, Set<string>>(), traces: new Map<string, Set<string>>() };

function record(signal: 'metrics' | 'traces', body: any): void {
  for (const r of body.resourceMetrics ?? body.resourceSpans ?? []) {
    const service = r.resource?.attributes?.find((a: any) => a.key === 'service.name')?.value?.stringValue ?? '';
    const names = arrived[signal].get(service) ?? new Set<string>();
    for (const scope of r.scopeMetrics ?? r.scopeSpans ?? []) for (const item of scope.metrics ?? scope.spans ?? []) names.add(item.name);
    arrived[signal].set(service, names);
  }
}

beforeAll(async () => {
  const binary = path.join(BIN, 'poolscope-otelcol');
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run scripts/build-tools.sh (or set POOLSCOPE_TOOLS_BIN)`);
  sink = createServer((req, res) => {
    let data = '';
    req.on('data', (d) => { data += d; });
    req.on('end', () => {
      try {
        record(req.url === '/v1/traces' ? 'traces' : 'metrics', JSON.parse(data));
      } catch {
        // not JSON: ignored, the assertions below will miss it
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  sink.listen(0, '127.0.0.1');
  await once(sink, 'listening');
  for (const k of ['grpc', 'http', 'health']) ports[k] = await freePort();
  const config = path.join(tmp, 'collector.yaml');
  writeFileSync(config, `
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:${ports.grpc} }
      http: { endpoint: 127.0.0.1:${ports.http} }
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:${(sink.address() as { port: number }).port}
    encoding: json
    compression: none
    retry_on_failure: { enabled: false }
extensions:
  health_check: { endpoint: 127.0.0.1:${ports.health} }
service:
  extensions: [health_check]
  pipelines:
    metrics: { receivers: [otlp], exporters: [otlp_http] }
    traces: { receivers: [otlp], exporters: [otlp_http] }
  telemetry:
    metrics: { level: none }
`);
  collector = spawn(binary, ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  collector.stderr!.on('data', (d) => { collectorLog = (collectorLog + d).slice(-4000); });
  await waitFor(async () => ((await fetch(`http://127.0.0.1:${ports.health}/`).catch(() => undefined))?.ok ? true : undefined), 30_000, 100)
    .catch((err) => { throw new Error(`collector did not become healthy: ${err}\n${collectorLog}`); });
});

afterAll(async () => {
  if (collector && collector.exitCode === null) {
    collector.kill('SIGTERM');
    await once(collector, 'exit');
  }
  await new Promise((resolve) => sink?.close(resolve));
  rmSync(tmp, { recursive: true, force: true });
});

describe.each([
  ['grpc', () => `http://127.0.0.1:${ports.grpc}`],
  ['http/protobuf', () => `http://127.0.0.1:${ports.http}`],
  ['http/json', () => `http://127.0.0.1:${ports.http}`],
] as const)('OTLP over %s to the real collector', (protocol, endpoint) => {
  it('delivers the metrics and spans of a script that then exits by itself', async () => {
    const service = `otlp-${protocol.replace('/', '-')}`;
    const app = await spawnApp('otlp-script.mjs', {
      DATABASE_URL, OTEL_SERVICE_NAME: service, OTEL_EXPORTER_PROMETHEUS_PORT: '0',
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: protocol, OTEL_EXPORTER_OTLP_ENDPOINT: endpoint(),
    });
    const exit = await app.exit;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(app.stderr()).toBe('');
    const metrics = await waitFor(() => arrived.metrics.get(service), 20_000, 100)
      .catch(() => { throw new Error(`no metrics from ${service}; collector log:\n${collectorLog}`); });
    expect(metrics).toContain('db.client.operation.duration');
    const spans = await waitFor(() => arrived.traces.get(service), 20_000, 100);
    expect([...spans].some((n) => n.startsWith('SELECT '))).toBe(true);
  });
});
