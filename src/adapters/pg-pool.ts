import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { defaultPoolName, resolvePoolTarget, type PoolTargetOptions } from '../pool-name.js';
import { countOption } from '../pools/observed-pool.js';
import type { AcquirePath, CloseReason, PoolSnapshot } from '../pools/observer.js';
import type { PoolAdapter } from './adapter.js';
import { connectStartedAt, currentQuerySpans, patchClientClass, setConnectFailureSink, takeCreateSeconds } from './pg-client.js';
import { OpeningAttempts, type OpeningCallers } from '../pools/opening-attempts.js';
import {
  attachOnConstruct, callObserved, chooseName, currentContext, defineHidden, isServerTermination, liveMark, now, PoolMark, reportAcquired,
  reportReleased, reportRequested, setClientPool, subclassOnConstruct, type AdapterContext, type MonitorPoolOptions,
} from './shared.js';
import { ownMethod, sameArity, type Method } from '../transparent.js';

/** A pg-pool Pool as seen by the wrappers; every member read here is public API except `_release` (see below). */
type PgPool = {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
  ending?: boolean;
  ended?: boolean;
  options?: { max?: unknown; min?: unknown; poolName?: unknown; maxUses?: number; connectionTimeoutMillis?: unknown } & PoolTargetOptions;
  connect: (...args: unknown[]) => unknown;
  end?: (...args: unknown[]) => unknown;
  emit: (event: string | symbol, ...args: unknown[]) => boolean;
  _release?: (client: object, idleListener: unknown, err?: unknown) => unknown;
  _expired?: { has(client: object): boolean };
  _clients?: unknown;
  newClient?: (...args: unknown[]) => unknown;
  Client?: unknown;
};

const kPoolMark = Symbol.for('poolscope.pool-state');
const kPoolSubclass = Symbol.for('poolscope.pool-subclass');
const kLazyAttach = Symbol.for('poolscope.pool-lazy-attach');
const kLazySelf = Symbol('poolscope.pool-lazy-attach-wrapper');
/** Why a client is about to be removed, decided where the cause is visible and read at 'remove'. */
const closeReasons = new WeakMap<object, CloseReason>();

function takeCloseReason(client: object): CloseReason | undefined {
  const reason = closeReasons.get(client);
  closeReasons.delete(client);
  return reason;
}

/** pg-pool's error when a new connection's connectionTimeoutMillis ran out. */
const CONNECT_TIMEOUT_MESSAGE = 'Connection terminated due to connection timeout';
const TIMEOUT_MESSAGES = new Set(['timeout exceeded when trying to connect', CONNECT_TIMEOUT_MESSAGE]);

function isAcquireTimeout(err: unknown): boolean {
  return TIMEOUT_MESSAGES.has((err as { message?: string } | null)?.message ?? '');
}

function isPgPool(p: unknown): p is PgPool {
  const pool = p as PgPool | null;
  return pool !== null && typeof pool === 'object' && typeof pool.connect === 'function' && typeof pool.emit === 'function' &&
    typeof pool.totalCount === 'number' && typeof pool.idleCount === 'number';
}

function markOf(pool: object): PoolMark | undefined {
  return (pool as Record<symbol, PoolMark | undefined>)[kPoolMark];
}

/**
 * pg-pool (and so `pg.Pool` and every library built on it: TypeORM, Drizzle, Kysely, pg-promise, Prisma's
 * adapter-pg, MikroORM). The module's Pool class is replaced by a transparent subclass whose constructor
 * attaches the pool, so pools are known from construction (max/min reported before the first query) and
 * `instanceof` keeps working. Nothing here adds an event listener: events are observed by wrapping the
 * pool's own `emit`, so listener counts and pg-pool's crash-on-unhandled-`error` semantics stay exactly
 * as they were.
 */
