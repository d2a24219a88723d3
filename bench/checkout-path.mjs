// The checkout path alone, in process: a real pg-pool whose client class answers on the next turn of the
// event loop, so there is no socket, no server and none of their noise. What remains is pg-pool's own work
// and what Poolscope adds to each pool.query() (checkout, query, release): the part of the overhead
// Poolscope controls, measured to a few hundredths of a microsecond.
// Prints one JSON line: queries, CPU per query.
import { EventEmitter } from 'node:events';
import pg from 'pg';

/** Just enough of pg.Client for pg-pool: connect, query (callback form, as pool.query uses it), end. */
class NextTurnClient extends EventEmitter {
  constructor() {
    super();
    this.connectionParameters = { host: '127.0.0.1', port: 5432, database: 'bench' };
    this._queryable = true;
    this._ending = false;
  }
  connect(cb) { setImmediate(() => { this.emit('connect'); cb(null); }); }
  query(text, values, cb) { setImmediate(typeof values === 'function' ? values : cb, null, { rows: [] }); }
  end(cb) { this._ending = true; this.emit('end'); if (cb) setImmediate(cb); return Promise.resolve(); }
}

const workers = Number(process.env.BENCH_WORKERS ?? 8);
const queries = Number(process.env.BENCH_QUERIES ?? 1_000_000);
const pool = new pg.Pool({ Client: NextTurnClient, max: Number(process.env.BENCH_POOL_MAX ?? 10), host: '127.0.0.1', database: 'bench' });

async function runQueries(total) {
  let done = 0;
  const worker = async () => {
    while (done < total) {
      done++;
      await pool.query('SELECT id, name FROM bench_customers WHERE id = $1', [1]);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  return done;
}

await runQueries(Math.min(200_000, queries));
const cpu0 = process.cpuUsage();
const n = await runQueries(queries);
const cpu = process.cpuUsage(cpu0);
await pool.end();
process.stdout.write(`${JSON.stringify({ queries: n, cpuMicrosPerQuery: (cpu.user + cpu.system) / n })}\n`);
