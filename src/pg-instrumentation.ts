import type { Attributes } from '@opentelemetry/api';
import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  InstrumentationNodeModuleFile,
  type InstrumentationConfig,
} from '@opentelemetry/instrumentation';
import { createLogger, type PoolscopeLogger } from './logger.js';
import { operationName } from './operation-name.js';
import { LocalHistogram, LocalHistogramProducer, type HistogramCell } from './local-histogram.js';
import { PoolMetrics } from './pool-metrics.js';
import { defaultPoolName, isWithheld, isWithheldPort, resolvePoolTarget, type PoolTargetOptions } from './pool-name.js';
import { PoolRegistry, type PgPoolLike, type PoolState } from './pool-registry.js';
import * as sc from './semconv.js';
import { VERSION } from './version.js';

export interface PoolscopeInstrumentationConfig extends InstrumentationConfig {
  /**
   * Default overflow base size for pools that do not declare one; unset means each pool's `min`.
   * @default undefined
   */
  poolBaseSize?: number;
  /**
   * Utilization (0–1) whose crossing logs a rate-limited warning.
   * @default 0.8
   */
  logUtilizationThreshold?: number;
  /**
   * Aggregate the connection and query histograms in Poolscope instead of the SDK, which removes the
   * SDK's per-record attribute hashing from every query. The histograms then reach readers only through
   * {@link PoolscopeInstrumentation.metricProducer}, which must be passed to them (`startPoolscope` does).
   * @default false
   */
  localAggregation?: boolean;
}

export interface MonitorPoolOptions {
  /** Pool name reported as `db.client.connection.pool.name`. Default: `host:port/database`. */
  name?: string;
  /** Overflow base size for this pool. Default: the instrumentation's `poolBaseSize`, else the pool's `min`. */
  baseSize?: number;
}

/** A pg-pool Pool as seen by the wrappers. */
type PgPool = PgPoolLike & {
  connect: (...args: unknown[]) => unknown;
  end?: (...args: unknown[]) => unknown;
  emit: (event: string | symbol, ...args: unknown[]) => boolean;
  Client?: unknown;
  options?: PgPoolLike['options'] & PoolTargetOptions;
};
type PgClient = { host?: string; port?: number; database?: string; user?: string };
type Ctor = abstract new (...args: never[]) => object;

// Symbol.for: two copies of Poolscope in one process (e.g. ESM and CJS builds) must see each other's marks.
const kPoolState = Symbol.for('poolscope.pool-state');
const kQueryPatched = Symbol.for('poolscope.query-patched');
const kPoolSubclass = Symbol.for('poolscope.pool-subclass');
/** On a pooled client: which instrumentation and pool it belongs to, so queries are attributed to its pool. */
const kClientOwner = Symbol.for('poolscope.client-owner');
/** On a pooled client: when it was handed over (performance.now()), for use time. */
const kCheckedOutAt = Symbol('poolscope.checked-out-at');
/** When each physical connection attempt started, keyed by client; read at the pool's 'connect' event. */
const connectStartedAt = new WeakMap<object, number>();
const kConnectPatched = Symbol.for('poolscope.connect-patched');
/** On a PoolState: its cells in the local histograms. */
const kCells = Symbol('poolscope.cells');

interface LocalHistograms {
  wait: LocalHistogram;
  use: LocalHistogram;
  create: LocalHistogram;
  operation: LocalHistogram;
}
interface PoolCells {
  wait: HistogramCell;
  use: HistogramCell;
  create: HistogramCell;
}
interface QueryAttributes {
  attributes: Attributes;
  cell: HistogramCell | undefined;
}

interface ClientOwner {
  instrumentation: PoolscopeInstrumentation;
  state: PoolState;
}

const TIMEOUT_MESSAGES = new Set([
  'timeout exceeded when trying to connect',
  'Connection terminated due to connection timeout',
]);

const SQLSTATE = /^[0-9A-Z]{5}$/;
const SYSTEM_CODE = /^E[A-Z0-9_]{1,30}$/;
const ERROR_NAME = /^[A-Za-z_$][\w$]{0,63}$/;

