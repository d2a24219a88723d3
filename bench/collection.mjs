// Collection cost: one /metrics scrape and one OTLP export with N live pools (each used once).
// Run by bench/run.mjs with OTLP pointed at the bench sink; prints one JSON line per pool count.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { startPoolscope } from '../dist/index.js';

const counts = (process.env.BENCH_POOL_COUNTS ?? '1,10,100').split(',').map(Number);
const poolscope = startPoolscope({ port: 0, metricsExporters: ['prometheus', 'otlp'], exportIntervalMillis: 3_600_000 });
await poolscope.ready;
const { default: pg } = await import('pg');
/**
 * `n` scrapes of `url` from a child process, spaced past the telemetry server's flood threshold (10 a
 * second): back to back, the server answered from its flood cache, and this measured the cost of resending
 * one cached body (the same 15 KB for 1, 10 and 100 pools).
 */
async function scrapeFromChild(url, n) {
  const code = `const ms = []; let bytes = 0;
for (let i = 0; i < ${n}; i++) {
  await new Promise((r) => setTimeout(r, 110));
  const t = performance.now();
  const body = await (await fetch(${JSON.stringify(url)})).arrayBuffer();
  ms.push(performance.now() - t);
  bytes = body.byteLength;
}
process.stdout.write(JSON.stringify({ ms, bytes }));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  const [status] = await once(child, 'exit');
  if (status !== 0) throw new Error(`scraper exited ${status}`);
  return JSON.parse(out);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const pools = [];
for (const count of counts) {
  while (pools.length < count) {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
    await pool.query('SELECT 1');
    pools.push(pool);
  }
  const { host, port } = poolscope.serverAddress();
  // Scraped from another process, as Prometheus scrapes: a fetch in this process would add the client's
  // own receiving and decoding of the body to every measurement, on the same event loop.
  // The app's CPU per scrape: what the scrapes cost over an equally long quiet spell (timers, health sampling).
  const cpuMs = (u) => (u.user + u.system) / 1000;
  let t0 = performance.now();
  let cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 21 * 110));
  const quietCpuPerMs = cpuMs(process.cpuUsage(cpu0)) / (performance.now() - t0);
  t0 = performance.now();
  cpu0 = process.cpuUsage();
  const scraper = await scrapeFromChild(`http://${host}:${port}/metrics`, 21);
  const scrapeCpu = cpuMs(process.cpuUsage(cpu0)) - quietCpuPerMs * (performance.now() - t0);
  const scrapeMs = scraper.ms;
  const bytes = scraper.bytes;
  const appCpuMsPerScrape = scrapeCpu / scrapeMs.length;
  const exportMs = [];
  for (let i = 0; i < 11; i++) {
    const t = performance.now();
    await poolscope.forceFlush();
    exportMs.push(performance.now() - t);
  }
  const sinkBytes = await (await fetch(`${process.env.BENCH_SINK}/last-size`)).text();
  process.stdout.write(`${JSON.stringify({
    pools: count, scrapeMs: median(scrapeMs), appCpuMsPerScrape, scrapeBytes: bytes, otlpExportMs: median(exportMs), otlpBytes: Number(sinkBytes),
  })}\n`);
}
await Promise.all(pools.map((p) => p.end()));
await poolscope.shutdown();
