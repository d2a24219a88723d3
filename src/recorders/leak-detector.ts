/*
 * Leak and long-hold detection (HikariCP's leakDetectionThreshold), idle-in-transaction detection, and
 * connection hold time by the HTTP route that checked the connection out.
 *
 * Nothing here runs on a checkout: each pool's probe keeps its checked-out connections (when and by whom
 * each was taken, its last query), and one unref'd timer sweeps them while pools are open; everything that
 * costs (counters, route lookup, log lines, stack formatting) happens there, once per flagged checkout. Only
 * hold time by route, when asked for, takes each release.
 */
import { basename, dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ValueType, type Attributes, type Counter, type Meter } from '@opentelemetry/api';
import { errorText, type PoolscopeLogger } from '../logger.js';
import { LocalHistogram, LocalMetricProducer, type HistogramCell } from '../metrics/local-histogram.js';
import { LocalGauges, type Emit } from '../metrics/local-gauges.js';
import { pgClientOf } from '../pools/checkout-link.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolObserver } from '../pools/observer.js';
import { checkoutRecord, type Checkout } from '../pools/pool-probe.js';
import { PoolStates } from '../pools/pool-states.js';
import * as sc from '../semconv.js';
import { currentRequest, installRequestContext, methodOf, routeOf, type RoutedRequest } from '../context/request-route.js';
import { monotonicNow, nativeTimers } from '../native-timers.js';
import { routeCap } from '../http/route.js';

export interface LeakDetectorOptions {
  /** A checkout held this long is counted and logged once; 0 turns leak detection off. */
  leakThresholdMillis: number;
  /** A checked-out client idle this long inside an open transaction is flagged once; 0 turns it off. */
  idleInTransactionThresholdMillis: number;
  /** Capture the stack of every acquire request, to show where a leaked connection was taken. */
  stackTrace: boolean;
  /** Charge hold time to the `http.route` of the request that checked the connection out. */
  routes: boolean;
}

/** At most one leak line and one idle-in-transaction line per pool per interval; the next says how many were skipped. */
const LOG_INTERVAL_MS = 60_000;
const MAX_ROUTE_LENGTH = 200;
const MAX_STACK_FRAMES = 12;
/** Sweep often enough to report within a quarter of the shortest threshold, never more than 4×/s... */
const MIN_SWEEP_MS = 25;
/** ...and at least every 5 s. */
const MAX_SWEEP_MS = 5_000;

// Our frames are dropped from captured stacks: this file is either dist/recorders/leak-detector.js (or its
// src/ twin) or part of a bundled chunk in dist/chunks/, so the package's code is all under the parent directory.
const HERE = dirname(fileURLToPath(import.meta.url));
const OWN_DIR = basename(HERE) === 'recorders' || basename(HERE) === 'chunks' ? dirname(HERE) : HERE;
// With source maps on (`--enable-source-maps`, ts-node) the frames of dist/ point at the package's src/, and
// the other way round when running from src: both are ours, and they were kept then.
const OWN_DIRS = [join(dirname(OWN_DIR), 'dist') + sep, join(dirname(OWN_DIR), 'src') + sep];

/** Where an acquire was requested, when stack capture is on. The stack is formatted only if it is ever logged. */
class AcquireSite {
  declare stack: string;
  constructor(readonly request: RoutedRequest | undefined, skip: (...args: never[]) => unknown) {
    const limit = Error.stackTraceLimit;
    // Pool and ORM frames come first; keep enough to reach the application's. Restored at once. Where Error
    // is frozen (--frozen-intrinsics) the limit stays as it is: the stack may stop short of the application.
    const raise = Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit')?.writable === true;
    if (raise) Error.stackTraceLimit = 40;
    try {
      Error.captureStackTrace(this, skip);
    } finally {
      if (raise) Error.stackTraceLimit = limit;
    }
  }
}

