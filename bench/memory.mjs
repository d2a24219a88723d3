// Memory: heap and RSS after Q queries and after creating, using and ending P pools, under the preload.
// Run with --expose-gc; prints one JSON line with a checkpoint series.
import pg from 'pg';

const queries = Number(process.env.BENCH_MEMORY_QUERIES ?? 1_000_000);
const poolsToChurn = Number(process.env.BENCH_MEMORY_POOLS ?? 1000);
const url = process.env.DATABASE_URL;
const snap = (label) => {
  globalThis.gc();
  const m = process.memoryUsage();
  return { label, heapMB: +(m.heapUsed / 1048576).toFixed(2), rssMB: +(m.rss / 1048576).toFixed(1) };
};
const checkpoints = [];
const pool = new pg.Pool({ connectionString: url, max: 10 });
let done = 0;
const step = Math.max(1, Math.floor(queries / 5));
let next = step;
async function worker() {
  while (done < queries) {
    done++;
    await pool.query('SELECT 1');
  }
}
const warm = Math.min(20_000, Math.floor(queries / 10));
for (let i = 0; i < warm; i++) await pool.query('SELECT 1');
checkpoints.push(snap('after warm-up'));
const workers = Array.from({ length: 8 }, worker);
while (done < queries) {
  await new Promise((r) => setTimeout(r, 50));
  if (done >= next) { checkpoints.push(snap(`${next} queries`)); next += step; }
}
await Promise.all(workers);
checkpoints.push(snap(`${queries} queries`));
await pool.end();
const churnStart = snap('before pool churn');
checkpoints.push(churnStart);
for (let i = 0; i < poolsToChurn; i++) {
  const p = new pg.Pool({ connectionString: url, max: 1 });
  await p.query('SELECT 1');
  await p.end();
  if ((i + 1) % Math.max(1, Math.floor(poolsToChurn / 4)) === 0) checkpoints.push(snap(`${i + 1} pools churned`));
}
// Let the telemetry collect once more, so ended pools are swept from the registry.
const port = process.env.OTEL_EXPORTER_PROMETHEUS_PORT;
let series = null;
if (port && port !== '0') {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  series = text.split('\n').filter((l) => l && !l.startsWith('#')).length;
}
checkpoints.push(snap('after churn'));
process.stdout.write(`${JSON.stringify({ queries, poolsToChurn, checkpoints, seriesAfterChurn: series })}\n`);
