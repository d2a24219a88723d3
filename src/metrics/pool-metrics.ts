import {
  ValueType,
  type Attributes,
  type BatchObservableCallback,
  type Counter,
  type Histogram,
  type Meter,
  type Observable,
} from '@opentelemetry/api';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { AcquirePath, CloseReason, PoolObserver, QueryTarget } from '../pools/observer.js';
import type { DurationSink } from '../pools/pool-probe.js';
import { PoolStates } from '../pools/pool-states.js';
import type { PoolRegistry } from '../pools/registry.js';
import * as sc from '../semconv.js';
import { errorType, isSqlState } from './error-type.js';
import { LocalHistogram, LocalMetricProducer, type HistogramCell } from './local-histogram.js';
import { operationName } from './operation-name.js';
import { QuerySummaries } from './query-summary.js';
import { createObservable, LocalGauges, type Emit, type ObservableDefinition } from './local-gauges.js';
import { monotonicNow } from '../native-timers.js';

type Which = 'wait' | 'use' | 'create' | 'operation';
const HISTOGRAMS: Record<Which, { name: string; description: string; buckets: number[] }> = {
  wait: { name: sc.METRIC_CONNECTION_WAIT_TIME, description: sc.DESCRIPTION_WAIT_TIME, buckets: sc.WAIT_TIME_BUCKETS },
  use: { name: sc.METRIC_CONNECTION_USE_TIME, description: sc.DESCRIPTION_USE_TIME, buckets: sc.USE_TIME_BUCKETS },
  create: { name: sc.METRIC_CONNECTION_CREATE_TIME, description: sc.DESCRIPTION_CREATE_TIME, buckets: sc.CREATE_TIME_BUCKETS },
  operation: { name: sc.METRIC_OPERATION_DURATION, description: sc.DESCRIPTION_OPERATION_DURATION, buckets: sc.OPERATION_DURATION_BUCKETS },
};

const CONNECTIONS = { unit: '{connection}', valueType: ValueType.INT } as const;

/** The per-pool observable instruments, read from the live pools at each collection (see PoolMetricsRecorder.observe). */
const POOL_GAUGES = {
  count: { ...CONNECTIONS, kind: 'updown', name: sc.METRIC_CONNECTION_COUNT,
    description: 'Connections in the pool by state: used (checked out or connecting) and idle.' },
  max: { ...CONNECTIONS, kind: 'updown', name: sc.METRIC_CONNECTION_MAX,
    description: 'Maximum number of open connections allowed (pool option max).' },
  idleMax: { ...CONNECTIONS, kind: 'updown', name: sc.METRIC_CONNECTION_IDLE_MAX,
    description: 'Maximum number of idle connections allowed (equal to max for every supported pool).' },
  idleMin: { ...CONNECTIONS, kind: 'updown', name: sc.METRIC_CONNECTION_IDLE_MIN,
    description: 'Minimum number of idle connections kept open (pool option min).' },
  pending: { unit: '{request}', valueType: ValueType.INT, kind: 'updown', name: sc.METRIC_CONNECTION_PENDING_REQUESTS,
    description: 'Callers waiting to acquire a connection.' },
  utilization: { unit: '1', valueType: ValueType.DOUBLE, kind: 'gauge', name: sc.METRIC_POOL_UTILIZATION,
    description: 'Used connections divided by the pool maximum (0-1).' },
  overflow: { ...CONNECTIONS, kind: 'gauge', name: sc.METRIC_POOL_OVERFLOW,
    description: 'Open connections above the pool base size (declared base size, else pool option min).' },
  usedPeak: { ...CONNECTIONS, kind: 'gauge', name: sc.METRIC_POOL_USED_PEAK,
    description: 'Most connections in use (or being opened) at once in the last 65 to 70 s: a spike between two scrapes.' },
  pendingPeak: { unit: '{request}', valueType: ValueType.INT, kind: 'gauge', name: sc.METRIC_POOL_PENDING_PEAK,
    description: 'Most callers waiting at once in the last 65 to 70 s.' },
  acquires: { unit: '{acquire}', valueType: ValueType.INT, kind: 'counter', name: sc.METRIC_POOL_ACQUIRES,
    description: 'Acquires served, by path: an idle connection, a new connection, or after queueing.' },
  saturatedTime: { unit: 's', valueType: ValueType.DOUBLE, kind: 'counter', name: sc.METRIC_POOL_SATURATED_TIME,
    description: 'Time the pool spent with every connection in use.' },
  // `poolscope.pool.info`: 1 per live pool whose server is known, with the pool's name, `server.address` and
  // `server.port`. Only this series carries the server, so the pool metrics keep one series per pool and their
  // label sets stay what the semantic conventions define; Prometheus joins it onto `db.client.connection.max`
  // by pool name to sum a fleet's pools per server. Pools whose target was withheld (a mis-read connection
  // string) have no server and no info series.
  info: { unit: '', valueType: ValueType.DOUBLE, kind: 'gauge', name: sc.METRIC_POOL_INFO,
    description: 'Always 1: the server (server.address, server.port) each pool connects to, for per-server sums of pool max.' },
} as const satisfies Record<string, ObservableDefinition>;

