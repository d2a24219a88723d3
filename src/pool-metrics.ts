import {
  ValueType,
  type Attributes,
  type BatchObservableCallback,
  type Counter,
  type Histogram,
  type Meter,
  type Observable,
  type ObservableGauge,
  type ObservableUpDownCounter,
} from '@opentelemetry/api';
import type { ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { PoolRegistry, PoolState } from './pool-registry.js';
import * as sc from './semconv.js';

/**
 * All Poolscope instruments on one meter. Gauges are observable and read the registry once per
 * collection through a single batch callback; histograms and counters are recorded on the hot path
 * with attribute objects cached per pool, so recording allocates nothing per call.
 */
export class PoolMetrics {
  private _waitTime: Histogram | undefined;
  private _useTime: Histogram | undefined;
  private _createTime: Histogram | undefined;
  private _operationDuration: Histogram | undefined;
  readonly timeouts: Counter;
  readonly errors: Counter;
  private readonly gauges: {
    count: ObservableUpDownCounter;
    max: ObservableUpDownCounter;
    idleMax: ObservableUpDownCounter;
    idleMin: ObservableUpDownCounter;
    pending: ObservableUpDownCounter;
    utilization: ObservableGauge;
    overflow: ObservableGauge;
  };
  private readonly callback: BatchObservableCallback;
  private readonly observables: Observable[];
  private readonly errorAttributes = new Map<string, Attributes>();

  constructor(private readonly meter: Meter, private readonly registry: PoolRegistry) {
    const connections = { unit: '{connection}', valueType: ValueType.INT };
    this.gauges = {
      count: meter.createObservableUpDownCounter(sc.METRIC_CONNECTION_COUNT, {
        ...connections,
        description: 'Connections in the pool by state: used (checked out or connecting) and idle.',
      }),
      max: meter.createObservableUpDownCounter(sc.METRIC_CONNECTION_MAX, {
        ...connections,
        description: 'Maximum number of open connections allowed (pool option max).',
      }),
      idleMax: meter.createObservableUpDownCounter(sc.METRIC_CONNECTION_IDLE_MAX, {
        ...connections,
        description: 'Maximum number of idle connections allowed (pg-pool: equal to max).',
      }),
      idleMin: meter.createObservableUpDownCounter(sc.METRIC_CONNECTION_IDLE_MIN, {
        ...connections,
        description: 'Minimum number of idle connections kept open (pool option min).',
      }),
      pending: meter.createObservableUpDownCounter(sc.METRIC_CONNECTION_PENDING_REQUESTS, {
        unit: '{request}',
        valueType: ValueType.INT,
        description: 'Callers waiting in pool.connect() for a connection.',
      }),
      utilization: meter.createObservableGauge(sc.METRIC_POOL_UTILIZATION, {
        unit: '1',
        valueType: ValueType.DOUBLE,
        description: 'Used connections divided by the pool maximum (0-1).',
      }),
      overflow: meter.createObservableGauge(sc.METRIC_POOL_OVERFLOW, {
        ...connections,
        description: 'Open connections above the pool base size (declared base size, else pool option min).',
      }),
    };
    this.observables = Object.values(this.gauges);
    this.callback = (result) => {
      const g = this.gauges;
      for (const [state, s] of this.registry.snapshots()) {
        result.observe(g.count, s.used, state.usedAttributes);
        result.observe(g.count, s.idle, state.idleAttributes);
        result.observe(g.max, s.max, state.attributes);
        result.observe(g.idleMax, s.max, state.attributes);
        result.observe(g.idleMin, s.min, state.attributes);
        result.observe(g.pending, s.pending, state.attributes);
        result.observe(g.utilization, s.utilization, state.attributes);
        result.observe(g.overflow, s.overflow, state.attributes);
      }
    };
    meter.addBatchObservableCallback(this.callback, this.observables);

    this.timeouts = meter.createCounter(sc.METRIC_CONNECTION_TIMEOUTS, {
      unit: '{timeout}',
      valueType: ValueType.INT,
      description: 'Acquires that timed out: queued past connectionTimeoutMillis, or a new connection that did not open in time.',
    });
    this.errors = meter.createCounter(sc.METRIC_POOL_ERRORS, {
      unit: '{error}',
      valueType: ValueType.INT,
      description: 'Failed connection attempts and errors on idle connections, by error.type.',
    });
  }

  // Histograms are created on first use: with local aggregation they never are, and no empty metric is exported.
  private histogram(name: string, description: string, buckets: number[]): Histogram {
    return this.meter.createHistogram(name, {
      unit: 's',
      valueType: ValueType.DOUBLE,
      description,
      advice: { explicitBucketBoundaries: buckets },
    });
  }

  get waitTime(): Histogram {
    return (this._waitTime ??= this.histogram(sc.METRIC_CONNECTION_WAIT_TIME, sc.DESCRIPTION_WAIT_TIME, sc.WAIT_TIME_BUCKETS));
  }

  get useTime(): Histogram {
    return (this._useTime ??= this.histogram(sc.METRIC_CONNECTION_USE_TIME, sc.DESCRIPTION_USE_TIME, sc.USE_TIME_BUCKETS));
  }

  get createTime(): Histogram {
    return (this._createTime ??= this.histogram(sc.METRIC_CONNECTION_CREATE_TIME, sc.DESCRIPTION_CREATE_TIME, sc.CREATE_TIME_BUCKETS));
  }

  get operationDuration(): Histogram {
    return (this._operationDuration ??= this.histogram(sc.METRIC_OPERATION_DURATION, sc.DESCRIPTION_OPERATION_DURATION,
      sc.OPERATION_DURATION_BUCKETS));
  }

  /** Counter attributes for a pool and error type, cached: error types are a small set per pool. */
  errorAttributesFor(state: PoolState, errorType: string): Attributes {
    const key = `${state.name}\u0000${errorType}`;
    let attrs = this.errorAttributes.get(key);
    if (attrs === undefined) {
      if (this.errorAttributes.size >= 1_000) this.errorAttributes.clear();
      attrs = Object.freeze({ ...state.attributes, [sc.ATTR_ERROR_TYPE]: errorType });
      this.errorAttributes.set(key, attrs);
    }
    return attrs;
  }

  dispose(): void {
    this.meter.removeBatchObservableCallback(this.callback, this.observables);
  }
}

const POOL_STATE_METRICS = new Set([
  sc.METRIC_CONNECTION_COUNT, sc.METRIC_CONNECTION_MAX, sc.METRIC_CONNECTION_IDLE_MAX, sc.METRIC_CONNECTION_IDLE_MIN,
  sc.METRIC_CONNECTION_PENDING_REQUESTS, sc.METRIC_POOL_UTILIZATION, sc.METRIC_POOL_OVERFLOW,
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