interface PoolState {
  leakLoggedAt: number;
  leaksUnlogged: number;
  idleLoggedAt: number;
  idleUnlogged: number;
  handedBackLoggedAt: number;
  /** Per route ('' = none): counter attributes and the hold-time cell. */
  routes: Map<string, { attributes: Attributes; cell: HistogramCell | undefined }>;
}

type PgClientState = {
  getTransactionStatus?: () => unknown;
  _txStatus?: unknown;
  readyForQuery?: boolean;
  _queryQueue?: unknown[];
  _ending?: boolean;
  _queryable?: boolean;
  /** pg.native's client: its libpq connection, and the query running on it. */
  native?: unknown;
  _activeQuery?: { state?: unknown } | null;
};

/**
 * The connection's transaction status as pg records it ('I', 'T', 'E'; null before the first), or undefined
 * where it records none: pg before 8.21, and pg.native on a pg-native without getTransactionStatus (pg's method
 * then throws).
 */
function transactionStatus(c: PgClientState): unknown {
  if (typeof c.getTransactionStatus === 'function') {
    try {
      return c.getTransactionStatus() ?? null;
    } catch {
      return undefined;
    }
  }
  return '_txStatus' in c ? c._txStatus ?? null : undefined;
}

/**
 * 'busy' while something runs or waits on the connection (a cursor being read, a COPY); 'idle in transaction'
 * for an open transaction with nothing running or queued (ReadyForQuery status 'T', in a block, or 'E', a
 * failed block); undefined otherwise. A pg.native client has no ReadyForQuery flag: its running query says it
 * is busy, and libpq gives the status (it was never flagged).
 */
function wireState(client: object): 'busy' | 'idle in transaction' | undefined {
  const c = pgClientOf(client) as PgClientState;
  const native = c.readyForQuery === undefined && c.native !== undefined;
  // A native client keeps its last query as active until the next one starts; its state says whether it runs
  // (as the client's own _hasActiveQuery reads it).
  const running = native ? c._activeQuery != null && c._activeQuery.state !== 'end' && c._activeQuery.state !== 'error' : c.readyForQuery === false;
  if (running || (c._queryQueue?.length ?? 0) > 0) return 'busy';
  const status = transactionStatus(c);
  return (status === 'T' || status === 'E') && (native || c.readyForQuery === true) ? 'idle in transaction' : undefined;
}

/** Idle inside an open transaction, on a connection that has not ended. */
function openTransaction(client: object): boolean {
  return wireState(client) === 'idle in transaction' && !ended(client);
}

/** pg's transaction status, read from its field where it has one (pg 8.21+): asked at every release. */
function statusAtRelease(c: PgClientState): unknown {
  return c._txStatus !== undefined ? c._txStatus : transactionStatus(c);
}

function ended(client: object): boolean {
  const c = pgClientOf(client) as PgClientState;
  return c._ending === true || c._queryable === false;
}

/**
 * A connection kept for LISTEN (graphile-worker, PostGraphile's watch mode, pg-listen) is held on purpose, for
 * as long as the process runs; its holder listens for 'notification' on it, which no other use of a
 * connection does. Read only for a checkout already past the threshold: nothing is added to any query.
 */
function listening(client: object): boolean {
  const c = pgClientOf(client) as { listenerCount?: (event: string) => number };
  try {
    return typeof c.listenerCount === 'function' && c.listenerCount('notification') > 0;
  } catch {
    return false;
  }
}

function clean(text: string): string {
  const t = text.replace(/[^\x20-\x7e]/g, '?');
  return t.length > MAX_ROUTE_LENGTH ? `${t.slice(0, MAX_ROUTE_LENGTH)}…` : t;
}

