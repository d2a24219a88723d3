// The per-pool probe the adapters write on every checkout, and the observer's replay of open pools to a recorder
// added late. The recorders reading the probe are covered with real pools (pool-metrics, health-stuck, leaks).
import { PEAK_WINDOW_MS } from '../src/pools/window-peak.js';
import { describe, expect, it } from 'vitest';
import { ObservedPool } from '../src/pools/observed-pool.js';
import { checkoutRecord, PoolProbe, touchCheckout } from '../src/pools/pool-probe.js';
import type { PoolSnapshot } from '../src/index.js';
import { PoolMark } from '../src/adapters/shared.js';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { PrometheusPullReader } from '../src/export/prometheus/reader.js';
import { createLogger } from '../src/logger.js';
import { createLocalMetrics, PoolMetricsRecorder } from '../src/metrics/pool-metrics.js';
import { ObserverFanOut } from '../src/pools/observer.js';
import { PoolRegistry } from '../src/pools/registry.js';
import { LeakDetector } from '../src/recorders/leak-detector.js';
import { capturedLog, find, inProcess, parseExposition, value } from './helpers.js';

function probeWith(counters: { used: number; pending: number; max: number }) {
  return new PoolProbe(() => counters);
}

describe('pool probe', () => {
  it('counts acquires by path with their wait, and keeps the peak of the counters the adapter passed', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 4 });
    const waits: number[] = [];
    probe.wait = { record: (s) => waits.push(s) };
    probe.requested(9, 'queued', 1);
    probe.acquired({}, 10, 0.001, 'idle', undefined, 1, 4);
    probe.acquired({}, 11, 0.002, 'new', undefined, 3, 4);
    probe.acquired({}, 12, 0.5, 'queued', undefined, 2, 4);
    expect([probe.idleAcquires, probe.newAcquires, probe.queuedAcquires, probe.acquires]).toEqual([1, 1, 1, 3]);
    expect(waits).toEqual([0.001, 0.002, 0.5]);
    expect(probe.waitSeconds).toBeCloseTo(0.503);
    expect(probe.lastAcquireAt).toBe(12);
    // Read by any number of readers alike, for the last minute.
    expect([probe.peakUsed.read(12), probe.peakPending.read(12)]).toEqual([3, 2]);
    expect([probe.peakUsed.read(13), probe.peakPending.read(13)]).toEqual([3, 2]);
    expect([probe.peakUsed.read(12 + PEAK_WINDOW_MS), probe.peakPending.read(12 + PEAK_WINDOW_MS)]).toEqual([0, 0]);
  });

  // Found by review: three connections held for 75 s, released and scraped at once, read a peak of 0, though
  // they were all in use a millisecond before.
  it('keeps in the peak a level held longer than the window, until its release (bug: 0 right after the release)', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 4 });
    const clients = [{}, {}, {}];
    clients.forEach((c, i) => probe.acquired(c, 1000, 0, 'new', undefined, i + 1, 4));
    const later = 1000 + 75_000;
    for (const c of clients) probe.released(c, later);
    expect(probe.peakUsed.read(later + 1)).toBe(3);
  });

  it('times use from the checkout to the release, once, and forgets a release it never saw the checkout of', () => {
    const probe = probeWith({ used: 1, pending: 0, max: 4 });
    const uses: number[] = [];
    probe.use = { record: (s) => uses.push(s) };
    const client = {};
    expect(probe.released(client, 5)).toBeUndefined();
    probe.acquired(client, 1000, 0, 'idle', undefined, 1, 4);
    expect(probe.out.map((c) => c.client)).toEqual([client]);
    expect(probe.released(client, 1250)).toBe(0.25);
    expect(probe.released(client, 1300)).toBeUndefined();
    expect(uses).toEqual([0.25]);
    expect(probe.out).toEqual([]);
  });

  it('reuses one record per connection and keeps the checked-out list exact under out-of-order releases', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 10 });
    const clients = Array.from({ length: 5 }, () => ({}));
    clients.forEach((c, i) => probe.acquired(c, i, 0, 'new', undefined, i + 1, 10));
    const first = checkoutRecord(clients[0]!)!;
    for (const i of [1, 4, 0]) probe.released(clients[i]!, 10);
    expect(new Set(probe.out.map((c) => c.client))).toEqual(new Set([clients[2], clients[3]]));
    probe.out.forEach((c, i) => expect(c.index).toBe(i));
    probe.acquired(clients[0]!, 20, 0, 'idle', undefined, 3, 10);
    expect(checkoutRecord(clients[0]!)).toBe(first);
    expect(first.serial).toBe(2);
    // The record is hidden from the application's own view of its client: a spread copies enumerable symbols too.
    expect(Object.getOwnPropertySymbols({ ...clients[0] })).toEqual([]);
  });

  it('moves a connection checked out again without its release to the new checkout, in one list only', () => {
    const a = probeWith({ used: 0, pending: 0, max: 2 });
    const b = probeWith({ used: 0, pending: 0, max: 2 });
    const client = {};
    a.acquired(client, 1, 0, 'new', undefined, 1, 2);
    b.acquired(client, 2, 0, 'new', undefined, 1, 2);
    expect(a.out).toEqual([]);
    expect(b.out.map((c) => c.since)).toEqual([2]);
    expect(a.released(client, 3)).toBeUndefined();
  });

  it('records query activity only on a checked-out connection', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 2 });
    const client = {};
    touchCheckout(client, 5);
    expect(checkoutRecord(client)).toBeUndefined();
    probe.acquired(client, 10, 0, 'new', undefined, 1, 2);
    touchCheckout(client, 15);
    expect(checkoutRecord(client)!.lastActivity).toBe(15);
    probe.released(client, 20);
    touchCheckout(client, 25);
    expect(checkoutRecord(client)!.lastActivity).toBe(15);
  });

  it('times the spells at capacity, ending one only when a release leaves the pool below it with nobody waiting', () => {
    const counters = { used: 2, pending: 1, max: 2 };
    const probe = new PoolProbe(() => counters);
    const [x, y] = [{}, {}];
    probe.acquired(x, 1000, 0, 'new', undefined, 1, 2);
    expect(probe.capacitySince).toBeUndefined();
    probe.acquired(y, 2000, 0, 'new', undefined, 2, 2);
    expect(probe.capacitySince).toBe(2000);
    // A waiter takes the released connection over: still full.
    probe.released(x, 3000);
    expect(probe.capacitySince).toBe(2000);
    probe.acquired(x, 3000, 1, 'queued', undefined, 2, 2);
    counters.pending = 0;
    probe.released(y, 4000);
    expect(probe.capacitySince).toBeUndefined();
    expect(probe.capacityUntil(9000, false)).toBe(2);
  });

  it('folds the current spell at capacity into a collection, and restarts it there while still full', () => {
    const probe = probeWith({ used: 2, pending: 0, max: 2 });
    probe.acquired({}, 1000, 0, 'new', undefined, 2, 2);
    expect(probe.capacityUntil(1500, true)).toBe(0.5);
    expect(probe.capacityUntil(2500, false)).toBe(1.5);
    expect(probe.capacitySince).toBeUndefined();
  });

  it('fires its utilization alarm once per crossing, re-armed only by a checkout below the low mark', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 10 });
    const fired: string[] = [];
    probe.alarm = { high: 0.8, low: 0.7, fire: (used, max) => { fired.push(`${used}/${max}`); } };
    for (const used of [7, 8, 9, 10, 8, 7, 8, 6, 9]) probe.acquired({}, used, 0, 'idle', undefined, used, 10);
    expect(fired).toEqual(['8/10', '9/10']);
  });

  it('keeps an alarm that throws away from the checkout', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 1 });
    probe.alarm = { high: 0.5, low: 0.4, fire: () => { throw new Error('boom'); } };
    expect(() => probe.acquired({}, 1, 0, 'new', undefined, 1, 1)).not.toThrow();
    expect(probe.acquires).toBe(1);
  });

  it('keeps its list of checked-out connections bounded when releases never come and nothing prunes it', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 3 });
    for (let i = 0; i < 1000; i++) probe.acquired({}, i, 0, 'new', undefined, 3, 3);
    expect(probe.out.length).toBeLessThanOrEqual(2 * 3 + 2);
    // The newest are kept: a connection still held is the one detection must see.
    expect(Math.min(...probe.out.map((c) => c.since))).toBeGreaterThan(990);
  });

  it('hands its checkouts in flight to the probe of the same pool registered anew, which then times their release', () => {
    const before = probeWith({ used: 0, pending: 0, max: 3 });
    const after = probeWith({ used: 0, pending: 0, max: 3 });
    const [x, y] = [{}, {}];
    before.acquired(x, 1000, 0, 'new', undefined, 1, 3);
    before.acquired(y, 1000, 0, 'new', undefined, 2, 3);
    after.adopt(before);
    expect(before.out).toEqual([]);
    expect(before.released(x, 2000)).toBeUndefined();
    expect(after.released(x, 2000)).toBe(1);
    expect(after.out.map((c) => c.client)).toEqual([y]);
    expect(after.out[0]!.index).toBe(0);
  });
});

