import { InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import { checkoutOf } from '../pools/checkout-link.js';
import { checkIdleGap, touchCheckout } from '../pools/pool-probe.js';
import { queryTargetOf, type PgClientLike } from './pg-target.js';
import {
  callObserved, clientPool, currentContext, defineHidden, liveMark, markPgLoaded, markPgUsed, now, setClientPool, type AdapterContext, type PoolMark,
} from './shared.js';
import { sameArity, shimmerTransparent } from '../transparent.js';

const kQueryPatched = Symbol.for('poolscope.query-patched');
const kConnectPatched = Symbol.for('poolscope.connect-patched');

/** When each physical connection attempt started, keyed by client; pool adapters read it for create time. */
export const connectStartedAt = new WeakMap<object, number>();

type ClientProto = Record<PropertyKey, unknown>;

/**
 * Slonik keeps each connection's pg.Client in a closure, so its adapter cannot mark the client. It offers
 * its pool for the synchronous span of a call into one of its connections instead: a client that starts a
 * query within that span, and belongs to no pool yet, joins the offered pool (see adapters/slonik.ts).
 */
let offeredPool: PoolMark | undefined;
let takenBy: object | undefined;
export function offerPool(mark: PoolMark): void {
  offeredPool = mark;
  takenBy = undefined;
}
/** Ends the offer; the client that took it, if one did. */
export function withdrawPool(): object | undefined {
  const client = takenBy;
  offeredPool = undefined;
  takenBy = undefined;
  return client;
}

/**
 * Spans for queries, when traces are on (tracing/pg-query-spans.ts). The query wrapper below already times
 * every query; spans come from it rather than from a second wrapper. `parent` is called as a query starts,
 * in the caller's context; `end` as it completes, with both clock readings (performance.now()).
 */
export interface QuerySpans {
  parent(): unknown;
  end(parent: unknown, client: PgClientLike, text: unknown, start: number, end: number, err: unknown): void;
  /** Calls a callback in the context `parent` captured (the caller's), if it is not the current one. */
  call(parent: unknown, fn: (...a: unknown[]) => unknown, thisArg: unknown, args: ArrayLike<unknown>): unknown;
  /**
   * Opens a connection outside the caller's context, its callback still called in it: the socket's events
   * (and so pg's callbacks for cursors, streams and notifications) would otherwise run in the opener's
   * context for the connection's whole life, under whichever span happened to open it.
   */
  detached(connect: (...a: unknown[]) => unknown, client: object, args: ArrayLike<unknown>): unknown;
}

let querySpans: QuerySpans | undefined;

/** Installs (or, given undefined, removes) the query spans; `ifCurrent` removes only that one. */
export function setQuerySpans(spans: QuerySpans | undefined, ifCurrent?: QuerySpans): void {
  if (ifCurrent !== undefined && querySpans !== ifCurrent) return;
  querySpans = spans;
}

export function currentQuerySpans(): QuerySpans | undefined {
  return querySpans;
}

/**
 * Told when a connect made with a callback (as pools make them) fails, with when it began. pg-pool does not
 * report a new connection's failure to a caller that had already timed out in its queue, so its adapter takes
 * every failure of its own clients' connects here (the pool was stuck against a silent server as
 * acquire_timeouts, not server_unreachable, found by review).
 */
let connectFailureSink: ((client: object, err: unknown, startedAt: number) => void) | undefined;

/**
 * The client each failed connect's error came from. knex's and Sequelize's pools are registered at their first
 * connection, from the client it shows; one whose every connect failed was never seen at all, and beside a
 * pool that was, /health/database read healthy while its callers failed (found by an operator-scenario
 * review). Their adapters find the failed client from the error here (or from the error a library wrapped it in).
 */
const failedConnects = new WeakMap<object, object>();
const WRAPPED_ERROR_KEYS = ['parent', 'original', 'cause'] as const;

/** The pg client whose connect failed with `err`, or with an error `err` wraps; undefined if none. */
export function clientOfFailedConnect(err: unknown): object | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 3 && e !== null && typeof e === 'object'; depth++) {
    const client = failedConnects.get(e);
    if (client !== undefined) return client;
    const next = WRAPPED_ERROR_KEYS.map((k) => (e as Record<string, unknown>)[k]).find((x) => x !== null && typeof x === 'object');
    e = next;
  }
  return undefined;
}

