import type { IncomingMessage, ServerResponse } from 'node:http';
import { errorText, type PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolSnapshot } from '../pools/observer.js';
import type { PoolObserver } from '../pools/observer.js';
import type { PoolRegistry } from '../pools/registry.js';
import { healthScore, serviceScore } from './score.js';
import { DEFAULT_STUCK_RULES, StuckDetector, type PoolVerdict, type StuckReason, type StuckRules } from './stuck-detector.js';
import { monotonicNow, nativeTimers, wallClock } from '../native-timers.js';

export type { StuckReason, StuckRules } from './stuck-detector.js';

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
  /** Not serving: no acquire completes while callers wait, acquires time out, or the server is unreachable. */
  stuck: boolean;
  /** Why it is stuck (the most fundamental reason that holds); absent when it is not. */
  stuckReason?: StuckReason;
  /** Composite health, 0–100 (see score.ts); 0 when stuck. */
  score: number;
  timestamp: string;
  /** Oldest first; one sample per sample interval. */
  history: PoolSample[];
}

export interface DatabaseHealth {
  /** The worst pool's status by utilization; `unknown` when no pool is observed. */
  status: HealthStatus;
  /** True when any pool is stuck: the one condition that answers 503. */
  stuck: boolean;
  /** The worst pool's score; null when no pool is observed. */
  score: number | null;
  /** Why the status is `unknown`; absent otherwise. */
  reason?: string;
  timestamp: string;
  thresholds: HealthThresholds;
  stuckRules: StuckRules;
  pools: PoolHealth[];
}

export interface ServiceHealth {
  status: ServiceStatus;
  service: string;
  timestamp: string;
  uptimeSeconds: number;
  /** The database's score; null when no pool is observed. */
  score: number | null;
  checks: { database: { status: HealthStatus; pools: number; stuckPools: number; reason?: string } };
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

/**
 * HTTP status for a health payload: 503 only for a stuck database. A full pool that still hands out
 * connections answers 200 whatever its status: failing readiness on utilization takes every replica out
 * of the load balancer at the same spike and turns the spike into an outage. The service summary carries
 * no `stuck` of its own, so `/health` (liveness) answers 200 whenever the process can answer at all.
 */
export function httpStatusFor(body: { stuck?: boolean }): number {
  return body.stuck === true ? 503 : 200;
}

export interface HealthMonitorOptions {
  thresholds: HealthThresholds;
  historySize: number;
  sampleIntervalMillis: number;
  serviceName: string;
  /** True once `pg` has been loaded: no observed pool then means Poolscope is blind, not that all is well. */
  pgInUse?: () => boolean;
  /** False when Poolscope or its pg instrumentation is off: no pool can be observed, by the user's choice. @default true */
  pgInstrumented?: boolean;
  /** True once the application served an HTTP request: a service that runs without ever loading pg. */
  servedRequests?: () => boolean;
  /** True once a query was timed: pg is used, not only loaded. */
  sawQueries?: () => boolean;
  /** Called at each sample while no pool was ever seen: patches a pg that Node loaded out of the hooks' sight. */
  adoptUnhooked?: () => void;
  /** When a pool counts as stuck. @default DEFAULT_STUCK_RULES (10 s window, 1 timeout) */
  stuck?: StuckRules;
  logger?: PoolscopeLogger;
}

/** One pool judged at one instant: its live numbers, the detector's verdict and the score. */
export interface JudgedPool {
  pool: ObservedPool;
  snapshot: PoolSnapshot;
  verdict: PoolVerdict;
  score: number;
}

// Standalone clients come first: an application (or a migration CLI) that only makes `new pg.Client()`s has no
// pool to judge, and from its clients alone that cannot be told from an unsupported pool library's.
const NO_POOL_WITH_PG = 'pg is in use but no connection pool is observed: the application uses standalone pg.Client ' +
  'connections only (no pool to judge), a knex or Sequelize pool has not connected yet (they are known from ' +
  'their first connection: check the database is reachable and the credentials right), the pool library is not supported, ' +
  'the application is bundled (pg inlined), its pools were created before Poolscope started, or an ES-module-only ' +
  'pool library (Slonik) was loaded where the loader hook did not see it (POOLSCOPE_ESM_LOADER_THREAD=always)';
const NO_POOL = 'no connection pool is open';
// Poolscope sees pg only through Node's module loader: a bundle with pg inlined looks like a service without it
// (or one that has not loaded it yet).
const NO_PG = 'no connection pool has been seen, and pg has not been loaded through Node\'s module loader: the service ' +
  'does not use pg (or not yet), or it is bundled with pg inlined (mark pg as external in the bundler), or its ' +
  'PostgreSQL client is not pg';
const PG_OFF = 'no pool is observed: Poolscope is disabled (OTEL_SDK_DISABLED) or its pg instrumentation is off ' +
  '(OTEL_NODE_DISABLED_INSTRUMENTATIONS)';
const HEALTH_FAILED = 'pool health could not be computed (a Poolscope fault, logged once)';
// After shutdown() nothing is observed any more: pools judged then would be judged on what was seen before.
const STOPPED = 'Poolscope was shut down: pools are no longer observed';

/** Pool health from the registry's live numbers, plus a short sampled history per pool. */
export class HealthMonitor {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = monotonicNow();
  /** The health recorder's own per-pool state; weak, so an ended pool's history goes with it. */
  private readonly history = new WeakMap<ObservedPool, PoolSample[]>();
  private readonly blindSaid = new Set<string>();
  private blindRetracted = false;
  /** Queries had been timed at the previous sample: a pool of theirs would have been seen by now. */
  private queriedBefore = false;
  private readonly detector: StuckDetector;
  private failureWarned = false;
  private stopped = false;

