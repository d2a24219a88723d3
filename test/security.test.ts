// Security of the telemetry server and of what Poolscope emits: only /metrics, /health and /health/database
// are served (404 elsewhere, 405 for other methods), request size and time are bounded (raw sockets, so the
// client cannot normalise anything away), the bind address is configurable, and no password, user name or
// SQL text reaches a metric, label, health payload or log line.
//
// POOLSCOPE_DIST=/path/to/dist runs these tests against another build.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { killApps, ROOT, spawnApp, waitFor, type SpawnedApp } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const DIST = process.env.POOLSCOPE_DIST ?? path.join(ROOT, 'dist');
const PRELOAD = ['--import', path.join(DIST, 'register.js')];

const apps: SpawnedApp[] = [];
afterEach(async () => {
  await killApps(apps);
});

async function start(fixture: string, env: Record<string, string> = {}) {
  const metricsPort = await freePort();
  const app = await spawnApp(fixture, { DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), ...env }, PRELOAD);
  apps.push(app);
  return { app, metricsPort, appUrl: `http://127.0.0.1:${app.port}`, metricsUrl: `http://127.0.0.1:${metricsPort}` };
}

interface RawResponse { status: number | undefined; head: string; body: string; closedAfterMs: number | undefined }

/** Sends bytes as they are on a raw TCP connection and reads until the server closes or the time is up. */
function raw(port: number, request: string | Buffer, { host = '127.0.0.1', waitMs = 3000 } = {}): Promise<RawResponse> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(port, host);
    let data = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const [head = '', body = ''] = data.split('\r\n\r\n', 2);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : undefined, head, body, closedAfterMs: closed ? Date.now() - started : undefined });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on('data', (d) => { data += d; });
    socket.on('close', () => finish(true));
    socket.on('error', () => finish(true));
    socket.write(request);
  });
}
const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${extra}\r\n`;

describe('telemetry server surface', () => {
  let metricsPort: number;
  const afterAllApps: SpawnedApp[] = [];
  beforeAll(async () => {
    const started = await start('rel-app.mjs');
    metricsPort = started.metricsPort;
    apps.splice(apps.indexOf(started.app), 1); // kept for the whole block
    afterAllApps.push(started.app);
    await fetch(`${started.appUrl}/q`);
  });
  afterAll(async () => {
    for (const app of afterAllApps) { app.child.kill('SIGKILL'); await app.exit; }
  });

  it.each(['/metrics', '/metrics?name[]=x', '/health', '/health/database'])('serves GET %s', async (target) => {
    const res = await raw(metricsPort, get(target));
    expect(res.status).toBe(200);
  });

  it('answers HEAD with headers only', async () => {
    const res = await raw(metricsPort, `HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(res.status).toBe(200);
    expect(res.body).toBe('');
  });

  it.each([
    '/', '/admin', '/metrics/', '//metrics', '/metrics/../metrics', '/../metrics', '/./metrics', '/%6detrics', '/%6Detrics',
    '/metrics%2F', '/metrics%00', '/METRICS', '/Metrics', '/metrics;jsessionid=1', '/health/', '/health/database/',
    '/health/../metrics', '/health/database/../../metrics', '/health%2Fdatabase', '/.env', '/debug/pprof', '/favicon.ico',
    '*', 'metrics', 'http://127.0.0.1/metrics', 'http://evil.example/metrics', 'http://127.0.0.1:1/health/database',
  ])('answers 404 to GET %s and leaks nothing', async (target) => {
    const res = await raw(metricsPort, get(target));
    // Node itself rejects some request-targets with 400 before routing; either way nothing is served.
    expect([404, 400]).toContain(res.status);
    expect(res.body).not.toMatch(/db_client|poolscope_|"pools"|"status"/);
  });

  it.each(['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND'])('answers 405 to %s on every route, with Allow', async (method) => {
    for (const target of ['/metrics', '/health', '/health/database']) {
      const res = await raw(metricsPort, `${method} ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      expect(res.status, `${method} ${target}`).toBe(405);
      expect(res.head.toLowerCase()).toContain('allow: get, head');
    }
  });

  it('does not tunnel: CONNECT is refused', async () => {
    const res = await raw(metricsPort, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n');
    expect(res.status === undefined || res.status >= 400).toBe(true);
    expect(res.status).not.toBe(200);
  });

  it('refuses request bodies with 413 (Content-Length and chunked)', async () => {
    const withLength = await raw(metricsPort, `GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`);
    expect(withLength.status).toBe(413);
    const chunked = await raw(metricsPort, `GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`);
    expect(chunked.status).toBe(413);
    expect(withLength.body + chunked.body).not.toMatch(/db_client|"pools"/);
  });

  it('caps request headers at 8 KiB (431 or connection closed)', async () => {
    const big = await raw(metricsPort, get('/metrics', `X-Big: ${'a'.repeat(9 * 1024)}\r\n`));
    expect(big.status === 431 || (big.status === undefined && big.closedAfterMs !== undefined)).toBe(true);
    const many = await raw(metricsPort, get('/metrics', Array.from({ length: 400 }, (_, i) => `X-H${i}: ${'b'.repeat(20)}\r\n`).join('')));
    expect(many.status === 431 || (many.status === undefined && many.closedAfterMs !== undefined)).toBe(true);
    // A normal request still works afterwards.
    expect((await raw(metricsPort, get('/health'))).status).toBe(200);
  });

  it('rejects a request smuggling attempt (Content-Length with Transfer-Encoding)', async () => {
    const res = await raw(metricsPort,
      `GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(res.status === undefined || res.status >= 400).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('telemetry server time bounds', () => {
  // Bug (telemetry-server.ts): headersTimeout (5 s) and requestTimeout (10 s) are set, but Node only checks
  // them every `connectionsCheckingInterval` (default 30 s), which createServer() is not given: a slow-loris
  // client holds a connection for up to ~35 s instead of the documented 10 s.
  it('disconnects slow-loris clients within the documented 10 s (bug: checked only every 30 s)', async () => {
    const { metricsPort } = await start('rel-app.mjs');
    const started = Date.now();
    const trickle = new Promise<number | undefined>((resolve) => {
      const socket = net.connect(metricsPort, '127.0.0.1');
      socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
      const drip = setInterval(() => socket.write('X-Drip: 1\r\n'), 500);
      const give = setTimeout(() => { clearInterval(drip); socket.destroy(); resolve(undefined); }, 15_000);
      socket.on('data', () => {});
      socket.on('error', () => {});
      socket.on('close', () => { clearInterval(drip); clearTimeout(give); resolve(Date.now() - started); });
    });
    const silent = new Promise<number | undefined>((resolve) => {
      const socket = net.connect(metricsPort, '127.0.0.1');
      socket.write('GET /metr');
      const give = setTimeout(() => { socket.destroy(); resolve(undefined); }, 15_000);
      socket.on('data', () => {});
      socket.on('error', () => {});
      socket.on('close', () => { clearTimeout(give); resolve(Date.now() - started); });
    });
    const [trickleClosed = Infinity, silentClosed = Infinity] = await Promise.all([trickle, silent]);
    expect(trickleClosed, 'trickling headers: closed after (ms)').toBeLessThan(12_000);
    expect(silentClosed, 'stalled request line: closed after (ms)').toBeLessThan(12_000);
  }, 30_000);
});

// ---------------------------------------------------------------------------------------------------------
/** Local address of the socket listening on `port`, from /proc/net/tcp{,6}: e.g. '127.0.0.1', '0.0.0.0', '::1'. */
function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue; // LISTEN
      const [addrHex, portHex] = cols[1]!.split(':');
      if (parseInt(portHex!, 16) !== port) continue;
      if (addrHex!.length === 8) {
        out.push([3, 2, 1, 0].map((i) => parseInt(addrHex!.slice(i * 2, i * 2 + 2), 16)).join('.'));
      } else {
        const words = Array.from({ length: 4 }, (_, w) => addrHex!.slice(w * 8, w * 8 + 8).match(/../g)!.reverse().join(''));
        const v6 = words.join('').match(/.{4}/g)!.map((h) => parseInt(h, 16).toString(16)).join(':');
        out.push(v6 === '0:0:0:0:0:0:0:1' ? '::1' : v6 === '0:0:0:0:0:0:0:0' ? '::' : v6);
      }
    }
  }
  return out;
}
const reachable = (host: string, port: number) => new Promise<boolean>((resolve) => {
  const socket = net.connect(port, host);
  socket.once('connect', () => { socket.destroy(); resolve(true); });
  socket.once('error', () => resolve(false));
  setTimeout(() => { socket.destroy(); resolve(false); }, 2000);
});

describe('bind address', () => {
  it('OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1 binds that address only', async () => {
    const { metricsPort } = await start('rel-app.mjs', { OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1' });
    await waitFor(() => listeningAddresses(metricsPort).length > 0 || undefined);
    expect(listeningAddresses(metricsPort)).toEqual(['127.0.0.1']);
    expect(await reachable('127.0.0.1', metricsPort)).toBe(true);
    expect(await reachable('127.0.0.2', metricsPort)).toBe(false);
  });

  it('OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.2 binds another loopback address', async () => {
    const { metricsPort } = await start('rel-app.mjs', { OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.2' });
    await waitFor(() => listeningAddresses(metricsPort).length > 0 || undefined);
    expect(listeningAddresses(metricsPort)).toEqual(['127.0.0.2']);
    expect(await reachable('127.0.0.2', metricsPort)).toBe(true);
    expect(await reachable('127.0.0.1', metricsPort)).toBe(false);
  });

  it('binds to localhost by default, never to all interfaces', async () => {
    const { metricsPort } = await start('rel-app.mjs', { OTEL_EXPORTER_PROMETHEUS_HOST: '' });
    await waitFor(() => listeningAddresses(metricsPort).length > 0 || undefined);
    const bound = listeningAddresses(metricsPort);
    expect(bound.length).toBe(1);
    expect(['127.0.0.1', '::1']).toContain(bound[0]);
    expect(await reachable('127.0.0.2', metricsPort)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------------------
describe('no secrets in any output', () => {
  const tag = Math.random().toString(36).slice(2, 8);
  // A role whose name and password need URL encoding; PostgreSQL's trust auth accepts it without a password
  // check, so the password travels only in the connection string (where a careless library would leak it).
  const user = `usr${tag} :@/?#%€`;
  const password = `pw${tag}:@/?#%&= €'"`;
  const sqlMarker = `sql${tag}`;
  const otlpSecret = `otlp${tag}`;
  const headerSecret = `hdr${tag}`;
  let admin: pg.Client;
  let port: number;

  beforeAll(async () => {
    admin = new pg.Client({ connectionString: DATABASE_URL });
    await admin.connect();
    await admin.query(`CREATE ROLE ${pg.escapeIdentifier(user)} LOGIN`);
    await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(user)} OWNER ${pg.escapeIdentifier(user)}`);
    port = Number(new URL(DATABASE_URL).port);
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(user)} WITH (FORCE)`).catch(() => undefined);
    await admin.query(`DROP ROLE IF EXISTS ${pg.escapeIdentifier(user)}`).catch(() => undefined);
    await admin.end();
  });

  const encoded = () => `${encodeURIComponent(user)}:${encodeURIComponent(password)}`;
  const needles = () => [password, encodeURIComponent(password), user, encodeURIComponent(user), `usr${tag}`, `pw${tag}`,
    sqlMarker, otlpSecret, headerSecret];

  async function scan(urls: string[], logLevel: string) {
    const deadPort = await freePort();
    const { app, metricsUrl } = await start('rel-secrets.mjs', {
      SECRET_URLS: JSON.stringify(urls), SQL_MARKER: sqlMarker, OTEL_LOG_LEVEL: logLevel,
      OTEL_METRICS_EXPORTER: 'prometheus,otlp', OTEL_METRIC_EXPORT_INTERVAL: '200',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://otlpuser:${otlpSecret}@127.0.0.1:${deadPort}`,
      OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer ${headerSecret}`,
    });
    expect(app.stdout()).toMatch(/done ok=\d+ failed=\d+/);
    await new Promise((r) => setTimeout(r, 700)); // a few failing exports, and their log line
    const outputs: Record<string, string> = {
      '/metrics': await (await fetch(`${metricsUrl}/metrics`)).text(),
      '/health': await (await fetch(`${metricsUrl}/health`)).text(),
      '/health/database': await (await fetch(`${metricsUrl}/health/database`)).text(),
    };
    app.child.kill('SIGTERM');
    await app.exit;
    outputs.stdout = app.stdout();
    outputs.stderr = app.stderr();
    return outputs;
  }

  function expectNoSecrets(outputs: Record<string, string>) {
    const found: string[] = [];
    for (const [where, text] of Object.entries(outputs)) {
      for (const needle of needles()) if (text.includes(needle)) found.push(`${where} contains ${JSON.stringify(needle)}`);
    }
    expect(found).toEqual([]);
  }

  it.each(['warn', 'info', 'all'])('connection strings with credentials, SQL text and OTLP credentials stay out of every output (OTEL_LOG_LEVEL=%s)', async (level) => {
    const outputs = await scan([
      `postgres://${encoded()}@127.0.0.1:${port}/postgres`,
      `postgresql://${encoded()}@127.0.0.1:${port}/postgres?application_name=${sqlMarker}`,
      `postgres://${encoded()}@127.0.0.1:${await freePort()}/postgres`, // refused: connection errors
    ], level);
    // The outputs are not empty: the pools were measured and the outage was logged.
    expect(outputs['/metrics']).toContain('db_client_operation_duration_seconds_count');
    expect(outputs['/metrics']).toContain('error_type="ECONNREFUSED"');
    expect(outputs['/health/database']).toContain(`127.0.0.1:${port}/postgres`);
    expect(outputs.stderr).toContain('OTLP metric export');
    expectNoSecrets(outputs);
  });

  // Bug (pool-name.ts resolvePoolTarget, and db.namespace in pg-instrumentation.ts): with no database in the
  // connection string, pg connects to the database named after the user, and Poolscope reports that name as
  // the pool name (`host:port/<user>`) and as db.namespace, so the user name is in every series and in the
  // health payload, although the README says user names are never part of the pool name.
  it('a connection string without a database does not put the user name in labels (bug: database defaults to user)', async () => {
    const outputs = await scan([`postgres://${encoded()}@127.0.0.1:${port}`], 'warn');
    expect(outputs['/metrics']).toContain('db_client_operation_duration_seconds_count');
    expectNoSecrets(outputs);
  });
});
