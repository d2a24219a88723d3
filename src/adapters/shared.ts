/*
 * What every adapter shares: the context it reports into, marks it leaves on pools and clients, and the
 * one helper that times a call whichever way (callback or promise) the caller used.
 */
import { errorText, type PoolscopeLogger } from '../logger.js';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { AcquirePath, ObserverFanOut } from '../pools/observer.js';
import { checkoutRecord } from '../pools/pool-probe.js';
import type { PoolRegistration, PoolRegistry } from '../pools/registry.js';
import { markInUse, processState } from '../process-state.js';
import { monotonicNow } from '../native-timers.js';

export interface MonitorPoolOptions {
  /** Pool name reported as `db.client.connection.pool.name`. Default: `host:port/database`. */
  name?: string | undefined;
  /** Overflow base size for this pool. Default: the instrumentation's `poolBaseSize`, else the pool's `min`. */
  baseSize?: number | undefined;
}

/** What an adapter reports into: one per running instrumentation. */
export interface AdapterContext {
  readonly events: ObserverFanOut;
  readonly registry: PoolRegistry;
  readonly log: PoolscopeLogger;
  readonly poolBaseSize: number | undefined;
  /** False once the instrumentation is disabled: every wrapper then passes straight through. */
  readonly active: boolean;
}

/**
 * The context of the instrumentation enabled last. Patches are installed once per process and stay; they
 * report to whichever instrumentation is current, so `shutdown()` followed by a new start keeps working
 * for modules loaded (and pools created) before the restart.
 */
export function currentContext(): AdapterContext | undefined {
  const ctx = processState.context as AdapterContext | undefined;
  return ctx?.active === true ? ctx : undefined;
}

export function setCurrentContext(ctx: AdapterContext | undefined, ifCurrent?: AdapterContext): void {
  if (ifCurrent !== undefined && processState.context !== ifCurrent) return;
  processState.context = ctx;
}

/** On a pooled client: its pool's mark, so its queries carry the pool's name. */
const kClientPool = Symbol.for('poolscope.client-pool');

export function setClientPool(client: object, mark: PoolMark): void {
  if ((client as { [kClientPool]?: PoolMark })[kClientPool] === mark) return;
  defineHidden(client, kClientPool, mark);
}

export function clientPool(client: object): PoolMark | undefined {
  return (client as { [kClientPool]?: PoolMark })[kClientPool];
}

/** Remembered process-wide: a Poolscope started later must still know pg is in use. */
export function markPgLoaded(): void {
  processState.pgLoaded = true;
}

/**
 * pg is used, not only loaded: a pool is made or a connection opened. Under the preload, that is what makes a
 * process the service that binds the telemetry port (process-state.ts). Loading pg was not enough: Medusa's
 * `develop` watcher loads it through a re-export, never connects, and took the port from the server it runs.
 */
export function markPgUsed(): void {
  markInUse();
}
export function isPgLoaded(): boolean {
  return processState.pgLoaded;
}

/**
 * A per-pool mark: which context observes the pool and under which registration. A pool whose library
 * does not tell its target up front (tarn, sequelize-pool) is registered later, when its first pg
 * connection shows where it goes; until then `observed` is undefined and nothing is reported. When the
 * context has stopped and another is running, the pool moves to the running one on its next event.
 */
export class PoolMark {
  observed: ObservedPool | undefined;
  private registration: Omit<PoolRegistration, 'baseSize'> & { baseSize?: number } | undefined;

  readonly options: MonitorPoolOptions;

  constructor(public ctx: AdapterContext, options: MonitorPoolOptions) {
    this.options = { ...options };
  }

  register(registration: Omit<PoolRegistration, 'baseSize'>): ObservedPool {
    if (this.observed !== undefined) return this.observed;
    this.registration = { ...registration, baseName: chooseName(this.options.name, registration.baseName), baseSize: this.options.baseSize };
    this.observed = this.add();
    markPgUsed();
    return this.observed;
  }

