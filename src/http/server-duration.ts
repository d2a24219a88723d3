import diagnosticsChannel from 'node:diagnostics_channel';
import { createRequire } from 'node:module';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ValueType, type Attributes, type Histogram } from '@opentelemetry/api';
import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  type InstrumentationConfig,
} from '@opentelemetry/instrumentation';
import { createLogger, type PoolscopeLogger } from '../logger.js';
import { LocalHistogram, LocalMetricProducer, type HistogramCell } from '../metrics/local-histogram.js';
import { HTTP_DURATION_BUCKETS } from '../semconv.js';
import { markInUse, processState } from '../process-state.js';
import { toolProcess, toolTraffic } from '../process-role.js';
import { monotonicNow, nativeTimers } from '../native-timers.js';
import { kTelemetryServer } from '../server/telemetry-server.js';
import { VERSION } from '../version.js';
import { expressDefinition } from './express.js';
import { fastifyDefinition } from './fastify.js';
import { hapiDefinition } from './hapi.js';
import { koaDefinition } from './koa.js';
import { nestExpressDefinition } from './nest.js';
import { routeCap, routeOf, type RoutedRequest } from './route.js';
import { arrive, exchangeOf, settleRoute, type Exchange } from './request-state.js';
import { patchMarks, wrapEmit } from './wrap.js';

const require = createRequire(import.meta.url);

/** One label set of the duration histogram: its attributes and, with local aggregation, its cell. */
interface RequestAttributes {
  key: string;
  method: string;
  version: string;
  scheme: string;
  attributes: Attributes;
  cell: HistogramCell | undefined;
}

/**
 * The status a response sent: an HTTP/2 response's stream may have been answered directly (`res.stream.respond()`),
 * and then the compatibility object's own statusCode still says 200.
 */
function sentStatus(res: ServerResponse): number {
  const sent = (res as { stream?: { sentHeaders?: Record<string, unknown> } }).stream?.sentHeaders?.[':status'];
  return typeof sent === 'number' ? sent : typeof sent === 'string' && /^\d{3}$/.test(sent) ? Number(sent) : res.statusCode;
}

/** Most cached label sets; bounded by MAX_HTTP_ROUTES × methods × statuses already, cleared rather than grown past this. */
const MAX_CACHED_ATTRIBUTES = 2_000;
/** The cache's key for "no route matched", apart from any template (even an empty one). */
const NO_ROUTE = Symbol('no route');

/**
 * Every module the route sources hook. ESM applications only reach a module's exports through the
 * import-in-the-middle loader hook, whose include list (src/register.ts) must name each of these.
 */
export const HTTP_ROUTE_MODULES = ['express', 'fastify', 'koa', '@hapi/hapi', '@nestjs/platform-express'] as const;

/** The prototypes whose `emit` is patched, shared by every Poolscope copy: each is patched once per process. */
const patched = patchMarks<true>('poolscope.http-patched-prototypes');

type Req = IncomingMessage & RoutedRequest;
type ServerProto = { emit: (event: string | symbol, ...args: unknown[]) => boolean; listenerCount(event: string): number };

/**
 * `http.server.request.duration` for every Node HTTP(S) server, without spans or context propagation:
 * the server's `emit('request')` starts the clock, the response's `close` stops it. `http.route` is the
 * template of the route the framework matched (src/http/{express,fastify,koa,hapi,nest}.ts), never a
 * request's path; no route matched, no `http.route`.
 *
 * This replaces instrumentation-http for metrics because its per-request span machinery and context
 * propagation cost a quarter of an Express service's throughput (see BENCHMARKS.md); with traces on,
 * instrumentation-http still produces the spans and its duplicate metric is dropped by a View.
 */
export interface HttpServerMetricsConfig extends InstrumentationConfig {
  /**
   * Aggregate the duration histogram in this instrumentation instead of the SDK; readers then need
   * {@link HttpServerMetricsInstrumentation.metricProducer} (`startPoolscope` passes it).
   * @default false
   */
  localAggregation?: boolean;
  /**
   * Give Fastify apps an `onRequest` hook that records the matched route.
   * @default true
   */
  fastifyRoutes?: boolean;
  /**
   * Leave out the requests a test runner or dev server (process-role.ts) serves before it uses pg: under a global
   * NODE_OPTIONS they are not the service's, and over OTLP they were pushed as its request durations. The
   * preload sets it; `startPoolscope()` in a process is that process's own choice.
   * @default false
   */
  serviceOnly?: boolean;
}