export type PoolGauge = keyof typeof POOL_GAUGES;

export interface LocalMetrics {
  histograms: Record<Which, LocalHistogram>;
  /** The pool gauges; the current recorder is their source. */
  gauges: LocalGauges<PoolGauge>;
}

/** The histograms aggregated and the gauges observed locally, and the producer that hands them to readers. */
export function createLocalMetrics(): { metrics: LocalMetrics; producer: LocalMetricProducer } {
  const make = (w: Which) => new LocalHistogram(HISTOGRAMS[w].name, HISTOGRAMS[w].description, 's', HISTOGRAMS[w].buckets);
  const histograms = { wait: make('wait'), use: make('use'), create: make('create'), operation: make('operation') };
  const gauges = new LocalGauges<PoolGauge>(POOL_GAUGES);
  // Gauges first: where the SDK's meter produced them, they came before the histograms.
  return { metrics: { histograms, gauges }, producer: new LocalMetricProducer([gauges, ...Object.values(histograms)]) };
}

/**
 * The recorder's own per-pool state: histogram cells and attribute sets resolved once, so recording costs no
 * attribute lookup. What a pool's checkouts change (acquires by path, peaks, time at capacity, wait and use
 * time) is in its probe, read at collection.
 */
interface PoolCells {
  /** Where create time goes (wait and use time go where the probe records them). */
  create: DurationSink | undefined;
  pathAttributes: Record<AcquirePath, Attributes>;
  closeAttributes: Partial<Record<CloseReason, Attributes>>;
}

interface QueryAttributes {
  attributes: Attributes;
  cell: HistogramCell | undefined;
}

function newPoolCells(pool: ObservedPool): PoolCells {
  const path = (p: AcquirePath) => Object.freeze({ ...pool.attributes, [sc.ATTR_ACQUIRE_PATH]: p });
  return {
    create: undefined,
    pathAttributes: { idle: path('idle'), new: path('new'), queued: path('queued') },
    closeAttributes: {},
  };
}

/** Most cached query attribute sets; pools × operations × error types is small, churned pools must not grow it. */
const QUERY_ATTRIBUTE_CACHE = 2_000;

/**
 * The metrics recorder. Gauges are observable and read every live pool once per collection (see
 * {@link observe}), through the SDK's batch callback or the local producer; histograms are aggregated locally (see LocalHistogram) or by the SDK; counters
 * are recorded with attribute objects cached per pool, so recording allocates nothing per call.
 */
export class PoolMetricsRecorder implements PoolObserver {
  private readonly local: Record<Which, LocalHistogram> | undefined;
  private readonly sdkHistograms: Partial<Record<Which, Histogram>> = {};
  private readonly cells = new PoolStates<PoolCells>(newPoolCells);
  private readonly timeouts: Counter;
  private readonly errors: Counter;
  private readonly errorAttributes = new Map<string, Attributes>();
  private readonly queryAttributes = new Map<string, QueryAttributes>();
  /**
   * The last attributes each client's target used, for queries without an error: most queries repeat one,
   * and building the cache key string above (concatenated, flattened and hashed per query) was a visible
   * share of the worst case's overhead. Keyed weakly by the target object, which is one per client.
   */
  private readonly recentQueries = new WeakMap<QueryTarget, RecentQueries>();
  private readonly closes: Counter;
  /** The SDK's instruments and batch callback: only without local aggregation. */
  private readonly sdkGauges: { instruments: Record<PoolGauge, Observable>; callback: BatchObservableCallback } | undefined;
  private readonly localGauges: LocalGauges<PoolGauge> | undefined;
  private readonly observeInto = (emit: Emit<PoolGauge>) => this.observe(emit);
  /** Told when the SDK's histogram throws on a probe's recording (an application's own meter). */
  private readonly onRecordError: (error: unknown) => void;
  /** The sinks this recorder gave pools' probes, so that dispose() takes back its own only. */
  private readonly sinks = new WeakSet<DurationSink>();
  /** Info attribute sets (the pool's name and server), built once per pool. */
  private readonly infoAttributes = new WeakMap<ObservedPool, Attributes>();