  constructor(private readonly registry: PoolRegistry, readonly options: HealthMonitorOptions) {
    // One checkpoint per sample: the score looks back over the same window as the history.
    this.detector = new StuckDetector(options.stuck ?? DEFAULT_STUCK_RULES, options.historySize, options.logger);
  }

  /** The recorder that feeds stuck detection and the score; add it to the instrumentation. */
  get recorder(): PoolObserver {
    return this.detector;
  }

  get stuckRules(): StuckRules {
    return { ...this.detector.rules };
  }

  /** Every live pool judged now: for the health routes and the health metrics alike. */
  judge(): JudgedPool[] {
    const t = monotonicNow();
    return this.registry.snapshots().map(([pool, snapshot]) => {
      const verdict = this.detector.judge(pool, snapshot, t);
      const score = healthScore({
        utilization: utilization(snapshot),
        warningThreshold: this.options.thresholds.warning,
        waitSeconds: Math.max(verdict.window.meanWaitSeconds, verdict.stalledSeconds),
        acquires: verdict.window.acquires,
        timeouts: verdict.window.timeouts,
        connects: verdict.window.connects,
        failures: verdict.window.failures,
        stuck: verdict.stuckReason !== undefined,
      });
      return { pool, snapshot, verdict, score };
    });
  }

  /** Samples every pool now and then every interval; the timer never keeps the process alive. */
  start(): void {
    if (this.timer !== undefined || this.stopped) return;
    this.sample();
    this.timer = nativeTimers.setInterval(() => this.sample(), this.options.sampleIntervalMillis);
    this.timer.unref();
  }

