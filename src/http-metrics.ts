import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ValueType, type Attributes, type Histogram } from '@opentelemetry/api';
import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  type InstrumentationConfig,
} from '@opentelemetry/instrumentation';
import { HTTP_DURATION_BUCKETS } from './semconv.js';
import { kTelemetryServer } from './telemetry-server.js';
import { VERSION } from './version.js';

const require = createRequire(import.meta.url);

const kPatched = Symbol.for('poolscope.http-patched');
const kRoute = Symbol.for('poolscope.http-route');
const kFastifyPatched = Symbol.for('poolscope.fastify-patched');

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'QUERY']);

type RoutedRequest = IncomingMessage & {
  [kRoute]?: string;
  route?: { path?: unknown };
  baseUrl?: string;
};
type Res = ServerResponse & { req?: RoutedRequest };
type ServerProto = { emit: (event: string | symbol, ...args: unknown[]) => boolean; [kPatched]?: unknown };

/** The route template the framework matched, read while the handler is still on the stack. */
function routeOf(req: RoutedRequest | undefined): string | undefined {
  if (req === undefined) return undefined;
  const explicit = req[kRoute];
  if (explicit !== undefined) return explicit;
  // Express 4/5 set req.route to the matched Route and req.baseUrl to the router's mount path.
  const path = req.route?.path;
  if (typeof path === 'string') return `${req.baseUrl ?? ''}${path}` || '/';
  if (path instanceof RegExp) return `${req.baseUrl ?? ''}${String(path)}`;
  return undefined;
}

/**
 * `http.server.request.duration` for every Node HTTP(S) server, without spans or context propagation:
 * the server's `emit('request')` starts the clock, the response's `close` stops it. `http.route` comes
 * from the framework: Express leaves the matched route on the request; Fastify is given an `onRequest`
 * hook that records `routeOptions.url`. The route is read when the response head is written, while the
 * router state is still that of the handling route.
 *
 * This replaces instrumentation-http for metrics because its per-request span machinery and context
 * propagation cost a quarter of an Express service's throughput (see BENCHMARKS.md); with traces on,
 * instrumentation-http still produces the spans and its duplicate metric is dropped by a View.
 */
export interface HttpServerMetricsConfig extends InstrumentationConfig {
  /**
   * Give Fastify apps an `onRequest` hook that records the matched route.
   * @default true
   */
  fastifyRoutes?: boolean;
}

export class HttpServerMetricsInstrumentation extends InstrumentationBase<HttpServerMetricsConfig> {
  declare private _duration: Histogram | undefined;
  declare private _active: boolean;
  // Declared, not initialised: the base constructor calls enable() before field initialisers would run.
  declare private _attributeCache: Map<string, Attributes> | undefined;
  declare private _restore: Array<() => void> | undefined;

  private get attributeCache(): Map<string, Attributes> {
    return (this._attributeCache ??= new Map());
  }

  private get restore(): Array<() => void> {
    return (this._restore ??= []);
  }

  constructor(config: HttpServerMetricsConfig = {}) {
    super('poolscope-http', VERSION, config);
  }

  protected override _updateMetricInstruments(): void {
    this._duration = this.meter.createHistogram('http.server.request.duration', {
      unit: 's',
      valueType: ValueType.DOUBLE,
      description: 'Duration of HTTP server requests.',
      advice: { explicitBucketBoundaries: HTTP_DURATION_BUCKETS },
    });
  }

  override enable(): void {
    this._active = true;
    super.enable();
    // Builtins are process-wide singletons: patching their prototypes covers CJS and ESM importers alike,
    // with no loader hook.
    this.patchServer(require('node:http').Server.prototype as ServerProto, 'http');
    this.patchServer(require('node:https').Server.prototype as ServerProto, 'https');
    this.patchWriteHead(require('node:http').ServerResponse.prototype as ServerResponse);
  }

  override disable(): void {
    this._active = false;
    super.disable();
    for (const undo of this.restore.splice(0).reverse()) undo();
  }

  protected override init() {
    if (this.getConfig().fastifyRoutes === false) return [];
    return [
      new InstrumentationNodeModuleDefinition('fastify', ['>=4.0.0 <6'],
        (exports: unknown) => this.patchFastify(exports), (exports: unknown) => exports),
    ];
  }

