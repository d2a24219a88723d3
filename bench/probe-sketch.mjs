// A diagnostic preload, not a product (BENCH_DIAG=1): a sketch of the hot path proposed in BENCHMARKS.md
// (eighth session), to measure its estimate. It is bench/floor.mjs plus the per-query state Poolscope's
// default features need, kept in one compact probe per pool that the wrappers write directly:
// - the acquire path, judged from pg-pool's counters as the request is made;
// - a used count kept by the wrappers, with its peak and the time spent at capacity;
// - the checked-out clients with their checkout time (what leak and idle-in-transaction detection read);
// - the last acquire time and the acquire count per path (what stuck detection reads);
// - the query histogram per db.operation.name, the name resolved once per statement text.
// Nothing is exported and no recorder reads the probes: what is measured is the hot path alone.
import { createRequire } from 'node:module';
import path from 'node:path';
import { timeRequests } from './floor-http.mjs';

const require = createRequire(path.join(process.cwd(), 'app.js'));
const pg = require('pg');

const BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];
class Histogram {
  counts = new Float64Array(BOUNDS.length + 1);
  sum = 0;
  record(seconds) {
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
  }
}

class Probe {
  wait = new Histogram();
  use = new Histogram();
  operations = new Map();
  used = 0;
  peakUsed = 0;
  capacitySince = -1;
  capacityMs = 0;
  lastAcquireAt = 0;
  acquires = new Float64Array(3);
  /** The checked-out clients' records; the leak and idle-in-transaction sweeps would walk them. */
  out = new Set();
  constructor(max) {
    this.max = max;
  }
}

const PATH_IDLE = 0;
const PATH_NEW = 1;
const PATH_QUEUED = 2;
const probes = new WeakMap();
/** Per client, one record reused by each of its checkouts: no allocation per checkout. */
const records = new WeakMap();
function recordOf(client) {
  let record = records.get(client);
  if (record === undefined) records.set(client, (record = { probe: undefined, since: 0, activity: 0 }));
  return record;
}
function probeOf(pool) {
  let probe = probes.get(pool);
  if (probe === undefined) probes.set(pool, (probe = new Probe(Number(pool.options?.max ?? 10))));
  return probe;
}

const OPERATIONS = /^\s*([A-Za-z]+)/;
const operationByText = new Map();
function operationOf(text) {
  if (typeof text !== 'string') return '';
  let op = operationByText.get(text);
  if (op === undefined) {
    if (operationByText.size >= 2000) operationByText.clear();
    op = OPERATIONS.exec(text)?.[1].toUpperCase() ?? '';
    operationByText.set(text, op);
  }
  return op;
}

const poolProto = Object.getPrototypeOf(pg.Pool.prototype);
const connect = poolProto.connect;
poolProto.connect = function (cb) {
  if (typeof cb !== 'function') return connect.apply(this, arguments);
  const probe = probeOf(this);
  const path = this.idleCount > this.waitingCount ? PATH_IDLE : this.totalCount < probe.max ? PATH_NEW : PATH_QUEUED;
  const start = performance.now();
  return connect.call(this, (err, client, release) => {
    if (!err) {
      const t = performance.now();
      probe.wait.record((t - start) / 1000);
      probe.acquires[path]++;
      probe.lastAcquireAt = t;
      const used = ++probe.used;
      if (used > probe.peakUsed) probe.peakUsed = used;
      if (used >= probe.max && probe.capacitySince < 0) probe.capacitySince = t;
      const record = recordOf(client);
      record.probe = probe;
      record.since = t;
      record.activity = t;
      probe.out.add(record);
    }
    cb(err, client, release);
  });
};
const release = poolProto._release;
poolProto._release = function (client) {
  const record = records.get(client);
  const probe = record?.probe;
  if (probe !== undefined) {
    const t = performance.now();
    probe.use.record((t - record.since) / 1000);
    probe.out.delete(record);
    record.probe = undefined;
    if (--probe.used < probe.max && probe.capacitySince >= 0 && this.waitingCount === 0) {
      probe.capacityMs += t - probe.capacitySince;
      probe.capacitySince = -1;
    }
  }
  return release.apply(this, arguments);
};
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (text, values, cb) {
  if (typeof cb !== 'function') return clientQuery.apply(this, arguments);
  const start = performance.now();
  const record = records.get(this);
  const probe = record?.probe;
  return clientQuery.call(this, text, values, (err, res) => {
    const t = performance.now();
    if (probe !== undefined) {
      const op = operationOf(typeof text === 'string' ? text : text?.text);
      let h = probe.operations.get(op);
      if (h === undefined) probe.operations.set(op, (h = new Histogram()));
      h.record((t - start) / 1000);
      record.activity = t;
    }
    cb(err, res);
  });
};

const request = new Histogram();
timeRequests((seconds) => request.record(seconds));
