import { InstrumentationNodeModuleDefinition, InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import type { AcquirePath, CloseReason } from '../pools/observer.js';
import type { PoolAdapter } from './adapter.js';
import { patchClientClass, takeCreateSeconds } from './pg-client.js';
import { isPgClient, targetOfClient } from './pg-target.js';
import {
  attachOnConstruct, defineHidden, isTimeout, liveMark, now, PoolMark, replaceExport, reportAcquired, reportReleased, reportRequested,
  setClientPool, subclassOnConstruct, type AdapterContext, type MonitorPoolOptions,
} from './shared.js';
import { passOn, sameArity } from '../transparent.js';

/** The public sequelize-pool API (v6–v8) read here. */
type SequelizePool = {
  readonly size: number;
  readonly available: number;
  readonly using: number;
  readonly waiting: number;
  readonly maxSize: number;
  readonly minSize: number;
  acquire(...args: unknown[]): Promise<unknown>;
  release(resource: unknown): unknown;
  destroy(resource: unknown): Promise<unknown>;
  drain(): Promise<unknown>;
  destroyAllNow(): Promise<unknown>;
};
interface Factory { create: () => Promise<unknown>; [key: string]: unknown }

const kSeqState = Symbol.for('poolscope.sequelize-pool-mark');
const kSeqSubclass = Symbol.for('poolscope.sequelize-pool-subclass');

interface SeqState {
  mark: PoolMark;
  /** What the pool has handed out and not taken back. */
  checkedOut: WeakSet<object>;
  releasing: boolean;
  closing: boolean;
  /** `drain()` was called: the pool takes no more acquires, and ends with its last connection. */
  draining: boolean;
  ended: boolean;
  ref: WeakRef<SequelizePool>;
}

function isSequelizePool(p: unknown): p is SequelizePool {
  const pool = p as SequelizePool | null;
  return pool !== null && typeof pool === 'object' && typeof pool.acquire === 'function' && typeof pool.drain === 'function' &&
    typeof pool.destroyAllNow === 'function' && typeof pool.using === 'number' && typeof pool.available === 'number';
}

function stateOf(pool: object): SeqState | undefined {
  return (pool as Record<symbol, SeqState | undefined>)[kSeqState];
}

/**
 * sequelize-pool, the pool under Sequelize. Like tarn, a pool is registered when its first resource
 * turns out to be a pg connection (Sequelize with another dialect is never reported). Counters are the
 * pool's own: used = size − available (checked out or being opened), idle = available, pending = waiting.
 * sequelize-pool has no events; its public methods are wrapped on the instance.
 */
export const sequelizePoolAdapter: PoolAdapter = {
  library: 'sequelize-pool',

  modules() {
    return [
      // The file that defines Pool, not the package entry: the entry re-exports it through a getter that
      // cannot be replaced.
      new InstrumentationNodeModuleDefinition('sequelize-pool', ['>=6.0.0 <9'], undefined, undefined, [
        new InstrumentationNodeModuleFile('sequelize-pool/lib/Pool.js', ['>=6.0.0 <9'],
          (exports: unknown) => patchModule(exports), (exports: unknown) => exports),
      ]),
    ];
  },

  matches: isSequelizePool,

  attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): PoolMark {
    const p = pool as SequelizePool;
    const existing = stateOf(p);
    if (existing !== undefined) return existing.mark;
    const state: SeqState = { mark: new PoolMark(ctx, options), checkedOut: new WeakSet(), releasing: false, closing: false,
      draining: false, ended: false, ref: new WeakRef(p) };
    defineHidden(p, kSeqState, state);
    wrapPool(p, state);
    if (options.name !== undefined) register(state, undefined);
    return state.mark;
  },
};

function register(state: SeqState, client: unknown): void {
  const target = isPgClient(client) ? targetOfClient(client) : { baseName: 'sequelize', namespace: undefined, server: undefined };
  state.mark.register({
    baseName: target.baseName,
    library: 'sequelize-pool',
    namespace: target.namespace,
    server: target.server,
    read: () => {
      const p = state.ref.deref();
      if (p === undefined || state.ended) return undefined;
      const idle = p.available;
      return { used: Math.max(0, p.size - idle), idle, pending: p.waiting, max: p.maxSize, min: p.minSize };
    },
  });
}

