// The pool gauges reach readers two ways: through the SDK's observable instruments (PoolscopeInstrumentation
// inside an application's own SDK) and through Poolscope's own producer (startPoolscope). Both must report the
// same metrics, so a dashboard cannot tell which one a process uses.
import { ValueType } from '@opentelemetry/api';
import {
  AggregationTemporality,
  DataPointType,
  InstrumentType,
  MeterProvider,
  MetricReader,
  type AggregationTemporalitySelector,
  type MetricData,
  type MetricProducer,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { cumulativeToDelta } from '../src/export/delta-histograms.js';
import { PrometheusPullReader } from '../src/export/prometheus/reader.js';
import { createLogger } from '../src/logger.js';
import { LocalHistogram, LocalMetricProducer } from '../src/metrics/local-histogram.js';
import { createLocalMetrics, PoolMetricsRecorder } from '../src/metrics/pool-metrics.js';
import { ObserverFanOut, type AcquirePath, type PoolSnapshot } from '../src/pools/observer.js';
import { PoolRegistry } from '../src/pools/registry.js';

/** A push reader's collection, with the temporality an OTLP exporter would select. */
class PushLikeReader extends MetricReader {
  constructor(aggregationTemporalitySelector: AggregationTemporalitySelector, metricProducers: MetricProducer[] = []) {
    super({ aggregationTemporalitySelector, metricProducers });
  }
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/** The OTLP exporters' `delta` preference (exporter-metrics-otlp-http's DeltaTemporalitySelector). */
const DELTA: AggregationTemporalitySelector = (type) =>
  type === InstrumentType.UP_DOWN_COUNTER || type === InstrumentType.OBSERVABLE_UP_DOWN_COUNTER
    ? AggregationTemporality.CUMULATIVE
    : AggregationTemporality.DELTA;

/**
 * Both recorders, each with its own registry and readers, fed the same traffic about the same pools: a pool's
 * probe is read by the one recorder of its registry, as in a running process.
 */
function bothPaths() {
  const registries = [new PoolRegistry(), new PoolRegistry()] as const;
  for (const registry of registries) {
    const events = new ObserverFanOut((err) => { throw err; });
    registry.setObserver(events);
  }
  const observerOf = (r: PoolRegistry) => (r as unknown as { observer: ObserverFanOut }).observer;
  const sdkReader = new PrometheusPullReader(createLogger());
  const sdkDelta = new PushLikeReader(DELTA);
  const sdkProvider = new MeterProvider({ readers: [sdkReader, sdkDelta] });
  observerOf(registries[0]).add(new PoolMetricsRecorder(sdkProvider.getMeter('poolscope'), registries[0]));
  const local = createLocalMetrics();
  const localReader = new PrometheusPullReader(createLogger(), undefined, [local.producer]);
  const localDelta = new PushLikeReader(DELTA, [local.producer]);
  const localProvider = new MeterProvider({ readers: [localReader, localDelta] });
  observerOf(registries[1]).add(new PoolMetricsRecorder(localProvider.getMeter('poolscope'), registries[1], local.metrics));
  return {
    registries,
    sdk: sdkReader,
    local: localReader,
    sdkDelta,
    localDelta,
    shutdown: () => Promise.all([sdkProvider.shutdown(), localProvider.shutdown()]),
  };
}

/** A pool, in both registries, whose counters the test sets; `ended` makes its readers report it gone. */
function fakePool(paths: ReturnType<typeof bothPaths>, name: string, counters: PoolSnapshot, server?: { address: string; port: number }) {
  const state = { counters, ended: false };
  const pools = paths.registries.map((registry) =>
    registry.add({ baseName: name, library: 'pg-pool', read: () => (state.ended ? undefined : { ...state.counters }), server }));
  return { pools, state };
}

const GAUGE_NAMES = new Set([
  'db.client.connection.count', 'db.client.connection.max', 'db.client.connection.idle.max', 'db.client.connection.idle.min',
  'db.client.connection.pending_requests', 'poolscope.pool.utilization', 'poolscope.pool.overflow', 'poolscope.pool.used.peak',
  'poolscope.pool.pending.peak', 'poolscope.pool.acquires', 'poolscope.pool.saturated.time', 'poolscope.pool.info',
]);

type FakePool = ReturnType<typeof fakePool>;
/** One connection per registry: a checkout record belongs to one pool at a time. */
const connections = [{}, {}];
// Event times on the clock collections read (performance.now()): peaks are kept for the last minute of it.
let clock = performance.now();

/** What an adapter reports for an acquire of `p`, in both registries, with the counters the test set. */
function acquire(p: FakePool, waitSeconds: number, path: AcquirePath, t = (clock += 1)): void {
  p.pools.forEach((pool, i) => pool.probe.acquired(connections[i]!, t, waitSeconds, path, undefined, p.state.counters.used, p.state.counters.max));
}

/** Acquires on pool a (two idle, one new); pool b filled to capacity with one caller queued, then relieved. */
function someTraffic(a: FakePool, b: FakePool) {
  a.state.counters = { used: 1, idle: 1, pending: 0, max: 5, min: 1 };
  acquire(a, 0.001, 'idle');
  acquire(a, 0.001, 'idle');
  a.state.counters = { used: 2, idle: 1, pending: 0, max: 5, min: 1 };
  acquire(a, 0.02, 'new');
  b.state.counters = { used: 2, idle: 0, pending: 0, max: 2, min: 0 };
  const t = (clock += 1);
  acquire(b, 0.02, 'new', t);
  for (const pool of b.pools) pool.probe.requested(t, 'queued', 0);
  b.state.counters = { used: 1, idle: 1, pending: 0, max: 2, min: 0 };
  b.pools.forEach((pool, i) => pool.probe.released(connections[i]!, t + 500));
}

/** The pool gauges of a collection, by name, as comparable plain data (times kept apart). */
function gauges(rm: ResourceMetrics) {
  const out = new Map<string, { metric: Omit<MetricData, 'dataPoints'>; points: Array<{ attributes: object; value: unknown }> }>();
  for (const scope of rm.scopeMetrics) {
    for (const m of scope.metrics) {
      if (!GAUGE_NAMES.has(m.descriptor.name)) continue;
      const { descriptor, dataPoints, ...rest } = m;
      out.set(m.descriptor.name, {
        metric: { ...rest, descriptor: { name: descriptor.name, description: descriptor.description, unit: descriptor.unit, valueType: descriptor.valueType } } as never,
        points: dataPoints.map((p) => ({ attributes: { ...p.attributes }, value: p.value })),
      });
    }
  }
  return out;
}

/**
 * What each gauge has always been (the SDK's observable instruments before the local producer): point kind,
 * monotonic, unit, value type. Both paths share one definition, so comparing them cannot catch a change to
 * it: this can.
 */
const KINDS: Record<string, [DataPointType, boolean | undefined, string, ValueType]> = {
  'db.client.connection.count': [DataPointType.SUM, false, '{connection}', ValueType.INT],
  'db.client.connection.max': [DataPointType.SUM, false, '{connection}', ValueType.INT],
  'db.client.connection.idle.max': [DataPointType.SUM, false, '{connection}', ValueType.INT],
  'db.client.connection.idle.min': [DataPointType.SUM, false, '{connection}', ValueType.INT],
  'db.client.connection.pending_requests': [DataPointType.SUM, false, '{request}', ValueType.INT],
  'poolscope.pool.utilization': [DataPointType.GAUGE, undefined, '1', ValueType.DOUBLE],
  'poolscope.pool.overflow': [DataPointType.GAUGE, undefined, '{connection}', ValueType.INT],
  'poolscope.pool.used.peak': [DataPointType.GAUGE, undefined, '{connection}', ValueType.INT],
  'poolscope.pool.pending.peak': [DataPointType.GAUGE, undefined, '{request}', ValueType.INT],
  'poolscope.pool.acquires': [DataPointType.SUM, true, '{acquire}', ValueType.INT],
  'poolscope.pool.saturated.time': [DataPointType.SUM, true, 's', ValueType.DOUBLE],
  'poolscope.pool.info': [DataPointType.GAUGE, undefined, '', ValueType.DOUBLE],
};

const startTimes = (rm: ResourceMetrics, name: string) =>
  rm.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints.map((p) => p.startTime));

const exposed = (text: string) => text.split('\n').filter((l) => l !== '').sort();

describe('pool gauges from the local producer', () => {
  let paths: ReturnType<typeof bothPaths> | undefined;
  afterEach(async () => { await paths?.shutdown(); paths = undefined; });

  it('report what the SDK path reports for the same pools: names, kinds, values, labels and exposition', async () => {
    paths = bothPaths();
    const a = fakePool(paths, 'orders', { used: 0, idle: 0, pending: 0, max: 5, min: 1 }, { address: 'db.internal', port: 5432 });
    const b = fakePool(paths, 'reports', { used: 0, idle: 0, pending: 0, max: 2, min: 0 });
    someTraffic(a, b);

    for (let collection = 0; collection < 2; collection++) {
      const [sdk, local] = await Promise.all([paths.sdk.collect(), paths.local.collect()]);
      const fromSdk = gauges(sdk.resourceMetrics);
      const fromLocal = gauges(local.resourceMetrics);
      expect([...fromLocal.keys()].sort()).toEqual([...GAUGE_NAMES].sort());
      for (const [name, expected] of fromSdk) expect(fromLocal.get(name), name).toEqual(expected);
      expect([...fromLocal.keys()].sort()).toEqual([...fromSdk.keys()].sort());
      for (const [name, { metric }] of fromLocal) {
        const m = metric as MetricData;
        expect([m.dataPointType, (m as { isMonotonic?: boolean }).isMonotonic, m.descriptor.unit, m.descriptor.valueType], name)
          .toEqual(KINDS[name]);
        expect(m.aggregationTemporality, name).toBe(AggregationTemporality.CUMULATIVE);
      }
    }
    // The exposition too: every line of one is a line of the other (no histograms or counters recorded).
    const [sdkText, localText] = await Promise.all([paths.sdk.scrape(), paths.local.scrape()]);
    expect(exposed(localText)).toEqual(exposed(sdkText));
  });

  it('pushed with delta temporality, say what the SDK says: deltas of the counters since the previous push', async () => {
    paths = bothPaths();
    const a = fakePool(paths, 'orders', { used: 0, idle: 0, pending: 0, max: 5, min: 1 }, { address: 'db.internal', port: 5432 });
    const b = fakePool(paths, 'reports', { used: 0, idle: 0, pending: 0, max: 2, min: 0 });
    // What OTLP pushes from the local producer: the exporter's pipeline turns its cumulative data to delta.
    const toDelta = cumulativeToDelta({ histogram: true, counter: true, gauge: true });
    for (let push = 0; push < 3; push++) {
      someTraffic(a, b);
      const [sdk, local] = await Promise.all([paths.sdkDelta.collect(), paths.localDelta.collect()]);
      const fromSdk = gauges(sdk.resourceMetrics);
      const fromLocal = gauges(toDelta(local.resourceMetrics));
      for (const [name, expected] of fromSdk) expect(fromLocal.get(name), `${name}, push ${push}`).toEqual(expected);
      expect([...fromLocal.keys()].sort()).toEqual([...fromSdk.keys()].sort());
      expect(fromLocal.get('poolscope.pool.acquires')!.points.map((p) => p.value)).toEqual([2, 1, 1]);
    }
  });

  it('keep each sum\'s start time from its first collection', async () => {
    paths = bothPaths();
    const a = fakePool(paths, 'orders', { used: 1, idle: 0, pending: 0, max: 5, min: 0 });
    acquire(a, 0.001, 'new');
    const first = startTimes((await paths.local.collect()).resourceMetrics, 'poolscope.pool.acquires');
    await new Promise((r) => setTimeout(r, 5));
    const second = (await paths.local.collect()).resourceMetrics;
    expect(first).toHaveLength(1);
    expect(startTimes(second, 'poolscope.pool.acquires')).toEqual(first);
    expect(startTimes(second, 'db.client.connection.count')).toEqual([first[0], first[0]]);
  });

  it('leave out an ended pool at once, with no filter after collection', async () => {
    paths = bothPaths();
    const a = fakePool(paths, 'orders', { used: 1, idle: 0, pending: 0, max: 5, min: 0 }, { address: 'db', port: 5432 });
    fakePool(paths, 'reports', { used: 0, idle: 1, pending: 0, max: 2, min: 0 });
    acquire(a, 0.001, 'new');
    const poolsIn = (rm: ResourceMetrics) => new Set([...gauges(rm).values()].flatMap((g) =>
      g.points.map((p) => (p.attributes as Record<string, string>)['db.client.connection.pool.name'])));
    expect(poolsIn((await paths.local.collect()).resourceMetrics)).toEqual(new Set(['orders', 'reports']));
    a.state.ended = true;
    const after = (await paths.local.collect()).resourceMetrics;
    expect(poolsIn(after)).toEqual(new Set(['reports']));
    // What only the ended pool had (an info series, acquires) is gone as a whole metric.
    expect(gauges(after).has('poolscope.pool.info')).toBe(false);
    expect(gauges(after).has('poolscope.pool.acquires')).toBe(false);
  });
});

describe('Poolscope\'s own producer', () => {
  it('a source that throws costs its own metrics only: the rest is collected and the error reported (it once failed the whole scrape)', async () => {
    const histogram = new LocalHistogram('poolscope.test.duration', 'test', 's', [1]);
    histogram.cell('a', () => ({ k: 'a' })).record(0.5);
    const failing = { toMetricData(): never { throw new Error('simulated fault in a gauge source'); } };
    const producer = new LocalMetricProducer([failing, histogram]);
    const { resourceMetrics, errors } = await producer.collect();
    expect(errors.map((e) => (e as Error).message)).toEqual(['simulated fault in a gauge source']);
    expect(resourceMetrics.scopeMetrics.flatMap((s) => s.metrics.map((m) => m.descriptor.name))).toEqual(['poolscope.test.duration']);
    // Through a reader, /metrics still answers with what could be collected.
    const reader = new PrometheusPullReader(createLogger(), undefined, [producer]);
    new MeterProvider({ readers: [reader] });
    expect(await reader.scrape()).toContain('poolscope_test_duration_seconds_count{k="a"} 1');
  });
});

describe('delta conversion of Poolscope\'s cumulative sums', () => {
  const point = (value: number, start: [number, number], end: [number, number]) =>
    ({ attributes: { 'db.client.connection.pool.name': 'p' }, startTime: start, endTime: end, value });
  const push = (value: number, start: [number, number], end: [number, number]): ResourceMetrics => ({
    resource: undefined as never,
    scopeMetrics: [{ scope: { name: 'poolscope' }, metrics: [{
      descriptor: { name: 'poolscope.pool.acquires', description: '', unit: '{acquire}', valueType: ValueType.INT },
      aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.SUM, isMonotonic: true,
      dataPoints: [point(value, start, end)],
    } as MetricData] }],
  });
  const pointOf = (rm: ResourceMetrics) => rm.scopeMetrics[0]!.metrics[0]!.dataPoints[0]!;

  it('reports a series that started again under the same name (a new pool reusing an ended pool\'s) as is, not as the difference', () => {
    const convert = cumulativeToDelta({ counter: true });
    expect(pointOf(convert(push(5, [10, 0], [20, 0]))).value).toBe(5);
    expect(pointOf(convert(push(7, [10, 0], [30, 0])))).toMatchObject({ value: 2, startTime: [20, 0] });
    // The pool ended; a new one under the same name has served 9 by the next push: a new start time.
    expect(pointOf(convert(push(9, [35, 0], [40, 0])))).toMatchObject({ value: 9, startTime: [35, 0] });
  });
});
