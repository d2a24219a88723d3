import { InstrumentationNodeModuleDefinition, InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import { defaultPoolName, resolvePoolTarget } from '../pool-name.js';
import { linkCheckout } from '../pools/checkout-link.js';
import { countOption } from '../pools/observed-pool.js';
import { OpeningAttempts } from '../pools/opening-attempts.js';
import type { AcquirePath, CloseReason, PoolSnapshot } from '../pools/observer.js';
import type { PoolAdapter } from './adapter.js';
import { offerPool, withdrawPool } from './pg-client.js';
import {
  chooseName, currentContext, defineHidden, isServerTermination, liveMark, now, PoolMark, reportAcquired, reportReleased,
  reportRequested, type AdapterContext,
  type MonitorPoolOptions,
} from './shared.js';
import { errorText } from '../logger.js';

/*
 * Slonik (49) runs its own pool over pg.Client: `createPool()` builds a driver (@slonik/pg-driver, one
 * pg.Client per connection, kept in a closure) and hands it to `createConnectionPool()`, whose pool object
 * (acquire / end / state) stays inside Slonik; the application only sees the bound pool, whose
 * `state()` reads it. Slonik is ESM-only, so its files are reached through import-in-the-middle: the
 * loader hook must wrap the two files named by SLONIK_ESM_FILES (src/register.ts includes them). Under
 * CommonJS on Node 24 `require('slonik')` loads the same ESM graph, which the hook sees as well.
 */

/** The files import-in-the-middle must wrap: relative imports inside Slonik, so no bare specifier names them. */
export const SLONIK_ESM_FILES = /\/slonik\/dist\/factories\/(?:createConnectionPool|createPoolConfiguration)\.js$/;

/**
 * Slonik's package: it ships only ES modules, which only the loader hook sees, so on runtimes without
 * in-thread hooks its presence starts the loader thread (src/register.ts).
 */
export const SLONIK_PACKAGE = 'slonik';

const VERSIONS = ['>=49.0.0 <50'];

/** What Slonik's `pool.state()` returns. */
interface SlonikPoolState {
  acquiredConnections: number;
  idleConnections: number;
  /** Connections being opened. */
  pendingConnections: number;
  pendingDestroyConnections: number;
  /** Released by the caller, being reset (`DISCARD ALL`) before they are idle again. */
  pendingReleaseConnections: number;
  state: 'ACTIVE' | 'ENDING' | 'ENDED';
  waitingClients: number;
}
type Method = (...args: unknown[]) => unknown;
/** A connection as @slonik/driver creates it; the pool keeps a spread copy of it (same functions). */
interface DriverClient {
  acquire: Method;
  release: Method;
  destroy: Method;
  query: (sql: unknown, values: unknown, options: unknown) => unknown;
  on: (event: string, listener: (...args: unknown[]) => void) => unknown;
  removeListener: (event: string, listener: (...args: unknown[]) => void) => unknown;
}
interface Driver { createClient: () => Promise<DriverClient> }
/** `createConnectionPool()`'s argument: the driver, the bound pool's prototype (`events`) and the sizes. */
interface PoolArguments {
  driver: Driver;
  events: object;
  maximumPoolSize?: number;
  minimumPoolSize?: number;
  maximumConnectionAge?: number;
  [kTarget]?: SlonikTarget;
}
interface InnerPool { acquire: Method; end: Method; state: () => SlonikPoolState }
/** The pool `createPool()` resolves to (public API). */
interface BoundPool {
  state: () => SlonikPoolState;
  end: Method;
  configuration: { connectionUri?: unknown; poolName?: unknown; maxPoolSize?: unknown; minPoolSize?: unknown;
    maximumPoolSize?: unknown; minimumPoolSize?: unknown };
}

interface SlonikTarget {
  baseName: string;
  namespace: string | undefined;
  server: { address: string; port: number } | undefined;
}

/** Per pool: the mark, and the synchronous signals that tell how an acquire is being served. */
interface SlonikPoolMark {
  mark: PoolMark;
  maxAge: number;
  ending: boolean;
  /** True for the synchronous span of a `pool.acquire()` call: Slonik decides idle / new / queue in it. */
  inAcquire: boolean;
  /** Connections being opened for callers (not Slonik's warm-up or minimum-size refills, which serve none). */
  openings: OpeningAttempts;
  served: 'idle' | 'new' | undefined;
}

/** Per connection, kept in the closures of its wrapped methods. */
interface ConnectionRecord {
  /** performance.now() of the checkout; NaN while not checked out. */
  checkedOutAt: number;
  /** Released by the caller, reset not finished: a destroy now means the reset failed. */
  releasing: boolean;
  /** Why it goes, decided where the cause is visible (our destroy wrapper), read at its 'destroy' event. */
  reason: CloseReason | undefined;
  lastError: unknown;
  createdAt: number;
  /** Its pg.Client, once it has joined the pool (see offerPool). */
  pgClient: object | undefined;
  /** The pool's copy of the connection (what acquire resolves to), once seen. */
  copy: object | undefined;
}

const kTarget = Symbol.for('poolscope.slonik-target');
const kState = Symbol.for('poolscope.slonik-pool');
const kWrapped = Symbol.for('poolscope.slonik-wrapped');

function isBoundPool(p: unknown): p is BoundPool {
  const pool = p as (BoundPool & Record<string, unknown>) | null;
  return pool !== null && typeof pool === 'object' && typeof pool.state === 'function' && typeof pool.end === 'function' &&
    typeof pool.connect === 'function' && typeof pool.transaction === 'function' && typeof pool.oneFirst === 'function' &&
    pool.configuration !== null && typeof pool.configuration === 'object';
}

/** Found through the bound pool's prototype (Slonik's `events`), where the hook left it. */
function stateOf(pool: object): SlonikPoolMark | undefined {
  return (pool as Record<symbol, SlonikPoolMark | undefined>)[kState];
}

/**
 * Slonik's pool. Counters are Slonik's own `pool.state()`: used = acquiredConnections +
 * pendingReleaseConnections (released, being reset, not yet available) + pendingConnections (being
 * opened); idle = idleConnections; pending = waitingClients. Connections being destroyed are left out,
 * as Slonik leaves them out of its size limit. Pools are named from the connection URI (or Slonik's own
 * `poolName` option) at construction. Slonik has no timeout for queued acquires: the timeouts counted are
 * its `connectionTimeout` on a new connection, once per `pool.acquire()` that fails with one (Slonik retries
 * up to `connectionRetryLimit` times per query, each a separate acquire).
 */
export const slonikAdapter: PoolAdapter = {
  library: 'slonik',

  modules() {
    return [
      new InstrumentationNodeModuleDefinition('slonik', VERSIONS, undefined, undefined, [
        new InstrumentationNodeModuleFile('slonik/dist/factories/createPoolConfiguration.js', VERSIONS,
          (exports: unknown) => patchExport(exports, 'createPoolConfiguration', wrapPoolConfiguration), (exports: unknown) => exports),
        new InstrumentationNodeModuleFile('slonik/dist/factories/createConnectionPool.js', VERSIONS,
          (exports: unknown) => patchExport(exports, 'createConnectionPool', wrapCreateConnectionPool), (exports: unknown) => exports),
      ]),
    ];
  },

  matches: isBoundPool,

  /**
   * A pool built while the hook ran is already observed (its state hangs off the bound pool's prototype).
   * Any other pool is observed from its `state()` alone: gauges, name and end, but no wait, use or create
   * times and no query attribution, because its inner pool and connections cannot be reached.
   */
  attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): PoolMark {
    const p = pool as BoundPool;
    const existing = stateOf(p);
    if (existing !== undefined) return existing.mark;
    const state = newPoolMark(ctx, options, undefined);
    defineHidden(p, kState, state);
    const config = p.configuration;
    const max = countOption(config.maxPoolSize ?? config.maximumPoolSize, 10);
    const min = countOption(config.minPoolSize ?? config.minimumPoolSize, 0);
    register(state, targetOf(config), new WeakRef(p), max, min);
    replaceMethod(p, 'end', (end) => function (this: unknown, ...args: unknown[]) {
      state.ending = true;
      state.mark.close();
      return end.apply(this, args);
    });
    return state.mark;
  },
};

