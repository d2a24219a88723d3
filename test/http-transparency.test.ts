// The HTTP stack as the application sees it is the same with and without the preload: wrapper arities, no
// Poolscope property visible on requests or responses, no listener of ours on a response (nor the warning
// that an eleventh one triggered), and spies put later on EventEmitter.prototype.emit and on Express's Layer
// still see every request and every layer.
// The fixture prints one JSON line; both runs must print the same one.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { arrive, exchangeOf, requestExchange, settleRoute } from '../src/http/request-state.js';
import { routeOf, setRoute, setRouteSource } from '../src/http/route.js';
import { find, legacyModule, parseExposition, REGISTER, ROOT, runToExit, value } from './helpers.js';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'http-transparency.cjs');

async function observe(preload: boolean): Promise<Record<string, any>> {
  // Express 4 under its own package name, so that it is hooked as an application's would be.
  const express4 = await legacyModule('express');
  const { code, stdout, stderr } = await runToExit(process.execPath, [...(preload ? ['--import', REGISTER] : []), FIXTURE], {
    env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: '0', EXPRESS4: express4 },
    killAfterMs: 30_000,
  });
  if (code !== 0) throw new Error(`fixture exited ${code}: ${stderr}`);
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('Express, Koa and Fastify as the application sees them', () => {
  // Bugs: wrappers had length 0 (or 3 for Server#emit); Poolscope's symbols were enumerable on requests and
  // responses (util.inspect, deep equality), then still among their own keys (Reflect.ownKeys,
  // Object.getOwnPropertySymbols) once non-enumerable; a 'close' listener of ours on every response made an application's
  // tenth listener trip MaxListenersExceededWarning; the server's emit wrapper bypassed a later spy on
  // EventEmitter.prototype.emit, and Express mount layers kept the Layer method of their mount time.
  it('are the same with the preload (bugs: length 0, symbols among the own keys of requests and responses, a listener per response, spies bypassed)', async () => {
    const plain = await observe(false);
    expect(plain.express.closeListeners).toBe(10);
    expect(plain.express4.closeListeners).toBe(10);
    expect(plain.spied).toContain('Server:request');
    expect(plain.layers).toContain('router');
    expect(plain.warnings).toEqual([]);
    const preloaded = await observe(true);
    expect(preloaded).toEqual(plain);
  });
});

/** Runs a fixture that serves a few requests under the preload and prints its own /metrics; its samples. */
async function fixtureMetrics(fixture: string) {
  const port = await freePort();
  const { code, stdout, stderr } = await runToExit(process.execPath, ['--import', REGISTER, path.join(ROOT, 'test', 'fixtures', fixture)], {
    env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port) },
    killAfterMs: 30_000,
  });
  expect(code, stderr).toBe(0);
  return parseExposition(stdout);
}

describe('HTTPS servers', () => {
  it('record http.server.request.duration with url.scheme https', async () => {
    const samples = await fixtureMetrics('https-app.cjs');
    expect(value(samples, 'http_server_request_duration_seconds_count', { url_scheme: 'https', http_response_status_code: '200' })).toBe(2);
    expect(find(samples, 'http_server_request_duration_seconds_count', { url_scheme: 'http' })).toEqual([]);
  });
});

