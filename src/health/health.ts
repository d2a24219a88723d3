import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolSnapshot } from '../pools/observer.js';
import type { PoolRegistry } from '../pools/registry.js';

/** A pool's status by utilization; `unknown` when there is no pool to judge. */
export type HealthStatus = 'healthy' | 'warning' | 'critical' | 'unknown';
/** The service's status: the database's, except that a database Poolscope cannot see makes it `degraded`. */
export type ServiceStatus = 'healthy' | 'warning' | 'critical' | 'degraded';

export interface PoolSample {
  timestamp: string;
  used: number;
  idle: number;
  pending: number;
  utilization: number;
  overflow: number;
}

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
  /** The worst pool's status; `unknown` when no pool is observed. */
  status: HealthStatus;
  /** Why the status is `unknown`; absent otherwise. */
  reason?: string;
  timestamp: string;
  thresholds: HealthThresholds;
  pools: PoolHealth[];
}

export interface ServiceHealth {
  status: ServiceStatus;
  service: string;
  timestamp: string;
  uptimeSeconds: number;
  checks: { database: { status: HealthStatus; pools: number; reason?: string } };
}

const RANK: Record<Exclude<HealthStatus, 'unknown'>, number> = { healthy: 0, warning: 1, critical: 2 };

export function statusFor(utilization: number, thresholds: HealthThresholds): HealthStatus {
  if (utilization >= thresholds.critical) return 'critical';
  if (utilization >= thresholds.warning) return 'warning';
  return 'healthy';
}

export function worst(statuses: Iterable<HealthStatus>): HealthStatus {
  let result: Exclude<HealthStatus, 'unknown'> = 'healthy';
  for (const s of statuses) if (s !== 'unknown' && RANK[s] > RANK[result]) result = s;
  return result;
}

/** HTTP status for a health payload: load balancers act on 503; `warning` is still serving. */
export function httpStatusFor(status: HealthStatus | ServiceStatus): number {
  return status === 'critical' ? 503 : 200;
}

export interface HealthMonitorOptions {
  thresholds: HealthThresholds;
  historySize: number;
  sampleIntervalMillis: number;
  serviceName: string;
  /** True once `pg` has been loaded: no observed pool then means Poolscope is blind, not that all is well. */
  pgInUse?: () => boolean;
  logger?: PoolscopeLogger;
}

const NO_POOL_WITH_PG = 'pg is in use but no connection pool is observed: the pool library is not supported, ' +
  'the application is bundled (pg inlined), or its pools were created before Poolscope started';
const NO_POOL = 'no connection pool is open';

/** Pool health from the registry's live numbers, plus a short sampled history per pool. */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  /** The health recorder's own per-pool state; weak, so an ended pool's history goes with it. */
  private readonly history = new WeakMap<ObservedPool, PoolSample[]>();
  private blindWarned = false;

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
    const timestamp = now.toISOString();
    for (const [pool, s] of this.registry.snapshots()) {
      let samples = this.history.get(pool);
      if (samples === undefined) {
        samples = [];
        this.history.set(pool, samples);
      }
      samples.push({
        timestamp,
        used: s.used,
        idle: s.idle,
        pending: s.pending,
        utilization: utilization(s),
        overflow: overflow(pool, s),
      });
      if (samples.length > this.options.historySize) samples.splice(0, samples.length - this.options.historySize);
    }
  }

  database(now = new Date()): DatabaseHealth {
    const timestamp = now.toISOString();
    const pools = this.registry.snapshots().map(([pool, s]) => this.poolHealth(pool, s, timestamp));
    const base = { timestamp, thresholds: { ...this.options.thresholds }, pools };
    if (pools.length > 0) return { status: worst(pools.map((p) => p.status)), ...base };
    return { status: 'unknown', reason: this.blind() ? NO_POOL_WITH_PG : NO_POOL, ...base };
  }

  service(now = new Date()): ServiceHealth {
    const db = this.database(now);
    return {
      status: db.status === 'unknown' ? 'degraded' : db.status,
      service: this.options.serviceName,
      timestamp: db.timestamp,
      uptimeSeconds: Math.round((now.getTime() - this.startedAt) / 1000),
      checks: { database: { status: db.status, pools: db.pools.length, ...(db.reason === undefined ? {} : { reason: db.reason }) } },
    };
  }

  /** True when pg is loaded but no pool is observed; says so once in the log. */
  private blind(): boolean {
    // Pools that were seen and have all ended are not blindness: the app closed them.
    if (this.options.pgInUse?.() !== true || this.registry.everObserved) return false;
    if (!this.blindWarned) {
      this.blindWarned = true;
      this.options.logger?.warn('health:blind', `poolscope: ${NO_POOL_WITH_PG}. /health/database reports "unknown" ` +
        'until a pool is seen; pass existing pools to monitorPool(pool), start Poolscope with --import, or see ' +
        'the README support table.');
    }
    return true;
  }

  private poolHealth(pool: ObservedPool, s: PoolSnapshot, timestamp: string): PoolHealth {
    const u = utilization(s);
    return {
      name: pool.name,
      status: statusFor(u, this.options.thresholds),
      max: s.max,
      min: s.min,
      used: s.used,
      idle: s.idle,
      pending: s.pending,
      overflow: overflow(pool, s),
      utilization: Math.round(u * 10_000) / 10_000,
      timestamp,
      history: [...(this.history.get(pool) ?? [])],
    };
  }
}

function utilization(s: PoolSnapshot): number {
  return s.max > 0 ? Math.min(1, s.used / s.max) : 0;
}

function overflow(pool: ObservedPool, s: PoolSnapshot): number {
  return Math.max(0, s.used + s.idle - pool.baseSize(s));
}

export type HealthRoute = 'service' | 'database';

/** Writes a health payload as JSON with the matching status code. */
export function writeHealth(res: ServerResponse, body: { status: HealthStatus | ServiceStatus }, head = false): void {
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
