import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PoolRegistry, PoolSample, PoolSnapshot } from './pool-registry.js';

export type HealthStatus = 'healthy' | 'warning' | 'critical';

export interface HealthThresholds {
  /** Utilization (0–1) from which a pool is `warning`. */
  warning: number;
  /** Utilization (0–1) from which a pool is `critical`. */
  critical: number;
}

export interface PoolHealth {
  name: string;
  status: HealthStatus;
  max: number;
  min: number;
  used: number;
  idle: number;
  pending: number;
  overflow: number;
  /** used / max, 0–1. */
  utilization: number;
  timestamp: string;
  /** Oldest first; one sample per sample interval. */
  history: PoolSample[];
}

export interface DatabaseHealth {
  /** The worst pool's status; `healthy` when there are no pools. */
  status: HealthStatus;
  timestamp: string;
  thresholds: HealthThresholds;
  pools: PoolHealth[];
}

export interface ServiceHealth {
  status: HealthStatus;
  service: string;
  timestamp: string;
  uptimeSeconds: number;
  checks: { database: { status: HealthStatus; pools: number } };
}

const RANK: Record<HealthStatus, number> = { healthy: 0, warning: 1, critical: 2 };

export function statusFor(utilization: number, thresholds: HealthThresholds): HealthStatus {
  if (utilization >= thresholds.critical) return 'critical';
  if (utilization >= thresholds.warning) return 'warning';
  return 'healthy';
}

export function worst(statuses: Iterable<HealthStatus>): HealthStatus {
  let result: HealthStatus = 'healthy';
  for (const s of statuses) if (RANK[s] > RANK[result]) result = s;
  return result;
}

/** HTTP status for a health payload: load balancers act on 503; `warning` is still serving. */
export function httpStatusFor(status: HealthStatus): number {
  return status === 'critical' ? 503 : 200;
}

export interface HealthMonitorOptions {
  thresholds: HealthThresholds;
  historySize: number;
  sampleIntervalMillis: number;
  serviceName: string;
}

/** Pool health from the registry's live numbers, plus a short sampled history per pool. */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();

  constructor(private readonly registry: PoolRegistry, readonly options: HealthMonitorOptions) {}

  /** Samples every pool now and then every interval; the timer never keeps the process alive. */
  start(): void {
    if (this.timer !== undefined) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), this.options.sampleIntervalMillis);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  sample(now = new Date()): void {
    for (const [state, snapshot] of this.registry.snapshots()) state.addSample(snapshot, this.options.historySize, now);
  }

  database(now = new Date()): DatabaseHealth {
    const timestamp = now.toISOString();
    const pools = this.registry.snapshots().map(([state, s]) => this.poolHealth(s, state.history, timestamp));
    return {
      status: worst(pools.map((p) => p.status)),
      timestamp,
      thresholds: { ...this.options.thresholds },
      pools,
    };
  }

  service(now = new Date()): ServiceHealth {
    const db = this.database(now);
    return {
      status: db.status,
      service: this.options.serviceName,
      timestamp: db.timestamp,
      uptimeSeconds: Math.round((now.getTime() - this.startedAt) / 1000),
      checks: { database: { status: db.status, pools: db.pools.length } },
    };
  }

  private poolHealth(s: PoolSnapshot, history: PoolSample[], timestamp: string): PoolHealth {
    return {
      name: s.name,
      status: statusFor(s.utilization, this.options.thresholds),
      max: s.max,
      min: s.min,
      used: s.used,
      idle: s.idle,
      pending: s.pending,
      overflow: s.overflow,
      utilization: Math.round(s.utilization * 10_000) / 10_000,
      timestamp,
      history: [...history],
    };
  }
}

export type HealthRoute = 'service' | 'database';

/** Writes a health payload as JSON with the matching status code. */
export function writeHealth(res: ServerResponse, body: { status: HealthStatus }, head = false): void {
  const json = JSON.stringify(body);
  res.writeHead(httpStatusFor(body.status), {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(json),
  });
  res.end(head ? undefined : json);
}

/**
 * A request handler for an application's own router, e.g. `app.get('/health/database', handler)`.
 * Works with node:http, Express, Fastify's raw request/response and anything with the same shape.
 */
export function createHealthHandler(monitor: HealthMonitor, route: HealthRoute = 'database') {
  return (req: IncomingMessage, res: ServerResponse): void => {
    writeHealth(res, route === 'database' ? monitor.database() : monitor.service(), req.method === 'HEAD');
  };
}