describe('recorders added late', () => {
  it('are told of the pools already open, then of their checkouts', async () => {
    const ps = inProcess({ localAggregation: true });
    try {
      const pool = ps.registry.add({ baseName: 'orders', library: 'pg-pool', read: (): PoolSnapshot => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }) });
      const opened: ObservedPool[] = [];
      const acquired: number[] = [];
      ps.instrumentation.addRecorder({ poolOpened: (p) => opened.push(p), acquired: (_p, _c, wait) => acquired.push(wait) });
      expect(opened).toEqual([pool]);
      const events = (ps.instrumentation as unknown as { _events: { wants: { acquired: boolean }; acquired: (...a: unknown[]) => void } })._events;
      expect(events.wants.acquired).toBe(true);
      events.acquired(pool, {}, 0.25, 'idle', undefined);
      expect(acquired).toEqual([0.25]);
    } finally {
      await ps.close();
    }
  });

  it('are the only reason for the per-checkout calls: the built-in recorders implement none of them', () => {
    const ps = inProcess({ localAggregation: true });
    const events = (ps.instrumentation as unknown as { _events: { wants: Record<string, boolean> } })._events;
    expect(events.wants).toEqual({ acquireRequested: false, acquired: false, released: false });
    void ps.close();
  });
});

describe('the probe in rare and hostile situations', () => {
  // Bug: the leak sweep removed checkouts whose connection had ended from the probe, so the release that came
  // later recorded no use time (the long checkout one most wants to see).
  it('times the release of a connection that ended while checked out, after a leak sweep saw it (bug: the sweep dropped it)', () => {
    const detector = new LeakDetector({ leakThresholdMillis: 10, idleInTransactionThresholdMillis: 10, stackTrace: false, routes: false },
      capturedLog().logger);
    const pool = new ObservedPool('p', 'pg-pool', () => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
    detector.poolOpened(pool);
    const client = { _queryable: false, _ending: true };
    pool.probe.acquired(client, performance.now() - 1000, 0, 'new', undefined, 1, 2);
    detector.sweep();
    expect(pool.probe.released(client, performance.now())).toBeGreaterThan(0.9);
  });

  // It was skipped as held by no one until a review showed pg-pool keeping its place until the release: the
  // handler that never released it lost the slot for good, and nothing said so.
  it('counts a connection that ended while checked out as held, and logs it as a leak that closed (bug: skipped)', () => {
    const { lines, logger } = capturedLog();
    const detector = new LeakDetector({ leakThresholdMillis: 10, idleInTransactionThresholdMillis: 0, stackTrace: false, routes: false }, logger);
    const pool = new ObservedPool('p', 'pg-pool', () => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
    detector.poolOpened(pool);
    pool.probe.acquired({ _queryable: false }, performance.now() - 1000, 0, 'new', undefined, 1, 2);
    detector.sweep();
    expect(lines).toEqual([expect.stringContaining('Its connection has closed since; the pool keeps its place until it is released.')]);
  });

  // Bug: after a restart, the new registration took over every checkout the old one still listed, including
  // those released while nothing ran (no wrapper reports then), and leak detection flagged them.
  it('starts a pool moved to a restarted Poolscope with no checkouts, as releases in the gap went unseen (bug: adopted and flagged)', () => {
    const context = () => {
      const registry = new PoolRegistry();
      registry.setObserver(new ObserverFanOut(() => undefined));
      return { events: new ObserverFanOut(() => undefined), registry, log: capturedLog().logger, poolBaseSize: undefined, active: true };
    };
    const first = context();
    const mark = new PoolMark(first, {});
    const before = mark.register({ baseName: 'orders', library: 'pg-pool', read: () => ({ used: 0, idle: 1, pending: 0, max: 2, min: 0 }) });
    before.probe.acquired({}, 1, 0, 'new', undefined, 1, 2);
    first.active = false;
    mark.moveTo(context());
    expect(mark.observed).not.toBe(before);
    expect(mark.observed!.probe.out).toEqual([]);
  });

  it('keeps working for a checked-out object that cannot carry a property (frozen)', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 2 });
    const frozen = Object.freeze({});
    expect(() => probe.acquired(frozen, 1000, 0, 'new', undefined, 1, 2)).not.toThrow();
    touchCheckout(frozen, 1500);
    expect(checkoutRecord(frozen)!.lastActivity).toBe(1500);
    expect(probe.released(frozen, 2000)).toBe(1);
  });

  it('keeps a histogram that throws (an application\'s own meter) away from the checkout and the release', () => {
    const registry = new PoolRegistry();
    const throwing = { record: () => { throw new Error('meter failure'); } };
    const counter = { add: () => undefined };
    const meter = {
      createHistogram: () => throwing, createCounter: () => counter,
      createObservableGauge: () => ({}), createObservableUpDownCounter: () => ({}), createObservableCounter: () => ({}),
      addBatchObservableCallback: () => undefined, removeBatchObservableCallback: () => undefined,
    };
    const recorder = new PoolMetricsRecorder(meter as never, registry);
    const pool = registry.add({ baseName: 'p', library: 'pg-pool', read: () => ({ used: 1, idle: 0, pending: 0, max: 2, min: 0 }) });
    recorder.poolOpened(pool);
    const client = {};
    expect(() => pool.probe.acquired(client, 1, 0.001, 'new', undefined, 1, 2)).not.toThrow();
    expect(() => pool.probe.released(client, 2)).not.toThrow();
  });

  it('shares checkout records with another copy of Poolscope in the process', () => {
    const probe = probeWith({ used: 0, pending: 0, max: 2 });
    const client = {};
    probe.acquired(client, 1, 0, 'new', undefined, 1, 2);
    expect((client as Record<symbol, unknown>)[Symbol.for('poolscope.checkout')]).toBe(checkoutRecord(client));
  });
});