function patchModule(exports: unknown): unknown {
  const mod = exports as { Pool?: unknown } | null;
  if (mod === null || typeof mod !== 'object' || typeof mod.Pool !== 'function') return exports;
  replaceExport(mod, 'Pool', subclassOnConstruct(mod.Pool, kSeqSubclass, (pool) => {
    attachOnConstruct(sequelizePoolAdapter, pool);
  }));
  return exports;
}

/**
 * Times each connection the pool creates without touching the caller's factory. sequelize-pool calls
 * `this._factory.create()` synchronously inside `_createResource()` (6.x to 8.x), so for that call only
 * the pool's `_factory` is a view of the factory whose `create` is timed, which calls the factory's with
 * the factory itself as `this`. Earlier versions handed the pool a spread copy (lost class methods, froze
 * max/min), then a Proxy of the factory (broke frozen factories and classes with private fields), then an
 * object inheriting from the factory (its getters over private fields threw, the receiver being that
 * object); upstream-suite probes and reviews found each.
 */
function timeCreates(pool: SequelizePool & { _createResource?: unknown; _factory?: unknown }): void {
  const createResource = pool._createResource;
  if (typeof createResource !== 'function') return;
  const next = passOn(pool, '_createResource');
  defineHidden(pool, '_createResource', sameArity(function _createResource(this: typeof pool) {
    const factory = this._factory as Factory | null | undefined;
    if (factory === null || typeof factory !== 'object' || typeof factory.create !== 'function') {
      // eslint-disable-next-line prefer-rest-params
      return next(this).apply(this, arguments as unknown as unknown[]);
    }
    const pool = this;
    const create = function create() {
      const start = now();
      // eslint-disable-next-line prefer-rest-params
      const result = factory.create.apply(factory, arguments as unknown as []);
      if (result !== null && typeof (result as Promise<unknown>)?.then === 'function') {
        // A side branch that handles both outcomes: the promise the pool gets is the factory's own.
        (result as Promise<unknown>).then((resource) => onCreated(pool, resource, start), (err) => onCreateFailed(pool, err));
      }
      return result;
    };
    // Reads go to the factory itself, with the factory as the receiver, so its getters (over #private fields
    // too) run as they would; the target is an empty object, which a frozen factory's invariants do not bind.
    const timed = new Proxy({}, {
      get: (_target, key) => (key === 'create' ? create : Reflect.get(factory, key, factory)),
    }) as Factory;
    this._factory = timed;
    try {
      // eslint-disable-next-line prefer-rest-params
      return next(this).apply(this, arguments as unknown as unknown[]);
    } finally {
      this._factory = factory;
    }
  }, createResource));
}

function onCreated(pool: SequelizePool, resource: unknown, start: number): void {
  const state = stateOf(pool);
  const m = liveMark(state?.mark);
  if (state === undefined || m === undefined || resource === null || typeof resource !== 'object') return;
  if (m.observed === undefined) {
    if (!isPgClient(resource)) return;
    patchClientClass((resource as { constructor?: unknown }).constructor);
    register(state, resource);
  }
  setClientPool(resource, state.mark);
  m.ctx.events.connectionCreated(m.observed!, takeCreateSeconds(resource) ?? (now() - start) / 1000);
}

function onCreateFailed(pool: SequelizePool, err: unknown): void {
  const m = liveMark(stateOf(pool)?.mark);
  if (m?.observed !== undefined) m.ctx.events.connectionFailed(m.observed, err);
}

function acquirePath(pool: SequelizePool): AcquirePath {
  if (pool.available > 0) return 'idle';
  return pool.size < pool.maxSize ? 'new' : 'queued';
}

