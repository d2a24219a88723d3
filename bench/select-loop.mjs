// Worst-case workload: N workers running `SELECT 1` through one pg.Pool as fast as they can.
// Prints one JSON line: queries, elapsed, CPU per query, p99 latency, RSS, heap.
import pg from 'pg';

const url = process.env.DATABASE_URL;
const workers = Number(process.env.BENCH_WORKERS ?? 8);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 1000);
const durationMs = Number(process.env.BENCH_DURATION_MS ?? 5000);
const queriesLimit = Number(process.env.BENCH_QUERIES ?? 0); // 0 = time-bound

const pool = new pg.Pool({ connectionString: url, max: Number(process.env.BENCH_POOL_MAX ?? 10) });
const latencies = new Float64Array(4_000_000);
let n = 0;
let measuring = false;
let stop = false;

async function worker() {
  while (!stop) {
    const t = performance.now();
    await pool.query('SELECT 1');
    if (measuring) {
      if (n < latencies.length) latencies[n] = performance.now() - t;
      n++;
      if (queriesLimit > 0 && n >= queriesLimit) stop = true;
    }
  }
}

const running = Array.from({ length: workers }, worker);
await new Promise((r) => setTimeout(r, warmupMs));
const cpu0 = process.cpuUsage();
const t0 = performance.now();
measuring = true;
if (queriesLimit === 0) setTimeout(() => { stop = true; }, durationMs);
await Promise.all(running);
const elapsed = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const sample = latencies.subarray(0, Math.min(n, latencies.length)).sort();
globalThis.gc?.();
const mem = process.memoryUsage();
await pool.end();
process.stdout.write(`${JSON.stringify({
  queries: n,
  seconds: elapsed / 1000,
  qps: n / (elapsed / 1000),
  cpuMicrosPerQuery: (cpu.user + cpu.system) / n,
  p99Ms: sample[Math.floor(sample.length * 0.99)] ?? 0,
  rssMB: mem.rss / 1048576,
  heapMB: mem.heapUsed / 1048576,
})}\n`);