export class HttpServerMetricsInstrumentation extends InstrumentationBase<HttpServerMetricsConfig> {
  declare private _duration: Histogram | undefined;
  declare private _active: boolean;
  // Declared, not initialised: the base constructor calls enable() before field initialisers would run.
  /**
   * Label sets by route (NO_ROUTE for none), then status code, then a short list told apart by method, HTTP
   * version and scheme. Looked up without building a key: a concatenated key string, flattened and hashed
   * on every response, was the largest cost of ours in the realistic benchmark's profile.
   */
  declare private _attributeCache: Map<string | symbol, Map<number, RequestAttributes[]>> | undefined;
  declare private _cachedAttributes: number;
  declare private _local: { histogram: LocalHistogram; producer: LocalMetricProducer } | undefined;
  declare private _log: PoolscopeLogger | undefined;
  declare private _toolSaid: boolean | undefined;
  declare private _servingCheck: boolean | undefined;
  declare private _restore: Array<() => void> | undefined;

  private get attributeCache(): Map<string | symbol, Map<number, RequestAttributes[]>> {
    return (this._attributeCache ??= new Map());
  }

  private get restore(): Array<() => void> {
    return (this._restore ??= []);
  }

  constructor(config: HttpServerMetricsConfig = {}) {
    super('poolscope-http', VERSION, config);
  }

  /** True once a request was measured (its label set cached): the process serves HTTP. */
  get sawRequests(): boolean {
    return (this._cachedAttributes ?? 0) > 0;
  }

  /**
   * With `localAggregation`, the producer readers need for the duration histogram. The SDK's histogram
   * hashed the attribute set on every request (sorting its keys and JSON-encoding it), which the realistic
   * benchmark's profile showed; the local one records into a cell kept with the cached attributes.
   */
  get metricProducer(): LocalMetricProducer | undefined {
    return this.local()?.producer;
  }

  private local(): { histogram: LocalHistogram; producer: LocalMetricProducer } | undefined {
    if (this._local === undefined && this.getConfig().localAggregation === true) {
      const histogram = new LocalHistogram('http.server.request.duration', 'Duration of HTTP server requests.', 's', HTTP_DURATION_BUCKETS);
      this._local = { histogram, producer: new LocalMetricProducer([histogram], 'poolscope-http') };
    }
    return this._local;
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
    this.patchResponse(require('node:http').ServerResponse.prototype as ServerProto);
    this.watchHttp2();
    this.watchListen();
  }

  /**
   * An application server listens: under the preload, the telemetry port is bound now (process-state.ts), unless
   * this process is a test runner or a dev server (process-role.ts), which becomes the service only by using pg.
   */
  private serving(): void {
    if (processState.inUse === true || this._servingCheck === true) return;
    // Under `node --test`, judged a turn later: Node reports a listen from inside listen(), and a test file that
    // loads its application (listening as it loads) before node:test was taken for a service. Anywhere else at
    // once: a probe right after the application listens must find the port bound.
    if (process.env.NODE_TEST_CONTEXT === undefined && !process.execArgv.includes('--test')) return this.judgeServing();
    this._servingCheck = true;
    nativeTimers.setImmediate(() => {
      this._servingCheck = false;
      this.judgeServing();
    });
  }

  private judgeServing(): void {
    if (processState.inUse === true) return;
    const tool = toolProcess();
    if (tool === undefined) return markInUse();
    if (this._toolSaid === true) return;
    this._toolSaid = true;
    (this._log ??= createLogger()).debug(`poolscope: this process is ${tool}, whose HTTP servers are not the service: ` +
      'the telemetry port is bound if it uses pg (or with POOLSCOPE_SERVER_START=immediate)');
  }

  /**
   * An application server that starts listening says the process is the service (process-state.ts). Servers
   * whose prototype was patched say so in `emit` too; this covers the rest where Node has the channel (20.16+):
   * an ES module's HTTP/2 server on Node 20 is patched only at its first connection, and a readiness probe on
   * the telemetry port, never bound meanwhile, kept that connection from coming. Plain `net` servers are not
   * services of their own: a cluster's primary holds its workers' ports with them, and tsx its IPC.
   */
  private watchListen(): void {
    const channel = 'tracing:net.server.listen:asyncEnd';
    const plain = (require('node:net') as typeof import('node:net')).Server.prototype;
    const onListen = (message: unknown) => {
      const server = (message as { server?: { listening?: boolean; [kTelemetryServer]?: boolean } } | null)?.server;
      if (this._active && server?.listening === true && server[kTelemetryServer] !== true && Object.getPrototypeOf(server) !== plain) this.serving();
    };
    diagnosticsChannel.subscribe(channel, onListen);
    this.restore.push(() => diagnosticsChannel.unsubscribe(channel, onListen));
  }

