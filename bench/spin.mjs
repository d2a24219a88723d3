// A diagnostic preload (BENCH_DIAG=1): BENCH_SPIN_US microseconds of pure CPU (no allocation, no I/O) added
// to every pg query, to measure what one microsecond of the application's own time per query does to each
// scenario's ratios on this machine (the kernel and the database share its cores).
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.join(process.cwd(), 'app.js'));
const pg = require('pg');
const spinMs = Number(process.env.BENCH_SPIN_US ?? 1) / 1000;
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function () {
  const end = performance.now() + spinMs;
  while (performance.now() < end);
  return clientQuery.apply(this, arguments);
};