export function setConnectFailureSink(sink: typeof connectFailureSink): void {
  connectFailureSink = sink;
}

/**
 * `pg.Client` itself: every query's duration (`db.client.operation.duration`), attributed to the pool
 * the client belongs to when a pool adapter marked it, and the start of every physical connect (for the
 * pools' create time). The prototype is patched once per process; the patch reports to the running
 * Poolscope, and passes straight through when none runs.
 */
export function patchClientClass(Client: unknown): void {
  if (typeof Client !== 'function') return;
  markPgLoaded();
  const proto = (Client as { prototype?: ClientProto }).prototype;
  if (proto === undefined || typeof proto.query !== 'function' || proto[kQueryPatched] !== undefined) return;
  if (!canPatch(proto, 'query')) {
    unpatchableClientClass(Client);
    return;
  }
  // `let`: another agent's unwrap may point Poolscope's wrapper past its layer (shimmerTransparent).
  let original = proto.query as (...args: unknown[]) => unknown;
  const query = function query(this: object, ...args: unknown[]) {
    // Called detached (`const { query } = client; query()`) or on a primitive: pg's own error, not one from
    // reading our mark (or from a WeakMap refusing the primitive as a key).
    if (typeof this !== 'object' || this === null) return original.apply(this, args);
    let owner: PoolMark | undefined;
    let checkedOut: object;
    try {
      owner = clientPool(this);
      checkedOut = checkoutOf(this);
    } catch {
      // A client behind a Proxy that refuses keys it does not know (a strict test double): not measured.
      return original.apply(this, args);
    }
    if (owner === undefined && offeredPool !== undefined) {
      owner = offeredPool;
      offeredPool = undefined;
      takenBy = this;
      setClientPool(this, owner);
    }
    const mark = liveMark(owner);
    const ctx = mark?.ctx ?? currentContext();
    if (ctx === undefined) return original.apply(this, args);
    const first = args[0] as { submit?: unknown; text?: unknown } | string | null | undefined;
    // Submittables (cursors, query streams, COPY) report completion through their own events; not measured.
    // Their start is activity on the checkout all the same: a transaction that read a cursor for a while
    // was taken for idle since its last plain query (the leak detector also sees them run).
    if (first === null || first === undefined || (typeof first === 'object' && typeof first.submit === 'function')) {
      if (first !== null && first !== undefined) {
        const t = now();
        checkIdleGap(checkedOut, t);
        touchCheckout(checkedOut, t, true);
      }
      return original.apply(this, args);
    }
    const text = typeof first === 'string' ? first : first.text;
    const spans = querySpans;
    const parent = spans?.parent();
    const start = now();
    checkIdleGap(checkedOut, start);
    const client = this;
    // The callback pg will call, found as pg finds it (normalizeQueryConfig): the third argument, else a
    // function in place of the values, else the config's own `callback`. (Taking the last argument missed
    // query(text, cb, undefined) and the config's callback: neither was timed nor traced.)
    const callbackIndex = typeof args[2] === 'function' ? 2 : typeof args[1] === 'function' ? 1 : -1;
    if (callbackIndex >= 0) {
      // The callback form (every pool.query() uses it): one wrapper, no second closure.
      const cb = args[callbackIndex] as Callback;
      const wrapped = observedCallback(cb, ctx, mark, client, start, text, spans, parent);
      args[callbackIndex] = wrapped;
      if (typeof first === 'string') return original.apply(this, args);
      // pg before 8.23 writes the callback onto the caller's config: it keeps the caller's, as without
      // Poolscope. (Left there, the wrapper was wrapped again when the config was reused: counted twice.)
      return callRestoringCallback(original, this, args, first, wrapped, cb);
    }
    const config = first as { callback?: Callback };
    if (typeof config === 'object' && typeof config.callback === 'function') {
      const cb = config.callback;
      const wrapped = observedCallback(cb, ctx, mark, client, start, text, spans, parent);
      // pg reads the callback as it makes its Query, synchronously: the wrapper stands on the caller's config
      // for that call only, so that pg before 8.23 still writes its values onto the caller's object and reads
      // the config as it is (a copy lost a class's private fields: its getters threw).
      if (placeCallback(config, wrapped)) return callRestoringCallback(original, this, args, config, wrapped, cb);
      // A callback pg cannot be handed that way (frozen config, a getter, one from the prototype, a Proxy that
      // refuses the write) goes on a copy, made the way pg (8.23 on) copies a config itself: own properties with
      // their descriptors, same prototype. The caller's object is never changed.
      const descriptors = Object.getOwnPropertyDescriptors(config) as PropertyDescriptorMap;
      descriptors.callback = {
        value: wrapped,
        writable: true, configurable: true, enumerable: descriptors.callback?.enumerable ?? true,
      };
      args[0] = Object.create(Object.getPrototypeOf(config) as object | null, descriptors);
      return original.apply(this, args);
    }
    return callObserved(original, this, args, (err) => {
      const end = reportQuery(ctx, mark, client, start, text, err);
      spans?.end(parent, client as PgClientLike, text, start, end, err);
    });
  };
  defineHidden(query, kQueryPatched, original);
  defineHidden(proto, kQueryPatched, original);
  shimmerTransparent(query, () => original, (m) => { original = m; });
  proto.query = sameArity(query, original);

  let originalConnect = proto.connect;
  if (typeof originalConnect === 'function' && proto[kConnectPatched] === undefined && canPatch(proto, 'connect')) {
    const connect = function connect(this: object) {
      // eslint-disable-next-line prefer-rest-params
      if (typeof this !== 'object' || this === null) return (originalConnect as Callback).apply(this, arguments as unknown as unknown[]);
      const started = now();
      connectStartedAt.set(this, started);
      markPgUsed();
      const cb: unknown = arguments[0];
      if (typeof cb === 'function') {
        const client = this;
        // eslint-disable-next-line prefer-rest-params
        arguments[0] = function connected(this: unknown, err: unknown) {
          if (err) {
            try {
              if (typeof err === 'object') failedConnects.set(err, client);
              connectFailureSink?.(client, err, started);
            } catch { /* the observation is lost; the callback runs as without Poolscope */ }
          }
          // eslint-disable-next-line prefer-rest-params
          return (cb as Callback).apply(this, arguments as unknown as unknown[]);
        };
      }
      const spans = querySpans;
      // eslint-disable-next-line prefer-rest-params
      const args = arguments as unknown as unknown[];
      const run: Callback = spans !== undefined ? () => spans.detached(originalConnect as Callback, this, args)
        : () => (originalConnect as Callback).apply(this, args);
      if (typeof cb === 'function') return run();
      // The promise form (knex connects so): its failure is noted through the derived promise, which rejects as
      // pg's does, so a rejection the caller leaves unhandled stays unhandled.
      const client = this;
      return callObserved(run, undefined, [], (err) => {
        if (err !== null && typeof err === 'object') failedConnects.set(err, client);
      });
    };
    defineHidden(proto, kConnectPatched, originalConnect);
    shimmerTransparent(connect, () => originalConnect as Callback, (m) => { originalConnect = m; });
    proto.connect = sameArity(connect, originalConnect);
  }
}