function newPoolMark(ctx: AdapterContext, options: MonitorPoolOptions, maxAge: number | undefined): SlonikPoolMark {
  return { mark: new PoolMark(ctx, options), maxAge: maxAge ?? 30 * 60_000, ending: false, inAcquire: false, openings: new OpeningAttempts(), served: undefined };
}

function register(state: SlonikPoolMark, target: SlonikTarget, ref: WeakRef<{ state: () => SlonikPoolState }>, max: number, min: number): void {
  state.mark.register({
    baseName: target.baseName,
    library: 'slonik',
    namespace: target.namespace,
    server: target.server,
    read: (): PoolSnapshot | undefined => {
      const pool = ref.deref();
      if (pool === undefined || state.ending) return undefined;
      const s = pool.state();
      if (s.state !== 'ACTIVE') return undefined;
      return {
        used: s.acquiredConnections + s.pendingReleaseConnections + s.pendingConnections,
        idle: s.idleConnections,
        pending: s.waitingClients,
        max,
        min,
      };
    },
    // Slonik too counts as waiting only the callers queued at its maximum.
    opening: () => state.openings.read(),
  });
}

/**
 * Where the pool connects, read from the connection URI the way @slonik/pg-driver reads it (WHATWG URL:
 * host, else `?host=`; port; first path segment) and then resolved as pg resolves those fields. Slonik's
 * `poolName` option, when set, is the name.
 */