/** Low-cardinality `error.type`: SQLSTATE, then Node's system error code, then the error class name. */
export function errorType(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null | undefined;
  const code = e?.code;
  if (typeof code === 'string' && (SQLSTATE.test(code) || SYSTEM_CODE.test(code))) return code;
  const name = e?.name;
  if (typeof name === 'string' && ERROR_NAME.test(name)) return name;
  return '_OTHER';
}

export function isAcquireTimeout(err: unknown): boolean {
  return TIMEOUT_MESSAGES.has((err as { message?: string } | null)?.message ?? '');
}

function defineHidden(target: object, key: PropertyKey, value: unknown): void {
  Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
}

const now = () => performance.now();

/**
 * Calls `fn` and reports its completion exactly once to `done`: through the callback at `callbackIndex`
 * when the caller passed one, else through the returned promise. The promise handed back is derived
 * (not a side branch), so a rejection the application leaves unhandled stays unhandled.
 */
function callObserved(fn: (...a: unknown[]) => unknown, thisArg: unknown, args: unknown[],
  callbackIndex: number, done: (err: unknown) => void): unknown {
  const cb = args[callbackIndex];
  if (callbackIndex >= 0 && typeof cb === 'function') {
    args[callbackIndex] = function (this: unknown, err: unknown) {
      done(err);
      // eslint-disable-next-line prefer-rest-params
      return (cb as (...a: unknown[]) => unknown).apply(this, arguments as unknown as unknown[]);
    };
    return fn.apply(thisArg, args);
  }
  let result: unknown;
  try {
    result = fn.apply(thisArg, args);
  } catch (err) {
    done(err);
    throw err;
  }
  const promise = result as PromiseLike<unknown> | undefined;
  if (promise === undefined || promise === null || typeof promise.then !== 'function') return result;
  return promise.then(
    (value) => { done(undefined); return value; },
    (err) => { done(err); throw err; },
  );
}

/**
 * Zero-code instrumentation of `pg` / `pg-pool`: every Pool created after it is enabled is monitored
 * (the pg-pool export is replaced by a transparent subclass whose constructor registers the pool), and
 * `Client#query` records `db.client.operation.duration`. Existing pools are added with {@link monitorPool}.
 *
 * Nothing here adds an event listener to a pool: events are observed by wrapping the pool's own `emit`,
 * so listener counts, and pg-pool's crash-on-unhandled-`error` semantics, stay exactly as they were.
 */
export class PoolscopeInstrumentation extends InstrumentationBase<PoolscopeInstrumentationConfig> {
  declare private _poolMetrics: PoolMetrics | undefined;
  declare private _registry: PoolRegistry;
  declare private _log: PoolscopeLogger;
  declare private _active: boolean;
  declare private _local: LocalHistograms | undefined;
  declare private _producer: LocalHistogramProducer | undefined;
  private readonly queryAttributes = new Map<string, QueryAttributes>();

  constructor(config: PoolscopeInstrumentationConfig = {}, registry?: PoolRegistry) {
    super('poolscope', VERSION, config);
    this._registry = registry ?? new PoolRegistry();
    this._log = createLogger(60_000);
  }

  get registry(): PoolRegistry {
    return this._registry;
  }

  /** With `localAggregation`, the producer readers need for the histograms; otherwise undefined. */
  get metricProducer(): LocalHistogramProducer | undefined {
    const local = this.local;
    if (local === undefined) return undefined;
    this._producer ??= new LocalHistogramProducer([local.wait, local.use, local.create, local.operation]);
    return this._producer;
  }