  /**
   * An ES module's `import http2 from 'node:http2'` passes none of our hooks on runtimes without synchronous
   * hooks when no loader thread runs (Node 20 by default): Node loads the builtin itself. A server serves
   * nothing before a connection reaches it, so whether Node has loaded http2 is checked now and as each TCP
   * connection arrives (the `net.server.socket` channel), until it has. (A check every 5 s missed the requests
   * of the first seconds.)
   */
  private watchHttp2(): void {
    const check = (): boolean => {
      const list = (process as { moduleLoadList?: unknown }).moduleLoadList;
      if (!Array.isArray(list) || !list.includes('NativeModule http2')) return false;
      this.patchHttp2(require('node:http2') as typeof import('node:http2'));
      return true;
    };
    if (check()) return;
    const onConnection = () => {
      if (this._active && check()) diagnosticsChannel.unsubscribe('net.server.socket', onConnection);
    };
    diagnosticsChannel.subscribe('net.server.socket', onConnection);
    this.restore.push(() => diagnosticsChannel.unsubscribe('net.server.socket', onConnection));
  }

  override disable(): void {
    this._active = false;
    super.disable();
    for (const undo of this.restore.splice(0).reverse()) undo();
  }

  protected override init(): InstrumentationNodeModuleDefinition[] {
    return [
      // HTTP/2 when the application loads it: loading it up front cost 7 ms of every process's start.
      new InstrumentationNodeModuleDefinition('http2', ['*'], (exports: unknown) => {
        this.patchHttp2(exports as typeof import('node:http2'));
        return exports;
      }, (exports: unknown) => exports),
      expressDefinition(),
      nestExpressDefinition(),
      koaDefinition(),
      hapiDefinition(),
      ...(this.getConfig().fastifyRoutes === false ? [] : [fastifyDefinition()]),
    ];
  }

  /**
   * HTTP/2 servers through the compatibility API (`'request'` handlers: Fastify's `http2: true`, hapi and
   * Express on an http2 listener). Their classes are not exported; an unlistened server of each kind shows its
   * prototype. A server answering on the core API (`'stream'` handlers, no request objects) is not measured,
   * and said so once.
   */
  private patchHttp2(http2: typeof import('node:http2')): void {
    if (!this._active || typeof http2?.createServer !== 'function') return;
    try {
      this.patchServer(Object.getPrototypeOf(http2.createServer()) as ServerProto, 'http');
      this.patchServer(Object.getPrototypeOf(http2.createSecureServer()) as ServerProto, 'https');
      this.patchResponse(http2.Http2ServerResponse.prototype as unknown as ServerProto);
    } catch {
      // an http2 module that is not Node's: left unmeasured
    }
  }

  private patchServer(proto: ServerProto, scheme: 'http' | 'https'): void {
    const instrumentation = this;
    this.patchEmit(proto, (original) => function emit(this: ServerProto, event: string | symbol, req?: unknown, res?: unknown) {
      // 'checkContinue' and 'checkExpectation' hand a request to their own listeners instead of 'request'.
      if ((event === 'request' || event === 'checkContinue' || event === 'checkExpectation') && instrumentation._active &&
        req !== null && typeof req === 'object' && res !== null && typeof res === 'object') {
        // Before any listener runs (request-state.ts): the clock starts.
        arrive(req, res, scheme);
      } else if (event === 'stream' && !processState.http2CoreApiSaid && instrumentation._active && this.listenerCount('request') === 0) {
        // Once per process: a gRPC server streams for its whole life, and the logger repeats a line every minute.
        processState.http2CoreApiSaid = true;
        (instrumentation._log ??= createLogger()).warn('http2-core-api', 'poolscope: an HTTP/2 server answers on the core ' +
          'API (\'stream\' events); http.server.request.duration is recorded only for servers with \'request\' handlers.');
      } else if (event === 'listening') {
        instrumentation.serving();
      }
      // `arguments` rather than rest and spread: no array built for every event every server emits.
      // eslint-disable-next-line prefer-rest-params
      return original().apply(this, arguments as unknown as [string | symbol, ...unknown[]]);
    });
  }

