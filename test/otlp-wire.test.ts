/*
 * What reaches the wire from a preloaded app: the configured OTLP protocol, and the user's own
 * OTEL_EXPORTER_OTLP_* variables (headers, compression, timeout, temporality) — never overridden by
 * Poolscope. A local OTLP/HTTP sink records each request; the real collector is in test/stack/otlp-protocols.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { killApps, spawnApp, type SpawnedApp } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const apps: SpawnedApp[] = [];
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  await killApps(apps);
  for (const c of cleanups.splice(0)) await c();
});

interface Received { path: string; headers: IncomingHttpHeaders; body: Buffer }

async function sink(mode: 'ok' | 'hang' = 'ok') {
  const requests: Received[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      requests.push({ path: req.url!, headers: req.headers, body: req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw });
      if (mode === 'hang') return;
      res.writeHead(200, { 'content-type': String(req.headers['content-type'] ?? 'application/json') });
      res.end(req.headers['content-type'] === 'application/json' ? '{}' : '');
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { requests, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

/** Runs the one-query script under the preload until it exits by itself. */
async function runScript(env: Record<string, string>) {
  const app = await spawnApp('otlp-script.mjs', { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', ...env });
  apps.push(app);
  const exit = await app.exit;
  const exporters = /exporters=(\S*)/.exec(app.stdout())?.[1];
  return { exit, exporters, stderr: app.stderr() };
}

/** aggregationTemporality of a histogram or sum in an OTLP/JSON body (1 = delta, 2 = cumulative). */
function temporality(body: Buffer, name = 'db.client.operation.duration'): number | undefined {
  const json = JSON.parse(body.toString('utf8'));
  for (const rm of json.resourceMetrics ?? []) for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) {
    if (m.name === name) return (m.histogram ?? m.sum)?.aggregationTemporality;
  }
  return undefined;
}

describe('OTLP on the wire', () => {
  it('loads no OTLP exporter on the default Prometheus path', async () => {
    const { exit, exporters } = await runScript({});
    expect(exit.code).toBe(0);
    expect(exporters).toBe('');
  });

  it('pushes OTLP/HTTP protobuf by default (the specification default), loading only that exporter', async () => {
    const s = await sink();
    const { exit, exporters, stderr } = await runScript({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url });
    expect(exit.code).toBe(0);
    // The protobuf and gRPC exporters build on the JSON one's base classes: no other protocol's, no trace exporter.
    expect(exporters).toBe('exporter-metrics-otlp-http,exporter-metrics-otlp-proto');
    expect(s.requests.map((r) => [r.path, r.headers['content-type']])).toContainEqual(['/v1/metrics', 'application/x-protobuf']);
    // Protobuf carries strings as raw UTF-8.
    expect(s.requests.some((r) => r.body.includes('db.client.operation.duration'))).toBe(true);
    expect(stderr).toBe('');
  });

  it('loads only the gRPC exporter for OTEL_EXPORTER_OTLP_PROTOCOL=grpc, and the script still exits by itself', async () => {
    const { exit, exporters } = await runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9',
      OTEL_LOG_LEVEL: 'none',
    });
    expect(exit.code).toBe(0);
    expect(exporters).toBe('exporter-metrics-otlp-grpc,exporter-metrics-otlp-http');
  });

  it('sends the user\'s headers and compression, and honours their temporality preference (http/json)', async () => {
    const s = await sink();
    const { exit, exporters } = await runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-tenant=acme,authorization=Bearer%20t0ken', OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'x-signal=metrics',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'delta',
    });
    expect(exit.code).toBe(0);
    expect(exporters).toBe('exporter-metrics-otlp-http');
    const push = s.requests.find((r) => r.path === '/v1/metrics')!;
    expect(push.headers).toMatchObject({
      'x-tenant': 'acme', authorization: 'Bearer t0ken', 'x-signal': 'metrics',
      'content-encoding': 'gzip', 'content-type': 'application/json',
    });
    expect(temporality(push.body)).toBe(1);
    // As the SDK would report them: observable counters as deltas, up-down counters cumulative.
    expect(temporality(push.body, 'poolscope.pool.acquires')).toBe(1);
    expect(temporality(push.body, 'db.client.connection.count')).toBe(2);
  });

  it('pushes cumulative temporality when the user sets no preference', async () => {
    const s = await sink();
    await runScript({ OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' });
    const body = s.requests.find((r) => r.path === '/v1/metrics')!.body;
    expect(temporality(body)).toBe(2);
    expect(temporality(body, 'poolscope.pool.acquires')).toBe(2);
  });

  it('lets the user\'s OTEL_EXPORTER_OTLP_TIMEOUT end a request to a hanging collector', async () => {
    // Without the variable the request would wait 29 s (just under the 30 s export timeout), beyond the
    // 5 s flush limit at exit, and the script would end without a failure line.
    const s = await sink('hang');
    const { exit, stderr } = await runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url, OTEL_EXPORTER_OTLP_TIMEOUT: '300',
    });
    expect(exit.code).toBe(0);
    expect(s.requests.length).toBeGreaterThan(0);
    expect(stderr.trim().split('\n')).toEqual([expect.stringMatching(
      new RegExp(`^poolscope: OTLP metric export to ${s.url}/v1/metrics failed \\(.*\\); retrying every export interval`))]);
  });

  // Found by a helper with a collector that accepted connections and never answered: each request outlived the
  // next interval's, one was always in flight, and the process never ended (killed after 10 minutes).
  it('still exits by itself when OTEL_EXPORTER_OTLP_TIMEOUT is not shorter than the export interval and the collector never answers (bug: it never exited)', async () => {
    const s = await sink('hang');
    const run = runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url, OTEL_METRIC_EXPORT_INTERVAL: '200',
      OTEL_EXPORTER_OTLP_TIMEOUT: '1000', LINGER_MS: '1500',
    });
    const outcome = await Promise.race([run, new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 20_000))]);
    expect(outcome).not.toBe('still running');
    const { exit, stderr } = outcome as Awaited<typeof run>;
    expect(exit.code).toBe(0);
    expect(s.requests.length).toBeGreaterThan(1);
    expect(stderr.trim().split('\n')).toEqual([
      "poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '1000' is not an integer from 1 to 199 (ms), shorter than the metrics export interval; using 100 for metrics.",
      expect.stringMatching(new RegExp(`^poolscope: OTLP metric export to ${s.url}/v1/metrics failed \\(.*\\); retrying every export interval`)),
    ]);
  });

  // ca26f23 ended the export at the export timeout on Poolscope's own timer, and the request went on to its own
  // (longer) timeout: the script that had ended waited for it, 30 s instead of at most the 5 s exit limit.
  it('ends within the exit limit when OTEL_EXPORTER_OTLP_TIMEOUT is longer than OTEL_METRIC_EXPORT_TIMEOUT and the collector never answers (bug: waited out the request timeout)', async () => {
    const s = await sink('hang');
    const run = runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: s.url, OTEL_METRIC_EXPORT_TIMEOUT: '2000', OTEL_EXPORTER_OTLP_TIMEOUT: '30000',
    });
    const outcome = await Promise.race([run, new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 20_000))]);
    expect(outcome).not.toBe('still running');
    const { exit, stderr } = outcome as Awaited<typeof run>;
    expect(exit.code).toBe(0);
    expect(s.requests.length).toBeGreaterThan(0);
    expect(stderr).toContain("poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '30000' is not an integer from 1 to 1999 (ms), shorter than the metrics export timeout; using 1000 for metrics.");
  }, 60_000);

  it('warns once about invalid OTLP variables, without echoing them, and the exporter never sees them', async () => {
    const s = await sink();
    const { exit, stderr } = await runScript({
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `${s.url}/v1/metrics`,
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://user:hunter2@[bad', OTEL_EXPORTER_OTLP_COMPRESSION: 'zip\npoolscope: forged',
      OTEL_EXPORTER_OTLP_TIMEOUT: '99999999999', OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sideways\u001b[31m',
    });
    expect(exit.code).toBe(0);
    expect(s.requests.length).toBeGreaterThan(0);
    const lines = stderr.trim().split('\n');
    expect(lines).toEqual([
      expect.stringMatching(/^poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '99999999999' is not an integer .*; using 29000 for metrics\.$/),
      expect.stringMatching(/^poolscope: OTEL_EXPORTER_OTLP_COMPRESSION is not 'gzip' or 'none'; using "none" for metrics\.$/),
      expect.stringMatching(/^poolscope: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE is not one of .*; using "cumulative"\.$/),
    ]);
    expect(stderr).not.toMatch(/hunter2|Configuration:|TimeoutOverflowWarning|\u001b/);
  });
});
