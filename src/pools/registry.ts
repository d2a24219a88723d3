import { PoolNameAllocator } from '../pool-name.js';
import type { OpeningCallers } from './opening-attempts.js';
import { ObservedPool, type SnapshotReader } from './observed-pool.js';
import type { PoolObserver, PoolSnapshot } from './observer.js';

export interface PoolRegistration {
  /** The requested name; a second live pool with the same name becomes `name#2`. */
  baseName: string;
  library: string;
  read: SnapshotReader;
  namespace?: string;
  baseSize?: number;
  /** Where the pool connects; omitted when the target was withheld (a mis-read connection string). */
  server?: { address: string; port: number };
  /** Callers waiting on a connection being opened that `read`'s `pending` leaves out (see ObservedPool.opening). */
  opening?: () => OpeningCallers | undefined;
}

/**
 * The live pools. Recorders read them at collection time, so numbers are the pools' own counters at that
 * instant — never running totals that drift or mix pools together. Opening and closing are reported to the
 * observer so recorders can create and free their per-pool state.
 */
export class PoolRegistry {
  private readonly live = new Set<ObservedPool>();
  private readonly names = new PoolNameAllocator();
  private observer: PoolObserver | undefined;
  private added = false;

  /** Set once by the instrumentation that owns this registry. */
  setObserver(observer: PoolObserver): void {
    this.observer = observer;
  }

  add(registration: PoolRegistration): ObservedPool {
    const pool = new ObservedPool(this.names.acquire(registration.baseName), registration.library, registration.read,
      registration.namespace, registration.baseSize, registration.server, registration.opening);
    this.live.add(pool);
    this.added = true;
    this.observer?.poolOpened?.(pool);
    return pool;
  }

  remove(pool: ObservedPool): void {
    if (!this.live.delete(pool)) return;
    this.names.release(pool.name);
    this.observer?.poolClosed?.(pool);
  }

  /** The pools registered now (as of the last snapshot sweep). */
  pools(): IterableIterator<ObservedPool> {
    return this.live.values();
  }

  /** Names of the pools registered now (as of the last snapshot sweep). */
  liveNames(): Set<string> {
    const names = new Set<string>();
    for (const pool of this.live) names.add(pool.name);
    return names;
  }

  /** True once any pool was registered, even if all have ended since. */
  get everObserved(): boolean {
    return this.added;
  }

  get size(): number {
    return this.live.size;
  }

  /** Snapshots of every live pool; ended or collected pools are removed here, so they stop being reported. */
  snapshots(): Array<[ObservedPool, PoolSnapshot]> {
    const out: Array<[ObservedPool, PoolSnapshot]> = [];
    for (const pool of this.live) {
      const snapshot = pool.snapshot();
      if (snapshot === undefined) this.remove(pool);
      else out.push([pool, snapshot]);
    }
    return out;
  }
}