function targetOf(config: { connectionUri?: unknown; poolName?: unknown } | undefined): SlonikTarget {
  const fields: { host?: string; port?: number; database?: string } = {};
  const uri = config?.connectionUri;
  if (typeof uri === 'string' && uri.trim() !== '') {
    try {
      const url = new URL(uri);
      if (url.host) fields.host = decodeURIComponent(url.hostname);
      else if (url.searchParams.get('host')) fields.host = url.searchParams.get('host')!;
      if (url.port) fields.port = Number(url.port);
      if (url.pathname && url.pathname !== '/') fields.database = decodeURIComponent(url.pathname.split('/')[1]!);
    } catch {
      // Slonik rejects this URI itself; the pool never exists
    }
  }
  const target = resolvePoolTarget(fields);
  return {
    baseName: chooseName(config?.poolName, defaultPoolName(target)),
    namespace: target.database,
    server: target.redacted === true ? undefined : { address: target.host, port: target.port },
  };
}

function patchExport(exports: unknown, name: string, wrap: (original: Method) => Method): unknown {
  const mod = exports as Record<string, unknown> | null;
  if (mod === null || typeof mod !== 'object') return exports;
  const original = mod[name] as (Method & { [kWrapped]?: Method }) | undefined;
  if (typeof original !== 'function' || original[kWrapped] !== undefined) return exports;
  const wrapped = wrap(original);
  defineHidden(wrapped, kWrapped, original);
  try {
    mod[name] = wrapped;
  } catch {
    // a namespace that cannot be written: monitorPool() still reads the pool's state()
  }
  return exports;
}

/**
 * `createPool()` calls `createConnectionPool({ driver, events, ...createPoolConfiguration(clientConfiguration) })`
 * in one synchronous step. The pool configuration carries the target (resolved here, where the connection
 * URI and `poolName` are visible) to createConnectionPool as one more enumerable key, a symbol Slonik's
 * destructuring ignores.
 */
function wrapPoolConfiguration(original: Method): Method {
  return function createPoolConfiguration(this: unknown, ...args: unknown[]) {
    const result = original.apply(this, args);
    if (currentContext() === undefined || result === null || typeof result !== 'object') return result;
    try {
      Object.defineProperty(result, kTarget, {
        value: targetOf(args[0] as { connectionUri?: unknown; poolName?: unknown }), enumerable: true, configurable: true, writable: true,
      });
    } catch {
      // the pool is then named after its default target
    }
    return result;
  };
}

function wrapCreateConnectionPool(original: Method): Method {
  return function createConnectionPool(this: unknown, ...args: unknown[]) {
    const ctx = currentContext();
    const input = args[0] as PoolArguments | undefined;
    if (ctx === undefined || input === null || typeof input !== 'object' || typeof input.driver?.createClient !== 'function' ||
      input.events === null || typeof input.events !== 'object') {
      return original.apply(this, args);
    }
    let state: SlonikPoolMark;
    let patched: PoolArguments;
    try {
      state = newPoolMark(ctx, {}, input.maximumConnectionAge);
      // A copy: Slonik's driver object stays as it was.
      patched = { ...input, driver: { ...input.driver, createClient: wrapCreateClient(input.driver, state) } };
    } catch (err) {
      ctx.log.warn('attach:slonik', `poolscope: could not monitor a Slonik pool: ${errorText(err)}`);
      return original.apply(this, args);
    }
    const pool = original.call(this, patched, ...args.slice(1)) as InnerPool;
    try {
      if (pool !== null && typeof pool === 'object' && typeof pool.state === 'function') {
        register(state, input[kTarget] ?? targetOf(undefined), new WeakRef(pool),
          countOption(input.maximumPoolSize, 10), countOption(input.minimumPoolSize, 0));
        // The bound pool's prototype is `events`: monitorPool(boundPool) finds the state there.
        defineHidden(input.events, kState, state);
        wrapInnerPool(pool, state);
      }
    } catch (err) {
      ctx.log.warn('attach:slonik', `poolscope: could not monitor a Slonik pool: ${errorText(err)}`);
    }
    return pool;
  };
}

