import { InstrumentationNodeModuleDefinition, InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import type { AcquirePath, CloseReason } from '../pools/observer.js';
import type { PoolAdapter } from './adapter.js';
import { clientOfFailedConnect, patchClientClass, takeCreateSeconds } from './pg-client.js';
import { isPgClient, targetOfClient } from './pg-target.js';
import {
  attachOnConstruct, currentContext, defineHidden, isServerTermination, isTimeout, liveMark, now, PoolMark, replaceExport, reportAcquired,
  reportReleased, reportRequested, setClientPool, subclassOnConstruct, type AdapterContext, type MonitorPoolOptions,
} from './shared.js';
import { passOn, sameArity } from '../transparent.js';
import { errorText } from '../logger.js';

/** The public tarn Pool API read here (tarn 1–3), plus `_executeEventHandlers` (see wrapEvents). */
type TarnPool = {
  numUsed(): number;
  numFree(): number;
  numPendingAcquires(): number;
  numPendingCreates(): number;
  acquire(): unknown;
  release(resource: unknown): unknown;
  destroy(): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  max: number;
  min: number;
  destroyed?: boolean;
  _executeEventHandlers?: (event: string, ...args: unknown[]) => void;
};

const kTarnMark = Symbol.for('poolscope.tarn-mark');
const kTarnSubclass = Symbol.for('poolscope.tarn-subclass');

/** The adapter's own bookkeeping for one tarn pool, kept from construction (before registration). */
interface TarnState {
  mark: PoolMark;
  acquires: Map<number, { start: number; path: AcquirePath; origin: object | undefined }>;
  creates: Map<number, number>;
  closing: WeakMap<object, CloseReason>;
  /** Connections created and not yet handed out: an acquire they serve took the 'new' path. */
  fresh: WeakSet<object>;
  /**
   * The pool has ended: `destroy()` finished (tarn's own `destroyed` is set as it starts). It waits for the
   * connections the pool handed out, and the pool counts until then.
   */
  ended: boolean;
}

function isTarnPool(p: unknown): p is TarnPool {
  const pool = p as TarnPool | null;
  return pool !== null && typeof pool === 'object' && typeof pool.acquire === 'function' && typeof pool.release === 'function' &&
    typeof pool.numUsed === 'function' && typeof pool.numFree === 'function' && typeof pool.numPendingAcquires === 'function';
}

function stateOf(pool: object): TarnState | undefined {
  return (pool as Record<symbol, TarnState | undefined>)[kTarnMark];
}

/**
 * tarn, the pool under knex (and others). A tarn pool does not know what it pools, so it is registered
 * when its first resource turns out to be a pg connection, named after that connection's target; pools
 * of other drivers (knex with MySQL, say) are never reported. Counters are tarn's own: used =
 * numUsed() + numPendingCreates() (checked out or being opened), idle = numFree(), pending =
 * numPendingAcquires().
 */
export const tarnAdapter: PoolAdapter = {
  library: 'tarn',

  modules() {
    return [
      // The file that defines Pool, not the package entry: the entry re-exports it through a getter that
      // cannot be replaced. tarn 2 (knex 0.20) keeps it in lib/: hooked in dist/ only, knex 0.20 went unseen
      // (found by a review of the supported versions). tarn 1 (knex < 0.20) runs no event handlers at all.
      new InstrumentationNodeModuleDefinition('tarn', ['>=2.0.0 <4'], undefined, undefined, [
        new InstrumentationNodeModuleFile('tarn/dist/Pool.js', ['>=3.0.0 <4'],
          (exports: unknown) => patchTarnModule(exports), (exports: unknown) => exports),
        new InstrumentationNodeModuleFile('tarn/lib/Pool.js', ['>=2.0.0 <3'],
          (exports: unknown) => patchTarnModule(exports), (exports: unknown) => exports),
      ]),
    ];
  },

  matches: isTarnPool,

  attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): PoolMark {
    const p = pool as TarnPool;
    const existing = stateOf(p);
    if (existing !== undefined) return existing.mark;
    const state: TarnState = {
      mark: new PoolMark(ctx, options),
      acquires: new Map(),
      creates: new Map(),
      closing: new WeakMap(),
      ended: false,
      fresh: new WeakSet(),
    };
    defineHidden(p, kTarnMark, state);
    wrapEvents(p, state);
    // A name given by the user is enough to register now; otherwise the first pg connection decides.
    if (options.name !== undefined) register(p, state, undefined);
    return state.mark;
  },
};