/** A duration for a log line: thresholds go down to 10 ms, and "0.0 s" said nothing about them. */
function seconds(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  return ms >= 10_000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

export function holdTimeHistogram(): LocalHistogram {
  return new LocalHistogram(sc.METRIC_POOL_HOLD_TIME, sc.DESCRIPTION_POOL_HOLD_TIME, 's', sc.USE_TIME_BUCKETS);
}

/**
 * The recorder. Construct it before the readers (its hold-time histogram reaches them through
 * {@link producer}), then {@link start} it with the meter and the instrumentation it listens to.
 */
export class LeakDetector implements PoolObserver {
  readonly producer: LocalMetricProducer;
  private readonly holdTime: LocalHistogram | undefined;
  /** The checkout (its serial) each record was last flagged for: one count and one line per checkout. */
  private readonly leakFlagged = new WeakMap<Checkout, number>();
  private readonly idleFlagged = new WeakMap<Checkout, number>();
  /**
   * Checkouts found listening for notifications (LISTEN) at a sweep: held on purpose, and no leak even after
   * their holder removed its listener, as it does before it releases.
   */
  private readonly listenSeen = new WeakMap<Checkout, number>();
  /** When a check last found each checkout's connection busy (its serial, so a new checkout starts afresh). */
  private readonly busySeen = new WeakMap<Checkout, { serial: number; at: number }>();
  /**
   * For a checkout that started a submittable (its end unseen): when a check first found the connection idle
   * after it (`serial` and `after` tell one checkout and one submittable from the next).
   */
  private readonly idleSeen = new WeakMap<Checkout, { serial: number; after: number; at: number }>();
  /**
   * Connections handed back inside a transaction, until a release finds them out of it: each later holder
   * inherits the same transaction, and counting it at each of their releases blamed them all for one forgotten
   * COMMIT (found by review: one leak read 6 after five pool.query() calls). `inheritedMarks` bounds the marks
   * alive, so a release looks the connection up only once some connection was ever marked.
   */
  private readonly inherited = new WeakSet<object>();
  private inheritedMarks = 0;
  /** OverdueWatch.openTransaction: the status settles the common case (`I`) with one field read. */
  private readonly handedBackOpen = (checkedOut: object): boolean => {
    const c = pgClientOf(checkedOut) as PgClientState;
    const status = statusAtRelease(c);
    if (status === 'T' || status === 'E') return true;
    if (this.inheritedMarks > 0 && this.inherited.delete(c)) this.inheritedMarks--;
    return false;
  };
  /** Pools whose pg client records no transaction status, already said (noteNoTransactionStatus). */
  private readonly noTransactionStatus = new WeakSet<ObservedPool>();
  private readonly states = new PoolStates<PoolState>(
    () => ({ leakLoggedAt: -Infinity, leaksUnlogged: 0, idleLoggedAt: -Infinity, idleUnlogged: 0, handedBackLoggedAt: -Infinity, routes: new Map() }), new Map());
  private readonly sweepMillis: number;
  /** False with only route attribution on: nothing to sweep for. */
  private readonly sweeping: boolean;
  private timer: NodeJS.Timeout | undefined;
  private leaks: Counter | undefined;
  private idle: Counter | undefined;
  /** `poolscope.pool.long_held`, observed here rather than by the SDK's meter (no attribute hashing per pool). */
  private readonly longHeld: LocalGauges<'longHeld'> | undefined;
  private stopped = false;
  private readonly observeLongHeld = (emit: Emit<'longHeld'>) => {
    const t = monotonicNow();
    for (const [pool] of this.states.entries()) {
      let n = 0;
      for (const c of pool.probe.out) if (t - c.since >= this.options.leakThresholdMillis && !listening(c.client)) n++;
      emit('longHeld', n, pool.attributes);
    }
  };

  constructor(private readonly options: LeakDetectorOptions, private readonly log: PoolscopeLogger) {
    this.holdTime = options.routes ? holdTimeHistogram() : undefined;
    this.longHeld = options.leakThresholdMillis > 0
      ? new LocalGauges({ longHeld: { unit: '{connection}', valueType: ValueType.INT, kind: 'gauge', name: sc.METRIC_POOL_LONG_HELD,
        description: sc.DESCRIPTION_POOL_LONG_HELD } })
      : undefined;
    this.producer = new LocalMetricProducer([this.longHeld, this.holdTime].filter((m) => m !== undefined));
    const thresholds = [options.leakThresholdMillis, options.idleInTransactionThresholdMillis].filter((n) => n > 0);
    this.sweeping = thresholds.length > 0;
    this.sweepMillis = Math.min(MAX_SWEEP_MS, Math.max(MIN_SWEEP_MS, Math.floor(Math.min(Infinity, ...thresholds) / 4)));
    // Bound the method once: it is the frame stack capture starts below.
    this.acquireOrigin = this.acquireOrigin.bind(this);
    if (!options.routes && !options.stackTrace) this.acquireOrigin = undefined as never;
    // Hold time by route is the one thing that needs each release.
    if (!options.routes) this.released = undefined as never;
  }

  /** True when the options ask for anything at all. */
  static wanted(o: LeakDetectorOptions): boolean {
    return o.leakThresholdMillis > 0 || o.idleInTransactionThresholdMillis > 0 || o.routes;
  }

  /** Creates the instruments, installs the request context when routes are on; returns the undo. */
  start(meter: Meter, addRecorder: (r: PoolObserver) => void): () => void {
    const checkouts = { unit: '{checkout}', valueType: ValueType.INT };
    if (this.options.leakThresholdMillis > 0) {
      this.leaks = meter.createCounter(sc.METRIC_POOL_LEAKS, { ...checkouts, description: sc.DESCRIPTION_POOL_LEAKS });
      this.longHeld!.source = this.observeLongHeld;
    }
    if (this.options.idleInTransactionThresholdMillis > 0) {
      this.idle = meter.createCounter(sc.METRIC_POOL_IDLE_IN_TRANSACTION, { ...checkouts, description: sc.DESCRIPTION_POOL_IDLE_IN_TRANSACTION });
    }
    const uninstall = this.options.routes ? installRequestContext() : () => undefined;
    addRecorder(this);
    return () => this.stop(uninstall);
  }

  private stop(uninstall: () => void): void {
    this.stopped = true;
    uninstall();
    if (this.timer !== undefined) nativeTimers.clearInterval(this.timer);
    this.timer = undefined;
    if (this.longHeld !== undefined) this.longHeld.source = undefined;
    this.states.clear();
  }

  acquireOrigin(): object | undefined {
    const request = this.options.routes ? currentRequest() : undefined;
    return this.options.stackTrace ? new AcquireSite(request, this.acquireOrigin) : request;
  }

  poolOpened(pool: ObservedPool): void {
    if (this.stopped) return;
    this.states.of(pool);
    if (this.timer === undefined && this.sweeping) this.startTimer();
    if (this.sweeping) {
      const { leakThresholdMillis: leak, idleInTransactionThresholdMillis: idle } = this.options;
      pool.probe.overdue = {
        leakAfterMs: leak > 0 ? leak : Infinity,
        idleAfterMs: idle > 0 ? idle : Infinity,
        check: (c, t, releasing) => this.checkOverdue(pool, c, t, releasing),
        openTransaction: idle > 0 ? this.handedBackOpen : undefined,
      };
    }
  }

  released(pool: ObservedPool, client: object, useSeconds: number): void {
    const c = checkoutRecord(client);
    const cell = this.routeEntry(pool, this.requestOf(c?.origin))?.cell;
    cell?.record(useSeconds);
  }

  poolClosed(pool: ObservedPool): void {
    this.states.delete(pool);
    pool.probe.overdue = undefined;
  }

  /**
   * Between two sweeps (a quarter of the shortest threshold, up to 5 s): a checkout released past the leak
   * threshold, or a transaction that goes on (or is released) after an idle gap past its threshold, was never
   * counted when no sweep ran meanwhile.
   */
  private checkOverdue(pool: ObservedPool, c: Checkout, t: number, releasing: boolean): void {
    const state = this.states.peek(pool);
    if (state === undefined) return;
    const leak = releasing && this.isNewLeak(c, t);
    if (leak) this.flagLeak(pool, state, c);
    const idle = !ended(c.client) && this.isNewIdle(c, t);
    // Handed back inside its transaction: the pool gives the transaction, and the locks it holds meanwhile, to
    // the next caller, whatever the threshold (found by review: nothing was said, as only checkouts were watched).
    // Marked also when this checkout was already flagged as idle: its transaction is still the one counted.
    const pg = pgClientOf(c.client);
    const handedBackNow = releasing && this.options.idleInTransactionThresholdMillis > 0 && !this.inherited.has(pg) &&
      openTransaction(c.client);
    if (handedBackNow) {
      this.inherited.add(pg);
      this.inheritedMarks++;
    }
    const handedBack = handedBackNow && !idle && this.idleFlagged.get(c) !== c.serial;
    if (idle || handedBack) this.flagIdle(pool, state, c);
    if (leak) this.logLeak(pool, state, c, t, releasing);
    if (idle) this.logIdle(pool, state, c, t);
    if (handedBack && t - state.handedBackLoggedAt >= LOG_INTERVAL_MS) {
      state.handedBackLoggedAt = t;
      this.log.warn(`released-in-transaction:${pool.name}`, `poolscope: pool "${pool.name}": a connection was released ` +
        `inside an open transaction (no COMMIT or ROLLBACK)${this.holder(c)}; the pool hands the transaction, and the ` +
        `locks it holds until then, to the next caller.${this.where(c)}`);
    }
  }

  private startTimer(): void {
    this.timer = nativeTimers.setInterval(() => {
      try {
        this.sweep();
      } catch (err) {
        this.log.warn('leak:sweep', `poolscope: leak detection failed: ${errorText(err)}`);
      }
    }, this.sweepMillis);
    this.timer.unref();
  }

  /** Visible for tests: one pass over every checked-out client. */
  sweep(): void {
    const t = monotonicNow();
    let any = false;
    for (const [pool, state] of this.states.entries()) {
      any = true;
      let newLeak: Checkout | undefined;
      let newIdle: Checkout | undefined;
      for (const c of pool.probe.out) {
        // A checkout whose connection ended (the server terminated it, a failover, the server's own idle
        // timeout) is still a leak: the pool keeps its slot until the holder releases it (pg-pool counts it
        // as in use; sequelize-pool, which destroys such a connection, reports a release). Skipped, a handler
        // without `finally` whose connection the server ended lost its slot for good and nothing said so
        // (found by review). Its transaction ended with it: no idle-in-transaction.
        const gone = ended(c.client);
        // Noted at every sweep: a LISTEN holder removes its listener before it releases, often past the threshold;
        // and when a connection that ran a cursor (or a stream, a COPY) is first found done with it.
        if (this.options.leakThresholdMillis > 0) this.listened(c);
        if (this.options.idleInTransactionThresholdMillis > 0 && !gone) {
          this.noteNoTransactionStatus(pool, c.client);
          if (c.submittedAt !== -Infinity) this.idleSince(c, t);
        }
        if (this.isNewLeak(c, t)) {
          this.flagLeak(pool, state, c);
          if (newLeak === undefined || c.since < newLeak.since) newLeak = c;
        }
        if (!gone && this.isNewIdle(c, t)) {
          this.flagIdle(pool, state, c);
          if (newIdle === undefined || this.idleSince(c, t)! < this.idleSince(newIdle, t)!) newIdle = c;
        }
      }
      if (newLeak !== undefined) this.logLeak(pool, state, newLeak, t, false);
      if (newIdle !== undefined) this.logIdle(pool, state, newIdle, t);
    }
    // No pool open: no wake-ups until the next pool opens.
    if (!any && this.timer !== undefined) {
      nativeTimers.clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private isNewLeak(c: Checkout, t: number): boolean {
    const after = this.options.leakThresholdMillis;
    if (after <= 0 || this.leakFlagged.get(c) === c.serial || t - c.since < after) return false;
    return !this.listened(c);
  }

  /** Whether `c` is, or was at a sweep, listening for notifications during this checkout. */
  private listened(c: Checkout): boolean {
    if (this.listenSeen.get(c) === c.serial) return true;
    if (!listening(c.client)) return false;
    this.listenSeen.set(c, c.serial);
    return true;
  }

  private isNewIdle(c: Checkout, t: number): boolean {
    const after = this.options.idleInTransactionThresholdMillis;
    if (after <= 0 || this.idleFlagged.get(c) === c.serial || t - c.lastActivity < after) return false;
    const since = this.idleSince(c, t);
    return since !== undefined && t - since >= after;
  }

  /** Counted once per checkout; logged with the pool's next line. */
  private flagLeak(pool: ObservedPool, state: PoolState, c: Checkout): void {
    this.leakFlagged.set(c, c.serial);
    this.leaks?.add(1, this.routeEntry(pool, this.requestOf(c.origin))?.attributes ?? pool.attributes);
    state.leaksUnlogged++;
  }

  private flagIdle(pool: ObservedPool, state: PoolState, c: Checkout): void {
    this.idleFlagged.set(c, c.serial);
    this.idle?.add(1, this.routeEntry(pool, this.requestOf(c.origin))?.attributes ?? pool.attributes);
    state.idleUnlogged++;
  }

  /** One line per pool per interval, for `c`; it counts the others flagged since the last line. */
  private logLeak(pool: ObservedPool, state: PoolState, c: Checkout, t: number, released: boolean): void {
    if (t - state.leakLoggedAt < LOG_INTERVAL_MS) return;
    state.leakLoggedAt = t;
    this.log.warn(`leak:${pool.name}`, this.leakMessage(pool, c, t, state.leaksUnlogged - 1, released));
    state.leaksUnlogged = 0;
  }

  /**
   * pg before 8.21 (and pg.native on an old pg-native) records no transaction status, so its connections never
   * read idle in a transaction: said once per pool (a massive app on its nested pg 8.8 had no idle-in-transaction detection,
   * and nothing said so).
   */
  private noteNoTransactionStatus(pool: ObservedPool, client: object): void {
    if (this.noTransactionStatus.has(pool)) return;
    const c = pgClientOf(client) as PgClientState;
    // Only a pg client is judged: a Slonik connection is linked to its pg.Client at its first query.
    if (!('readyForQuery' in c) && c.native === undefined) return;
    if (transactionStatus(c) !== undefined) return;
    this.noTransactionStatus.add(pool);
    this.log.warn(`no-transaction-status:${pool.name}`, `poolscope: pool "${pool.name}": its pg client records no transaction ` +
      'status (pg before 8.21, or an old pg-native); idle-in-transaction is not detected for its connections.');
  }

  private logIdle(pool: ObservedPool, state: PoolState, c: Checkout, t: number): void {
    if (t - state.idleLoggedAt < LOG_INTERVAL_MS) return;
    state.idleLoggedAt = t;
    this.log.warn(`idle-in-transaction:${pool.name}`, this.idleMessage(pool, c, t, state.idleUnlogged - 1));
    state.idleUnlogged = 0;
  }

  /**
   * Since when `c` has been idle in an open transaction; undefined when it is not. Measured from its last
   * query's end, which the query wrapper sees, or from the last check that found the connection busy, if later.
   * A cursor, query stream or COPY is not timed and its end is not seen: once one was started, idleness counts
   * from the first check that found the connection done with it. (Counted from its start, a transaction that
   * read one for longer than the threshold was flagged the moment it was done; from the last busy check, a gap
   * up to one sweep shorter than the threshold was.) A gap may so be counted short, never long.
   */
  private idleSince(c: Checkout, t: number): number | undefined {
    const state = wireState(c.client);
    if (state === 'busy') this.busySeen.set(c, { serial: c.serial, at: t });
    if (state !== 'idle in transaction') return undefined;
    const busy = this.busySeen.get(c);
    let since = busy !== undefined && busy.serial === c.serial ? Math.max(c.lastActivity, busy.at) : c.lastActivity;
    if (c.submittedAt !== -Infinity) {
      let seen = this.idleSeen.get(c);
      if (seen === undefined || seen.serial !== c.serial || seen.after !== c.submittedAt) {
        seen = { serial: c.serial, after: c.submittedAt, at: t };
        this.idleSeen.set(c, seen);
      }
      since = Math.max(since, seen.at);
    }
    return since;
  }

  private requestOf(origin: object | undefined): RoutedRequest | undefined {
    return origin instanceof AcquireSite ? origin.request : origin as RoutedRequest | undefined;
  }

  /** Counter attributes and hold-time cell for a pool and the route of `req` (none: the pool's own). */
  private routeEntry(pool: ObservedPool, req: RoutedRequest | undefined) {
    const state = this.states.peek(pool);
    if (state === undefined) return undefined;
    const template = req === undefined ? undefined : routeOf(req);
    // The request-duration histogram's cap and labels (route.ts): the two are joined by route.
    const route = template === undefined || template === '' ? '' : routeCap().admit(template);
    let entry = state.routes.get(route);
    if (entry !== undefined) return entry;
    const attributes = Object.freeze(route === '' ? { ...pool.attributes } : { ...pool.attributes, [sc.ATTR_HTTP_ROUTE]: route });
    const cell = this.holdTime?.cell(`${pool.name}\u0000${route}`, () => attributes);
    entry = { attributes, cell };
    state.routes.set(route, entry);
    return entry;
  }

  private holder(c: Checkout): string {
    const req = this.requestOf(c.origin);
    if (req === undefined) return this.options.routes ? ' outside any HTTP request' : '';
    const route = routeOf(req);
    return route === undefined ? ` by a ${methodOf(req)} request (no route matched yet)` : ` by ${methodOf(req)} ${clean(route)}`;
  }

  private where(c: Checkout): string {
    if (!(c.origin instanceof AcquireSite)) return this.options.stackTrace ? '' : ' Set POOLSCOPE_LEAK_STACK=true to log where it was acquired.';
    const frames = String(c.origin.stack ?? '').split('\n')
      .filter((line) => line.trimStart().startsWith('at ') && !OWN_DIRS.some((dir) => line.includes(dir)))
      .slice(0, MAX_STACK_FRAMES);
    return frames.length === 0 ? '' : ` Acquired at:\n${frames.join('\n')}`;
  }

  private leakMessage(pool: ObservedPool, c: Checkout, t: number, others: number, released: boolean): string {
    const more = others > 0 ? ` ${others} more connection(s) of this pool crossed the threshold since the last report.` : '';
    const gone = !released && ended(c.client) ? ' Its connection has closed since; the pool keeps its place until it is released.' : '';
    return `poolscope: pool "${pool.name}": a connection ${released ? 'was' : 'has been'} checked out for ${seconds(t - c.since)} ` +
      `(leak threshold ${seconds(this.options.leakThresholdMillis)})${this.holder(c)}.${gone}${more}${this.where(c)}`;
  }

  private idleMessage(pool: ObservedPool, c: Checkout, t: number, others: number): string {
    const more = others > 0 ? ` ${others} more of this pool since the last report.` : '';
    return `poolscope: pool "${pool.name}": a checked-out connection has been idle in an open transaction for ` +
      `${seconds(t - (this.idleSince(c, t) ?? c.lastActivity))} (threshold ${seconds(this.options.idleInTransactionThresholdMillis)})${this.holder(c)}; ` +
      `it holds its locks and snapshot until it commits or rolls back.${more}${this.where(c)}`;
  }
}
