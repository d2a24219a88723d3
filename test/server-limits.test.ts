// The telemetry server runs inside the application: whatever a client does to its port, it holds a bounded
// number of connections, requests, bytes and collections, and never throws into the app. These tests drive
// the real server over real sockets and assert structural bounds (counts, sizes), never timings.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { SERVER_LIMITS } from '../src/server/limits.js';
import { TelemetryServer } from '../src/server/telemetry-server.js';
import { ROOT, waitFor } from './helpers.js';

const warnings: string[] = [];
const logger = createLogger(0, {
  error: () => undefined, info: () => undefined, debug: () => undefined, verbose: () => undefined,
  warn: (m: string) => { warnings.push(m); },
});
const servers: TelemetryServer[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  warnings.length = 0;
});

async function start(metrics: () => Promise<string>) {
  const server = new TelemetryServer({ host: '127.0.0.1', port: 0, metrics, logger });
  servers.push(server);
  await server.start();
  return { server, port: server.address()!.port };
}

/** A collection that takes `ms` and counts its calls. */
function slowMetrics(ms: number, body = '# TYPE up gauge\nup 1\n') {
  const counter = { calls: 0 };
  const metrics = async () => {
    counter.calls++;
    await new Promise((r) => setTimeout(r, ms));
    return body;
  };
  return { counter, metrics };
}

function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => undefined);
  return once(socket, 'connect').then(() => socket);
}

/** Resolves when the server has closed this socket (or `ms` passed: then false). */
function closedBy(socket: net.Socket, ms: number): Promise<boolean> {
  if (socket.destroyed || socket.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.resume();
    const done = () => { clearTimeout(timer); resolve(true); };
    socket.once('close', done);
    socket.once('end', done);
  });
}

/**
 * Twice the burst of /metrics requests, in parallel batches below the connection cap (sent one by one on a
 * loaded machine, the bucket refills as fast as requests arrive and no burst ever happens); their statuses.
 */
async function floodMetrics(port: number, check: (res: Response) => void = () => undefined): Promise<number[]> {
  const statuses: number[] = [];
  const batch = Math.max(1, SERVER_LIMITS.maxConnections - 2);
  for (let sent = 0; sent < SERVER_LIMITS.requestBurst * 2; sent += batch) {
    await Promise.all(Array.from({ length: batch }, async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { connection: 'close' } });
      await res.arrayBuffer();
      statuses.push(res.status);
      check(res);
    }));
  }
  return statuses;
}

const GET = (path = '/metrics', extra = '') => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

// Found by a mutation audit: the tests read their bounds from SERVER_LIMITS, so a changed constant passed them
// all while the README's table promised the old value.
describe('the limits the README states', () => {
  it('are the constants the server runs with', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const row = (limit: string) => {
      const line = readme.split('\n').find((l) => l.startsWith(`| ${limit} |`));
      expect(line, limit).toBeDefined();
      return line!.split('|')[2]!.trim();
    };
    const L = SERVER_LIMITS;
    expect(row('open connections')).toBe(String(L.maxConnections));
    expect(row('requests per keep-alive connection')).toBe(String(L.maxRequestsPerConnection));
    expect(row('pipelined requests awaiting an answer, per connection')).toBe(String(L.maxPendingPerConnection));
    expect(row('request rate, all connections')).toBe(`${L.requestsPerSecond}/s, bursts of ${L.requestBurst}`);
    expect(row('request headers')).toBe(`${L.maxHeaderBytes / 1024} KiB; ${L.headersTimeoutMs / 1000} s to arrive, ${L.requestTimeoutMs / 1000} s for the whole request`);
    expect(row('response')).toMatch(new RegExp(`^${L.responseTimeoutMs / 1000} s from request to last byte`));
    expect(row('idle keep-alive connection')).toBe(`${L.keepAliveTimeoutMs / 1000} s`);
    expect(row('`/metrics` collection')).toContain(`more than ${L.metricsFloodRequests} scrapes in a second`);
    expect(row('`/metrics` collection')).toContain(`reused for ${L.metricsCacheMs / 1000} s (or ${L.metricsCacheDurationFactor}× the collection time`);
  });
});