// Found by running Fastify's suite under the preload: `Fastify({ http2: true })` answered, and no request of
// its reached /metrics; only http.Server and its responses were patched.
describe('HTTP/2 servers', () => {
  it.each([
    ['required (Fastify, hapi)', { HTTP2_REQUIRE: '1' }],
    // Node 20 with no loader thread: no hook sees an ES module import a builtin; found as the first connection arrives.
    ['imported as an ES module', {}],
  ])('record http.server.request.duration on the compatibility API, h2c and TLS, when %s (bugs: not measured at all; then not in the first 5 s; aborted ones as 200)', async (_, env) => {
    const port = await freePort();
    const { code, stdout, stderr } = await runToExit(process.execPath, ['--import', REGISTER, path.join(ROOT, 'test', 'fixtures', 'http2-app.mjs')], {
      env: { ...process.env, ...env, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port) },
      killAfterMs: 30_000,
    });
    expect(code, stderr).toBe(0);
    const samples = parseExposition(stdout);
    for (const scheme of ['http', 'https']) {
      expect(value(samples, 'http_server_request_duration_seconds_count', { url_scheme: scheme, network_protocol_version: '2', http_response_status_code: '200' })).toBe(2);
    }
    // Cancelled by the client before an answer: aborted, not 200 (HTTP/2 emits 'finish' for every closed
    // stream); answered on the stream itself: its own status, not the compatibility object's 200.
    expect(value(samples, 'http_server_request_duration_seconds_count', { url_scheme: 'http', network_protocol_version: '2', error_type: 'aborted' })).toBe(1);
    expect(value(samples, 'http_server_request_duration_seconds_count', { url_scheme: 'http', network_protocol_version: '2', http_response_status_code: '404' })).toBe(1);
    // The core-API server's request is not measured, and that is said once.
    expect(stderr.split('\n').filter((l) => l.includes('HTTP/2'))).toEqual([
      "poolscope: an HTTP/2 server answers on the core API ('stream' events); http.server.request.duration is recorded only for servers with 'request' handlers.",
    ]);
  }, 40_000);
});

describe('http.server.request.duration, however a request ends', () => {
  // The attributes come from what Poolscope keeps for each request as it arrives (src/http/request-state.ts).
  it('records the status once headers were sent, error.type aborted before, the method and scheme as it arrived, _OTHER for unknown methods, checkContinue requests', async () => {
    const samples = await fixtureMetrics('http-outcomes.cjs');
    const count = (labels: Record<string, string>) => value(samples, 'http_server_request_duration_seconds_count', labels);
    expect(count({ http_route: '/ok/:id', http_request_method: 'GET', http_response_status_code: '200' })).toBe(2);
    // A middleware turned POST into DELETE: the route is the DELETE handler's, the method the one that arrived.
    expect(count({ http_route: '/override/:id', http_request_method: 'POST', http_response_status_code: '204' })).toBe(1);
    // Aborted before any header: no status code, error.type aborted.
    const before = find(samples, 'http_server_request_duration_seconds_count', { http_route: '/abort-before/:id' });
    expect(before.map((s) => [s.labels.error_type, s.labels.http_response_status_code, s.value])).toEqual([['aborted', undefined, 1]]);
    // Aborted mid-body: the headers were sent, so the status is known and nothing is an error.
    const after = find(samples, 'http_server_request_duration_seconds_count', { http_route: '/abort-after-headers/:id' });
    expect(after.map((s) => [s.labels.error_type, s.labels.http_response_status_code, s.value])).toEqual([[undefined, '200', 1]]);
    expect(count({ http_request_method: '_OTHER', http_response_status_code: '200' })).toBe(1);
    // Handed on by an HTTPS server to a plain one after 200 ms, its method overridden: one request, as it arrived
    // (bug: recorded as a DELETE over http taking a few ms, the clock restarted by the second 'request').
    const handedOn = { http_request_method: 'POST', url_scheme: 'https' };
    expect(count(handedOn)).toBe(1);
    expect(value(samples, 'http_server_request_duration_seconds_sum', handedOn)).toBeGreaterThanOrEqual(0.2);
    expect(find(samples, 'http_server_request_duration_seconds_count', { http_request_method: 'DELETE', url_scheme: 'http' })).toEqual([]);
    // Answered by a 'checkContinue' listener (bug: never recorded, only 'request' was seen).
    expect(count({ http_request_method: 'PUT', http_response_status_code: '200' })).toBe(1);
  });
});

