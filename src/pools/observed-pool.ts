import { ATTR_CONNECTION_STATE, ATTR_POOL_NAME } from '../semconv.js';
import type { PoolSnapshot } from './observer.js';
import type { OpeningCallers } from './opening-attempts.js';
import { PoolProbe } from './pool-probe.js';

/** Reads a pool's live counters; returns undefined once the pool has ended or been garbage-collected. */
export type SnapshotReader = () => PoolSnapshot | undefined;

/**
 * One monitored pool as every recorder sees it: its reported name, attributes cached for the hot path, a
 * live snapshot read from the library at collection time, and the probe its adapter writes on every
 * checkout (where the metrics recorder and the log policy each set one slot: where durations go, and the
 * utilization alarm). Recorders key their own state by this object. It never holds the pool itself (the
 * reader holds it weakly).
 */
export class ObservedPool {
  readonly attributes: Readonly<Record<string, string>>;
  readonly usedAttributes: Readonly<Record<string, string>>;
  readonly idleAttributes: Readonly<Record<string, string>>;
  /** What its checkouts change, written by the adapter (see pool-probe.ts). */
  readonly probe: PoolProbe = new PoolProbe(() => this.snapshot());

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
    private readonly openingReader: (() => OpeningCallers | undefined) | undefined = undefined,
  ) {
    this.attributes = Object.freeze({ [ATTR_POOL_NAME]: name });
    this.usedAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'used' });
    this.idleAttributes = Object.freeze({ [ATTR_POOL_NAME]: name, [ATTR_CONNECTION_STATE]: 'idle' });
  }

  /** The library's counters now; undefined once the pool is gone. Never throws. */
  snapshot(): PoolSnapshot | undefined {
    try {
      return this.reader();
    } catch {
      return undefined;
    }
  }

  /**
   * Callers that `pending` leaves out because a connection is being opened for each of them: pg-pool and Slonik
   * count as waiting only those queued at `max` (knex and Sequelize count them all, and report no reader). Read
   * apart from the snapshot because only health needs it. Never throws.
   */
  opening(): OpeningCallers | undefined {
    if (this.openingReader === undefined) return undefined;
    try {
      const o = this.openingReader();
      return o !== undefined && o.count > 0 && Number.isFinite(o.since) ? o : undefined;
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