  private get local(): LocalHistograms | undefined {
    if (this._local === undefined && this.getConfig().localAggregation === true) {
      this._local = {
        wait: new LocalHistogram(sc.METRIC_CONNECTION_WAIT_TIME, sc.DESCRIPTION_WAIT_TIME, 's', sc.WAIT_TIME_BUCKETS),
        use: new LocalHistogram(sc.METRIC_CONNECTION_USE_TIME, sc.DESCRIPTION_USE_TIME, 's', sc.USE_TIME_BUCKETS),
        create: new LocalHistogram(sc.METRIC_CONNECTION_CREATE_TIME, sc.DESCRIPTION_CREATE_TIME, 's', sc.CREATE_TIME_BUCKETS),
        operation: new LocalHistogram(sc.METRIC_OPERATION_DURATION, sc.DESCRIPTION_OPERATION_DURATION, 's', sc.OPERATION_DURATION_BUCKETS),
      };
    }
    return this._local;
  }

  private cells(state: PoolState): PoolCells | undefined {
    const local = this.local;
    if (local === undefined) return undefined;
    const holder = state as unknown as { [kCells]?: PoolCells };
    let cells = holder[kCells];
    if (cells === undefined) {
      const attrs = () => state.attributes;
      cells = {
        wait: local.wait.cell(state.name, attrs),
        use: local.use.cell(state.name, attrs),
        create: local.create.cell(state.name, attrs),
      };
      holder[kCells] = cells;
    }
    return cells;
  }

  private recordPoolDuration(state: PoolState, which: keyof PoolCells, seconds: number): void {
    const cells = this.cells(state);
    if (cells !== undefined) {
      this._local![which].record(cells[which], seconds);
      return;
    }
    const m = this.metrics;
    (which === 'wait' ? m.waitTime : which === 'use' ? m.useTime : m.createTime).record(seconds, state.attributes);
  }

  override enable(): void {
    this._active = true;
    super.enable();
  }

  override disable(): void {
    this._active = false;
    super.disable();
  }

  protected override _updateMetricInstruments(): void {
    // Called by the base constructor before our fields exist, and again on every setMeterProvider().
    this._poolMetrics?.dispose();
    this._poolMetrics = undefined;
    if (this._registry !== undefined && this._registry.size > 0) void this.metrics;
  }

  private get metrics(): PoolMetrics {
    this._poolMetrics ??= new PoolMetrics(this.meter, this._registry);
    return this._poolMetrics;
  }

  protected override init() {
    const clientFile = new InstrumentationNodeModuleFile(
      'pg/lib/client.js', ['>=8.0.3 <9'],
      (Client: unknown) => { this.patchClientClass(Client); return Client; },
      (Client: unknown) => { this.unpatchClientClass(Client); return Client; },
    );
    return [
      new InstrumentationNodeModuleDefinition('pg-pool', ['>=2.0.0 <4'],
        (exports: unknown) => this.patchPoolModule(exports), (exports: unknown) => exports),
      new InstrumentationNodeModuleDefinition('pg', ['>=8.0.3 <9'], undefined, undefined, [clientFile]),
    ];
  }

  /**
   * Starts monitoring an existing pool. Idempotent: a pool is registered once (guarded by a symbol, also
   * across Poolscope copies); returns the pool's reported name, or undefined when `pool` is not a pg Pool.
   */
  monitorPool(pool: unknown, options: MonitorPoolOptions = {}): string | undefined {
    const p = pool as PgPool | null;
    if (p === null || typeof p !== 'object' || typeof p.connect !== 'function' || typeof p.emit !== 'function') {
      this._log.warn('monitorPool:invalid', 'poolscope: monitorPool() was given something that is not a pg Pool; ignored.');
      return undefined;
    }
    const existing = (p as unknown as Record<symbol, PoolState | undefined>)[kPoolState];
    if (existing !== undefined) return existing.name;

    const declared = options.name ?? p.options?.poolName;
    const target = resolvePoolTarget(p.options);
    const baseName = typeof declared === 'string' && declared.trim() !== '' ? declared.trim() : defaultPoolName(target);
    const state = this._registry.add(p, baseName, options.baseSize ?? this.getConfig().poolBaseSize);
    state.namespace = target.database;
    defineHidden(p, kPoolState, state);
    this.wrapPool(p, state);
    void this.metrics; // registers the gauge callback on first use
    return state.name;
  }