function register(pool: TarnPool, state: TarnState, client: unknown): void {
  const target = isPgClient(client) ? targetOfClient(client) : { baseName: 'tarn', namespace: undefined, server: undefined };
  const ref = new WeakRef(pool);
  state.mark.register({
    baseName: target.baseName,
    library: 'tarn',
    namespace: target.namespace,
    server: target.server,
    read: () => {
      const p = ref.deref();
      if (p === undefined || state.ended) return undefined;
      return {
        used: p.numUsed() + p.numPendingCreates(),
        idle: p.numFree(),
        pending: p.numPendingAcquires(),
        max: p.max,
        min: p.min,
      };
    },
  });
}

function patchTarnModule(exports: unknown): unknown {
  const mod = exports as { Pool?: unknown; default?: { Pool?: unknown } } | null;
  if (mod === null || typeof mod !== 'object') return exports;
  const Pool = mod.Pool;
  if (typeof Pool !== 'function') return exports;
  // knex's `class KnexPool extends Pool` picks the subclass up, being required after this hook ran.
  replaceExport(mod, 'Pool', subclassOnConstruct(Pool, kTarnSubclass, (pool) => attachOnConstruct(tarnAdapter, pool)));
  return exports;
}

function acquirePath(pool: TarnPool): AcquirePath {
  if (pool.numFree() > 0) return 'idle';
  // tarn opens a connection for a waiter only while fewer are being opened than there are waiters, this one included.
  const opening = pool.numPendingCreates();
  return pool.numUsed() + opening < pool.max && opening < pool.numPendingAcquires() + 1 ? 'new' : 'queued';
}


/**
 * tarn runs listeners through `_executeEventHandlers`, which swallows their errors; wrapping it on the
 * instance sees every event without adding a listener a later `removeAllListeners()` could take away.
 * Older or unusual shapes fall back to listeners.
 */
function wrapEvents(pool: TarnPool, state: TarnState): void {
  const handle = (event: string, args: unknown[]) => {
    // The pool's series go as soon as it is destroyed, not at the next collection. Not at `destroy()`, which waits
    // for the connections the pool handed out: the pool vanished with one checked out and idle in a transaction,
    // and its leak, its gauges and its health with it, while knex.destroy() waited on it for good.
    if (event === 'poolDestroySuccess') {
      state.ended = true;
      state.mark.close();
    }
    if (!state.mark.ctx.active && currentContext() === undefined) return;
    try {
      onEvent(pool, state, event, args);
    } catch (err) {
      state.mark.ctx.log.warn('record', `poolscope: failed to record a tarn event: ${errorText(err)}`);
    }
  };
  const original = pool._executeEventHandlers;
  if (typeof original === 'function') {
    const next = passOn(pool, '_executeEventHandlers');
    defineHidden(pool, '_executeEventHandlers', sameArity(function _executeEventHandlers(this: TarnPool, event: string, ...args: unknown[]) {
      handle(event, args);
      return next(this).call(this, event, ...args);
    }, original));
  } else {
    for (const event of ['acquireRequest', 'acquireSuccess', 'acquireFail', 'release', 'createRequest', 'createSuccess',
      'createFail', 'destroyRequest', 'destroySuccess', 'poolDestroySuccess']) {
      pool.on(event, (...args: unknown[]) => handle(event, args));
    }
  }
}