  /** Present when `db.query.summary` is on (opt-in: each summary is a series). */
  private readonly summaries: QuerySummaries | undefined;

  /**
   * `local`: histograms aggregated and gauges observed by Poolscope (see {@link createLocalMetrics}); they
   * outlive the recorder, which is rebuilt whenever the meter changes, because readers hold their producer.
   */
  constructor(private readonly meter: Meter, private readonly registry: PoolRegistry, local?: LocalMetrics,
    options: { querySummary?: boolean; onSummaryOverflow?: () => void; onRecordError?: (error: unknown) => void } = {}) {
    this.local = local?.histograms;
    this.summaries = options.querySummary === true ? new QuerySummaries(options.onSummaryOverflow ?? (() => undefined)) : undefined;
    this.onRecordError = options.onRecordError ?? (() => undefined);
    if (local !== undefined) {
      this.localGauges = local.gauges;
      local.gauges.source = this.observeInto;
    } else {
      const instruments = {} as Record<PoolGauge, Observable>;
      for (const k of Object.keys(POOL_GAUGES) as PoolGauge[]) instruments[k] = createObservable(meter, POOL_GAUGES[k]);
      const callback: BatchObservableCallback = (result) => this.observe((k, v, a) => result.observe(instruments[k], v, a));
      meter.addBatchObservableCallback(callback, Object.values(instruments));
      this.sdkGauges = { instruments, callback };
    }

    this.timeouts = meter.createCounter(sc.METRIC_CONNECTION_TIMEOUTS, {
      unit: '{timeout}',
      valueType: ValueType.INT,
      description: 'Acquires that timed out: queued past the acquire timeout, or a new connection that did not open in time.',
    });
    this.closes = meter.createCounter(sc.METRIC_POOL_CLOSES, {
      unit: '{connection}',
      valueType: ValueType.INT,
      description: 'Connections closed, by reason: idle_timeout, max_lifetime, max_uses, error, query_error, server_terminated, pool_closed.',
    });
    this.errors = meter.createCounter(sc.METRIC_POOL_ERRORS, {
      unit: '{error}',
      valueType: ValueType.INT,
      description: 'Failed connection attempts and errors on idle connections, by error.type.',
    });
    // Rebuilt on a new meter: the pools already open record into this recorder's histograms from now on.
    for (const pool of registry.pools()) this.poolOpened(pool);
  }

  /** Points the pool's probe at this recorder's wait and use histograms. */
  poolOpened(pool: ObservedPool): void {
    const probe = pool.probe;
    probe.wait = this.sink('wait', pool);
    probe.use = this.sink('use', pool);
  }

  connectionClosed(pool: ObservedPool, reason: CloseReason): void {
    const st = this.cells.of(pool);
    const attrs = (st.closeAttributes[reason] ??= Object.freeze({ ...pool.attributes, [sc.ATTR_CLOSE_REASON]: reason }));
    this.closes.add(1, attrs);
  }

  connectionCreated(pool: ObservedPool, createSeconds: number): void {
    (this.cells.of(pool).create ??= this.sink('create', pool)).record(createSeconds);
  }

  acquireTimedOut(pool: ObservedPool): void {
    this.timeouts.add(1, pool.attributes);
  }

  connectionFailed(pool: ObservedPool, error: unknown): void {
    this.errors.add(1, this.errorAttributesFor(pool, errorType(error)));
  }

  idleError(pool: ObservedPool, error: unknown): void {
    this.errors.add(1, this.errorAttributesFor(pool, errorType(error)));
  }

