import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo, Socket } from 'node:net';
import { writeHealth, type HealthMonitor } from '../health/health.js';
import { errorText, type PoolscopeLogger } from '../logger.js';
import { SERVER_LIMITS } from './limits.js';
import { SharedScrape } from './shared-scrape.js';
import { TokenBucket } from './token-bucket.js';
import { nativeTimers } from '../native-timers.js';

// Required, not imported: Node 22 builds an ES module's view of node:http by reading every export, and its lazy
// WebSocket getter loads undici, which needs WebAssembly; under --jitless (or --no-expose-wasm) every process
// with the preload, npm and `node -p` included, died of a ReferenceError.
const { createServer } = createRequire(import.meta.url)('node:http') as typeof import('node:http');
/**
 * The server's own `emit`: agents trace and time requests by wrapping `http.Server.prototype.emit` (OpenTelemetry's
 * instrumentation-http, dd-trace, Elastic APM), and an application's own SDK traced every scrape and health
 * probe of Poolscope's as the application's traffic (a span and an `http.server.request.duration` point each).
 * Poolscope's own wrappers there (request durations, the service's first listen, traces) are passed by the same
 * way, so they need no test for this server.
 */
const { emit: plainEmit } = (createRequire(import.meta.url)('node:events') as typeof import('node:events')).EventEmitter.prototype;
/** How often a port another process holds is tried again. */
const PORT_RETRY_MS = 5_000;

/** Marks our own server, so that its listen (seen on Node's net channel) does not read as the service's. */
export const kTelemetryServer = Symbol.for('poolscope.telemetry-server');

const kPending = Symbol('poolscope.pending');
const kServed = Symbol('poolscope.served');
type CountedSocket = Socket & { [kPending]?: number; [kServed]?: number };

export interface TelemetryServerOptions {
  host: string;
  port: number;
  /** Produces the Prometheus exposition; omitted when the Prometheus exporter is off. */
  metrics?: () => Promise<string>;
  /** Serves the health routes; omitted when they are off. */
  health?: HealthMonitor;
  logger: PoolscopeLogger;
  /**
   * When a failure to bind is said: `say` is called once the process does something the server was for (a
   * pool, a request); returns the cancel, called on close. Default: at once.
   */
  announce?: (say: () => void) => () => void;
  /**
   * When the port is bound: `listen` is called once the process turns out to need the server; returns the
   * cancel, called on close. Default: at once.
   */
  startWhen?: (listen: () => void) => () => void;
}

/** What the server holds right now; every number is bounded by {@link SERVER_LIMITS}. */
export interface TelemetryServerState {
  connections: number;
  cachedBytes: number;
  collecting: boolean;
  collections: number;
}

/**
 * The telemetry HTTP server: `/metrics`, `/health`, `/health/database`, nothing else. It runs inside the
 * application, so it is built to be unable to hurt it: connections, requests per connection, pipelining,
 * request rate, header size and every phase's time are capped (see limits.ts); scrapes share one
 * collection; server and sockets are unref'd so they never keep the process alive; and a failure to bind
 * or to answer is a warning, never an exception: the application runs on without it.
 */
export class TelemetryServer {
  private server: Server | undefined;
  private readonly scrape: SharedScrape | undefined;
  private readonly bucket = new TokenBucket(SERVER_LIMITS.requestsPerSecond, SERVER_LIMITS.requestBurst);
  /**
   * The health routes' own budget, as large again: with one bucket a /metrics flood answered liveness probes
   * 429 while the process was idle, enough failed probes to restart a healthy pod (found by review).
   */
  private readonly healthBucket = new TokenBucket(SERVER_LIMITS.requestsPerSecond, SERVER_LIMITS.requestBurst);
  private readonly sockets = new Set<Socket>();
  private cancelAnnounce: (() => void) | undefined;
  /** A start that waits for `startWhen`: its cancel, and the resolve of the promise start() returned. */
  private pendingStart: { cancel: () => void; resolve: () => void } | undefined;
  /** The next attempt at a port another process holds; attempts so far; whether the port-taken line was said. */
  private retry: ReturnType<typeof setTimeout> | undefined;
  private listens = 0;
  private announced = false;
  private takenSaid = false;
  private closed = false;