export const pgPoolAdapter: PoolAdapter = {
  library: 'pg-pool',

  modules() {
    return [
      new InstrumentationNodeModuleDefinition('pg-pool', ['>=2.0.0 <4'],
        (exports: unknown) => patchPoolModule(exports), (exports: unknown) => exports),
    ];
  },

  matches: isPgPool,

  attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): PoolMark {
    const p = pool as PgPool;
    const existing = markOf(p);
    if (existing !== undefined) return existing;
    const target = resolvePoolTarget(p.options);
    const baseName = chooseName(p.options?.poolName, defaultPoolName(target));
    const ref = new WeakRef(p);
    const read = (): PoolSnapshot | undefined => {
      const live = ref.deref();
      // An ending pool is still there while connections it handed out stay open: `end()` waits for them.
      if (live === undefined || hasEnded(live)) return undefined;
      return { used: usedOf(live), idle: live.idleCount, pending: live.waitingCount, max: maxOf(live), min: countOption(live.options?.min, 0) };
    };
    const mark = new PoolMark(ctx, options);
    /*
     * The pool's connection attempts in flight, from pg-pool's `newClient` to the client's 'connect' event (after
     * its `onConnect` hook): every one is for a caller, whom pg-pool does not count as waiting. (Read from the
     * clients' own flags instead, an `onConnect` hook that never settled went unseen, and a pg.native client the
     * application ended while checked out read as opening for good: `_connecting` stays set there.)
     */
    const attempts = new OpeningAttempts();
    const opening = (): OpeningCallers | undefined => {
      const live = ref.deref();
      if (live === undefined) return undefined;
      // pg-pool 2 connects inline in connect(), without newClient: its clients' own flags tell.
      if (typeof live.newClient !== 'function') return openingByFlags(live);
      // An attempt whose client left the pool failed (pg-pool drops it from `_clients`): its caller got the error.
      return attempts.read((client) => Array.isArray(live._clients) && live._clients.includes(client));
    };
    mark.register({
      baseName, library: 'pg-pool', read, opening, namespace: target.database,
      server: target.redacted === true ? undefined : { address: target.host, port: target.port },
    });
    defineHidden(p, kPoolMark, mark);
    wrapPool(p, mark, attempts);
    // A pool attached after it opened connections (a late start, or pg loaded out of the hooks' sight): the
    // queries of the clients it already had were counted with no pool.
    if (Array.isArray(p._clients)) for (const c of p._clients as unknown[]) if (c !== null && typeof c === 'object') setClientPool(c, mark);
    return mark;
  },
};

function patchPoolModule(exports: unknown): unknown {
  const patchClass = (Pool: unknown): unknown => {
    if (typeof Pool === 'function') lazyAttachOnConnect(Pool);
    return subclassOnConstruct(Pool, kPoolSubclass, (pool) => attachOnConstruct(pgPoolAdapter, pool));
  };
  if (typeof exports === 'function') return patchClass(exports);
  // import-in-the-middle hands over an ESM namespace whose default export is the class.
  const ns = exports as { default?: unknown } | null;
  if (ns !== null && typeof ns === 'object' && typeof ns.default === 'function') ns.default = patchClass(ns.default);
  return exports;
}

/**
 * A pool built from a class Poolscope did not replace (pg-pool loaded before Poolscope started, a copy
 * nested where the hook did not see it, a pool created while Poolscope was stopped) is attached on its
 * first `connect()` instead: later, but not never.
 */
export function lazyAttachOnConnect(Pool: unknown): void {
  const proto = (Pool as { prototype?: Record<PropertyKey, unknown> } | undefined)?.prototype;
  if (proto === undefined || typeof proto.connect !== 'function' || proto[kLazyAttach] !== undefined) return;
  const original = proto.connect as (...args: unknown[]) => unknown;
  defineHidden(proto, kLazyAttach, original);
  const connect = function connect(this: PgPool, ...args: unknown[]) {
    // An attached pool has its own `connect` wrapper and never gets here.
    if (markOf(this) === undefined && attachOnConstruct(pgPoolAdapter, this)) return this.connect(...args);
    return original.apply(this, args);
  };
  // On the wrapper too, so an attached pool's own wrapper can call the original directly. With the wrapper itself
  // beside it: an agent that wraps this one copies its properties onto its own wrapper (dd-trace's shimmer copies
  // every key), and an attached pool then jumped past that agent's wrapper to the original (its pg.pool.acquire
  // spans were gone). Only this very wrapper is skipped.
  defineHidden(connect, kLazyAttach, original);
  defineHidden(connect, kLazySelf, connect);
  proto.connect = sameArity(connect, original);
}