  queryDone(pool: ObservedPool | undefined, target: QueryTarget, seconds: number, text: unknown, error: unknown): void {
    const q = this.attributesForQuery(pool, target, text, error);
    if (q.cell !== undefined) q.cell.record(seconds);
    else this.histogram('operation').record(seconds, q.attributes);
  }

  poolClosed(pool: ObservedPool): void {
    this.cells.delete(pool);
  }

  dispose(): void {
    for (const pool of this.registry.pools()) {
      if (this.sinks.has(pool.probe.wait!)) pool.probe.wait = undefined;
      if (this.sinks.has(pool.probe.use!)) pool.probe.use = undefined;
    }
    if (this.sdkGauges !== undefined) {
      this.meter.removeBatchObservableCallback(this.sdkGauges.callback, Object.values(this.sdkGauges.instruments));
    }
    if (this.localGauges?.source === this.observeInto) this.localGauges.source = undefined;
  }

  /**
   * Reads every live pool once and emits its gauges: the one collection path of both the SDK's batch
   * callback and the local producer. Values are the pools' own counters now, never running totals.
   */
  observe(emit: Emit<PoolGauge>): void {
    for (const [pool, s] of this.registry.snapshots()) {
      emit('count', s.used, pool.usedAttributes);
      emit('count', s.idle, pool.idleAttributes);
      // An unbounded pool (pg-pool with max Infinity) has no limit to report.
      if (Number.isFinite(s.max)) {
        emit('max', s.max, pool.attributes);
        emit('idleMax', s.max, pool.attributes);
      }
      emit('idleMin', s.min, pool.attributes);
      emit('pending', s.pending, pool.attributes);
      emit('utilization', s.max > 0 ? Math.min(1, s.used / s.max) : 0, pool.attributes);
      emit('overflow', Math.max(0, s.used + s.idle - pool.baseSize(s)), pool.attributes);
      // Read, never consumed: every reader sees the same peaks (window-peak.ts).
      const probe = pool.probe;
      const t = monotonicNow();
      emit('usedPeak', Math.max(probe.peakUsed.read(t), s.used), pool.attributes);
      emit('pendingPeak', Math.max(probe.peakPending.read(t), s.pending), pool.attributes);
      emit('saturatedTime', probe.capacityUntil(t, s.used >= s.max && s.max > 0), pool.attributes);
      const paths = this.cells.of(pool).pathAttributes;
      if (probe.idleAcquires > 0) emit('acquires', probe.idleAcquires, paths.idle);
      if (probe.newAcquires > 0) emit('acquires', probe.newAcquires, paths.new);
      if (probe.queuedAcquires > 0) emit('acquires', probe.queuedAcquires, paths.queued);
      const info = this.infoAttributesOf(pool);
      if (info !== undefined) emit('info', 1, info);
    }
  }

  private infoAttributesOf(pool: ObservedPool): Attributes | undefined {
    const server = pool.server;
    if (server === undefined) return undefined;
    let attrs = this.infoAttributes.get(pool);
    if (attrs === undefined) {
      attrs = Object.freeze({ ...pool.attributes, [sc.ATTR_SERVER_ADDRESS]: server.address, [sc.ATTR_SERVER_PORT]: server.port });
      this.infoAttributes.set(pool, attrs);
    }
    return attrs;
  }

  /** Where a pool's wait, use or create time is recorded: the local cell itself, else the SDK's histogram. */
  private sink(which: 'wait' | 'use' | 'create', pool: ObservedPool): DurationSink {
    const sink = this.local !== undefined ? this.local[which].cell(pool.name, () => pool.attributes)
      : new SdkHistogramSink(this.histogram(which), pool.attributes, this.onRecordError);
    this.sinks.add(sink);
    return sink;
  }

  // SDK histograms are created when first needed (wait and use as the first pool opens, the others at their first
  // recording): with local aggregation they never are, and no empty metric is exported.
  private histogram(which: Which): Histogram {
    let h = this.sdkHistograms[which];
    if (h === undefined) {
      const d = HISTOGRAMS[which];
      h = this.meter.createHistogram(d.name, {
        unit: 's',
        valueType: ValueType.DOUBLE,
        description: d.description,
        advice: { explicitBucketBoundaries: d.buckets },
      });
      this.sdkHistograms[which] = h;
    }
    return h;
  }