function wrapInnerPool(pool: InnerPool, state: SlonikPoolMark): void {
  replaceMethod(pool, 'acquire', (acquire) => function (this: unknown) {
    const m = liveMark(state.mark);
    if (m === undefined || m.observed === undefined) return acquire.apply(this, arguments as unknown as unknown[]);
    const start = now();
    // Reported before Slonik takes the request (the observer's contract), so the path is judged from the
    // pool's state; the path reported with the acquire is what Slonik actually did.
    const before = m.observed.snapshot();
    const path = before === undefined || before.idle > 0 ? 'idle' : before.used < before.max ? 'new' : 'queued';
    reportRequested(m, m.observed, path, start, before?.pending ?? 0);
    // Captured in the caller's context: a queued acquire completes in another caller's release.
    const origin = m.ctx.events.acquireOrigin();
    // Slonik takes an idle connection, starts a new one or queues the caller before its first await:
    // the connection wrappers below leave a signal while this call runs.
    state.inAcquire = true;
    state.served = undefined;
    let result: unknown;
    try {
      result = acquire.apply(this, arguments as unknown as unknown[]);
    } finally {
      state.inAcquire = false;
    }
    const served: AcquirePath = state.served ?? 'queued';
    const promise = result as Promise<unknown> | undefined;
    if (promise === undefined || promise === null || typeof promise.then !== 'function') return result;
    return promise.then((connection) => {
      const live = liveMark(state.mark);
      if (live?.observed !== undefined && connection !== null && typeof connection === 'object') {
        const t = now();
        reportAcquired(live, live.observed, connection, t, (t - start) / 1000, served, origin);
      }
      return connection;
    }, (err: unknown) => {
      const live = liveMark(state.mark);
      // A failed create is counted where it fails; a connect timeout is this acquire's own.
      if (live?.observed !== undefined && isConnectTimeout(err)) live.ctx.events.acquireTimedOut(live.observed, (now() - start) / 1000);
      throw err;
    });
  });

  replaceMethod(pool, 'end', (end) => function (this: unknown) {
    state.ending = true;
    // The pool's series go as soon as it ends, not at the next collection.
    state.mark.close();
    return end.apply(this, arguments as unknown as unknown[]);
  });
}

function wrapCreateClient(driver: Driver, state: SlonikPoolMark): () => Promise<DriverClient> {
  const createClient = driver.createClient;
  return function createClientObserved() {
    const start = now();
    // Opened for the caller acquiring now: Slonik starts it before its first await.
    const forCaller = state.inAcquire ? {} : undefined;
    if (forCaller !== undefined) {
      state.served = 'new';
      state.openings.begin(forCaller, start);
    }
    return createClient.call(driver).then((client) => {
      if (forCaller !== undefined) state.openings.end(forCaller);
      try {
        observeConnection(state, client, start);
      } catch (err) {
        state.mark.ctx.log.warn('record', `poolscope: failed to observe a Slonik connection: ${errorText(err)}`);
      }
      return client;
    }, (err: unknown) => {
      if (forCaller !== undefined) state.openings.end(forCaller);
      const m = liveMark(state.mark);
      // A connect timeout is reported by the acquire(s) it fails; anything else is a failed connection.
      if (m?.observed !== undefined && !isConnectTimeout(err)) m.ctx.events.connectionFailed(m.observed, err);
      throw err;
    });
  };
}

/**
 * Wraps the connection's own methods before Slonik's pool copies it (`{ ...connection, events }`), so the
 * copy the pool keeps calls the wrappers. Listeners go on the connection's private emitter, which already
 * has Slonik's own 'error' listener: nothing about error handling changes.
 */