function wrapPool(pool: SequelizePool, state: SeqState): void {
  // Each wrapper passes on to the pool's method as passOn finds it at the call, and keeps its name and arity.
  const next = Object.fromEntries(['acquire', 'release', 'destroy', 'drain', 'destroyAllNow'].map((k) => [k, passOn(pool, k)]));
  const wrap = (key: 'acquire' | 'release' | 'destroy' | 'drain' | 'destroyAllNow', fn: (...a: never[]) => unknown) =>
    defineHidden(pool, key, sameArity(fn, pool[key]));
  timeCreates(pool);

  wrap('acquire', function acquire(this: SequelizePool, ...args: unknown[]) {
    const m = liveMark(state.mark);
    const original = next.acquire!(this) as SequelizePool['acquire'];
    if (m === undefined) return original.apply(this, args);
    const start = now();
    const path = acquirePath(this);
    if (m.observed !== undefined) reportRequested(m, m.observed, path, start);
    const origin = m.ctx.events.acquireOrigin();
    const promise = original.apply(this, args);
    return promise.then((resource) => {
      const live = liveMark(state.mark);
      if (resource !== null && typeof resource === 'object') {
        const t = now();
        state.checkedOut.add(resource);
        if (live?.observed !== undefined) reportAcquired(live, live.observed, resource, t, (t - start) / 1000, path, origin);
      }
      return resource;
    }, (err: unknown) => {
      const live = liveMark(state.mark);
      // Failed creates are counted where they fail; a timeout is the acquire's own.
      if (live?.observed !== undefined && isTimeout(err)) {
        live.ctx.events.acquireTimedOut(live.observed, (now() - start) / 1000);
      }
      throw err;
    });
  });

  wrap('release', function release(this: SequelizePool, resource: unknown) {
    const m = liveMark(state.mark);
    if (m !== undefined && resource !== null && typeof resource === 'object') {
      state.checkedOut.delete(resource);
      if (m.observed !== undefined) reportReleased(m, m.observed, resource, now());
    }
    // sequelize-pool destroys a resource that reached maxUses from inside release().
    state.releasing = true;
    try {
      return next.release!(this).call(this, resource);
    } finally {
      state.releasing = false;
    }
  });

  wrap('destroy', function destroy(this: SequelizePool, resource: unknown) {
    const before = this.size;
    const wasCheckedOut = resource !== null && typeof resource === 'object' && state.checkedOut.has(resource);
    const m = liveMark(state.mark);
    // Sequelize destroys a connection that failed in place of releasing it: its checkout ends here.
    if (wasCheckedOut) {
      state.checkedOut.delete(resource);
      if (m?.observed !== undefined) reportReleased(m, m.observed, resource, now());
    }
    const result = next.destroy!(this).call(this, resource);
    // size drops synchronously only when the resource really belonged to the pool.
    if (this.size < before && m?.observed !== undefined) {
      const r = resource as { _ending?: boolean; _queryable?: boolean };
      const reason: CloseReason = state.closing ? 'pool_closed'
        : state.releasing ? 'max_uses'
          : r._ending === true || r._queryable === false ? 'server_terminated'
            : wasCheckedOut ? 'error' : 'idle_timeout';
      m.ctx.events.connectionClosed(m.observed, reason);
    }
    endWhenEmpty(this, state);
    return result;
  });

  // Closing starts at `drain()`, which waits for every connection the pool handed out; the pool ends when its
  // last connection is destroyed (`destroyAllNow()` after the drain). It ended at `drain()`: the pool vanished with
  // a connection checked out and idle in a transaction, and its leak, its gauges and its health with it, while
  // Sequelize's close() waited on it for good.
  wrap('drain', function drain(this: SequelizePool) {
    state.closing = true;
    state.draining = true;
    return next.drain!(this).call(this);
  });

  // Without a drain, the pool goes on serving acquires after it (sequelize-pool says so): an end there hid a pool
  // in use for good.
  wrap('destroyAllNow', function destroyAllNow(this: SequelizePool) {
    state.closing = true;
    const result = next.destroyAllNow!(this).call(this);
    endWhenEmpty(this, state);
    return result;
  });
}

/** A drained pool whose last connection is gone has ended: its series go now, not at the next collection. */
function endWhenEmpty(pool: SequelizePool, state: SeqState): void {
  if (!state.draining || state.ended || pool.size !== 0) return;
  state.ended = true;
  state.mark.close();
}