  /**
   * The clock stops where every response emits 'close', in the prototype's own emit, process-wide: a
   * listener per response cost an addListener call on every request, counted against the application's
   * listener limit (an application adding ten 'close' listeners got a MaxListenersExceededWarning), and
   * showed in `res.listenerCount('close')`.
   */
  private patchResponse(proto: ServerProto): void {
    const instrumentation = this;
    this.patchEmit(proto, (original) => function emit(this: ServerResponse, event: string | symbol) {
      if (event === 'close') {
        const exchange = exchangeOf(this);
        if (exchange !== undefined) {
          // Only a response that was sent ends the handling: a handler whose client gave up runs on for it.
          if (exchange.finished) exchange.closed = true;
          if (exchange.start !== undefined) instrumentation.finish(this, exchange, exchange.start);
        }
      } else if (event === 'finish' && (this as { writableEnded?: boolean }).writableEnded !== false) {
        // HTTP/2's compatibility layer emits 'finish' for every stream that closes, aborted ones included.
        const exchange = exchangeOf(this);
        if (exchange !== undefined) exchange.finished = true;
      }
      // eslint-disable-next-line prefer-rest-params
      return original().apply(this, arguments as unknown as [string | symbol, ...unknown[]]);
    });
  }

  /**
   * Wraps a builtin prototype's `emit` once per process. Undone on disable, unless someone wrapped on top of
   * ours: it then stays, inert while disabled.
   */
  private patchEmit(proto: ServerProto, make: Parameters<typeof wrapEmit>[1]): void {
    if (patched.has(proto)) return;
    patched.set(proto, true);
    const undo = wrapEmit(proto, make);
    this.restore.push(() => { if (undo()) patched.delete(proto); });
  }

  private finish(res: ServerResponse, exchange: Exchange, start: number): void {
    // An application that emits 'close' itself a second time does not record the request twice.
    exchange.start = undefined;
    try {
      settleRoute(exchange);
      if (!this._active) return;
      if (this.getConfig().serviceOnly === true && toolTraffic()) return;
      const seconds = (monotonicNow() - start) / 1000;
      // Headers sent: a finished response sent them; one closed before finishing is asked.
      const status = exchange.finished || res.headersSent ? sentStatus(res) : 0;
      const entry = this.attributesFor(exchange.req as Req, exchange.method, status, exchange.scheme, exchange.version);
      const local = this._local;
      if (local !== undefined) (entry.cell ??= local.histogram.cell(entry.key, () => entry.attributes)).record(seconds);
      else this._duration?.record(seconds, entry.attributes);
    } catch {
      // recording must never disturb the response
    }
  }

  private attributesFor(req: Req, method: string, status: number, scheme: string, version: string): RequestAttributes {
    const route = routeOf(req);
    let byStatus = this.attributeCache.get(route ?? NO_ROUTE);
    let list = byStatus?.get(status);
    if (list !== undefined) {
      for (let i = 0; i < list.length; i++) {
        const e = list[i]!;
        if (e.method === method && e.version === version && e.scheme === scheme) return e;
      }
    }
    const label = route === undefined ? undefined : routeCap().admit(route);
    const attributes = Object.freeze({
      'http.request.method': method,
      'url.scheme': scheme,
      'network.protocol.version': version,
      ...(status === 0 ? { 'error.type': 'aborted' } : { 'http.response.status_code': status }),
      ...(status >= 500 ? { 'error.type': String(status) } : {}),
      ...(label === undefined ? {} : { 'http.route': label }),
    });
    if ((this._cachedAttributes ?? 0) >= MAX_CACHED_ATTRIBUTES) {
      this.attributeCache.clear();
      this._cachedAttributes = 0;
      byStatus = undefined;
      list = undefined;
    }
    if (byStatus === undefined) this.attributeCache.set(route ?? NO_ROUTE, (byStatus = new Map()));
    if (list === undefined) byStatus.set(status, (list = []));
    // The histogram cell is keyed by the label set (an overflowed route shares the overflow's cell).
    const entry: RequestAttributes = { key: `${method} ${status} ${scheme} ${version} ${label ?? ''}`, method, version, scheme, attributes, cell: undefined };
    list.push(entry);
    this._cachedAttributes = (this._cachedAttributes ?? 0) + 1;
    return entry;
  }

}