function observeConnection(state: SlonikPoolMark, client: DriverClient, start: number): void {
  const rec: ConnectionRecord = {
    checkedOutAt: NaN, releasing: false, reason: undefined, lastError: undefined, createdAt: Date.now(),
    pgClient: undefined, copy: undefined,
  };
  // Lets the leak detector read the pg.Client's transaction state and see its queries as this checkout's.
  const link = () => {
    if (rec.copy !== undefined && rec.pgClient !== undefined) linkCheckout(rec.copy, rec.pgClient);
  };
  const m = liveMark(state.mark);
  if (m?.observed !== undefined) m.ctx.events.connectionCreated(m.observed, (now() - start) / 1000);

  const acquire = client.acquire;
  client.acquire = function (this: unknown) {
    const result = acquire.apply(this, arguments as unknown as unknown[]);
    rec.checkedOutAt = now();
    if (rec.copy === undefined && this !== null && typeof this === 'object') {
      rec.copy = this;
      link();
    }
    if (state.inAcquire && state.served === undefined) state.served = 'idle';
    return result;
  };

  const release = client.release;
  client.release = function (this: unknown) {
    endUse(state, rec, this ?? client);
    rec.releasing = true;
    return release.apply(this, arguments as unknown as unknown[]);
  };

  const destroy = client.destroy;
  client.destroy = function (this: unknown) {
    if (rec.reason === undefined) rec.reason = destroyReason(state, rec);
    endUse(state, rec, this ?? client);
    return destroy.apply(this, arguments as unknown as unknown[]);
  };

  // Until its pg.Client has run a query inside this call, the client is offered the pool (see offerPool).
  const query = client.query;
  client.query = function (this: unknown, sql: unknown, values: unknown, options: unknown) {
    if (rec.pgClient !== undefined) return query.call(this, sql, values, options);
    offerPool(state.mark);
    try {
      return query.call(this, sql, values, options);
    } finally {
      rec.pgClient = withdrawPool();
      link();
    }
  };

  client.on('release', () => { rec.releasing = false; });
  const onError = (err: unknown) => {
    rec.lastError = err;
    const live = liveMark(state.mark);
    if (live?.observed !== undefined && Number.isNaN(rec.checkedOutAt)) live.ctx.events.idleError(live.observed, err);
  };
  client.on('error', onError);
  client.on('destroy', () => {
    // An error destroys the connection from Slonik's own 'error' listener, which runs before ours: the
    // reason is read once the event that caused it has reached every listener.
    queueMicrotask(() => {
      // Slonik drops its own 'error' listener once the connection has ended; ours must not outlive it, or
      // an error Slonik leaves unhandled would be swallowed.
      client.removeListener('error', onError);
      const live = liveMark(state.mark);
      if (live?.observed === undefined) return;
      const reason: CloseReason = rec.lastError !== undefined ? (isTermination(rec.lastError) ? 'server_terminated' : 'error')
        : rec.reason ?? (rec.releasing ? 'error' : 'idle_timeout');
      live.ctx.events.connectionClosed(live.observed, reason);
    });
  });
}

function endUse(state: SlonikPoolMark, rec: ConnectionRecord, client: unknown): void {
  if (Number.isNaN(rec.checkedOutAt)) return;
  rec.checkedOutAt = NaN;
  const m = liveMark(state.mark);
  if (m?.observed !== undefined && client !== null && typeof client === 'object') reportReleased(m, m.observed, client, now());
}

/**
 * Why the pool destroys a connection, from where it does so: at `end()`; a checked-out one when the
 * caller's handler or the release failed; while acquiring, one found too old in the idle queue; otherwise
 * an idle one, too old when past the shortest age Slonik's ±10% jitter allows, else after its idle timeout.
 * (Destroys Slonik starts by itself — driver idle timer, failed reset, connection error — are told at the
 * 'destroy' event.)
 */
function destroyReason(state: SlonikPoolMark, rec: ConnectionRecord): CloseReason | undefined {
  if (state.ending) return 'pool_closed';
  if (!Number.isNaN(rec.checkedOutAt) || rec.releasing) return 'error';
  if (state.inAcquire) return 'max_lifetime';
  return Date.now() - rec.createdAt >= state.maxAge * 0.9 ? 'max_lifetime' : 'idle_timeout';
}

/** Slonik wraps pg's errors (BackendTerminatedError…) with the original as `cause`. */
function isTermination(err: unknown): boolean {
  const e = err as { cause?: unknown; constructor?: { name?: unknown } } | null | undefined;
  if (isServerTermination(err) || isServerTermination(e?.cause)) return true;
  const name = e?.constructor?.name;
  return typeof name === 'string' && name.startsWith('BackendTerminated');
}

/** pg's own connect timeout (`connectionTimeoutMillis`, Slonik's `connectionTimeout`), before Slonik wraps it. */
const CONNECT_TIMEOUT_MESSAGES = new Set(['timeout expired', 'Connection terminated due to connection timeout']);
function isConnectTimeout(err: unknown): boolean {
  const message = (err as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' && CONNECT_TIMEOUT_MESSAGES.has(message);
}

/** Replaces a method keeping its property attributes (Slonik's objects enumerate theirs). */
function replaceMethod<T extends object>(target: T, key: string, wrap: (original: Method) => Method): void {
  const descriptor = Object.getOwnPropertyDescriptor(target, key);
  const original = (target as Record<string, unknown>)[key];
  if (typeof original !== 'function') return;
  Object.defineProperty(target, key, {
    value: wrap(original as Method), writable: descriptor?.writable ?? true, enumerable: descriptor?.enumerable ?? false,
    configurable: true,
  });
}