describe('telemetry server limits', () => {
  it('collects afresh for an ordinary scrape right after another (bug: a cached second showed stale gauges)', async () => {
    const { counter, metrics } = slowMetrics(0);
    const { port } = await start(metrics);
    for (let i = 0; i < 3; i++) expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    expect(counter.calls).toBe(3);
  });

  it('shares one collection between concurrent scrapes and reuses it shortly after', async () => {
    const { counter, metrics } = slowMetrics(200);
    const { port, server } = await start(metrics);
    const url = `http://127.0.0.1:${port}/metrics`;
    const bodies = await Promise.all(Array.from({ length: 12 }, () => fetch(url).then(async (r) => [r.status, await r.text()])));
    expect(new Set(bodies.map((b) => JSON.stringify(b)))).toEqual(new Set([JSON.stringify([200, '# TYPE up gauge\nup 1\n'])]));
    expect(counter.calls).toBe(1);
    // Straight after: served from the cached result.
    expect((await fetch(url)).status).toBe(200);
    expect(counter.calls).toBe(1);
    expect(server.state().collections).toBe(1);
  });

  it('holds one encoded body, whatever the number of scrapes', async () => {
    const body = `# TYPE big gauge\n${Array.from({ length: 20_000 }, (_, i) => `big{i="${i}"} ${i}`).join('\n')}\n`;
    const { server, port } = await start(async () => body);
    await Promise.all(Array.from({ length: 10 }, () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.arrayBuffer())));
    expect(server.state().cachedBytes).toBe(Buffer.byteLength(body));
  });

  it(`holds at most ${SERVER_LIMITS.maxConnections} connections: each new one replaces the oldest idle one`, async () => {
    const { server, port } = await start(async () => 'up 1\n');
    const many: net.Socket[] = [];
    for (let i = 0; i < SERVER_LIMITS.maxConnections * 3; i++) {
      many.push(await connect(port));
      // Accepted in this order, so the oldest are the ones replaced.
      await waitFor(() => server.state().connections === Math.min(i + 1, SERVER_LIMITS.maxConnections) || undefined);
    }
    const closed = await Promise.all(many.map((s) => closedBy(s, 3_000)));
    expect(closed.map((c, i) => [i, c]).filter(([, c]) => c).map(([i]) => i))
      .toEqual(Array.from({ length: SERVER_LIMITS.maxConnections * 2 }, (_, i) => i));
    expect(server.state().connections).toBe(SERVER_LIMITS.maxConnections);
    // The connections that were kept still work.
    const kept = many.filter((_, i) => !closed[i]);
    kept[0]!.write(GET('/metrics', 'Connection: close\r\n'));
    const reply = await new Promise<string>((resolve) => { let d = ''; kept[0]!.on('data', (c) => { d += c; }).on('close', () => resolve(d)); });
    expect(reply).toMatch(/^HTTP\/1.1 200/);
  });

  it('lets a scraper in while idle and slow-loris connections fill every slot (bug: its connection was reset)', async () => {
    const { server, port } = await start(async () => 'up 1\n');
    const idle = await Promise.all(Array.from({ length: SERVER_LIMITS.maxConnections }, () => connect(port)));
    for (const s of idle.slice(0, 4)) s.write('GET /metrics HTTP/1.1\r\nX-Slow: ');
    await waitFor(() => server.state().connections === SERVER_LIMITS.maxConnections || undefined);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('up 1\n');
    expect(server.state().connections).toBeLessThanOrEqual(SERVER_LIMITS.maxConnections);
    for (const s of idle) s.destroy();
  });

  it('closes a newcomer when every connection is serving a request', async () => {
    const { metrics } = slowMetrics(1_000);
    const { server, port } = await start(metrics);
    const busy = await Promise.all(Array.from({ length: SERVER_LIMITS.maxConnections }, () => connect(port)));
    for (const s of busy) s.write(GET());
    await new Promise((r) => setTimeout(r, 200));
    const late = await connect(port);
    expect(await closedBy(late, 2_000)).toBe(true);
    expect(server.state().connections).toBe(SERVER_LIMITS.maxConnections);
    for (const s of busy) s.destroy();
  });

  it(`closes a connection pipelining more than ${SERVER_LIMITS.maxPendingPerConnection} requests without reading`, async () => {
    const { counter, metrics } = slowMetrics(300);
    const { server, port } = await start(metrics);
    const socket = await connect(port);
    socket.pause();
    // Fewer than the per-connection request cap and well inside the keep-alive timeout: only the
    // pipelining bound can close it.
    socket.write(GET().repeat(20));
    expect(await closedBy(socket, 2_000)).toBe(true);
    expect(counter.calls).toBeLessThanOrEqual(1);
    await waitFor(() => server.state().connections === 0 || undefined);
  });

  it(`ends keep-alive after ${SERVER_LIMITS.maxRequestsPerConnection} requests with Connection: close`, async () => {
    const { port } = await start(async () => 'up 1\n');
    const socket = await connect(port);
    let data = '';
    socket.on('data', (d) => { data += d; });
    const responses = () => (data.match(/^HTTP\/1.1 /gm) ?? []).length;
    for (let i = 1; i <= SERVER_LIMITS.maxRequestsPerConnection; i++) {
      socket.write(GET());
      await waitFor(() => responses() >= i || undefined);
    }
    expect(await closedBy(socket, 3_000)).toBe(true);
    const last = data.slice(data.lastIndexOf('HTTP/1.1 '));
    expect(last).toMatch(/^HTTP\/1.1 200/);
    expect(last.toLowerCase()).toContain('connection: close');
    expect(data.match(/^HTTP\/1.1 200/gm)).toHaveLength(SERVER_LIMITS.maxRequestsPerConnection);
  });

  it(`answers 429 beyond ${SERVER_LIMITS.requestBurst} requests in a burst, and keeps one collection`, async () => {
    const { counter, metrics } = slowMetrics(0);
    const { port } = await start(metrics);
    const began = performance.now();
    const statuses = await floodMetrics(port, (res) => {
      if (res.status === 429) expect(res.headers.get('retry-after')).toBe('1');
    });
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(SERVER_LIMITS.requestBurst);
    // At most one collection per cache period, however many requests came.
    // At most one collection per cache period once the flood is recognised.
    expect(counter.calls).toBeLessThanOrEqual(Math.ceil((performance.now() - began) / SERVER_LIMITS.metricsCacheMs) + SERVER_LIMITS.metricsFloodRequests + 1);
    expect(counter.calls).toBeLessThan(statuses.length / 4);
  });

  // Found by review: one budget for every path, so a /metrics flood answered the liveness probe 429 while the
  // process was idle (six failed probes restart a pod).
  it('keeps answering health probes while /metrics is flooded past its budget (bug: 429)', async () => {
    const health = { service: () => ({ status: 'healthy' }), database: () => ({ status: 'healthy' }) };
    const server = new TelemetryServer({ host: '127.0.0.1', port: 0, metrics: async () => 'up 1\n', logger, health: health as never });
    servers.push(server);
    await server.start();
    const { port } = server.address()!;
    const statuses = await floodMetrics(port);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    for (const route of ['/health', '/health/database?probe=1']) expect((await fetch(`http://127.0.0.1:${port}${route}`)).status, route).toBe(200);
  });

  it('cuts a client that stops reading a response', async () => {
    // Large enough to fill both kernels' socket buffers.
    const body = 'x'.repeat(64 * 1024 * 1024);
    const { server, port } = await start(async () => body);
    const socket = await connect(port);
    socket.pause();
    socket.write(GET());
    await waitFor(() => (server.state().cachedBytes > 0 ? true : undefined));
    expect(server.state().connections).toBe(1);
    // Closed by the response deadline (or socket inactivity) while the client never reads; a paused client
    // cannot see the close, so it is observed on the server's side.
    await waitFor(() => server.state().connections === 0 || undefined, SERVER_LIMITS.responseTimeoutMs + 8_000, 200);
  }, 40_000);

  it('answers 500 and warns when collection throws or rejects; nothing reaches the application', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    try {
      const { port: p1 } = await start(() => { throw new Error('sync boom'); });
      expect((await fetch(`http://127.0.0.1:${p1}/metrics`)).status).toBe(500);
      const { port: p2 } = await start(() => Promise.reject(new Error('async boom')));
      expect((await fetch(`http://127.0.0.1:${p2}/metrics`)).status).toBe(500);
      // A client gone before the answer: nothing is written to a destroyed socket, nothing is thrown.
      const { port: p3 } = await start(slowMetrics(200).metrics);
      const s = await connect(p3);
      s.write(GET());
      s.destroy();
      await new Promise((r) => setTimeout(r, 400));
      expect(warnings.filter((w) => /collection failed/.test(w))).toHaveLength(2);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      process.off('uncaughtException', onUnhandled);
    }
  });

  it('stays within its bounds under a mixed flood', async () => {
    const body = `# TYPE big gauge\n${Array.from({ length: 5_000 }, (_, i) => `big{i="${i}"} ${i}`).join('\n')}\n`;
    const { counter, metrics } = slowMetrics(50, body);
    const { server, port } = await start(metrics);
    const began = performance.now();
    const peak = { connections: 0 };
    const probe = setInterval(() => { peak.connections = Math.max(peak.connections, server.state().connections); }, 5);
    const floods = Array.from({ length: 100 }, async (_, i) => {
      const s = await connect(port).catch(() => undefined);
      if (s === undefined) return;
      if (i % 3 === 0) s.write(GET().repeat(50)); // pipelining
      else if (i % 3 === 1) s.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'); // slow-loris: never finishes
      else { s.pause(); s.write(GET()); } // never reads
      await closedBy(s, 1_500);
    });
    const scrapes = Array.from({ length: 100 }, () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.arrayBuffer()).catch(() => undefined));
    await Promise.all([...floods, ...scrapes]);
    clearInterval(probe);
    expect(peak.connections).toBeLessThanOrEqual(SERVER_LIMITS.maxConnections);
    expect(server.state().cachedBytes).toBe(Buffer.byteLength(body));
    // One collection per cache period (at least ten collection times), not one per scrape.
    const period = Math.max(SERVER_LIMITS.metricsCacheMs, 50 * SERVER_LIMITS.metricsCacheDurationFactor);
    expect(counter.calls).toBeLessThanOrEqual(Math.ceil((performance.now() - began) / period) + SERVER_LIMITS.metricsFloodRequests + 1);
    expect(counter.calls).toBeLessThan(20);
  });
});