/** pg-pool before 2.0.7 has no `ended`: an ending pool with no connection left has ended there. */
function hasEnded(pool: PgPool): boolean {
  return pool.ended === true || (pool.ended === undefined && pool.ending === true && pool.totalCount === 0);
}

/** Checked out, or being opened for a caller. */
function usedOf(pool: PgPool): number {
  return Math.max(0, pool.totalCount - pool.idleCount);
}

/**
 * pg-pool 2's callers on connections being opened, from its clients' flags: `_connecting` set and not yet
 * `_connected`, and neither ended nor broken (a pg.native client keeps `_connecting` set for good), timed from
 * the start of their `connect()`. A client whose start was not seen is left out, so it can never read as stuck.
 */
function openingByFlags(pool: PgPool): OpeningCallers | undefined {
  const clients = pool._clients;
  if (!Array.isArray(clients)) return undefined;
  let count = 0;
  let since = Infinity;
  for (const c of clients as Array<{ _connecting?: unknown; _connected?: unknown; _ending?: unknown; _queryable?: unknown } | null>) {
    if (c === null || typeof c !== 'object' || c._connecting !== true || c._connected === true || c._ending === true || c._queryable === false) continue;
    const started = connectStartedAt.get(c);
    if (started === undefined) continue;
    count++;
    if (started < since) since = started;
  }
  return count === 0 ? undefined : { count, since };
}

/**
 * The number of connections at which pg-pool stops opening more: its `_isFull()` is
 * `clients.length >= options.max`, compared as JavaScript compares. So `max: 2.5` allows 3, a numeric string
 * (`'5'` from an env var, `'0x10'`) counts as its number, anything that is no number (`'abc'`, Infinity)
 * never fills (unbounded), and 0 or less opens nothing. (Read as a count, such values became 10 or were
 * rounded down, and an unbounded pool of 12 was reported at 120 % of 10.) pg-pool itself replaces a falsy
 * max by 10 at construction.
 */
function maxOf(pool: PgPool): number {
  const max = pool.options?.max;
  if (max === undefined || max === null) return 10;
  let n: number;
  try {
    n = typeof max === 'number' ? max : Number(max);
  } catch {
    return 10; // a value JavaScript cannot compare: pg-pool throws on it as well
  }
  if (Number.isNaN(n)) return Infinity;
  return n <= 0 ? 0 : Math.ceil(n);
}

/**
 * The path a request made now will take, as pg-pool decides it: while idle clients exist every request is
 * queued and served on the next tick, idle clients first in order, so only as many as there are idle
 * clients beyond the waiters already queued get one; the rest open a new connection while the pool has
 * room, else wait for a release. (Counting every request 'idle' while any client was idle mislabelled a
 * same-tick burst, and the pending peak then missed it.) Those that open one are the first waiters beyond the
 * idle clients, as many as there is room: counting every request 'new' while the pool had room called a burst
 * of eight on one idle client and room for two 'new' seven times, where pg-pool opened two and queued five.
 * Without idle clients pg-pool opens a connection at once while it has room.
 */
function acquirePath(pool: PgPool, max: number): AcquirePath {
  const idle = pool.idleCount;
  const waiting = pool.waitingCount;
  if (idle > waiting) return 'idle';
  const ahead = idle === 0 ? 0 : waiting - idle;
  return pool.totalCount + ahead < max ? 'new' : 'queued';
}