  private patchPoolModule(exports: unknown): unknown {
    const patchClass = (Pool: unknown): unknown => {
      if (typeof Pool !== 'function') return Pool;
      const marked = Pool as unknown as Record<symbol, unknown>;
      if (marked[kPoolSubclass] !== undefined) return marked[kPoolSubclass];
      const instrumentation = this;
      const Base = Pool as unknown as Ctor;
      // A subclass rather than a patched prototype, so that pools are known from construction
      // (max/min are reported before the first query) and `instanceof Pool` keeps working.
      abstract class PoolscopePool extends Base {
        constructor(...args: never[]) {
          super(...args);
          if (instrumentation._active) instrumentation.monitorPool(this);
        }
      }
      Object.defineProperty(PoolscopePool, 'name', { value: (Pool as { name: string }).name });
      defineHidden(marked, kPoolSubclass, PoolscopePool);
      return PoolscopePool;
    };
    if (typeof exports === 'function') return patchClass(exports);
    // import-in-the-middle hands over an ESM namespace whose default export is the class.
    const ns = exports as { default?: unknown } | null;
    if (ns !== null && typeof ns === 'object' && typeof ns.default === 'function') ns.default = patchClass(ns.default);
    return exports;
  }

  private wrapPool(pool: PgPool, state: PoolState): void {
    const instrumentation = this;
    const originalConnect = pool.connect;
    defineHidden(pool, 'connect', function connect(this: PgPool, ...args: unknown[]) {
      if (!instrumentation._active) return originalConnect.apply(this, args);
      const start = now();
      return callObserved(originalConnect, this, args, 0, (err) => instrumentation.onAcquired(state, start, err));
    });

    // Free the pool's name as soon as it ends, so the next pool to the same target reuses it instead of
    // minting new series (collection would notice the end too, but only at the next scrape).
    const originalEnd = pool.end;
    if (typeof originalEnd === 'function') {
      const registry = this._registry;
      defineHidden(pool, 'end', function end(this: PgPool, ...args: unknown[]) {
        const result = originalEnd.apply(this, args);
        if (this.ending === true) registry.remove(state);
        return result;
      });
    }

    const originalEmit = pool.emit;
    defineHidden(pool, 'emit', function emit(this: PgPool, event: string | symbol, a?: unknown, b?: unknown) {
      if (instrumentation._active) instrumentation.onPoolEvent(state, this, event, a, b);
      // `arguments`, not a rest parameter: emit runs twice per query and must pass every argument through.
      // eslint-disable-next-line prefer-rest-params
      return originalEmit.apply(this, arguments as unknown as Parameters<PgPool['emit']>);
    });

    // The pool's client class (pg.Client, pg.native.Client or a custom one) gets the query and connect
    // wrappers on its prototype; pool.Client itself stays the very same class.
    this.patchClientClass(pool.Client);
  }

  private onAcquired(state: PoolState, start: number, err: unknown): void {
    try {
      const metrics = this.metrics;
      if (err === undefined || err === null) {
        this.recordPoolDuration(state, 'wait', (now() - start) / 1000);
      } else if (isAcquireTimeout(err)) {
        metrics.timeouts.add(1, state.attributes);
      } else {
        metrics.errors.add(1, metrics.errorAttributesFor(state, errorType(err)));
      }
    } catch (e) {
      this._log.warn('record', `poolscope: failed to record an acquire: ${(e as Error).message}`);
    }
  }