  /**
   * A name or base size chosen after the fact (`monitorPool(pool, { name, baseSize })` on a pool the preload
   * attached as it was built). The base size was dropped there, silently: overflow kept counting from `min`
   * (found by a review of the README's promises).
   */
  declare(given: { name?: string | undefined; baseSize?: number | undefined }): void {
    const name = given.name === undefined ? undefined : chooseName(given.name, given.name);
    if (name !== undefined) this.options.name = name;
    if (given.baseSize !== undefined) this.options.baseSize = given.baseSize;
    const reg = this.registration;
    // Not registered yet (its first connection decides the target): the options wait for it.
    if (reg === undefined || this.observed === undefined) return;
    const baseName = name ?? reg.baseName;
    const baseSize = given.baseSize ?? reg.baseSize;
    if (reg.baseName === baseName && reg.baseSize === baseSize) return;
    reg.baseName = baseName;
    reg.baseSize = baseSize;
    const previous = this.observed;
    this.ctx.registry.remove(previous);
    this.observed = this.add();
    this.observed.probe.adopt(previous.probe);
  }

  /** A restart: the pool starts afresh in `ctx`, its checkouts too, as releases while nothing ran went unseen. */
  moveTo(ctx: AdapterContext): void {
    this.ctx = ctx;
    if (this.registration !== undefined) this.observed = this.add();
  }

  /** The pool ended: its series go now rather than at the next collection. */
  close(): void {
    if (this.observed !== undefined) this.ctx.registry.remove(this.observed);
  }

  private add(): ObservedPool {
    const reg = this.registration!;
    return this.ctx.registry.add({ ...reg, baseSize: reg.baseSize ?? this.ctx.poolBaseSize });
  }
}

/**
 * The mark as seen by the running context: itself while its context runs, moved to the current context
 * after a restart, undefined when nothing runs. Called at the top of every wrapper.
 */
export function liveMark(mark: PoolMark | undefined): PoolMark | undefined {
  if (mark === undefined) return undefined;
  if (mark.ctx.active) return mark;
  const ctx = currentContext();
  if (ctx === undefined) return undefined;
  mark.moveTo(ctx);
  return mark;
}

/** Non-enumerable, so marks never show up in console.log(pool), JSON or crash dumps. */
export function defineHidden(target: object, key: PropertyKey, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
}

export const now = monotonicNow;

/*
 * The three per-checkout reports, the same for every adapter: to the pool's probe, which the built-in
 * recorders read, and to the recorders added with addRecorder() that implement the call, if any.
 */

/**
 * An acquire is requested at `t`, before the library takes it: `waiting` counts the callers already waiting
 * (default: read now), to which this one is added if it will queue.
 */
export function reportRequested(mark: PoolMark, observed: ObservedPool, path: AcquirePath, t: number, waiting?: number): void {
  // The pool's counters read once, and only when needed: the waiters when not given, the used for a new connection.
  const s = waiting === undefined || path === 'new' ? observed.snapshot() : undefined;
  observed.probe.requested(t, path, waiting ?? s?.pending ?? 0, path === 'new' ? s?.used : undefined);
  if (mark.ctx.events.wants.acquireRequested) mark.ctx.events.acquireRequested(observed, path);
}

/** An acquire completed at `t`; `used` and `max` are the pool's counters as it did (default: read now). */
export function reportAcquired(mark: PoolMark, observed: ObservedPool, checkedOut: object, t: number, waitSeconds: number,
  path: AcquirePath, origin: object | undefined, used?: number, max?: number): void {
  if (used === undefined || max === undefined) {
    const s = observed.snapshot();
    used = s?.used ?? 0;
    max = s?.max ?? 0;
  }
  observed.probe.acquired(checkedOut, t, waitSeconds, path, origin, used, max);
  if (mark.ctx.events.wants.acquired) mark.ctx.events.acquired(observed, checkedOut, waitSeconds, path, origin);
}

/** `checkedOut` is released at `t`, while the pool still counts it as used. */
export function reportReleased(mark: PoolMark, observed: ObservedPool, checkedOut: object, t: number, discarded = false): void {
  const events = mark.ctx.events;
  if (events.wants.released) {
    // Before the probe forgets the checkout: a recorder may look its origin up.
    const c = checkoutRecord(checkedOut);
    if (c !== undefined && c.probe === observed.probe) events.released(observed, checkedOut, (t - c.since) / 1000);
  }
  observed.probe.released(checkedOut, t, discarded);
}

/**
 * Calls `fn` (its promise or synchronous form) and reports its completion exactly once to `done`. The
 * promise handed back is derived (not a side branch), so a rejection the application leaves unhandled
 * stays unhandled. The callback forms are wrapped by the adapters themselves, with one closure per call.
 */