/*
 * What each wrapper passes on to, as passOn (transparent.ts) decides it: the pool's own method, else the
 * prototype's at each call. Here each wrapper reads the prototype by name in its own code
 * (`protoOf(this).emit`): one helper taking the name made that a keyed load across four names, which V8
 * handles megamorphically; it was the second largest item of ours in the checkout path's profile.
 * A foreign `this` (`pool.emit.call({}, …)`) has none of them: the prototype the pool had when wrapped then.
 */
const protoOf = (self: object): PgPool => Object.getPrototypeOf(self) as PgPool;

/**
 * Wraps an attached pool's own methods. They go on the instance (not on pg-pool's prototype) so that pools
 * Poolscope did not attach run pg-pool's code untouched.
 */
function wrapPool(pool: PgPool, mark: PoolMark, attempts: OpeningAttempts): void {
  // A method called detached (`const { connect } = pool; connect()`) runs as pg-pool's would, with its error.
  const proto = protoOf(pool);
  const ownConnect = ownMethod(pool, 'connect');
  defineHidden(pool, 'connect', sameArity(function connect(this: PgPool, ...args: unknown[]) {
    // Past the prototype's lazy-attach wrapper, which only matters for pools not attached yet: this one is,
    // and going through it cost a rest array and a lookup on every checkout.
    const detached = this === undefined || this === null;
    const method = (ownConnect ?? (detached ? proto : protoOf(this)).connect ?? proto.connect) as Method & { [kLazyAttach]?: Method; [kLazySelf]?: Method };
    const originalConnect = method[kLazySelf] === method ? method[kLazyAttach]! : method;
    if (detached) return originalConnect.apply(this, args);
    const m = liveMark(mark);
    // An ended pool refuses at once: no acquire, no connection attempt (each was counted as a failed one).
    if (m === undefined || this.ending === true) return originalConnect.apply(this, args);
    const start = now();
    const observed = m.observed!;
    // The pool's own counters, read directly: the snapshot reader (WeakRef, an object) cost 0.09 µs per checkout.
    const max = maxOf(this);
    const path = acquirePath(this, max);
    reportRequested(m, observed, path, start, this.waitingCount);
    // Captured here, in the caller's context: a queued acquire completes in the releasing caller's callback.
    const origin = m.ctx.events.acquireOrigin();
    // With traces on, the callback runs in the caller's context: a queued acquire completes in the releasing
    // caller's, and pool.query()'s span would have taken that caller's span as its parent.
    const spans = currentQuerySpans();
    const caller = spans?.parent();
    const cb = args[0];
    const pool = this;
    if (typeof cb === 'function') {
      // The callback form (pool.query() takes it on every query): one wrapper, no second closure.
      args[0] = function (this: unknown, err: unknown, client: unknown) {
        onAcquireDone(mark, pool, max, start, path, err, client, origin);
        // eslint-disable-next-line prefer-rest-params
        if (spans === undefined) return (cb as (...a: unknown[]) => unknown).apply(this, arguments as unknown as unknown[]);
        // eslint-disable-next-line prefer-rest-params
        return spans.call(caller, cb as (...a: unknown[]) => unknown, this, arguments);
      };
      return originalConnect.apply(this, args);
    }
    return callObserved(originalConnect, this, args, (err, client) => onAcquireDone(mark, pool, max, start, path, err, client, origin));
  }, pool.connect));

  // Free the pool's name as soon as it has ended, so the next pool to the same target reuses it instead of
  // minting new series (collection would notice the end too, but only at the next scrape). Not at `end()` while
  // connections it handed out are open: the pool vanished with a checked-out client idle in a transaction, and
  // its leak, its gauges and its health with it, as `end()` waited on that client for good.
  if (typeof pool.end === 'function') {
    const ownEnd = ownMethod(pool, 'end');
    defineHidden(pool, 'end', sameArity(function end(this: PgPool, ...args: unknown[]) {
      if (this === undefined || this === null) return ((ownEnd ?? proto.end) as Method).apply(this, args);
      const result = ((ownEnd ?? protoOf(this).end ?? proto.end) as Method).apply(this, args);
      if (hasEnded(this)) mark.close();
      return result;
    }, pool.end));
  }

  const ownEmit = ownMethod(pool, 'emit');
  // 'release' tells nothing `_release` does not, and 'acquire' matters only to a pg-pool without `_release`:
  // the two events of every checkout pass straight through.
  const acquireMatters = typeof pool._release !== 'function';
  defineHidden(pool, 'emit', sameArity(function emit(this: PgPool, event: string | symbol, a?: unknown, b?: unknown) {
    // eslint-disable-next-line prefer-rest-params
    if (this === undefined || this === null) return ((ownEmit ?? proto.emit) as Method).apply(this, arguments as unknown as unknown[]);
    // The end of a connection attempt, whether or not Poolscope runs now: one begun before a shutdown ends too.
    if (event === 'connect' && a !== null && typeof a === 'object') attempts.end(a);
    const quiet = event === 'release' || (event === 'acquire' && !acquireMatters);
    if (!quiet && (mark.ctx.active || currentContext() !== undefined)) onPoolEvent(mark, this, event, a, b);
    // `arguments`, not a rest parameter: emit runs twice per query and must pass every argument through.
    // eslint-disable-next-line prefer-rest-params
    return ((ownEmit ?? protoOf(this).emit ?? proto.emit) as Method).apply(this, arguments as unknown as unknown[]);
  }, pool.emit));

  // A new client is tied to its pool as pg-pool makes it: queries of the pool's `onConnect` hook, which runs
  // before the client's 'connect' event, were counted without the pool's name. Only new connections pass here.
  if (typeof pool.newClient === 'function') {
    const ownNewClient = ownMethod(pool, 'newClient');
    defineHidden(pool, 'newClient', sameArity(function newClient(this: PgPool) {
      const start = now();
      const before = this === undefined || this === null ? -1 : clientCount(this);
      // eslint-disable-next-line prefer-rest-params
      const result = (ownNewClient ?? (this === undefined || this === null ? proto : protoOf(this)).newClient ?? proto.newClient as Method).apply(this, arguments as unknown as unknown[]);
      if (before >= 0) tieNewClient(mark, attempts, this, before, start);
      return result;
    }, pool.newClient));
  }

  // Use time ends where every pg-pool version's `client.release()` lands. pg-pool before 3.6 never
  // emits 'release', so its event alone would silently drop use time on old lockfiles; `_release`
  // (client, idleListener, err) has had the same shape from 2.0 to today.
  if (typeof pool._release === 'function') {
    const ownRelease = ownMethod(pool, '_release');
    defineHidden(pool, '_release', sameArity(function _release(this: PgPool, client: object, idleListener: unknown, err?: unknown) {
      if (mark.ctx.active || currentContext() !== undefined) onRelease(mark, this, client, err);
      // eslint-disable-next-line prefer-rest-params
      return ((ownRelease ?? protoOf(this)._release ?? proto._release) as Method).apply(this, arguments as unknown as unknown[]);
    }, pool._release));
  }

  // The pool's client class (pg.Client, pg.native.Client or a custom one) gets the query and connect
  // wrappers on its prototype; pool.Client itself stays the very same class.
  patchClientClass(pool.Client);
}