  /** Counter attributes for a pool and error type, cached: error types are a small set per pool. */
  private errorAttributesFor(pool: ObservedPool, type: string): Attributes {
    const key = `${pool.name}\u0000${type}`;
    let attrs = this.errorAttributes.get(key);
    if (attrs === undefined) {
      if (this.errorAttributes.size >= 1_000) this.errorAttributes.clear();
      attrs = Object.freeze({ ...pool.attributes, [sc.ATTR_ERROR_TYPE]: type });
      this.errorAttributes.set(key, attrs);
    }
    return attrs;
  }

  private attributesForQuery(pool: ObservedPool | undefined, target: QueryTarget, text: unknown, err: unknown): QueryAttributes {
    const ok = err === undefined || err === null;
    const recent = ok ? this.recentQueries.get(target) : undefined;
    // A statement seen lately on this client: its attributes without scanning it for its operation name again.
    if (recent !== undefined && typeof text === 'string') {
      const hit = recent.byText(text);
      if (hit !== undefined && current(hit, pool)) return hit.entry;
    }
    const operation = operationName(text);
    const summary = this.summaries?.summaryOf(text);
    let hit = recent?.byOperation.get(operation);
    if (hit === undefined || !current(hit, pool) || hit.summary !== summary) {
      const entry = this.attributesForQueryByKey(pool, target, operation, ok ? '' : errorType(err), summary);
      if (!ok) return entry;
      hit = { pool, poolName: pool?.name, namespace: pool?.namespace, summary, entry };
      if (recent === undefined) this.recentQueries.set(target, new RecentQueries(operation, hit, text));
      else recent.byOperation.set(operation, hit);
    }
    recent?.remember(text, hit);
    return hit.entry;
  }

  private attributesForQueryByKey(pool: ObservedPool | undefined, target: QueryTarget, operation: string | undefined,
    type: string, summary: string | undefined): QueryAttributes {
    const host = target.address;
    const port = target.port;
    // A pool's configured database wins; a lone client's comes from its own configuration.
    const namespace = pool !== undefined ? pool.namespace : target.namespace;
    // Every attribute that varies is part of the key: two lone clients differing only in database must
    // not share (and overwrite) one series.
    const key = `${pool?.name ?? ''}\u0000${host ?? ''}\u0000${port ?? ''}\u0000${namespace ?? ''}\u0000${operation ?? ''}\u0000${type}\u0000${summary ?? ''}`;
    let entry = this.queryAttributes.get(key);
    if (entry === undefined) {
      const attrs: Attributes = {
        [sc.ATTR_DB_SYSTEM_NAME]: sc.DB_SYSTEM_POSTGRESQL,
        ...(namespace === undefined ? {} : { [sc.ATTR_DB_NAMESPACE]: namespace }),
        ...(host === undefined ? {} : { [sc.ATTR_SERVER_ADDRESS]: host }),
        ...(port === undefined ? {} : { [sc.ATTR_SERVER_PORT]: port }),
        ...(pool === undefined ? {} : pool.attributes),
        ...(operation === undefined ? {} : { [sc.ATTR_DB_OPERATION_NAME]: operation }),
        ...(summary === undefined ? {} : { [sc.ATTR_DB_QUERY_SUMMARY]: summary }),
        ...(type === '' ? {} : { [sc.ATTR_ERROR_TYPE]: type }),
        ...(isSqlState(type) ? { [sc.ATTR_DB_RESPONSE_STATUS_CODE]: type } : {}),
      };
      Object.freeze(attrs);
      entry = { attributes: attrs, cell: this.local?.operation.cell(key, () => attrs) };
      if (this.queryAttributes.size >= QUERY_ATTRIBUTE_CACHE) this.queryAttributes.clear();
      this.queryAttributes.set(key, entry);
    }
    return entry;
  }
}

/** Wait or use time recorded by the SDK's histogram (without local aggregation). */
class SdkHistogramSink implements DurationSink {
  constructor(private readonly histogram: Histogram, private readonly attributes: Attributes,
    private readonly onError: (error: unknown) => void) {}

  record(seconds: number): void {
    // An application's own meter runs here, inside the pool's release and acquire: it must not throw into them.
    try {
      this.histogram.record(seconds, this.attributes);
    } catch (err) {
      this.onError(err);
    }
  }
}

