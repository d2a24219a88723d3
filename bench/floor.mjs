// A diagnostic preload, not a product (BENCH_DIAG=1): the least any pool-metrics agent has to do per query,
// written as cheaply as JavaScript allows, to show what the targets leave room for on this machine. Per
// pool.query(): wraps pg-pool's connect and release and pg.Client's query, reads the clock five times (as
// Poolscope does) and records three histograms (wait, query, use); per HTTP request, two emit wrappers, two
// clock readings and one histogram. No attributes, no pool snapshot, no recorders, no export: what is left
// is timing itself.
import { createRequire } from 'node:module';
import path from 'node:path';
import { timeRequests } from './floor-http.mjs';

const require = createRequire(path.join(process.cwd(), 'app.js'));
const pg = require('pg');

const BOUNDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5];
function histogram() {
  const counts = new Float64Array(BOUNDS.length + 1);
  let sum = 0;
  return (seconds) => {
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]) i++;
    counts[i]++;
    sum += seconds;
  };
}
const wait = histogram();
const use = histogram();
const query = histogram();
const request = histogram();
const checkedOutAt = new WeakMap();

const poolProto = Object.getPrototypeOf(pg.Pool.prototype);
const connect = poolProto.connect;
poolProto.connect = function (cb) {
  if (typeof cb !== 'function') return connect.apply(this, arguments);
  const start = performance.now();
  return connect.call(this, (err, client, release) => {
    if (!err) {
      const t = performance.now();
      wait((t - start) / 1000);
      checkedOutAt.set(client, t);
    }
    cb(err, client, release);
  });
};
const release = poolProto._release;
poolProto._release = function (client) {
  const since = checkedOutAt.get(client);
  if (since !== undefined) use((performance.now() - since) / 1000);
  return release.apply(this, arguments);
};
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (text, values, cb) {
  if (typeof cb !== 'function') return clientQuery.apply(this, arguments);
  const start = performance.now();
  return clientQuery.call(this, text, values, (err, res) => {
    query((performance.now() - start) / 1000);
    cb(err, res);
  });
};

timeRequests(request);