  /** Stops sampling for good: from now on the health routes answer `unknown`. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) nativeTimers.clearInterval(this.timer);
    this.timer = undefined;
  }

  sample(now = wallClock()): void {
    const timestamp = now.toISOString();
    // A service bundled with pg inlined whose health routes nobody asks (only /metrics is scraped) is told too.
    if (!this.registry.everObserved) {
      this.safely(() => this.options.adoptUnhooked?.(), undefined);
      this.safely(() => this.blindReason(false), undefined);
      this.queriedBefore = this.options.sawQueries?.() === true;
    } else if (this.blindSaid.size > 0 && !this.blindRetracted) {
      // A service that loads pg on a later route was told it looked blind: the warning does not stand unanswered.
      this.blindRetracted = true;
      this.options.logger?.warn('health:seen', 'poolscope: a connection pool is observed now; the earlier "no connection ' +
        'pool" warning no longer applies.');
    }
    // Judging on every sample is what notices waiters between requests, and logs a pool that gets stuck.
    for (const { pool, snapshot: s } of this.safely(() => this.judge(), [])) {
      this.detector.checkpoint(pool);
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

  database(now = wallClock()): DatabaseHealth {
    const timestamp = now.toISOString();
    const base = { timestamp, thresholds: { ...this.options.thresholds }, stuckRules: this.stuckRules };
    if (this.stopped) return { status: 'unknown', stuck: false, score: null, reason: STOPPED, ...base, pools: [] };
    const judged = this.safely(() => this.judge(), undefined);
    if (judged === undefined) {
      // A fault of Poolscope's own never takes the application out of rotation.
      return { status: 'unknown', stuck: false, score: null, reason: HEALTH_FAILED, ...base, pools: [] };
    }
    const pools = judged.map((j) => this.poolHealth(j, timestamp));
    if (pools.length > 0) {
      return {
        status: worst(pools.map((p) => p.status)),
        stuck: pools.some((p) => p.stuck),
        score: serviceScore(pools.map((p) => p.score)),
        ...base,
        pools,
      };
    }
    return { status: 'unknown', stuck: false, score: null, reason: this.safely(() => this.blindReason(), undefined) ?? NO_POOL, ...base, pools };
  }

  service(now = wallClock()): ServiceHealth {
    const db = this.database(now);
    return {
      status: db.status === 'unknown' ? 'degraded' : db.status,
      service: this.options.serviceName,
      timestamp: db.timestamp,
      uptimeSeconds: Math.round((monotonicNow() - this.startedAt) / 1000),
      score: db.score,
      checks: {
        database: {
          status: db.status,
          pools: db.pools.length,
          stuckPools: db.pools.filter((p) => p.stuck).length,
          ...(db.reason === undefined ? {} : { reason: db.reason }),
        },
      },
    };
  }

  /** Runs a health computation; a failure is logged once and replaced by `fallback`. */
  private safely<T>(compute: () => T, fallback: T): T {
    try {
      return compute();
    } catch (err) {
      if (!this.failureWarned) {
        this.failureWarned = true;
        this.options.logger?.warn('health:failed', `poolscope: computing pool health failed (${errorText(err)}); ` +
          'the health routes answer 200 "unknown" meanwhile.');
      }
      return fallback;
    }
  }

  /**
   * Why no pool was ever seen, when none was; undefined when pools were seen and ended. Said once in the log:
   * when the health routes ask (`asked`), or at a sample for a service that serves requests, without pg or
   * with queries timed since the sample before (a service on an unsupported pool library, only scraped on
   * /metrics or pushing OTLP, was never told). Since the sample before: knex and Sequelize pools are seen
   * only after their connection's first queries, and one connecting as a sample ran was told it was blind.
   */
  private blindReason(asked = true): string | undefined {
    // Pools that were seen and have all ended are not blindness: the app closed them.
    if (this.registry.everObserved || this.options.pgInUse === undefined) return undefined;
    if (this.options.pgInstrumented === false) return PG_OFF;
    const reason = this.options.pgInUse() ? NO_POOL_WITH_PG : NO_PG;
    // pg not loaded is said only by a service already serving requests: one that loads pg on its first request
    // (or first job) was told it was bundled by the probe that came before.
    const served = this.options.servedRequests?.() === true;
    const say = reason === NO_POOL_WITH_PG ? asked || (served && this.queriedBefore) : served;
    if (say && !this.blindSaid.has(reason)) {
      this.blindSaid.add(reason);
      // The advice fits the cause: monitorPool() cannot help a service whose pg Poolscope never saw load.
      const advice = reason === NO_PG ? 'see the README\'s Limitations on bundles and other clients'
        : 'pass pools made before Poolscope started to monitorPool(pool), or see the README support table';
      this.options.logger?.warn('health:blind', `poolscope: ${reason}. /health/database reports "unknown" ` +
        `until a pool is seen; ${advice}.`);
    }
    return reason;
  }

  private poolHealth({ pool, snapshot: s, verdict, score }: JudgedPool, timestamp: string): PoolHealth {
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
      stuck: verdict.stuckReason !== undefined,
      ...(verdict.stuckReason === undefined ? {} : { stuckReason: verdict.stuckReason }),
      score,
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

/** Writes a health payload as JSON with the matching status code (see {@link httpStatusFor}). */
export function writeHealth(res: ServerResponse, body: { status: HealthStatus | ServiceStatus; stuck?: boolean }, head = false): void {
  const json = JSON.stringify(body);
  res.writeHead(httpStatusFor(body), {
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