function clientCount(pool: PgPool): number {
  try {
    return Array.isArray(pool._clients) ? pool._clients.length : -1;
  } catch {
    return -1;
  }
}

/** The pool each client made by pg-pool's `newClient` belongs to, for the failure of its connect. */
const newClientOwners = new WeakMap<object, { mark: PoolMark; pool: PgPool }>();
/** Connect errors already reported from the client's connect (onConnectFailed), not again from the acquire. */
const reportedConnectErrors = new WeakSet<object>();

function connectFailureReported(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false;
  return reportedConnectErrors.has(err) || reportedConnectErrors.has((err as { cause?: object }).cause as object);
}

/**
 * Every failed connect of a pg-pool client is a failed connection attempt, also when the caller it was opened
 * for had timed out in the queue first (pg-pool then tells no one). One that ran out of connectionTimeoutMillis
 * is reported as pg-pool names it: against a server that accepts and never answers, the pool read as
 * acquire_timeouts, not server_unreachable, and counted no error (found running the stack, then by review for
 * queued callers).
 */
function onConnectFailed(client: object, err: unknown, startedAt: number): void {
  const owner = newClientOwners.get(client);
  const m = owner === undefined ? undefined : liveMark(owner.mark);
  const observed = m?.observed;
  if (owner === undefined || m === undefined || observed === undefined) return;
  if (err !== null && typeof err === 'object') reportedConnectErrors.add(err);
  const limit = Number(owner.pool.options?.connectionTimeoutMillis);
  const timedOut = limit > 0 && now() - startedAt >= limit - 1;
  m.ctx.events.connectionFailed(observed, timedOut ? new Error(CONNECT_TIMEOUT_MESSAGE, { cause: err }) : err);
}
setConnectFailureSink(onConnectFailed);

