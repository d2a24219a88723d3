import { ATTR_CONNECTION_STATE, ATTR_POOL_NAME } from './semconv.js';
import { PoolNameAllocator } from './pool-name.js';

/** The parts of a `pg-pool` Pool that Poolscope reads; all are public pg-pool API. */
export interface PgPoolLike {
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
  readonly ending?: boolean;
  readonly ended?: boolean;
  readonly options?: { max?: number; min?: number; [key: string]: unknown };
}

/** Pool state read at one instant. */
export interface PoolSnapshot {
  name: string;
  max: number;
  min: number;
  /** Checked out or still connecting: `totalCount - idleCount`. */
  used: number;
  idle: number;
  total: number;
  /** Callers queued in `pool.connect()` waiting for a client. */
  pending: number;
  /** `used / max`, 0–1. */
  utilization: number;
  /** Open connections above `baseSize`: `max(0, total - baseSize)`. */
  overflow: number;
  baseSize: number;
}

export interface PoolSample {
  timestamp: string;
  used: number;
  idle: number;
  pending: number;
  utilization: number;
  overflow: number;
}

/** Per-pool bookkeeping. Holds the pool weakly: a pool dropped without `end()` is not kept alive by us. */
export class PoolState {
  readonly attributes: Readonly<Record<string, string>>;
  readonly usedAttributes: Readonly<Record<string, string>>;
  readonly idleAttributes: Readonly<Record<string, string>>;
  readonly history: PoolSample[] = [];
  /** Set while utilization is above the log threshold, so a crossing is logged once. */
  aboveLogThreshold = false;
  /** `db.namespace` for the pool's queries: the configured database, never pg's user-name fallback. */
  namespace: string | undefined;
  /** performance.now() of the last utilization warning; -Infinity before the first. */
  utilizationLoggedAt = -Infinity;
  overflowActive = false;
  private readonly ref: WeakRef<PgPoolLike>;

  constructor(pool: PgPoolLike, readonly name: string, private readonly declaredBaseSize: number | undefined) {
    this.ref = new WeakRef(pool);
    this.attributes = Object.freeze({ [ATTR_POOL_NAME]: name });
    this.usedAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'used' });
    this.idleAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'idle' });
  }

  /** The live pool, or undefined once it has ended or been garbage-collected. */
  pool(): PgPoolLike | undefined {
    const pool = this.ref.deref();
    if (pool === undefined || pool.ending === true || pool.ended === true) return undefined;
    return pool;
  }

  /** True when an overflow base was declared or the pool keeps a minimum, i.e. overflow means something. */
  hasMeaningfulBase(pool: PgPoolLike): boolean {
    return this.baseSize(pool) > 0;
  }

  baseSize(pool: PgPoolLike): number {
    return this.declaredBaseSize ?? pool.options?.min ?? 0;
  }

  snapshot(): PoolSnapshot | undefined {
    const pool = this.pool();
    if (pool === undefined) return undefined;
    const max = pool.options?.max ?? 10;
    const min = pool.options?.min ?? 0;
    const total = pool.totalCount;
    const idle = pool.idleCount;
    const used = Math.max(0, total - idle);
    const baseSize = this.baseSize(pool);
    return {
      name: this.name,
      max,
      min,
      used,
      idle,
      total,
      pending: pool.waitingCount,
      utilization: max > 0 ? used / max : 0,
      overflow: Math.max(0, total - baseSize),
      baseSize,
    };
  }

  addSample(snapshot: PoolSnapshot, limit: number, now = new Date()): void {
    this.history.push({
      timestamp: now.toISOString(),
      used: snapshot.used,
      idle: snapshot.idle,
      pending: snapshot.pending,
      utilization: snapshot.utilization,
      overflow: snapshot.overflow,
    });
    if (this.history.length > limit) this.history.splice(0, this.history.length - limit);
  }
}

/**
 * The live pools. Instruments and health read from here at collection time, so numbers are the pools'
 * own counters at that instant — never running totals that drift or mix pools together.
 */
export class PoolRegistry {
  private readonly states = new Set<PoolState>();
  private readonly names = new PoolNameAllocator();

  add(pool: PgPoolLike, baseName: string, baseSize?: number): PoolState {
    const state = new PoolState(pool, this.names.acquire(baseName), baseSize);
    this.states.add(state);
    return state;
  }

  remove(state: PoolState): void {
    if (this.states.delete(state)) this.names.release(state.name);
  }

  /** Names of the pools registered now (as of the last snapshot sweep). */
  liveNames(): Set<string> {
    const names = new Set<string>();
    for (const state of this.states) names.add(state.name);
    return names;
  }

  get size(): number {
    return this.states.size;
  }

  /** Snapshots of every live pool; ended or collected pools are dropped here, so they stop being reported. */
  snapshots(): Array<[PoolState, PoolSnapshot]> {
    const out: Array<[PoolState, PoolSnapshot]> = [];
    for (const state of this.states) {
      const snapshot = state.snapshot();
      if (snapshot === undefined) this.remove(state);
      else out.push([state, snapshot]);
    }
    return out;
  }
}
