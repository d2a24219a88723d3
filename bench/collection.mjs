// Collection cost: one /metrics scrape and one OTLP export with N live pools (each used once).
// Run by bench/run.mjs with OTLP pointed at the bench sink; prints one JSON line per pool count.
import { startPoolscope } from '../dist/index.js';

const counts = (process.env.BENCH_POOL_COUNTS ?? '1,10,100').split(',').map(Number);
const poolscope = startPoolscope({ port: 0, metricsExporters: ['prometheus', 'otlp'], exportIntervalMillis: 3_600_000 });
await poolscope.ready;
const { default: pg } = await import('pg');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const pools = [];
for (const count of counts) {
  while (pools.length < count) {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
    await pool.query('SELECT 1');
    pools.push(pool);
  }
  const { host, port } = poolscope.serverAddress();
  const scrapeMs = [];
  let bytes = 0;
  for (let i = 0; i < 21; i++) {
    // Spaced past the flood threshold (10 scrapes a second): back to back, the server answered from its flood
    // cache, and this measured the cost of resending one cached body (the same 15 KB for 1, 10 and 100 pools).
    await new Promise((r) => setTimeout(r, 110));
    const t = performance.now();
    const body = await (await fetch(`http://${host}:${port}/metrics`)).text();
    scrapeMs.push(performance.now() - t);
    bytes = Buffer.byteLength(body);
  }
  const exportMs = [];
  for (let i = 0; i < 11; i++) {
    const t = performance.now();
    await poolscope.forceFlush();
    exportMs.push(performance.now() - t);
  }
  const sinkBytes = await (await fetch(`${process.env.BENCH_SINK}/last-size`)).text();
  process.stdout.write(`${JSON.stringify({
    pools: count, scrapeMs: median(scrapeMs), scrapeBytes: bytes, otlpExportMs: median(exportMs), otlpBytes: Number(sinkBytes),
  })}\n`);
}
await Promise.all(pools.map((p) => p.end()));
await poolscope.shutdown();