/**
 * pg-pool has just pushed the client it made onto `_clients` (there were `before`), and started to connect it at
 * `start`. Only a client pushed by this very call is tied: a subclass whose `newClient` defers pg-pool's (a
 * token refresh first) left the list as it was, and its last client, long connected, read as opening for good.
 */
function tieNewClient(mark: PoolMark, attempts: OpeningAttempts, pool: PgPool, before: number, start: number): void {
  try {
    const clients = pool._clients;
    if (!Array.isArray(clients) || clients.length !== before + 1) return;
    const client: unknown = clients[before];
    if (client === null || typeof client !== 'object') return;
    setClientPool(client, mark);
    newClientOwners.set(client, { mark, pool });
    // Only while Poolscope runs: after a shutdown no 'connect' is observed to end the attempt, and a restart
    // found the pool's connected clients still opening.
    if (liveMark(mark) !== undefined) attempts.begin(client, start);
  } catch {
    // the queries of its onConnect hook go without the pool's name, as before
  }
}

function onAcquireDone(mark: PoolMark, pool: PgPool, max: number, start: number, path: AcquirePath, err: unknown, client: unknown,
  origin: object | undefined): void {
  const m = liveMark(mark);
  const observed = m?.observed;
  if (m === undefined || observed === undefined) return;
  const ok = err === undefined || err === null;
  // pg-pool never succeeds without a client.
  if (ok && (client === null || typeof client !== 'object')) return;
  const t = now();
  const waited = (t - start) / 1000;
  if (ok) {
    // Use time starts here, with the same clock reading as the wait's end.
    reportAcquired(m, observed, client as object, t, waited, path, origin, usedOf(pool), max);
  } else {
    if (isAcquireTimeout(err)) m.ctx.events.acquireTimedOut(observed, waited);
    else if (!connectFailureReported(err)) m.ctx.events.connectionFailed(observed, err);
    // A pool ended while this caller's connection was being opened has ended with its failure: pg-pool drops a
    // failed connection without a 'remove' event, and the name stayed taken (the next pools were `#2`, `#3`…).
    if (hasEnded(pool)) m.close();
  }
}

/*
 * onRelease and onPoolEvent observe the application's own calls, whatever they are given: a hand-made
 * `emit('connect', 42)`, or a revoked Proxy as release()'s error, made them throw into the application. Thrown
 * from `_release`, after pg-pool had marked the client released and before it was returned, it left the pool
 * short a connection for good: the next connect() waited forever. Their bodies never throw.
 */
function onRelease(mark: PoolMark, pool: PgPool, client: object, err: unknown): void {
  try {
    observeRelease(mark, pool, client, err);
  } catch {
    // the observation is lost; the release goes on exactly as without Poolscope
  }
}

