/*
 * The seam between pool libraries and everything that records what they do: an adapter (src/adapters/)
 * attaches to one pool implementation and reports its lifecycle through these calls; recorders
 * (src/metrics/, src/health/, src/recorders/) implement the ones they care about and keep their own per-pool
 * state. Adapters never know who listens, recorders never know which library a pool comes from.
 *
 * The three calls made on every checkout (acquireRequested, acquired, released) also go, always, to the
 * pool's probe (pool-probe.ts), which the built-in recorders read instead of implementing them; the fan-out
 * makes them only when a recorder added with addRecorder() implements them.
 */
import type { ObservedPool } from './observed-pool.js';

/** How an acquire was served: an idle connection, a newly opened one, or one it had to queue for. */
export type AcquirePath = 'idle' | 'new' | 'queued';
export const ACQUIRE_PATHS: readonly AcquirePath[] = ['idle', 'new', 'queued'];

/** Why a physical connection left the pool. */
export type CloseReason = 'idle_timeout' | 'max_lifetime' | 'max_uses' | 'error' | 'query_error' | 'server_terminated' | 'pool_closed';

/** A pool's counters at one instant, read from the library itself at collection time. */
export interface PoolSnapshot {
  /** Checked out, or being opened for a caller. */
  used: number;
  idle: number;
  /** Callers waiting to acquire. */
  pending: number;
  max: number;
  min: number;
}

/** Where a query went, as the adapter resolved it from the client's configuration (secrets withheld). */
export interface QueryTarget {
  address?: string;
  port?: number;
  /** The configured database; absent when none was configured (pg would use the user name). */
  namespace?: string;
}

/** Every call is optional: a recorder implements what it needs. Calls are made on the host's hot path. */
export interface PoolObserver {
  /**
   * Called synchronously where an acquire is requested, in the caller's own stack and async context; the
   * value is handed back to `acquired`, which may run in another request's context (a queued acquire is
   * served from the releasing caller's callback). Only the first recorder implementing it is asked.
   */
  acquireOrigin?(): object | undefined;
  poolOpened?(pool: ObservedPool): void;
  /** The pool ended, was garbage-collected, or stopped being monitored; drop its state. */
  poolClosed?(pool: ObservedPool): void;
  /**
   * Reported before the library takes the request: the snapshot does not count it yet. `path` is how it
   * will be served, judged from the pool's state at that instant.
   */
  acquireRequested?(pool: ObservedPool, path: AcquirePath): void;
  acquired?(pool: ObservedPool, client: object, waitSeconds: number, path: AcquirePath, origin?: object): void;
  /** Reported while the client still counts as used in the snapshot (every supported library does so). */
  released?(pool: ObservedPool, client: object, useSeconds: number): void;
  acquireTimedOut?(pool: ObservedPool, waitSeconds: number): void;
  connectionCreated?(pool: ObservedPool, createSeconds: number): void;
  /** Opening a physical connection failed (refused, authentication, TLS…). */
  connectionFailed?(pool: ObservedPool, error: unknown): void;
  connectionClosed?(pool: ObservedPool, reason: CloseReason): void;
  /** An idle connection failed while sitting in the pool. */
  idleError?(pool: ObservedPool, error: unknown): void;
  /** `pool` is undefined for clients that belong to no observed pool. */
  queryDone?(pool: ObservedPool | undefined, target: QueryTarget, seconds: number, text: unknown, error: unknown, client?: object): void;
}

type Method = keyof PoolObserver;
const METHODS: readonly Method[] = [
  'acquireOrigin', 'poolOpened', 'poolClosed', 'acquireRequested', 'acquired', 'released', 'acquireTimedOut',
  'connectionCreated', 'connectionFailed', 'connectionClosed', 'idleError', 'queryDone',
];

/**
 * Fans each call out to the recorders that implement it. Per-method arrays, so a call costs a loop over
 * exactly the interested recorders; a recorder that throws is reported once and never reaches the host.
 */
export class ObserverFanOut implements Required<PoolObserver> {
  private readonly targets: { [M in Method]: Array<PoolObserver> } = Object.fromEntries(METHODS.map((m) => [m, []])) as never;
  /** Whether any recorder implements each per-checkout call: the adapters skip the call when none does. */
  readonly wants = { acquireRequested: false, acquired: false, released: false };