  constructor(private readonly options: TelemetryServerOptions) {
    this.scrape = options.metrics === undefined ? undefined : new SharedScrape(options.metrics);
  }

  /** Binds the port, at once or when `startWhen` says; resolves once listening, given up, or closed unstarted. */
  start(): Promise<void> {
    const { startWhen } = this.options;
    if (startWhen === undefined) return this.listen();
    return new Promise((resolve) => this.startOn(startWhen, resolve));
  }

  /** Starts when `trigger` calls back, unless another start (or a release) came first. */
  private startOn(trigger: (listen: () => void) => () => void, resolve: () => void): void {
    // Recorded before the trigger runs, since it may call back at once; the cancel is filled in after.
    const pending = { cancel: () => {}, resolve };
    this.pendingStart = pending;
    // A trigger cancelled while it calls its listeners back (whenInUse's) may still call: only the current one counts.
    pending.cancel = trigger(() => { if (this.pendingStart === pending) this.startNow(); });
  }

  /**
   * Gives the port up, stops trying to take it from the process that holds it, or puts off a start not made
   * yet, and binds it when `until` calls back (see cluster-primary.ts). Open connections are closed with it: a
   * scrape in flight fails, as against a restarted process.
   */
  release(until: (listen: () => void) => () => void): void {
    if (this.closed) return;
    if (this.retry !== undefined) nativeTimers.clearTimeout(this.retry);
    this.retry = undefined;
    // A port-taken line not said yet would be about a port this process no longer wants.
    this.cancelAnnounce?.();
    this.cancelAnnounce = undefined;
    const server = this.server;
    this.server = undefined;
    if (server !== undefined) {
      server.close();
      for (const socket of this.sockets) socket.destroy();
    }
    // A start still waiting (its `ready` promise with it) now waits for `until` instead.
    const waiting = this.pendingStart;
    waiting?.cancel();
    this.startOn(until, waiting?.resolve ?? (() => {}));
  }

  /** Whether the port is bound by this process now. */
  get listening(): boolean {
    return this.server?.listening === true;
  }

  /** Binds now if `startWhen` has not said so yet. */
  startNow(): void {
    const pending = this.pendingStart;
    if (pending === undefined) return;
    this.pendingStart = undefined;
    pending.cancel();
    void this.listen().then(pending.resolve);
  }