type Callback = (...a: unknown[]) => unknown;

/**
 * Puts the wrapper on the config in place of its own callback, where that is a plain writable property and the
 * write sticks: a Proxy's set trap may refuse it (which threw, in strict code) or drop it (the query went
 * untimed). Never throws.
 */
function placeCallback(config: object, wrapped: Callback): boolean {
  try {
    const own = Object.getOwnPropertyDescriptor(config, 'callback');
    return own !== undefined && own.writable === true && Reflect.set(config, 'callback', wrapped) &&
      (config as { callback?: unknown }).callback === wrapped;
  } catch {
    return false;
  }
}

/**
 * Calls pg's `query`, then puts the caller's callback back where Poolscope's wrapper was left on the caller's
 * config (by pg before 8.23, or by placeCallback). The putting back never throws.
 */
function callRestoringCallback(fn: Callback, self: unknown, args: unknown[], config: unknown, wrapped: Callback, cb: Callback): unknown {
  try {
    return fn.apply(self, args);
  } finally {
    try {
      const c = config as { callback?: unknown } | null;
      if (c !== null && typeof c === 'object' && c.callback === wrapped) c.callback = cb;
    } catch {
      // a config that cannot be read or written keeps what pg left
    }
  }
}

/** Whether `proto[key]` can be replaced and marked: not on a frozen or sealed prototype, nor a read-only method. */
function canPatch(proto: object, key: string): boolean {
  if (!Object.isExtensible(proto)) return false;
  const own = Object.getOwnPropertyDescriptor(proto, key);
  return own === undefined || ('value' in own ? own.writable === true : own.set !== undefined);
}

