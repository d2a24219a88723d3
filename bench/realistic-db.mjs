// Diagnosis, not a scenario of run.mjs: the realistic handler's three queries without HTTP, 16 concurrent
// loops on a pool of 10, for CPU profiles of the database side at a fixed duration. Needs the bench tables
// (run.mjs seeds them). Prints one JSON line: requests, CPU per request.
//   DATABASE_URL=… node --cpu-prof [--import ./dist/register.js] bench/realistic-db.mjs
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const loops = Number(process.env.BENCH_WORKERS ?? 16);
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 8000);
let n = 0;
let measuring = false;
let stop = false;

async function handler(id) {
  const customer = await pool.query('SELECT id, name FROM bench_customers WHERE id = $1', [id]);
  const orders = await pool.query('SELECT id, total FROM bench_orders WHERE customer_id = $1 ORDER BY id DESC LIMIT 5', [id]);
  const sum = await pool.query('SELECT count(*)::int AS n, coalesce(sum(total), 0)::float AS total FROM bench_orders WHERE customer_id = $1', [id]);
  return JSON.stringify({ customer: customer.rows[0], orders: orders.rows, summary: sum.rows[0] });
}

async function loop() {
  while (!stop) {
    await handler(1 + Math.floor(Math.random() * 10000));
    if (measuring) n++;
  }
}

const running = Array.from({ length: loops }, loop);
await new Promise((r) => setTimeout(r, 1500));
const cpu0 = process.cpuUsage();
measuring = true;
setTimeout(() => { stop = true; }, durationMs);
await Promise.all(running);
const cpu = process.cpuUsage(cpu0);
process.stdout.write(`${JSON.stringify({ requests: n, cpuMicrosPerRequest: (cpu.user + cpu.system) / n })}\n`);
await pool.end();