function observeRelease(mark: PoolMark, pool: PgPool, client: object, err: unknown): void {
  const m = liveMark(mark);
  const observed = m?.observed;
  if (m === undefined || observed === undefined) return;
  const c = client as { _queryable?: boolean; _ending?: boolean; _poolUseCount?: number };
  // The same tests pg-pool applies right after this call, in its order, to name why the client goes.
  const maxUses = pool.options?.maxUses ?? Infinity;
  let reason: CloseReason | undefined;
  // pg-pool discards every connection released with an error, and pool.query() releases with each failed query's.
  // A connection still sound when released that way (a SQL error, a wrong parameter count's 08P01, a query_timeout,
  // a value that failed to serialize) is 'query_error': counted as 'error', ordinary failing queries paged
  // PoolConnectionCloseStorm (found running the stack; by SQLSTATE class alone, 08P01 still did, found by review).
  // (`release(true)`, a destroy asked for by name, stays 'error'.)
  const ended = c._queryable === false || c._ending === true;
  if (err) reason = isServerTermination(err) ? 'server_terminated' : typeof err === 'object' && !ended ? 'query_error' : 'error';
  else if (pool.ending === true) reason = 'pool_closed';
  else if (ended) reason = 'server_terminated';
  else if (((c._poolUseCount ?? 0) + 1) >= maxUses) reason = 'max_uses';
  else if (pool._expired?.has(client) === true) reason = 'max_lifetime';
  // A connection the pool closes takes its open transaction with it: only one it keeps is checked for one.
  reportReleased(m, observed, client, now(), reason !== undefined);
  if (reason !== undefined) closeReasons.set(client, reason);
}

function wrapClientRelease(mark: PoolMark, pool: PgPool, client: { release?: unknown }): void {
  const release = client.release;
  if (typeof release !== 'function') return;
  client.release = function (this: unknown, err?: unknown) {
    if (mark.ctx.active || currentContext() !== undefined) onRelease(mark, pool, client as object, err);
    // eslint-disable-next-line prefer-rest-params
    return release.apply(this, arguments as unknown as unknown[]);
  };
}

function onPoolEvent(mark: PoolMark, pool: PgPool, event: string | symbol, a: unknown, b: unknown): void {
  try {
    observePoolEvent(mark, pool, event, a, b);
  } catch {
    // as in onRelease
  }
}

function observePoolEvent(mark: PoolMark, pool: PgPool, event: string | symbol, a: unknown, b: unknown): void {
  const m = liveMark(mark);
  const observed = m?.observed;
  if (m === undefined || observed === undefined) return;
  const events = m.ctx.events;
  switch (event) {
    case 'connect': {
      const client = a as object;
      setClientPool(client, mark);
      const seconds = takeCreateSeconds(client);
      if (seconds !== undefined) events.connectionCreated(observed, seconds);
      break;
    }
    case 'acquire':
      // (Use time starts where the acquire completes: onAcquireDone.)
      // pg-pool 2.0 has no `_release`: its per-checkout `client.release`, assigned just before this
      // event, is the one place a release can be seen.
      if (typeof pool._release !== 'function') wrapClientRelease(mark, pool, a as { release?: unknown });
      break;
    case 'remove': {
      const client = a as object;
      const known = takeCloseReason(client) ?? (pool.ending === true ? 'pool_closed' : undefined);
      if (known !== undefined) events.connectionClosed(observed, known);
      // An idle connection that ended without a word from the server (it crashed, a proxy closed it): pg marks
      // the client ended before it says so, so pg-pool's removal calls back at once and 'remove' comes before
      // the pool's 'error' about it, in the same tick. Counted as an idle timeout until the reason waited for it.
      else {
        queueMicrotask(() => {
          try {
            events.connectionClosed(observed, takeCloseReason(client) ?? 'idle_timeout');
          } catch {
            // as in onRelease
          }
        });
      }
      // The last connection of an ending pool closed: pg-pool ends the pool right after this event.
      if (pool.ending === true && pool.totalCount === 0) m.close();
      break;
    }
    case 'error':
      // An idle client failed; pg-pool has already started removing it (and may have removed it already).
      if (b !== null && typeof b === 'object') closeReasons.set(b, isServerTermination(a) ? 'server_terminated' : 'error');
      events.idleError(observed, a);
      break;
    default:
      break;
  }
}
