import { ATTR_CONNECTION_STATE, ATTR_POOL_NAME } from '../semconv.js';
import type { PoolSnapshot } from './observer.js';

/**
 * Reads a pool's live counters; returns undefined once the pool has ended or been garbage-collected. Given
 * `into`, a reader may fill that object and return it instead of allocating one (the per-event snapshot).
 */
export type SnapshotReader = (into?: PoolSnapshot) => PoolSnapshot | undefined;

/**
 * One monitored pool as every recorder sees it: its reported name, attributes cached for the hot path,
 * and a live snapshot read from the library at collection time. It holds no mutable per-recorder state —
 * recorders key their own state by this object — and never the pool itself (the reader holds it weakly).
 */
export class ObservedPool {
  readonly attributes: Readonly<Record<string, string>>;
  readonly usedAttributes: Readonly<Record<string, string>>;
  readonly idleAttributes: Readonly<Record<string, string>>;

  constructor(
    readonly name: string,
    /** The pool library, e.g. `pg-pool`, `tarn`, `sequelize-pool`. */
    readonly library: string,
    private readonly reader: SnapshotReader,
    /** `db.namespace` for the pool's queries: the configured database, never pg's user-name fallback. */
    readonly namespace: string | undefined,
    /** Overflow base: the declared base size, else the pool's `min`. */
    private readonly declaredBaseSize: number | undefined,
    /** Where the pool connects (`server.address`, `server.port`); absent when withheld or unknown. */
    readonly server: { address: string; port: number } | undefined = undefined,
  ) {
    this.attributes = Object.freeze({ [ATTR_POOL_NAME]: name });
    this.usedAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'used' });
    this.idleAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'idle' });
  }

  /** The snapshot of the event being dispatched; `null` when not read yet. */
  private eventCache: PoolSnapshot | undefined | null = null;
  /**
   * The object every event's snapshot is read into: a new one per event was a third of the garbage a checkout
   * made (a sampling heap profile of the worst case, BENCHMARKS.md).
   */
  private readonly eventScratch: PoolSnapshot = { used: 0, idle: 0, pending: 0, max: 0, min: 0 };

  /**
   * The counters as of the event being dispatched, read at most once per event however many recorders
   * ask: on the hot path (every checkout) one read instead of one per recorder. The object is reused by the
   * next event: recorders read it during the event and never keep it.
   */
  eventSnapshot(): PoolSnapshot | undefined {
    if (this.eventCache === null) this.eventCache = this.read(this.eventScratch);
    return this.eventCache;
  }

  /** Set by {@link primeEvent}: the next event keeps the snapshot already read. */
  private primed = false;

  /**
   * Reads the snapshot of the event about to be dispatched, for an adapter that needs the counters itself
   * first (pg-pool's acquire path): the dispatch that follows uses this reading instead of taking another.
   */
  primeEvent(): PoolSnapshot | undefined {
    this.eventCache = this.read(this.eventScratch);
    this.primed = true;
    return this.eventCache;
  }

  /** Called by the fan-out before each event. */
  beginEvent(): void {
    if (this.primed) this.primed = false;
    else this.eventCache = null;
  }

  /** The library's counters now; undefined once the pool is gone. Never throws. */
  snapshot(): PoolSnapshot | undefined {
    return this.read(undefined);
  }

  private read(into: PoolSnapshot | undefined): PoolSnapshot | undefined {
    try {
      return this.reader(into);
    } catch {
      return undefined;
    }
  }

  baseSize(snapshot: PoolSnapshot): number {
    return this.declaredBaseSize ?? snapshot.min;
  }
}

/** A count option as a pool library would use it: numbers and numeric strings (`max: '5'` from an env var). */
export function countOption(value: unknown, fallback: number): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  return Number.isFinite(n) && n >= 0 ? Math.floor(n) : fallback;
}
