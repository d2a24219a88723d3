// The log policy's own rules, on a recorder fed directly (test/health.test.ts covers it under an instrumentation).
import { describe, expect, it } from 'vitest';
import { ObservedPool } from '../src/pools/observed-pool.js';
import { LogPolicyRecorder } from '../src/recorders/log-policy.js';
import { capturedLog } from './helpers.js';

describe('utilization warnings', () => {
  // Bug: every pool's crossing was its own line, so a process with a pool of one per tenant (100 % on every
  // query) wrote 150 lines for 150 pools.
  it('are logged for ten pools a minute, then one line says the rest are not (bug: one line per pool, 150 for 150 pools)', () => {
    const { lines, logger } = capturedLog();
    const policy = new LogPolicyRecorder(logger, 0.8);
    for (let i = 0; i < 150; i++) {
      const pool = new ObservedPool(`tenant-${i}`, 'pg-pool', () => ({ used: 2, idle: 0, pending: 0, max: 2, min: 0 }), undefined, undefined);
      policy.poolOpened(pool);
      pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 2, 2);
    }
    expect(lines).toHaveLength(11);
    expect(lines.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) =>
      `poolscope: pool "tenant-${i}" is at 100% utilization (2/2 connections in use, 0 waiting).`));
    expect(lines[10]).toBe('poolscope: more than 10 pools reached 80% utilization within a minute; further pools\' crossings are not ' +
      'logged until the minute is over (poolscope.pool.utilization has them all).');
  });

  // Found by a review of process fleets: drizzle-kit's migration pool (max 1) printed the line on every run.
  it('are not logged for a pool of one connection in use with nobody waiting, and are with callers waiting (bug: every one-connection CLI printed 100%)', () => {
    const { lines, logger } = capturedLog();
    const policy = new LogPolicyRecorder(logger, 0.8);
    let pending = 0;
    const pool = new ObservedPool('migrations', 'pg-pool', () => ({ used: 1, idle: 0, pending, max: 1, min: 0 }), undefined, undefined);
    policy.poolOpened(pool);
    const record = {};
    pool.probe.acquired(record, performance.now(), 0, 'new', undefined, 1, 1);
    expect(lines).toEqual([]);
    pool.probe.released(record, performance.now());
    pending = 1;
    pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 1, 1);
    expect(lines).toEqual(['poolscope: pool "migrations" is at 100% utilization (1/1 connections in use, 1 waiting).']);
  });

  it('still log each of a few pools crossing', () => {
    const { lines, logger } = capturedLog();
    const policy = new LogPolicyRecorder(logger, 0.8);
    for (const name of ['a', 'b', 'c']) {
      const pool = new ObservedPool(name, 'pg-pool', () => ({ used: 4, idle: 1, pending: 2, max: 5, min: 0 }), undefined, undefined);
      policy.poolOpened(pool);
      pool.probe.acquired({}, performance.now(), 0, 'idle', undefined, 4, 5);
    }
    expect(lines).toEqual(['a', 'b', 'c'].map((n) => `poolscope: pool "${n}" is at 80% utilization (4/5 connections in use, 2 waiting).`));
  });
});
