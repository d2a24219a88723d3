import {
  InstrumentationBase,
  InstrumentationNodeModuleDefinition,
  type InstrumentationConfig,
} from '@opentelemetry/instrumentation';
import type { MetricProducer } from '@opentelemetry/sdk-metrics';
import { ADAPTERS } from './adapters/index.js';
import { adoptUnhookedModules, attachLoadedModules } from './adapters/late-attach.js';
import { pgClientModules } from './adapters/pg-client.js';
import { connectionParametersModule, defaultsModule } from './adapters/pg-target.js';
import { setCurrentContext, type AdapterContext, type MonitorPoolOptions } from './adapters/shared.js';
import { createLogger, errorText, type PoolscopeLogger } from './logger.js';
import { createLocalMetrics, PoolMetricsRecorder } from './metrics/pool-metrics.js';
import { ObserverFanOut, type PoolObserver } from './pools/observer.js';
import { PoolRegistry } from './pools/registry.js';
import { LogPolicyRecorder } from './recorders/log-policy.js';
import { VERSION } from './version.js';
import { MAX_POOL_SIZE } from './config.js';

export type { MonitorPoolOptions } from './adapters/shared.js';

export interface PoolscopeInstrumentationConfig extends InstrumentationConfig {
  /**
   * Default overflow base size for pools that do not declare one; unset means each pool's `min`.
   * @default undefined
   */
  poolBaseSize?: number | undefined;
  /**
   * Utilization (0–1) whose crossing logs a rate-limited warning.
   * @default 0.8
   */
  logUtilizationThreshold?: number | undefined;
  /**
   * Aggregate the connection and query histograms, and collect the pool gauges, in Poolscope instead of the
   * SDK, which removes the SDK's attribute hashing from every query and every collection. They then reach
   * readers only through {@link PoolscopeInstrumentation.metricProducer}, which must be passed to them
   * (`startPoolscope` does).
   * @default false
   */
  localAggregation?: boolean | undefined;
  /**
   * Add `db.query.summary` (operations and tables, e.g. `INSERT audit SELECT orders`) to query durations,
   * for per-table latency. Each distinct summary is a series; at most 500 per process, then `_OTHER`.
   * @default false
   */
  querySummary?: boolean | undefined;
}

/** One rate-limited line however many recorders fail, and however often. */
function recorderFailed(log: PoolscopeLogger, err: unknown): void {
  log.warn('record', `poolscope: a recorder failed: ${errorText(err)}`);
}

/**
 * Zero-code instrumentation of node-postgres pools: one adapter per pool library (pg-pool, tarn,
 * sequelize-pool) reports each pool's lifecycle through one observer seam to the recorders — metrics and
 * the log policy here, health history in the HealthMonitor, and whatever else is added with
 * {@link addRecorder}. `pg.Client#query` records `db.client.operation.duration` for every client.
 */
export class PoolscopeInstrumentation extends InstrumentationBase<PoolscopeInstrumentationConfig> {
  declare private _registry: PoolRegistry;
  declare private _log: PoolscopeLogger;
  declare private _active: boolean;
  declare private _events: ObserverFanOut;
  declare private _metrics: PoolMetricsRecorder | undefined;
  declare private _context: AdapterContext & { active: boolean };
  declare private _local: ReturnType<typeof createLocalMetrics> | undefined;

  constructor(config: PoolscopeInstrumentationConfig = {}, registry?: PoolRegistry) {
    super('poolscope', VERSION, config, );
    this._registry = registry ?? new PoolRegistry();
    this._log = createLogger(60_000);
    this._events = new ObserverFanOut((err) => recorderFailed(this._log, err));
    this._registry.setObserver(this._events);
    // Through addRecorder: a registry handed in with pools already open gets their utilization alarms too.
    this.addRecorder(new LogPolicyRecorder(this._log, this.getConfig().logUtilizationThreshold ?? 0.8));
    const instrumentation = this;
    this._context = {
      events: this._events,
      registry: this._registry,
      log: this._log,
      get poolBaseSize() { return instrumentation.getConfig().poolBaseSize; },
      // A field, not a getter: every wrapper reads it on every checkout (a getter showed in the worst-case profile).
      active: this._active === true,
    };
    // The base constructor enabled us before our fields existed; make this context current now.
    if (this._active) {
      setCurrentContext(this._context);
      attachLoadedModules(this._context);
    }
    if (this._metrics === undefined) void this.metrics;
  }

  get registry(): PoolRegistry {
    return this._registry;
  }

  /** Adds a recorder: it receives every pool's lifecycle from now on, starting with `poolOpened` for the pools open now. */
  addRecorder(recorder: PoolObserver): void {
    this._events.add(recorder);
    for (const pool of this._registry.pools()) {
      try {
        recorder.poolOpened?.(pool);
      } catch (err) {
        recorderFailed(this._log, err);
      }
    }
  }

