import net from 'node:net';
import { nativeTimers } from '../native-timers.js';

/** How long a collector may take to accept a connection before it counts as unreachable. */
export const PROBE_LIMIT_MS = 2_000;

const PROXY_VARIABLES = ['grpc_proxy', 'GRPC_PROXY', 'https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'];

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443, 'grpc:': 4317 };

/**
 * Whether a collector accepts a TCP connection within `timeoutMillis`: undefined if it does (or if the
 * endpoint is nothing we can dial, such as a unix socket), otherwise why not (`ECONNREFUSED`, `timeout`…).
 *
 * Asked at exit, before the final export, and before any export while the collector's state is unknown or
 * down (outage-logging.ts). The upstream exporters retry a failed export with
 * referenced timers for up to their timeout: a script whose collector was down stayed alive for seconds
 * after its work was done, and its pools' idle timers fired meanwhile (pg-pool's `allowExitOnIdle` tests
 * failed under the preload). A connection refused is known in a millisecond.
 */
export function collectorUnreachable(endpoint: string, timeoutMillis: number, protocol?: string): Promise<string | undefined> {
  // gRPC's exporter reaches the collector through a proxy these name; a direct connection then proves nothing
  // either way, so the exporter is left to find out. The HTTP exporters use an agent of their own, which never
  // goes through a proxy: for them the probe stands (skipping it with http_proxy set brought the wait back).
  if (protocol === 'grpc' && PROXY_VARIABLES.some((name) => process.env[name] !== undefined && process.env[name] !== '')) {
    return Promise.resolve(undefined);
  }
  let host: string;
  let port: number;
  try {
    const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint) ? endpoint : `grpc://${endpoint}`);
    const fallback = DEFAULT_PORTS[url.protocol];
    if (fallback === undefined || url.hostname === '') return Promise.resolve(undefined);
    host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    port = url.port === '' ? fallback : Number(url.port);
  } catch {
    return Promise.resolve(undefined);
  }
  return new Promise((resolve) => {
    let settled = false;
    const socket = net.connect({ host, port });
    const finish = (why: string | undefined) => {
      if (settled) return;
      settled = true;
      nativeTimers.clearTimeout(timer);
      // Resolved once closed: a socket still closing keeps the event loop alive, and register.ts ends the
      // process only when nothing does.
      socket.once('close', () => resolve(why));
      socket.destroy();
    };
    const timer = nativeTimers.setTimeout(() => finish('timeout'), timeoutMillis);
    socket.once('connect', () => finish(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? 'error'));
  });
}
