import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeHealth, type HealthMonitor } from './health.js';
import type { PoolscopeLogger } from './logger.js';

/** Marks our own server so HTTP instrumentation leaves its requests out of the app's request metrics. */
export const kTelemetryServer = Symbol.for('poolscope.telemetry-server');

export interface TelemetryServerOptions {
  host: string;
  port: number;
  /** Produces the Prometheus exposition; omitted when the Prometheus exporter is off. */
  metrics?: () => Promise<string>;
  /** Serves the health routes; omitted when they are off. */
  health?: HealthMonitor;
  logger: PoolscopeLogger;
}

/**
 * The telemetry HTTP server: `/metrics`, `/health`, `/health/database`, nothing else. It never keeps
 * the process alive (server and sockets are unref'd), bounds request time and size, and a failure to
 * bind is a warning, not an exception: the application runs on without it.
 */
export class TelemetryServer {
  private server: Server | undefined;

  constructor(private readonly options: TelemetryServerOptions) {}

  start(): Promise<void> {
    const { host, port, logger } = this.options;
    // Node checks header/request timeouts only every connectionsCheckingInterval (30 s by default); check
    // every second so a client that never finishes its request is dropped after the timeouts below.
    const server = createServer({ maxHeaderSize: 8 * 1024, connectionsCheckingInterval: 1_000 }, (req, res) => this.handle(req, res));
    Object.defineProperty(server, kTelemetryServer, { value: true });
    server.requestTimeout = 10_000;
    server.headersTimeout = 5_000;
    server.keepAliveTimeout = 5_000;
    server.on('connection', (socket) => socket.unref());
    this.server = server;
    return new Promise((resolve) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const reason = err.code === 'EADDRINUSE' ? 'is already in use' : `cannot be bound (${err.code ?? err.message})`;
        logger.warn('server:listen', `poolscope: ${host}:${port} (OTEL_EXPORTER_PROMETHEUS_HOST/_PORT) ${reason}; ` +
          '/metrics and /health are not served by this process. The application keeps running.');
        this.server = undefined;
        resolve();
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        // A late socket error must never become an uncaught exception in the host app.
        server.on('error', (err) => logger.warn('server:error', `poolscope: telemetry server error: ${err.message}`));
        server.unref();
        resolve();
      });
    });
  }

  /** Bound address, or undefined when the server is not listening. */
  address(): { host: string; port: number } | undefined {
    const addr = this.server?.address() as AddressInfo | null | undefined;
    return addr ? { host: addr.address, port: addr.port } : undefined;
  }

  close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return Promise.resolve();
    return new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    const head = req.method === 'HEAD';
    const route = this.route(path);
    if (route === undefined) return this.text(res, 404, 'Not Found\n');
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      return this.text(res, 405, 'Method Not Allowed\n');
    }
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > 0 || req.headers['transfer-encoding'] !== undefined) {
      res.setHeader('connection', 'close');
      return this.text(res, 413, 'Request bodies are not accepted\n');
    }
    route(res, head);
  }

  private route(path: string | undefined): ((res: ServerResponse, head: boolean) => void) | undefined {
    const { metrics, health } = this.options;
    if (path === '/metrics' && metrics !== undefined) {
      return (res, head) => {
        metrics().then(
          (body) => {
            res.writeHead(200, {
              'content-type': 'text/plain; version=0.0.4; charset=utf-8',
              'content-length': Buffer.byteLength(body),
            });
            res.end(head ? undefined : body);
          },
          (err: Error) => {
            this.options.logger.warn('server:collect', `poolscope: metric collection failed: ${err.message}`);
            this.text(res, 500, 'metric collection failed\n');
          },
        );
      };
    }
    if (health === undefined) return undefined;
    if (path === '/health') return (res, head) => writeHealth(res, health.service(), head);
    if (path === '/health/database') return (res, head) => writeHealth(res, health.database(), head);
    return undefined;
  }

  private text(res: ServerResponse, status: number, body: string): void {
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}