  /** Patches pg where Node loaded it out of the module hooks' sight (adapters/late-attach.ts), while enabled. */
  adoptUnhookedModules(): void {
    if (this._active === true && this._context !== undefined) adoptUnhookedModules(this._context);
  }

  /** With `localAggregation`: true once a query's duration was recorded, with or without a pool. */
  get sawQueries(): boolean {
    return this._local?.metrics.histograms.operation.recorded === true;
  }

  /** With `localAggregation`, the producer readers need for the histograms and pool gauges; otherwise undefined. */
  get metricProducer(): MetricProducer | undefined {
    return this.local?.producer;
  }

  private get local(): ReturnType<typeof createLocalMetrics> | undefined {
    if (this._local === undefined && this.getConfig().localAggregation === true) this._local = createLocalMetrics();
    return this._local;
  }

  private get metrics(): PoolMetricsRecorder {
    if (this._metrics === undefined) {
      this._metrics = new PoolMetricsRecorder(this.meter, this._registry, this.local?.metrics, {
        querySummary: this.getConfig().querySummary,
        onRecordError: (err) => recorderFailed(this._log, err),
        onSummaryOverflow: () => this._log.warn('query-summary:overflow', 'poolscope: more than 500 distinct ' +
          'db.query.summary values; further ones are recorded as "_OTHER". Statements with generated table names ' +
          'defeat per-table latency: consider POOLSCOPE_QUERY_SUMMARY=false.'),
      });
      this._events.add(this._metrics);
    }
    return this._metrics;
  }

  override enable(): void {
    this._active = true;
    if (this._context !== undefined) {
      this._context.active = true;
      setCurrentContext(this._context);
    }
    super.enable();
    if (this._context !== undefined) attachLoadedModules(this._context);
  }

  override disable(): void {
    this._active = false;
    if (this._context !== undefined) {
      this._context.active = false;
      setCurrentContext(undefined, this._context);
    }
    super.disable();
  }

  protected override _updateMetricInstruments(): void {
    // Called by the base constructor before our fields exist, and again on every setMeterProvider():
    // the recorder is rebuilt on the new meter (the fan-out drops the old one).
    if (this._events === undefined || this._metrics === undefined) return;
    const old = this._metrics;
    old.dispose();
    this._events.remove(old);
    this._metrics = undefined;
    void this.metrics;
  }

  protected override init() {
    const modules: InstrumentationNodeModuleDefinition[] = [
      new InstrumentationNodeModuleDefinition('pg', ['>=8.0.3 <9'], undefined, undefined,
        [...pgClientModules(), connectionParametersModule(), defaultsModule()]),
    ];
    for (const adapter of ADAPTERS) modules.push(...adapter.modules());
    return modules;
  }

  /**
   * Starts monitoring an existing pool of any supported library. Idempotent (a pool is attached once,
   * also across Poolscope copies); a name given later renames it. Returns the pool's reported name — for
   * tarn and sequelize-pool pools without a name, undefined until their first connection shows the
   * target — or undefined when `pool` is not a supported pool.
   */
  monitorPool(pool: unknown, options: MonitorPoolOptions = {}): string | undefined {
    const adapter = ADAPTERS.find((a) => a.matches(pool));
    if (adapter === undefined) {
      this._log.warn('monitorPool:invalid', 'poolscope: monitorPool() was given something that is not a pg-pool, tarn, Slonik ' +
        'or sequelize-pool pool; ignored.');
      return undefined;
    }
    const baseSize = options.baseSize;
    const validBase = baseSize === undefined || (Number.isInteger(baseSize) && baseSize >= 0 && baseSize <= MAX_POOL_SIZE);
    if (!validBase) {
      // Its type only, or the number: a value from elsewhere is never echoed.
      const shown = typeof baseSize === 'number' ? String(baseSize) : `of type ${typeof baseSize}`;
      this._log.warn('monitorPool:baseSize', `poolscope: monitorPool() baseSize ${shown} is not an integer from 0 to ` +
        `${MAX_POOL_SIZE}; ignored (POOLSCOPE_POOL_BASE_SIZE, else the pool's min, is used).`);
    }
    const given = { name: typeof options.name === 'string' && options.name.trim() !== '' ? options.name.trim() : undefined,
      baseSize: validBase ? baseSize : undefined };
    const mark = adapter.attach(pool as object, this._context, given);
    if (mark === undefined) return undefined;
    mark.declare(given);
    void this.metrics;
    // A pool registered at its first connection (knex, Sequelize) is not observed yet; the name waits for it.
    return mark.observed?.name ?? mark.options.name;
  }
}