  private onPoolEvent(state: PoolState, pool: PgPool, event: string | symbol, a: unknown, b: unknown): void {
    try {
      switch (event) {
        case 'connect': {
          const client = a as object;
          const started = connectStartedAt.get(client);
          if (started !== undefined) {
            this.recordPoolDuration(state, 'create', (now() - started) / 1000);
            connectStartedAt.delete(client);
          }
          defineHidden(client, kClientOwner, { instrumentation: this, state } satisfies ClientOwner);
          this.checkOverflow(state, pool);
          break;
        }
        case 'acquire':
          // Hidden on first use, then plain assignment (which keeps the property non-enumerable): the
          // mark must not show up in console.log(client) or crash dumps.
          if (kCheckedOutAt in (a as object)) (a as { [kCheckedOutAt]?: number })[kCheckedOutAt] = now();
          else defineHidden(a as object, kCheckedOutAt, now());
          this.checkUtilization(state, pool, 0);
          break;
        case 'release': {
          const client = b as { [kCheckedOutAt]?: number };
          const since = client[kCheckedOutAt];
          if (since !== undefined) {
            this.recordPoolDuration(state, 'use', (now() - since) / 1000);
            client[kCheckedOutAt] = undefined;
          }
          // The releasing client is still counted as used when 'release' fires.
          this.checkUtilization(state, pool, 1);
          break;
        }
        case 'remove':
          this.checkOverflow(state, pool);
          break;
        case 'error':
          this.metrics.errors.add(1, this.metrics.errorAttributesFor(state, errorType(a)));
          break;
        default:
          break;
      }
    } catch (e) {
      this._log.warn('record', `poolscope: failed to record a pool event: ${(e as Error).message}`);
    }
  }

  private checkUtilization(state: PoolState, pool: PgPool, releasing: number): void {
    const max = pool.options?.max ?? 10;
    const used = pool.totalCount - pool.idleCount - releasing;
    const threshold = this.getConfig().logUtilizationThreshold ?? 0.8;
    const utilization = max > 0 ? used / max : 0;
    if (!state.aboveLogThreshold) {
      if (utilization >= threshold) {
        state.aboveLogThreshold = true;
        // The rate limit is checked before the message is built: this runs on every checkout.
        const t = now();
        if (t - state.utilizationLoggedAt < 60_000) return;
        state.utilizationLoggedAt = t;
        this._log.warn(`utilization:${state.name}`,
          `poolscope: pool "${state.name}" is at ${Math.round(utilization * 100)}% utilization ` +
          `(${used}/${max} connections in use, ${pool.waitingCount} waiting).`);
      }
    } else if (utilization < threshold - 0.1) {
      // Hysteresis: a pool hovering at the threshold is one crossing, not one per checkout.
      state.aboveLogThreshold = false;
    }
  }

  private checkOverflow(state: PoolState, pool: PgPool): void {
    if (!state.hasMeaningfulBase(pool)) return;
    const base = state.baseSize(pool);
    const active = pool.totalCount > base;
    if (active && !state.overflowActive) {
      this._log.warn(`overflow:${state.name}`,
        `poolscope: pool "${state.name}" is in overflow: ${pool.totalCount} connections open, base size ${base}.`);
    }
    state.overflowActive = active;
  }

  private patchClientClass(Client: unknown): void {
    if (typeof Client !== 'function') return;
    const proto = (Client as { prototype?: Record<PropertyKey, unknown> }).prototype;
    if (proto === undefined || typeof proto.query !== 'function' || proto[kQueryPatched] !== undefined) return;
    const original = proto.query as (...args: unknown[]) => unknown;
    const patcher = this;
    const query = function query(this: PgClient, ...args: unknown[]) {
      // Several instrumentations can exist (tests, a second SDK); the pool's owner records its clients' queries.
      const owner = (this as { [kClientOwner]?: ClientOwner })[kClientOwner];
      const instrumentation = owner?.instrumentation ?? patcher;
      if (!instrumentation._active) return original.apply(this, args);
      const first = args[0] as { submit?: unknown; text?: unknown; callback?: unknown } | string | null | undefined;
      // Submittables (cursors, query streams) report completion through their own events; not measured.
      if (first === null || first === undefined || (typeof first === 'object' && typeof first.submit === 'function')) {
        return original.apply(this, args);
      }
      const text = typeof first === 'string' ? first : first.text;
      const start = now();
      // query(text, cb), query(text, values, cb), query(config, cb): the callback, if any, is last.
      const callbackIndex = args.length > 1 ? args.length - 1 : -1;
      return callObserved(original, this, args, callbackIndex, (err) => instrumentation.onQueryDone(this, text, start, err));
    };
    defineHidden(query, kQueryPatched, original);
    defineHidden(proto, kQueryPatched, original);
    proto.query = query;

    const originalConnect = proto.connect;
    if (typeof originalConnect === 'function' && proto[kConnectPatched] === undefined) {
      const connect = function connect(this: object) {
        connectStartedAt.set(this, now());
        // eslint-disable-next-line prefer-rest-params
        return (originalConnect as (...a: unknown[]) => unknown).apply(this, arguments as unknown as unknown[]);
      };
      defineHidden(proto, kConnectPatched, originalConnect);
      proto.connect = connect;
    }
  }

