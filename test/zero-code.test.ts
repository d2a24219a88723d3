import { Agent, createServer, get, type Server } from 'node:http';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { find, killApps, otlpReceiver, REGISTER, ROOT, runToExit, scrapeUrl, spawnApp, value, waitFor, type SpawnedApp } from './helpers.js';
import { CREATE_TIME_BUCKETS, OPERATION_DURATION_BUCKETS, USE_TIME_BUCKETS, WAIT_TIME_BUCKETS } from '../src/semconv.js';

const DATABASE_URL = inject('databaseUrl');
const apps: SpawnedApp[] = [];
const servers: Server[] = [];

afterEach(async () => {
  await killApps(apps);
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function start(fixture: string, env: Record<string, string> = {}) {
  const metricsPort = await freePort();
  // http/json: the stand-in receiver below decodes OTLP/JSON (the default protocol is http/protobuf).
  const app = await spawnApp(fixture, { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', ...env });
  apps.push(app);
  return { app, metricsUrl: `http://127.0.0.1:${metricsPort}`, appUrl: `http://127.0.0.1:${app.port}` };
}

function otlpMetricNames(bodies: any[]): Set<string> {
  const names = new Set<string>();
  for (const { body } of bodies) {
    for (const rm of body.resourceMetrics ?? []) for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) names.add(m.name);
  }
  return names;
}

describe('node --import dist/register.js', () => {
  it('instruments an ESM app (import pg, import node:http) with no code change', async () => {
    const { app, metricsUrl, appUrl } = await start('esm-app.mjs');
    for (let i = 0; i < 3; i++) expect((await fetch(appUrl)).status).toBe(200);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    const pool = find(s, 'db_client_connection_max')[0]!.labels.db_client_connection_pool_name;
    expect(pool).toMatch(/^127\.0\.0\.1:\d+\/postgres$/);
    expect(value(s, 'db_client_connection_max', { db_client_connection_pool_name: pool })).toBe(4);
    expect(value(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' })).toBe(3);
    expect(value(s, 'http_server_request_duration_seconds_count', { http_request_method: 'GET', http_response_status_code: '200' })).toBe(3);
    // Our own /metrics scrapes are not the application's traffic (neither a series of their own nor a count).
    await scrapeUrl(`${metricsUrl}/metrics`);
    const again = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(find(again, 'http_server_request_duration_seconds_count')).toHaveLength(1);
    expect(value(again, 'http_server_request_duration_seconds_count', { http_request_method: 'GET', http_response_status_code: '200' })).toBe(3);
    expect(app.stderr()).toBe('');
  });

  it('keeps the names of the functions it wraps (a bundled build once renamed query to query2 and left emit nameless; an anonymous query was named)', async () => {
    const script = `import http from 'node:http'; import pg from 'pg';
      const pool = new pg.Pool({ max: 1 });
      // A client class whose query is an anonymous function (pg.native.Client's is): its name stays ''.
      class Own { connect() {} }
      const anonymous = [function () { return undefined; }][0];
      Object.defineProperty(Own.prototype, 'query', { value: anonymous, writable: true, configurable: true });
      const own = new pg.Pool({ max: 1, Client: Own });
      console.log(JSON.stringify([pool.connect.name, pool.emit.name, pool.end.name, pool._release.name,
        pg.Client.prototype.query.name, pg.Client.prototype.connect.name, http.Server.prototype.emit.name,
        Own.prototype.query !== anonymous, Own.prototype.query.name]));
      await pool.end();
      await own.end();`;
    const child = spawn(process.execPath, ['--import', REGISTER, '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0' } });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    await once(child, 'exit');
    expect(JSON.parse(out)).toEqual(['connect', 'emit', 'end', '_release', 'query', 'connect', 'emit', true, '']);
  });

  // Found by adversarial review: targets fell back to localhost:5432, not to pg.defaults, so the pool and its
  // queries were reported against a server the application never connected to.
  it('names a pool configured through pg.defaults after the server pg connects to (bug: localhost:5432)', async () => {
    const { metricsUrl } = await start('pg-defaults.cjs');
    const u = new URL(DATABASE_URL);
    const name = `${u.hostname}:${u.port}${u.pathname}`;
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(find(s, 'poolscope_pool_info').map((x) => x.labels)).toEqual([expect.objectContaining({
      db_client_connection_pool_name: name, server_address: u.hostname, server_port: u.port })]);
    expect(find(s, 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: name })[0]?.labels)
      .toMatchObject({ server_address: u.hostname, server_port: u.port, db_namespace: u.pathname.slice(1) });
  });

  it('costs the number of series per pool the README states', async () => {
    const { metricsUrl, appUrl } = await start('esm-app.mjs');
    // Sequential requests: the first opens a connection (acquire path "new"), the others reuse it ("idle").
    for (let i = 0; i < 3; i++) expect((await fetch(appUrl)).status).toBe(200);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    const pool = find(s, 'db_client_connection_max')[0]!.labels.db_client_connection_pool_name!;
    const ofPool = s.filter((x) => x.labels.db_client_connection_pool_name === pool);
    const histogram = (buckets: number[]) => buckets.length + 3; // the buckets, +Inf, _sum and _count
    // README, "Series per pool": 17 always; wait, use and create time once it has opened a connection; one
    // per acquire path seen; a query-duration histogram per operation and outcome (here SELECT, no error).
    expect(ofPool).toHaveLength(17 + histogram(WAIT_TIME_BUCKETS) + histogram(USE_TIME_BUCKETS) +
      histogram(CREATE_TIME_BUCKETS) + 2 + histogram(OPERATION_DURATION_BUCKETS));
    expect(ofPool).toHaveLength(87);
  });

  it('instruments a CommonJS Express app and labels requests with http.route', async () => {
    const { app, metricsUrl, appUrl } = await start('express-app.cjs');
    expect((await fetch(`${appUrl}/items/7`)).status).toBe(200);
    expect((await fetch(`${appUrl}/items/8`)).status).toBe(200);
    expect((await fetch(`${appUrl}/fail`)).status).toBe(500);
    expect((await fetch(`${appUrl}/api/v1/orders/42`)).status).toBe(200);
    expect((await fetch(`${appUrl}/nowhere/secret-path`)).status).toBe(404);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(value(s, 'http_server_request_duration_seconds_count', { http_route: '/api/v1/orders/:orderId' })).toBe(1);
    // No route matched: no http.route, and never the raw path.
    const unrouted = find(s, 'http_server_request_duration_seconds_count', { http_response_status_code: '404' });
    expect(unrouted).toHaveLength(1);
    expect(unrouted[0]!.labels.http_route).toBeUndefined();
    expect(JSON.stringify(s)).not.toContain('secret-path');
    expect(value(s, 'http_server_request_duration_seconds_count', { http_route: '/items/:id', http_response_status_code: '200' })).toBe(2);
    expect(value(s, 'http_server_request_duration_seconds_count', { http_route: '/fail', http_response_status_code: '500', error_type: '500' })).toBe(1);
    expect(value(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT', error_type: '42P01' })).toBe(1);
    expect(app.stderr()).toBe('');
  });

  it('labels Fastify requests with http.route', async () => {
    const { app, metricsUrl, appUrl } = await start('fastify-app.mjs');
    expect((await fetch(`${appUrl}/users/1`)).status).toBe(200);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(value(s, 'http_server_request_duration_seconds_count', { http_route: '/users/:id' })).toBe(1);
    expect(value(s, 'db_client_connection_max')).toBe(2);
    expect(app.stderr()).toBe('');
  });

  it('serves /health and /health/database and answers 404 elsewhere', async () => {
    const { metricsUrl, appUrl } = await start('esm-app.mjs');
    await fetch(appUrl);
    const db = await fetch(`${metricsUrl}/health/database`);
    expect(db.status).toBe(200);
    const body = (await db.json()) as any;
    expect(body.status).toBe('healthy');
    expect(body.pools).toHaveLength(1);
    expect(body.pools[0]).toMatchObject({ max: 4, used: 0, pending: 0, status: 'healthy' });
    const health = await (await fetch(`${metricsUrl}/health`)).json();
    expect(health).toMatchObject({ status: 'healthy', checks: { database: { status: 'healthy', pools: 1 } } });
    expect((await fetch(`${metricsUrl}/admin`)).status).toBe(404);
    expect((await fetch(`${metricsUrl}/metrics`, { method: 'POST', body: 'x' })).status).toBe(405);
  });

  it('lets a short script exit by itself, with the Prometheus and OTLP exporters both on', async () => {
    const receiver = await otlpReceiver(servers);
    const started = Date.now();
    const { app } = await start('short-script.mjs', {
      OTEL_METRICS_EXPORTER: 'prometheus,otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    });
    const { code } = await app.exit;
    expect(code).toBe(0);
    expect(app.stdout()).toContain('answer=42');
    expect(Date.now() - started).toBeLessThan(10_000);
    // beforeExit flushed the final metrics.
    expect(otlpMetricNames(receiver.bodies)).toContain('db.client.operation.duration');
  });

  it('flushes the final metrics to OTLP on SIGTERM and then ends the way the signal would', async () => {
    const receiver = await otlpReceiver(servers);
    const { app } = await start('worker-app.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_METRIC_EXPORT_INTERVAL: '600000',
    });
    expect(receiver.bodies).toHaveLength(0);
    app.child.kill('SIGTERM');
    const { code, signal } = await app.exit;
    expect({ code, signal }).toEqual({ code: null, signal: 'SIGTERM' });
    const names = otlpMetricNames(receiver.bodies);
    expect(names).toContain('db.client.connection.count');
    expect(names).toContain('db.client.operation.duration');
    expect(receiver.bodies[0].path).toBe('/v1/metrics');
  });

  it('exports spans when traces are turned on, with the same metrics and no duplicate series', async () => {
    const receiver = await otlpReceiver(servers);
    const { app, metricsUrl, appUrl } = await start('express-app.cjs', {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '100',
    });
    expect((await fetch(`${appUrl}/items/3`)).status).toBe(200);
    const s = await scrapeUrl(`${metricsUrl}/metrics`);
    expect(value(s, 'http_server_request_duration_seconds_count', { http_route: '/items/:id' })).toBe(1);
    expect(value(s, 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' })).toBe(1);
    expect(find(s, 'db_client_connection_max')).toHaveLength(1);
    const spans = await waitFor(() => {
      const names = receiver.bodies.filter((b) => b.path === '/v1/traces')
        .flatMap((b) => b.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans.map((sp: any) => sp.name))));
      return names.some((n: string) => n.startsWith('SELECT ')) && names.includes('GET /items/:id') ? names : undefined;
    });
    expect(spans).toContain('GET /items/:id');
    expect(app.stderr()).toBe('');
  });

  it('logs one line when the collector is unreachable, not one per export, and keeps serving', async () => {
    const deadPort = await freePort();
    const { app, appUrl } = await start('esm-app.mjs', {
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${deadPort}`,
      OTEL_METRIC_EXPORT_INTERVAL: '100',
    });
    for (let i = 0; i < 10; i++) {
      expect((await fetch(appUrl)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 100));
    }
    const lines = app.stderr().split('\n').filter((l) => l.includes('OTLP metric export'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`http://127.0.0.1:${deadPort}/v1/metrics`);
  });

  it('warns once about a bad setting, names it and the fallback, and the app runs', async () => {
    const { app, appUrl } = await start('esm-app.mjs', { POOLSCOPE_HEALTH_WARNING_THRESHOLD: 'lots' });
    expect((await fetch(appUrl)).status).toBe(200);
    await waitFor(() => app.stderr().includes('POOLSCOPE_HEALTH_WARNING_THRESHOLD') || undefined);
    const lines = app.stderr().split('\n').filter((l) => l.includes('poolscope'));
    expect(lines).toEqual(["poolscope: POOLSCOPE_HEALTH_WARNING_THRESHOLD 'lots' is not a number above 0 and below 1; using 0.75."]);
  });

  it('warns and keeps the app running when the metrics port is taken', async () => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    servers.push(blocker);
    const taken = (blocker.address() as { port: number }).port;
    const app = await spawnApp('esm-app.mjs', { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(taken) });
    apps.push(app);
    expect((await fetch(`http://127.0.0.1:${app.port}`)).status).toBe(200);
    await waitFor(() => app.stderr().includes('already in use') || undefined, 20_000); // said at the first retry, 5 s on
    expect(app.stderr()).toContain(`127.0.0.1:${taken}`);
    expect(app.stderr()).not.toMatch(/Error:|at .*\(/);
  });

  it('does nothing at all with OTEL_SDK_DISABLED=true', async () => {
    const { app, metricsUrl, appUrl } = await start('esm-app.mjs', { OTEL_SDK_DISABLED: 'true' });
    expect((await fetch(appUrl)).status).toBe(200);
    await expect(fetch(`${metricsUrl}/metrics`)).rejects.toThrow();
    expect(app.stderr()).toBe('');
    // Not even the module hooks or the diag logger (found by a mutation audit: only the port was checked).
    const script = `import Module from 'node:module'; import pg from 'pg';
      console.log(JSON.stringify([Object.getOwnPropertySymbols(pg.Client.prototype).map(String),
        Module[Symbol.for('poolscope.cjs-import-hook')] ?? null, globalThis[Symbol.for('opentelemetry.js.api.1')]?.diag ?? null]));`;
    const r = await runToExit(process.execPath, ['--import', REGISTER, '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...process.env, OTEL_SDK_DISABLED: 'true' }, killAfterMs: 20_000 });
    expect(r).toEqual({ code: 0, stdout: '[[],null,null]\n', stderr: '' });
  });

  // Found by a mutation audit: only the server's own handle was held to never keeping a script alive.
  it('lets a script exit at once when a scraper keeps its connection open', async () => {
    const metricsPort = await freePort();
    const app = await spawnApp('scraped-script.mjs', { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort) });
    apps.push(app);
    const agent = new Agent({ keepAlive: true });
    try {
      const body = await new Promise<string>((resolve, reject) => {
        get({ host: '127.0.0.1', port: metricsPort, path: '/metrics', agent }, (res) => {
          let text = '';
          res.on('data', (d) => { text += d; });
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      expect(body).toContain('db_client_connection_max');
      await waitFor(() => app.stdout().includes('ENDED') || undefined);
      const ended = Date.now();
      expect(await app.exit).toEqual({ code: 0, signal: null });
      // Well under the telemetry server's 5 s keep-alive, which an open socket of ours would have waited out.
      expect(Date.now() - ended).toBeLessThan(2_500);
    } finally {
      agent.destroy();
    }
  });

  it('runs the same script to the same result with and without the preload', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [...args, path.join(ROOT, 'test', 'fixtures', 'short-script.mjs')], {
        env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
      });
      let out = '';
      child.stdout.on('data', (d) => { out += d; });
      child.stderr.on('data', (d) => { out += d; });
      child.on('exit', (code) => resolve({ code, out }));
    });
    const plain = await run([]);
    const preloaded = await run(['--import', REGISTER]);
    expect(preloaded).toEqual(plain);
  });

  // Bug: OpenTelemetry's DiagConsoleLogger writes info and debug through console.info and console.debug, so
  // OTEL_LOG_LEVEL=debug put diagnostics ("Registered a global for diag…", a resource dump) into the
  // application's stdout, which for a CLI or a JSON-lines tool is its data.
  it.each(['debug', 'all'])('keeps the application\'s stdout its own at OTEL_LOG_LEVEL=%s: diagnostics go to stderr (bug: stdout)', async (level) => {
    const fixture = path.join(ROOT, 'test', 'fixtures', 'short-script.mjs');
    const env = { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_LOG_LEVEL: level };
    const plain = await runToExit(process.execPath, [fixture], { env });
    const preloaded = await runToExit(process.execPath, ['--import', REGISTER, fixture], { env });
    expect(preloaded.code).toBe(0);
    expect(preloaded.stdout).toBe(plain.stdout);
    expect(preloaded.stderr).toMatch(/\S/);
  });
});