  /*
   * The calls made on every checkout and query, as bound functions: calling `list[i].acquired(…)` on several
   * recorder classes made the property load megamorphic, which showed in the worst-case profile.
   */
  private hot = this.bindHot(this.targets);

  constructor(private readonly onError: (error: unknown) => void) {}

  add(observer: PoolObserver): void {
    for (const m of METHODS) if (typeof observer[m] === 'function') this.targets[m].push(observer);
    this.hot = this.bindHot(this.targets);
  }

  remove(observer: PoolObserver): void {
    for (const m of METHODS) this.targets[m] = this.targets[m].filter((o) => o !== observer);
    this.hot = this.bindHot(this.targets);
  }

  private bindHot(targets: { [M in Method]: Array<PoolObserver> }) {
    this.wants.acquireRequested = targets.acquireRequested.length > 0;
    this.wants.acquired = targets.acquired.length > 0;
    this.wants.released = targets.released.length > 0;
    const bind = <M extends 'acquireRequested' | 'acquired' | 'released' | 'queryDone'>(m: M) =>
      targets[m].map((o) => (o[m] as (...a: never[]) => void).bind(o)) as Array<NonNullable<PoolObserver[M]>>;
    return { acquireRequested: bind('acquireRequested'), acquired: bind('acquired'), released: bind('released'), queryDone: bind('queryDone') };
  }

  private each<M extends Method>(m: M, call: (o: PoolObserver) => void): void {
    const list = this.targets[m];
    for (let i = 0; i < list.length; i++) {
      try {
        call(list[i]!);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  /** What the first interested recorder wants handed back to `acquired`; undefined (and free) when none. */
  acquireOrigin(): object | undefined {
    const first = this.targets.acquireOrigin[0];
    if (first === undefined) return undefined;
    try { return first.acquireOrigin!(); } catch (err) { this.onError(err); return undefined; }
  }
  poolOpened(pool: ObservedPool): void { this.each('poolOpened', (o) => o.poolOpened!(pool)); }
  poolClosed(pool: ObservedPool): void { this.each('poolClosed', (o) => o.poolClosed!(pool)); }
  // The three calls made on every checkout and query loop without a closure: they are the hot path.
  acquireRequested(pool: ObservedPool, path: AcquirePath): void {
    const list = this.hot.acquireRequested;
    for (let i = 0; i < list.length; i++) {
      try { list[i]!(pool, path); } catch (err) { this.onError(err); }
    }
  }
  acquired(pool: ObservedPool, client: object, waitSeconds: number, path: AcquirePath, origin?: object): void {
    const list = this.hot.acquired;
    for (let i = 0; i < list.length; i++) {
      try { list[i]!(pool, client, waitSeconds, path, origin); } catch (err) { this.onError(err); }
    }
  }
  released(pool: ObservedPool, client: object, useSeconds: number): void {
    const list = this.hot.released;
    for (let i = 0; i < list.length; i++) {
      try { list[i]!(pool, client, useSeconds); } catch (err) { this.onError(err); }
    }
  }
  acquireTimedOut(pool: ObservedPool, waitSeconds: number): void { this.each('acquireTimedOut', (o) => o.acquireTimedOut!(pool, waitSeconds)); }
  connectionCreated(pool: ObservedPool, createSeconds: number): void {
    this.each('connectionCreated', (o) => o.connectionCreated!(pool, createSeconds));
  }
  connectionFailed(pool: ObservedPool, error: unknown): void { this.each('connectionFailed', (o) => o.connectionFailed!(pool, error)); }
  connectionClosed(pool: ObservedPool, reason: CloseReason): void { this.each('connectionClosed', (o) => o.connectionClosed!(pool, reason)); }
  idleError(pool: ObservedPool, error: unknown): void { this.each('idleError', (o) => o.idleError!(pool, error)); }
  queryDone(pool: ObservedPool | undefined, target: QueryTarget, seconds: number, text: unknown, error: unknown, client?: object): void {
    const list = this.hot.queryDone;
    for (let i = 0; i < list.length; i++) {
      try { list[i]!(pool, target, seconds, text, error, client); } catch (err) { this.onError(err); }
    }
  }
}
