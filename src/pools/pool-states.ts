import type { ObservedPool } from './observed-pool.js';

/**
 * One recorder's own state per pool, created on first use. Each recorder keeps its own instance, so no
 * recorder's state is another's; what they share is each pool's probe, which the adapter writes and they read.
 *
 * The last pool asked for is remembered in front of the map: almost every process has one pool (or serves a
 * run of events from one), and map lookups were about 0.1 µs per checkout when recorders looked their state
 * up on every checkout (bench/checkout-path.mjs).
 */
export class PoolStates<S> {
  private lastPool: ObservedPool | undefined;
  private lastState: S | undefined;

  /**
   * `iterable`: backed by a Map, for a recorder that walks every pool's state (it then drops states
   * itself, on poolClosed); otherwise weakly, so a pool that is never closed cannot keep its state alive.
   */
  constructor(private readonly create: (pool: ObservedPool) => S,
    private readonly map: Map<ObservedPool, S> | WeakMap<ObservedPool, S> = new WeakMap()) {}

  /** The pool's state, created on first use. */
  of(pool: ObservedPool): S {
    if (pool === this.lastPool) return this.lastState!;
    let state = this.map.get(pool);
    if (state === undefined) {
      state = this.create(pool);
      this.map.set(pool, state);
    }
    this.lastPool = pool;
    this.lastState = state;
    return state;
  }

  /** The pool's state if it has one; never creates it. */
  peek(pool: ObservedPool): S | undefined {
    return pool === this.lastPool ? this.lastState : this.map.get(pool);
  }

  delete(pool: ObservedPool): void {
    this.map.delete(pool);
    if (pool === this.lastPool) this.forget();
  }

  /** Every pool's state; only for an iterable instance. */
  entries(): IterableIterator<[ObservedPool, S]> {
    return (this.map as Map<ObservedPool, S>).entries();
  }

  clear(): void {
    (this.map as Map<ObservedPool, S>).clear();
    this.forget();
  }

  private forget(): void {
    this.lastPool = undefined;
    this.lastState = undefined;
  }
}