  private patchServer(proto: ServerProto, scheme: 'http' | 'https'): void {
    if (Object.prototype.hasOwnProperty.call(proto, kPatched)) return;
    const instrumentation = this;
    const hadOwnEmit = Object.prototype.hasOwnProperty.call(proto, 'emit');
    const original = proto.emit;
    Object.defineProperty(proto, kPatched, { value: true, configurable: true });
    proto.emit = function emit(this: ServerProto & { [kTelemetryServer]?: boolean }, event: string | symbol, ...args: unknown[]) {
      if (event === 'request' && instrumentation._active && this[kTelemetryServer] !== true) {
        instrumentation.onRequest(args[0] as RoutedRequest, args[1] as Res, scheme);
      }
      return original.call(this, event, ...args);
    };
    this.restore.push(() => {
      if (hadOwnEmit) proto.emit = original;
      else delete (proto as Partial<ServerProto>).emit;
      delete proto[kPatched];
    });
  }

  private patchWriteHead(proto: ServerResponse): void {
    const p = proto as unknown as Record<PropertyKey, unknown>;
    if (Object.prototype.hasOwnProperty.call(p, kPatched)) return;
    const original = proto.writeHead as (...args: unknown[]) => ServerResponse;
    Object.defineProperty(p, kPatched, { value: true, configurable: true });
    proto.writeHead = function writeHead(this: Res, ...args: unknown[]) {
      const req = this.req;
      if (req !== undefined && req[kRoute] === undefined) {
        const route = routeOf(req);
        if (route !== undefined) req[kRoute] = route;
      }
      return original.apply(this, args);
    } as ServerResponse['writeHead'];
    this.restore.push(() => {
      proto.writeHead = original as ServerResponse['writeHead'];
      delete p[kPatched];
    });
  }

  private onRequest(req: RoutedRequest, res: Res, scheme: 'http' | 'https'): void {
    if (res === undefined || typeof res.once !== 'function') return;
    const start = performance.now();
    res.once('close', () => {
      try {
        const seconds = (performance.now() - start) / 1000;
        this._duration?.record(seconds, this.attributesFor(req, res, scheme));
      } catch {
        // recording must never disturb the response
      }
    });
  }

  private attributesFor(req: RoutedRequest, res: Res, scheme: string): Attributes {
    const method = KNOWN_METHODS.has(req.method ?? '') ? req.method! : '_OTHER';
    const status = res.headersSent ? res.statusCode : 0;
    const route = req[kRoute] ?? routeOf(req);
    const key = `${method} ${status} ${scheme} ${route ?? ''}`;
    let attrs = this.attributeCache.get(key);
    if (attrs === undefined) {
      attrs = Object.freeze({
        'http.request.method': method,
        'url.scheme': scheme,
        'network.protocol.version': req.httpVersion,
        ...(status === 0 ? { 'error.type': 'aborted' } : { 'http.response.status_code': status }),
        ...(status >= 500 ? { 'error.type': String(status) } : {}),
        ...(route === undefined ? {} : { 'http.route': route }),
      });
      // Routes are the application's templates, never raw paths, but cap the cache all the same.
      if (this.attributeCache.size >= 2_000) this.attributeCache.clear();
      this.attributeCache.set(key, attrs);
    }
    return attrs;
  }

  private patchFastify(exports: unknown): unknown {
    const wrap = (factory: unknown): unknown => {
      if (typeof factory !== 'function') return factory;
      const f = factory as ((...args: unknown[]) => unknown) & Record<PropertyKey, unknown>;
      if (f[kFastifyPatched] !== undefined) return f[kFastifyPatched];
      const wrapped = function fastify(this: unknown, ...args: unknown[]) {
        const app = f.apply(this, args) as { addHook?: (name: string, hook: unknown) => unknown } | undefined;
        try {
          app?.addHook?.('onRequest', (request: { raw?: RoutedRequest; routeOptions?: { url?: string } }, _reply: unknown, done: () => void) => {
            const url = request.routeOptions?.url;
            if (request.raw !== undefined && typeof url === 'string') request.raw[kRoute] = url;
            done();
          });
        } catch {
          // an unexpected fastify shape: no routes, but never a broken app
        }
        return app;
      };
      for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(f))) {
        if (key !== 'length' && key !== 'name' && key !== 'prototype') Object.defineProperty(wrapped, key, descriptor);
      }
      for (const key of ['fastify', 'default']) if (f[key] === f) (wrapped as unknown as Record<string, unknown>)[key] = wrapped;
      Object.defineProperty(f, kFastifyPatched, { value: wrapped });
      return wrapped;
    };
    if (typeof exports === 'function') return wrap(exports);
    const ns = exports as Record<string, unknown> | null;
    if (ns !== null && typeof ns === 'object') {
      for (const key of ['default', 'fastify']) if (typeof ns[key] === 'function') ns[key] = wrap(ns[key]);
    }
    return exports;
  }
}