/** Client classes already reported as unpatchable: one warning per class. */
const reportedClasses = new WeakSet<object>();

/**
 * A client class whose prototype cannot be patched (frozen by the application, say) still works as it is;
 * its queries are not timed, and one warning per class says so (README, Limitations).
 */
function unpatchableClientClass(Client: object): void {
  if (reportedClasses.has(Client)) return;
  reportedClasses.add(Client);
  const declared = (Client as { name?: unknown }).name;
  const name = typeof declared === 'string' && declared !== '' ? declared : 'anonymous';
  currentContext()?.log.warn(`client-class:${name}`, `poolscope: the pool's client class ${JSON.stringify(name)} cannot be patched (its prototype is frozen or its query method read-only); db.client.operation.duration and query spans are not recorded for its queries.`);
}

/** The caller's query callback, timing (and with traces on, tracing) the query it completes. */
function observedCallback(cb: Callback, ctx: AdapterContext, mark: PoolMark | undefined, client: object, start: number,
  text: unknown, spans: QuerySpans | undefined, parent: unknown): Callback {
  return function (this: unknown, err: unknown) {
    const end = reportQuery(ctx, mark, client, start, text, err);
    // eslint-disable-next-line prefer-rest-params
    if (spans === undefined) return cb.apply(this, arguments as unknown as unknown[]);
    spans.end(parent, client as PgClientLike, text, start, end, err);
    // eslint-disable-next-line prefer-rest-params
    return spans.call(parent, cb, this, arguments);
  };
}

/** Reports a finished query; returns the clock reading it ended at. */
function reportQuery(ctx: AdapterContext, mark: PoolMark | undefined, client: object, start: number, text: unknown, err: unknown): number {
  const end = now();
  const checkedOut = checkoutOf(client);
  touchCheckout(checkedOut, end);
  ctx.events.queryDone(mark?.observed, queryTargetOf(client as PgClientLike), (end - start) / 1000, text, err, checkedOut);
  return end;
}

/** The create time of a client whose connect just finished, once; undefined if its start was not seen. */
export function takeCreateSeconds(client: object): number | undefined {
  const started = connectStartedAt.get(client);
  if (started === undefined) return undefined;
  connectStartedAt.delete(client);
  return (now() - started) / 1000;
}

/**
 * pg's client classes, patched as their files load: `pg.Client`, and `pg.native.Client`, which pg loads when
 * `pg.native` is first read (or at once under NODE_PG_FORCE_NATIVE). A standalone native client was untimed
 * while it was patched only through a pool of native clients.
 */
export function pgClientModules(): InstrumentationNodeModuleFile[] {
  return ['pg/lib/client.js', 'pg/lib/native/client.js'].map((file) => new InstrumentationNodeModuleFile(file, ['>=8.0.3 <9'],
    (Client: unknown) => { patchClientClass(Client); return Client; },
    // The patch stays for the life of the process and passes through when nothing runs (see currentContext).
    (Client: unknown) => Client));
}