describe('query attributes remembered per client', () => {
  it('give each statement its own operation and outcome, repeated or with its values written in, however many', async () => {
    const registry = new PoolRegistry();
    const local = createLocalMetrics();
    const reader = new PrometheusPullReader(createLogger(), undefined, [local.producer]);
    const provider = new MeterProvider({ readers: [reader] });
    const recorder = new PoolMetricsRecorder(provider.getMeter('poolscope'), registry, local.metrics);
    const pool = registry.add({ baseName: 'orders', library: 'pg-pool', read: () => ({ used: 0, idle: 1, pending: 0, max: 2, min: 0 }) });
    const target = { address: 'db', port: 5432, namespace: 'shop' };
    const repeated = 'SELECT id FROM orders WHERE id = $1';
    for (let i = 0; i < 40; i++) {
      // Of one length and one last character: only their text tells them apart.
      recorder.queryDone(pool, target, 0.001, `UPDATE orders WHERE id = ${i}`, undefined);
      recorder.queryDone(pool, target, 0.001, repeated, undefined);
      recorder.queryDone(pool, target, 0.001, `DELETE orders WHERE id = ${i}`, undefined);
      if (i % 10 === 0) recorder.queryDone(pool, target, 0.001, repeated, Object.assign(new Error('x'), { code: '57014' }));
    }
    const text = await reader.scrape();
    const count = (operation: string, type?: string) => value(parseExposition(text), 'db_client_operation_duration_seconds_count',
      { db_operation_name: operation, ...(type === undefined ? {} : { error_type: type }) });
    expect([count('UPDATE'), count('DELETE'), count('SELECT', '57014')]).toEqual([40, 40, 4]);
    expect(find(parseExposition(text), 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' })
      .map((x) => x.value).sort((a, b) => a - b)).toEqual([4, 40]);
    await provider.shutdown();
  });
});