function onEvent(pool: TarnPool, state: TarnState, event: string, args: unknown[]): void {
  const m = liveMark(state.mark);
  if (m === undefined) return;
  switch (event) {
    case 'acquireRequest': {
      // tarn emits acquireRequest synchronously inside acquire(): the caller's context, for acquireOrigin.
      const path = acquirePath(pool);
      const start = now();
      state.acquires.set(args[0] as number, { start, path, origin: m.ctx.events.acquireOrigin() });
      if (m.observed !== undefined) reportRequested(m, m.observed, path, start);
      return;
    }
    case 'acquireSuccess': {
      const pending = state.acquires.get(args[0] as number);
      state.acquires.delete(args[0] as number);
      const resource = args[1];
      if (pending !== undefined && m.observed !== undefined && resource !== null && typeof resource === 'object') {
        const t = now();
        // The path guessed at the request, corrected by what served it: tarn starts a create for a waiter only
        // while fewer are pending than waiters, and a release often serves the waiter before its create lands,
        // so 'new' was counted for more acquires than connections were opened (found running Medusa).
        const fresh = state.fresh.delete(resource);
        const path = pending.path === 'idle' ? 'idle' : fresh ? 'new' : 'queued';
        reportAcquired(m, m.observed, resource, t, (t - pending.start) / 1000, path, pending.origin);
      }
      return;
    }
    case 'acquireFail': {
      const pending = state.acquires.get(args[0] as number);
      state.acquires.delete(args[0] as number);
      // A failed create is reported at createFail; only timeouts are the acquire's own failure.
      if (pending !== undefined && m.observed !== undefined && isTimeout(args[1])) {
        m.ctx.events.acquireTimedOut(m.observed, (now() - pending.start) / 1000);
      }
      return;
    }
    case 'release': {
      const resource = args[0];
      if (resource === null || typeof resource !== 'object') return;
      if (m.observed !== undefined) reportReleased(m, m.observed, resource, now());
      return;
    }
    case 'createRequest':
      state.creates.set(args[0] as number, now());
      return;
    case 'createSuccess': {
      const started = state.creates.get(args[0] as number);
      state.creates.delete(args[0] as number);
      const resource = args[1];
      if (m.observed === undefined) {
        if (!isPgClient(resource)) return;
        patchClientClass((resource as { constructor?: unknown }).constructor);
        register(pool, state, resource);
      }
      if (resource !== null && typeof resource === 'object') {
        setClientPool(resource, state.mark);
        state.fresh.add(resource);
      }
      // The pg connect itself is timed by the Client patch; tarn's own create span also covers the driver's setup.
      const seconds = (resource !== null && typeof resource === 'object' ? takeCreateSeconds(resource) : undefined) ??
        (started === undefined ? undefined : (now() - started) / 1000);
      if (seconds !== undefined && m.observed !== undefined) m.ctx.events.connectionCreated(m.observed, seconds);
      return;
    }
    case 'createFail': {
      state.creates.delete(args[0] as number);
      // A pool whose first connections all fail is registered from the client that failed (pg-client.ts).
      const failed = m.observed === undefined ? clientOfFailedConnect(args[1]) : undefined;
      if (failed !== undefined && isPgClient(failed)) register(pool, state, failed);
      if (m.observed !== undefined) m.ctx.events.connectionFailed(m.observed, args[1]);
      return;
    }
    case 'destroyRequest': {
      const resource = args[1];
      if (resource === null || typeof resource !== 'object') return;
      // knex marks a connection that errored or ended with `__knex__disposed`; the reaper destroys idle ones. A
      // server's termination (57P01) is an error first, overwritten by the string knex sets when the connection
      // then ends, unless the application ended it: counted as 'error', it disagreed with the same event under
      // Sequelize ('server_terminated', from the client's state).
      const disposed = (resource as { __knex__disposed?: unknown }).__knex__disposed;
      const endedByPeer = typeof disposed === 'string' && (resource as { _ending?: unknown })._ending !== true;
      const reason: CloseReason = pool.destroyed === true ? 'pool_closed'
        : disposed !== undefined && disposed !== null && disposed !== false
          ? (isServerTermination(disposed) || endedByPeer ? 'server_terminated' : 'error')
          : 'idle_timeout';
      state.closing.set(resource, reason);
      return;
    }
    case 'destroySuccess': {
      const resource = args[1];
      if (resource === null || typeof resource !== 'object' || m.observed === undefined) return;
      m.ctx.events.connectionClosed(m.observed, state.closing.get(resource) ?? 'idle_timeout');
      state.closing.delete(resource);
      return;
    }
    default:
  }
}