export function callObserved(fn: (...a: unknown[]) => unknown, thisArg: unknown, args: unknown[],
  done: (err: unknown, value: unknown) => void): unknown {
  let result: unknown;
  try {
    result = fn.apply(thisArg, args);
  } catch (err) {
    done(err, undefined);
    throw err;
  }
  const promise = result as PromiseLike<unknown> | undefined;
  if (promise === undefined || promise === null || typeof promise.then !== 'function') return result;
  return promise.then(
    (value) => { done(undefined, value); return value; },
    (err) => { done(err, undefined); throw err; },
  );
}

/**
 * Name for a new registration: the user's (trimmed, non-empty) or the library-derived default, with control
 * characters replaced: the name is written into log lines, where a newline forged a line of its own and an
 * ANSI escape re-coloured the terminal.
 */
export function chooseName(declared: unknown, fallback: string): string {
  const name = typeof declared === 'string' && declared.trim() !== '' ? declared.trim().slice(0, 200) : fallback;
  return name.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** Error codes and messages meaning the server ended the session (terminate, shutdown, crash). */
// admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped, idle_session_timeout (PostgreSQL 14+),
// idle_in_transaction_session_timeout: the server ended the session. The last two were counted as \`error\`.
const SERVER_GONE_CODES = new Set(['57P01', '57P02', '57P03', '57P04', '57P05', '25P03', 'ECONNRESET', 'EPIPE']);
export function isServerTermination(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null | undefined;
  if (typeof e?.code === 'string' && SERVER_GONE_CODES.has(e.code)) return true;
  return typeof e?.message === 'string' && /Connection terminated unexpectedly/.test(e.message);
}

/**
 * tarn's and sequelize-pool's TimeoutError classes leave `name` as 'Error'; the class is what tells.
 * (knex and Sequelize rethrow their own timeout errors, but the pools see the original.)
 */
export function isTimeout(err: unknown): boolean {
  const e = err as { name?: unknown; constructor?: { name?: unknown } } | null | undefined;
  return e?.name === 'TimeoutError' || e?.constructor?.name === 'TimeoutError';
}

type Ctor = abstract new (...args: never[]) => object;

/**
 * A transparent subclass of `Original` that sees every instance it builds, made once per class and kept on
 * it under `mark` (Symbol.for: copies of Poolscope share it). A subclass rather than a patched prototype, so
 * instances are known from construction and `instanceof` and the library's own subclasses keep working.
 * `prepare` may replace constructor arguments (with copies, never the caller's objects) and hands its result
 * to `constructed`; neither may throw into the host.
 */
export function subclassOnConstruct<C>(Original: unknown, mark: symbol, constructed: (instance: object, prepared: C) => void,
  prepare?: (args: unknown[]) => C): unknown {
  if (typeof Original !== 'function') return Original;
  const marked = Original as unknown as Record<symbol, unknown>;
  if (marked[mark] !== undefined) return marked[mark];
  const Base = Original as unknown as Ctor;
  abstract class Observed extends Base {
    constructor(...args: never[]) {
      const prepared = prepare?.(args as unknown[]) as C;
      super(...args);
      constructed(this, prepared);
    }

    /**
     * The library's own instances are this class's too. Where Node hands an ES module the class the require
     * hook did not see (Node 20 without the loader thread: `import Pool from 'pg-pool'` after pg required it),
     * `new Pool() instanceof require('pg-pool')` was false. Subclasses (pg's own Pool) keep the ordinary test.
     */
    static override [Symbol.hasInstance](value: unknown): boolean {
      return this === Observed ? value instanceof Base : Function.prototype[Symbol.hasInstance].call(this, value);
    }
  }
  // Same name and arity as the library's class, for code that inspects them.
  Object.defineProperty(Observed, 'name', { value: (Original as { name: string }).name });
  Object.defineProperty(Observed, 'length', { value: (Original as { length: number }).length });
  defineHidden(marked, mark, Observed);
  return Observed;
}

/** Replaces `mod[key]` with `value`; a frozen namespace is left as it is (monitorPool() still works). */
export function replaceExport(mod: object, key: string, value: unknown): void {
  try {
    (mod as Record<string, unknown>)[key] = value;
  } catch {
    // frozen: nothing to do
  }
}

/** Attaches a pool built under a running Poolscope; a failure is a warning, never an exception in the host. */
export function attachOnConstruct(adapter: { library: string; attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): unknown },
  pool: object): boolean {
  const ctx = currentContext();
  if (ctx === undefined) return false;
  try {
    return adapter.attach(pool, ctx, {}) !== undefined;
  } catch (err) {
    ctx.log.warn(`attach:${adapter.library}`, `poolscope: could not monitor a ${adapter.library} pool: ${errorText(err)}`);
    return false;
  }
}