interface RecentQueryAttributes {
  pool: ObservedPool | undefined;
  poolName: string | undefined;
  namespace: string | undefined;
  summary: string | undefined;
  entry: QueryAttributes;
}

/** Whether a remembered entry is still right for `pool`: a pool's name and database can change (monitorPool renames). */
function current(hit: RecentQueryAttributes, pool: ObservedPool | undefined): boolean {
  return hit.pool === pool && hit.poolName === pool?.name && hit.namespace === pool?.namespace;
}

/** Statement texts remembered per client target, and the longest remembered. */
const RECENT_TEXTS = 8;
const RECENT_TEXT_LENGTH = 1_024;

/**
 * One client target's recent queries: by operation name (bounded by the ~50 names), and the last few
 * statement texts in a ring compared by identity, most often the very string a call site passes every time.
 * A ring rather than a map keyed by text: a statement with its values written into it (pg-promise, Sequelize)
 * is new each time, and hashing it into a map cost 0.3–0.5 µs per query where this costs a few comparisons
 * of lengths; and no more than eight texts per client are kept.
 */
class RecentQueries {
  readonly byOperation = new Map<string | undefined, RecentQueryAttributes>();
  private readonly texts: Array<string | undefined> = new Array<string | undefined>(RECENT_TEXTS).fill(undefined);
  private readonly hits: Array<RecentQueryAttributes | undefined> = new Array<RecentQueryAttributes | undefined>(RECENT_TEXTS).fill(undefined);
  private next = 0;

  constructor(operation: string | undefined, hit: RecentQueryAttributes, text: unknown) {
    this.byOperation.set(operation, hit);
    this.remember(text, hit);
  }

  byText(text: string): RecentQueryAttributes | undefined {
    const texts = this.texts;
    const length = text.length;
    const last = text.charCodeAt(length - 1);
    for (let i = 0; i < RECENT_TEXTS; i++) {
      const t = texts[i];
      // Length and last character first: statements with values written in differ there, mostly, and comparing
      // whole texts of the same length took more than the scan this saves.
      if (t !== undefined && t.length === length && t.charCodeAt(length - 1) === last && t === text) return this.hits[i];
    }
    return undefined;
  }

  remember(text: unknown, hit: RecentQueryAttributes): void {
    if (typeof text !== 'string' || text.length > RECENT_TEXT_LENGTH) return;
    this.texts[this.next] = text;
    this.hits[this.next] = hit;
    this.next = (this.next + 1) % RECENT_TEXTS;
  }
}

const POOL_STATE_METRICS = new Set([
  sc.METRIC_CONNECTION_COUNT, sc.METRIC_CONNECTION_MAX, sc.METRIC_CONNECTION_IDLE_MAX, sc.METRIC_CONNECTION_IDLE_MIN,
  sc.METRIC_CONNECTION_PENDING_REQUESTS, sc.METRIC_POOL_UTILIZATION, sc.METRIC_POOL_OVERFLOW,
  sc.METRIC_POOL_USED_PEAK, sc.METRIC_POOL_PENDING_PEAK,
  sc.METRIC_POOL_INFO,
  sc.METRIC_POOL_LONG_HELD,
  sc.METRIC_POOL_STUCK, sc.METRIC_POOL_HEALTH_SCORE,
]);

/**
 * sdk-metrics keeps re-exporting the last value of every attribute set an asynchronous instrument ever
 * observed (the specification says unobserved sets should disappear), so an ended pool's gauges would
 * linger forever. This removes pool-state data points of pools that are no longer live, after collection.
 * Counters and histograms of an ended pool are history and stay; a new pool that reuses the name continues them.
 */
export function dropEndedPoolSeries(registry: PoolRegistry): (metrics: ResourceMetrics) => ResourceMetrics {
  return (metrics) => {
    const live = registry.liveNames();
    for (const scope of metrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        if (!POOL_STATE_METRICS.has(metric.descriptor.name)) continue;
        (metric as { dataPoints: Array<{ attributes: Record<string, unknown> }> }).dataPoints =
          metric.dataPoints.filter((p) => live.has(p.attributes[sc.ATTR_POOL_NAME] as string));
      }
    }
    return metrics;
  };
}