describe('per-request state', () => {
  it('is kept on any object without changing what it shows, frozen or proxied', () => {
    const req = Object.freeze({ method: 'GET', httpVersion: '1.1' });
    const res = new Proxy({}, {});
    arrive(req, res, 'http');
    expect(exchangeOf(res)).toBe(exchangeOf(req));
    expect(exchangeOf(req)).toMatchObject({ method: 'GET', version: '1.1', scheme: 'http' });
    setRoute(req, '/orders/:id');
    expect(routeOf(req as object)).toBe('/orders/:id');
    expect(Reflect.ownKeys(req)).toEqual(['method', 'httpVersion']);
    expect(Reflect.ownKeys(res)).toEqual([]);
  });

  // Bug: reading the method and version of a strict test double (a Proxy that throws on reads it does not
  // expect) threw out of server.emit('request'), and the handler never ran.
  it('never throws on a request whose properties cannot be read', () => {
    const strict = new Proxy({}, { get: (_t, key) => { throw new Error(`unexpected read of ${String(key)}`); } });
    expect(() => arrive(strict, {}, 'http')).not.toThrow();
  });

  // Bug: Koa's context (and its response body) stayed reachable from the Node request after the response, for
  // as long as the application kept the request.
  it('drops the framework request object once the route is settled, keeping the route', () => {
    const req = {};
    const ctx = { _matchedRoute: '/k/:id' };
    setRouteSource(req, ctx, (from) => (from as typeof ctx)._matchedRoute);
    settleRoute(exchangeOf(req)!);
    expect(exchangeOf(req)).toMatchObject({ from: undefined, reader: undefined, template: '/k/:id' });
    expect(routeOf(req as object)).toBe('/k/:id');
  });

  // Bug: `#field in value` throws on a primitive; a framework hook handed an undefined request (a mock) threw.
  it('tells nothing about, and never throws on, values that are not objects (bug: a TypeError from `in`)', () => {
    for (const v of [undefined, null, 0, 'req', Symbol('req')]) {
      expect(exchangeOf(v as never)).toBeUndefined();
      expect(requestExchange(v as never)).toBeUndefined();
      expect(() => setRoute(v as never, '/x')).not.toThrow();
      expect(() => setRouteSource(v as never, {}, () => '/x')).not.toThrow();
      expect(() => arrive(v as never, v as never, 'http')).not.toThrow();
    }
  });
});

describe('listeners on responses, traces on', () => {
  // Found by adversarial review: upstream's HTTP instrumentation adds a 'close' listener to every response,
  // and a handler with ten of its own got a MaxListenersExceededWarning it never had without the preload.
  it('leave an application\'s ten listeners without a warning (bug: MaxListenersExceededWarning)', async () => {
    const fixture = path.join(ROOT, 'test', 'fixtures', 'response-listeners.cjs');
    const dead = await freePort();
    const r = await runToExit(process.execPath, ['--import', REGISTER, fixture], {
      env: { ...process.env, OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}`, OTEL_EXPORTER_PROMETHEUS_PORT: '0' },
      killAfterMs: 30_000,
    });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ warnings: [] });
  });
});

describe('requests handed to a server by hand', () => {
  // Found by adversarial review: with traces on, upstream's HTTP instrumentation read a hand-made request's
  // socket and response, and server.emit('request', mock, mock) threw where it returns without the preload.
  it('are passed to the handler as without the preload, traces on (bug: threw on a request without a socket)', async () => {
    const fixture = path.join(ROOT, 'test', 'fixtures', 'hand-made-requests.cjs');
    const run = async (args: string[], env: Record<string, string>) => {
      const r = await runToExit(process.execPath, [...args, fixture], { env: { ...process.env, ...env }, killAfterMs: 30_000 });
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout.trim().split('\n').pop()!);
    };
    const plain = await run([], {});
    expect(plain.seen).toHaveLength(4);
    const dead = await freePort();
    expect(await run(['--import', REGISTER], {
      OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${dead}`, OTEL_EXPORTER_PROMETHEUS_PORT: '0',
    })).toEqual(plain);
  });
});