  private unpatchClientClass(Client: unknown): void {
    const proto = (Client as { prototype?: Record<PropertyKey, unknown> } | undefined)?.prototype;
    const original = proto?.[kQueryPatched];
    if (proto !== undefined && typeof original === 'function') {
      proto.query = original;
      delete proto[kQueryPatched];
    }
    const originalConnect = proto?.[kConnectPatched];
    if (proto !== undefined && typeof originalConnect === 'function') {
      proto.connect = originalConnect;
      delete proto[kConnectPatched];
    }
  }

  private onQueryDone(client: PgClient, text: unknown, start: number, err: unknown): void {
    try {
      const seconds = (now() - start) / 1000;
      const q = this.attributesForQuery(client, operationName(text), err);
      if (q.cell !== undefined) this._local!.operation.record(q.cell, seconds);
      else this.metrics.operationDuration.record(seconds, q.attributes);
    } catch (e) {
      this._log.warn('record', `poolscope: failed to record a query: ${(e as Error).message}`);
    }
  }

  private attributesForQuery(client: PgClient, operation: string | undefined, err: unknown): QueryAttributes {
    const state = (client as { [kClientOwner]?: ClientOwner })[kClientOwner]?.state;
    const type = err === undefined || err === null ? '' : errorType(err);
    const key = `${state?.name ?? `${client.host}:${client.port}/${client.database}`}\u0000${operation ?? ''}\u0000${type}`;
    let entry = this.queryAttributes.get(key);
    if (entry === undefined) {
      // A pool knows whether its database was configured; a lone client's database equal to its user is
      // most likely pg's fallback, and a user name must not become a label.
      const namespace = state !== undefined ? state.namespace
        : client.database !== undefined && client.database !== client.user && !isWithheld(client.database) ? String(client.database) : undefined;
      const attrs: Attributes = {
        [sc.ATTR_DB_SYSTEM_NAME]: sc.DB_SYSTEM_POSTGRESQL,
        ...(namespace === undefined ? {} : { [sc.ATTR_DB_NAMESPACE]: namespace }),
        // Withheld: what pg took from the user name or password of a mis-read connection string.
        ...(client.host === undefined || isWithheld(client.host) ? {} : { [sc.ATTR_SERVER_ADDRESS]: String(client.host) }),
        ...(client.port === undefined || isWithheldPort(client.port) ? {} : { [sc.ATTR_SERVER_PORT]: Number(client.port) }),
        ...(state === undefined ? {} : state.attributes),
        ...(operation === undefined ? {} : { [sc.ATTR_DB_OPERATION_NAME]: operation }),
        ...(type === '' ? {} : { [sc.ATTR_ERROR_TYPE]: type }),
        ...(SQLSTATE.test(type) ? { [sc.ATTR_DB_RESPONSE_STATUS_CODE]: type } : {}),
      };
      Object.freeze(attrs);
      entry = { attributes: attrs, cell: this.local?.operation.cell(key, () => attrs) };
      // Bounded: pools, operations and error types are small sets, but churned pools must not grow it forever.
      if (this.queryAttributes.size >= 2_000) this.queryAttributes.clear();
      this.queryAttributes.set(key, entry);
    }
    return entry;
  }
}