  private listen(): Promise<void> {
    const { host, port, logger } = this.options;
    const retrying = this.listens++ > 0;
    const server = createServer({
      maxHeaderSize: SERVER_LIMITS.maxHeaderBytes,
      connectionsCheckingInterval: SERVER_LIMITS.connectionsCheckingIntervalMs,
    }, (req, res) => this.handle(req, res));
    Object.defineProperty(server, kTelemetryServer, { value: true });
    Object.defineProperty(server, 'emit', { value: plainEmit, writable: true, configurable: true });
    server.requestTimeout = SERVER_LIMITS.requestTimeoutMs;
    server.headersTimeout = SERVER_LIMITS.headersTimeoutMs;
    server.keepAliveTimeout = SERVER_LIMITS.keepAliveTimeoutMs;
    // Socket inactivity: a client that neither sends nor reads is destroyed by Node's default handler.
    server.timeout = SERVER_LIMITS.responseTimeoutMs;
    server.maxRequestsPerSocket = SERVER_LIMITS.maxRequestsPerConnection;
    // Not server.maxConnections: Node then closes every connection beyond the cap, so a flood of idle
    // connections kept Prometheus out (the abuse benchmark's scrape got ECONNRESET). Instead a new
    // connection takes the slot of the oldest one with no request in progress (idle keep-alive, slow-loris
    // headers, never a word); only when every slot is serving a request is the newcomer closed.
    server.on('connection', (socket: Socket) => {
      socket.unref();
      if (this.sockets.size >= SERVER_LIMITS.maxConnections && !this.evictIdle()) {
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server = server;
    return new Promise((resolve) => {
      const onError = (err: NodeJS.ErrnoException) => {
        resolve();
        // Released (or closed) while binding: the outcome is no longer this server's.
        if (this.server !== server) return;
        this.server = undefined;
        const taken = err.code === 'EADDRINUSE';
        // A port another process holds is tried again: a CLI that used pg while the service started (a migration,
        // an import) held it, and once it exited, nothing served /metrics and /health for the service's life.
        if (taken && !this.closed) {
          this.retry = nativeTimers.setTimeout(() => { this.retry = undefined; void this.listen(); }, PORT_RETRY_MS);
          this.retry.unref();
        }
        // Said once: at once for any other failure, and for a port another process holds at the first retry that
        // finds it still held, so a CLI that used pg while the service held the port (a migration, an import) and
        // exits within that stays quiet. Its line read as if it were one of several processes of the service.
        if (this.announced || (taken && !retrying)) return;
        this.announced = true;
        const reason = taken ? 'is already in use' : `cannot be bound (${err.code ?? err.message})`;
        const until = taken ? ` while it is (tried again every ${PORT_RETRY_MS / 1000} s)` : '';
        const say = () => {
          this.takenSaid = true;
          logger.warn('server:listen', `poolscope: ${host}:${port} (OTEL_EXPORTER_PROMETHEUS_HOST/_PORT) ${reason}; ` +
            `/metrics and /health are not served by this process${until}. The application keeps running. (Several processes ` +
            'or exporters on one port, such as an exporter of the application\'s own (an OpenTelemetry SDK\'s PrometheusExporter) ' +
            'or cluster workers: give each its own port, or push with OTLP.)');
        };
        if (this.options.announce === undefined) say();
        else this.cancelAnnounce = this.options.announce(say);
      };
      server.once('error', onError);
      // A small accept backlog: connections beyond it wait in the client's kernel, not in ours. Exclusive: in
      // a cluster worker, a shared handle would hand each scrape to whichever worker's turn it was, each with
      // counters of its own; one worker serves, and the others say the port is taken.
      server.listen({ port, host, backlog: 64, exclusive: true }, () => {
        server.off('error', onError);
        if (this.server !== server) {
          server.close();
          resolve();
          return;
        }
        // A late socket error must never become an uncaught exception in the host app.
        server.on('error', (err) => logger.warn('server:error', `poolscope: telemetry server error: ${errorText(err)}`));
        server.unref();
        const bound = this.address();
        logger.debug(`poolscope: serving /metrics and /health on ${bound?.host ?? host}:${bound?.port ?? port}`);
        if (retrying) {
          this.cancelAnnounce?.();
          this.cancelAnnounce = undefined;
          if (this.takenSaid) logger.warn('server:listen-later', `poolscope: ${host}:${port} is free now: /metrics and /health are served by this process.`);
        }
        resolve();
      });
    });
  }

  /** Bound address, or undefined when the server is not listening. */
  address(): { host: string; port: number } | undefined {
    const addr = this.server?.address() as AddressInfo | null | undefined;
    return addr ? { host: addr.address, port: addr.port } : undefined;
  }

  /** @internal Structural state, for the limits tests. */
  state(): TelemetryServerState {
    return {
      connections: this.sockets.size,
      cachedBytes: this.scrape?.cachedBytes() ?? 0,
      collecting: this.scrape?.collecting() ?? false,
      collections: this.scrape?.collections ?? 0,
    };
  }

  close(): Promise<void> {
    this.closed = true;
    if (this.retry !== undefined) nativeTimers.clearTimeout(this.retry);
    this.retry = undefined;
    this.pendingStart?.cancel();
    this.pendingStart?.resolve();
    this.pendingStart = undefined;
    this.cancelAnnounce?.();
    this.cancelAnnounce = undefined;
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Closes the longest-connected socket without a request in progress; false when there is none. */
  private evictIdle(): boolean {
    // A Set iterates in insertion order: oldest connection first.
    for (const socket of this.sockets) {
      if (((socket as CountedSocket)[kPending] ?? 0) === 0) {
        this.sockets.delete(socket);
        socket.destroy();
        return true;
      }
    }
    return false;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const socket = req.socket as CountedSocket;
    try {
      // Pipelined requests queue up inside Node until their turn; a client sending more than a few
      // without reading the answers is not a scraper.
      const pending = (socket[kPending] ?? 0) + 1;
      if (pending > SERVER_LIMITS.maxPendingPerConnection) {
        socket.destroy();
        return;
      }
      socket[kPending] = pending;
      // Node announces `Connection: close` on the last allowed request but leaves the socket open for the
      // client to close; one that does not is closed here once that response is out.
      const served = (socket[kServed] ?? 0) + 1;
      socket[kServed] = served;
      if (served > SERVER_LIMITS.maxRequestsPerConnection) {
        socket.destroy();
        return;
      }
      if (served === SERVER_LIMITS.maxRequestsPerConnection) res.once('finish', () => socket.end());
      // A response that is not fully handed to the kernel in time (the client does not read) ends the connection.
      const deadline = nativeTimers.setTimeout(() => socket.destroy(), SERVER_LIMITS.responseTimeoutMs);
      deadline.unref();
      res.once('close', () => {
        nativeTimers.clearTimeout(deadline);
        socket[kPending] = (socket[kPending] ?? 1) - 1;
      });
      const path = pathOf(req.url);
      if (!(path === '/health' || path === '/health/database' ? this.healthBucket : this.bucket).take()) {
        res.setHeader('retry-after', '1');
        res.setHeader('connection', 'close');
        return this.text(res, 429, 'Too Many Requests\n');
      }
      this.route(req, res, path);
    } catch (err) {
      this.options.logger.warn('server:handler', `poolscope: telemetry request failed: ${errorText(err)}`);
      socket.destroy();
    }
  }

  private route(req: IncomingMessage, res: ServerResponse, path: string): void {
    const head = req.method === 'HEAD';
    const { health } = this.options;
    let serve: ((head: boolean) => void) | undefined;
    if (path === '/metrics' && this.scrape !== undefined) serve = (h) => this.metrics(res, h);
    else if (health !== undefined && path === '/health') serve = (h) => writeHealth(res, health.service(), h);
    else if (health !== undefined && path === '/health/database') serve = (h) => writeHealth(res, health.database(), h);
    if (serve === undefined) return this.text(res, 404, 'Not Found\n');
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      return this.text(res, 405, 'Method Not Allowed\n');
    }
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > 0 || req.headers['transfer-encoding'] !== undefined) {
      res.setHeader('connection', 'close');
      return this.text(res, 413, 'Request bodies are not accepted\n');
    }
    serve(head);
  }

  private metrics(res: ServerResponse, head: boolean): void {
    this.scrape!.get().then(
      (body) => {
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': body.length });
        // The shared buffer goes to the socket as is: a flood holds references, not copies.
        res.end(head ? undefined : body);
      },
      (err: Error) => {
        this.options.logger.warn('server:collect', `poolscope: metric collection failed: ${errorText(err)}`);
        if (!res.destroyed) this.text(res, 500, 'metric collection failed\n');
      },
    ).catch((err: Error) => {
      this.options.logger.warn('server:handler', `poolscope: telemetry response failed: ${errorText(err)}`);
      res.socket?.destroy();
    });
  }

  private text(res: ServerResponse, status: number, body: string): void {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}

/**
 * The path of a request target in origin form (`/health?x`). The absolute form (`http://host/health`), which only
 * proxies are sent, is not routed: it answers 404, so the port never looks like a proxy (security.test.ts).
 */
function pathOf(url: string | undefined): string {
  return (url ?? '/').split('?', 1)[0]!;
}
