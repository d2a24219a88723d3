// npm run bench: Poolscope's cost measured side by side with the uninstrumented baseline and the stock
// OpenTelemetry setup, in one run, as ratios (alternating order, medians of per-repetition ratios).
// `--smoke` runs every scenario briefly so CI keeps the harness working; its numbers mean nothing.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { freePort, startPostgres } from '../scripts/postgres.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const smoke = process.argv.includes('--smoke');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7).split(',');
const REPS = smoke ? 1 : Number(process.env.BENCH_REPS ?? 7);
const SELECT_MS = smoke ? 800 : Number(process.env.BENCH_DURATION_MS ?? 5000);
const HTTP_SECONDS = smoke ? 1 : Number(process.env.BENCH_HTTP_SECONDS ?? 8);
const register = path.join(root, 'dist', 'register.js');
const stock = path.join(root, 'bench', 'stock-otel.mjs');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Accepts OTLP pushes and throws them away; remembers the size of the last one. */
async function startSink() {
  let lastSize = 0;
  const server = createServer((req, res) => {
    if (req.url === '/last-size') return res.end(String(lastSize));
    let size = 0;
    req.on('data', (d) => { size += d.length; });
    req.on('end', () => { lastSize = size; res.writeHead(200, { 'content-type': 'application/json' }); res.end('{}'); });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

function variants(sink) {
  const common = { OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_LOG_LEVEL: 'error' };
  // BENCH_LEAKS=1: leak detection and per-route hold time (AsyncLocalStorage per request) against the baseline.
  if (process.env.BENCH_LEAKS === '1') {
    const off = { POOLSCOPE_LEAK_THRESHOLD: '0', POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '0' };
    return [
      { name: 'baseline', args: [], env: {} },
      { name: 'poolscope:no-leak-detection', args: ['--import', register], env: { ...common, ...off } },
      { name: 'poolscope', args: ['--import', register], env: { ...common } },
      { name: 'poolscope+routes', args: ['--import', register], env: { ...common, POOLSCOPE_POOL_ROUTES: 'true' } },
      { name: 'poolscope+routes+stack', args: ['--import', register], env: { ...common, POOLSCOPE_POOL_ROUTES: 'true', POOLSCOPE_LEAK_STACK: 'true' } },
    ];
  }
  return [
    { name: 'baseline', args: [], env: {} },
    { name: 'poolscope', args: ['--import', register], env: { ...common } },
    { name: 'poolscope+traces', args: ['--import', register], env: { ...common, OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: sink } },
    { name: 'stock-otel', args: ['--import', stock], env: { ...common, OTEL_TRACES_EXPORTER: 'none', OTEL_LOGS_EXPORTER: 'none' } },
    { name: 'stock-otel+traces', args: ['--import', stock], env: { ...common, BENCH_TRACES: '1', OTEL_LOGS_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: sink } },
  ].concat(process.env.BENCH_DIAG === '1' ? [
    { name: 'diag:no-http', args: ['--import', register], env: { ...common, OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'http,express,fastify' } },
    { name: 'diag:no-pg', args: ['--import', register], env: { ...common, OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg' } },
    ...(process.env.BENCH_PREVIOUS ? [{ name: 'diag:previous-build', args: ['--import', process.env.BENCH_PREVIOUS], env: { ...common } }] : []),
    { name: 'diag:sdk-disabled', args: ['--import', register], env: { ...common, OTEL_SDK_DISABLED: 'true' } },
    // Started (SDK, telemetry server, module hooks) with every instrumentation off: the cost of being there.
    { name: 'diag:instrumentations-off', args: ['--import', register], env: { ...common, OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg,http,express,fastify' } },
    // The scale of the targets on this machine: the least any pool-metrics agent does (bench/floor.mjs), and
    // one microsecond of plain CPU per query (bench/spin.mjs).
    { name: 'diag:floor', args: ['--import', path.join(root, 'bench', 'floor.mjs')], env: {} },
    // The floor with the request's duration from Node's HTTP diagnostics channels instead of emit wrappers.
    { name: 'diag:floor-http-channels', args: ['--import', path.join(root, 'bench', 'floor.mjs')], env: { BENCH_FLOOR_HTTP: 'channels' } },
    { name: 'diag:spin-1us', args: ['--import', path.join(root, 'bench', 'spin.mjs')], env: { BENCH_SPIN_US: '1' } },
    // The floor plus the per-query state of the default features, in one probe per pool (bench/probe-sketch.mjs).
    { name: 'diag:probe-sketch', args: ['--import', path.join(root, 'bench', 'probe-sketch.mjs')], env: {} },
  ] : []);
}

/**
 * The applications run from a directory of their own that holds only what they import (pg, express), as a
 * service's would. From the repository they would see its node_modules, where Slonik (a dev dependency)
 * sits: on Node 20 its presence alone starts the ESM loader thread (src/register.ts), which a service
 * without Slonik never pays for. The start-up section measures the thread apart.
 */
const appDir = (() => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-bench-app-'));
  mkdirSync(path.join(dir, 'node_modules'));
  for (const p of ['pg', 'express']) symlinkSync(path.join(root, 'node_modules', p), path.join(dir, 'node_modules', p), 'dir');
  for (const f of ['select-loop.mjs', 'http-app.mjs', 'memory.mjs', 'checkout-path.mjs']) copyFileSync(path.join(root, 'bench', f), path.join(dir, f));
  return dir;
})();
const appScript = (name) => path.join(appDir, name);

/**
 * The realistic scenario gives the application CPUs of its own, as a service has in production, where its
 * database and its clients run elsewhere: on a machine with two or more CPUs and `taskset` (util-linux), the
 * application runs on the last CPU, and this process (autocannon) and PostgreSQL on the others. On two
 * shared CPUs, unpinned, the processes' caches were evicted by each other and the floor's ratio alone moved
 * between 0.938× and 1.002× from run to run (BENCHMARKS.md, ninth session). BENCH_PIN=0 turns it off.
 */
function pinForRealistic(db) {
  const cpus = os.cpus().length;
  if (process.env.BENCH_PIN === '0' || cpus < 2) return undefined;
  let postmaster;
  try {
    postmaster = Number(readFileSync(path.join(db.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined; // a server of another user's: left as it is, and so is the application
  }
  const serverPids = [postmaster, ...(spawnSync('ps', ['-o', 'pid=', '--ppid', String(postmaster)], { encoding: 'utf8' }).stdout ?? '')
    .split('\n').map(Number).filter((n) => n > 0)];
  const setAffinity = (list) => [process.pid, ...serverPids]
    .every((pid) => spawnSync('taskset', ['-a', '-p', '-c', list, String(pid)], { stdio: 'ignore' }).status === 0);
  if (!setAffinity(`0-${cpus - 2}`)) {
    setAffinity(`0-${cpus - 1}`);
    return undefined;
  }
  return { appCpus: String(cpus - 1), restore: () => setAffinity(`0-${cpus - 1}`) };
}

/**
 * Starts a script with `node` (this Node by default); `cpus` (a taskset list) keeps it on those CPUs (taskset
 * execs: the pid stays the script's).
 */
function run(args, env, { untilListening = false, cpus, node = process.execPath } = {}) {
  const [command, argv] = cpus ? ['taskset', ['-c', cpus, node, ...args]] : [node, args];
  const child = spawn(command, argv, { cwd: appDir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const exited = once(child, 'exit');
  if (untilListening) {
    return new Promise((resolve, reject) => {
      child.stdout.on('data', () => {
        const m = /LISTENING (\d+)/.exec(out);
        if (m) resolve({ child, port: Number(m[1]), exited });
      });
      void exited.then(() => reject(new Error(`exited early: ${err}`)));
    });
  }
  return exited.then(([code]) => {
    if (code !== 0) throw new Error(`${args.join(' ')} exited ${code}: ${err}`);
    const rows = out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    return rows.length === 1 ? rows[0] : rows;
  });
}

/** Alternates variant order per repetition; returns per-variant arrays of results. */
async function alternate(list, once1) {
  const results = Object.fromEntries(list.map((v) => [v.name, []]));
  for (let rep = 0; rep < REPS; rep++) {
    const order = list.map((_, i) => list[(i + rep) % list.length]);
    if (rep % 2 === 1) order.reverse();
    for (const v of order) results[v.name].push(await once1(v));
    process.stderr.write('.');
  }
  process.stderr.write('\n');
  return results;
}

/** Median over repetitions of (variant / baseline) for one field, paired within each repetition. */
function ratio(results, name, field) {
  return median(results[name].map((r, i) => r[field] / results.baseline[i][field]));
}

async function seed(url) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`CREATE TABLE IF NOT EXISTS bench_customers (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE IF NOT EXISTS bench_orders (id serial PRIMARY KEY, customer_id int NOT NULL, total numeric(10,2) NOT NULL);
    CREATE INDEX IF NOT EXISTS bench_orders_customer ON bench_orders (customer_id);`);
  const { rows } = await c.query('SELECT count(*)::int AS n FROM bench_customers');
  if (rows[0].n === 0) {
    await c.query(`INSERT INTO bench_customers SELECT g, 'customer ' || g FROM generate_series(1, 10000) g`);
    await c.query(`INSERT INTO bench_orders (customer_id, total) SELECT 1 + (g % 10000), (g % 997) / 10.0 FROM generate_series(1, 100000) g`);
    await c.query('ANALYZE');
  }
  await c.end();
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    // utime and stime are fields 14 and 15 of stat; [0] here is field 3 (state).
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
// USER_HZ: 100 on every Linux this runs on (getconf CLK_TCK); Node has no API for it.
const CLOCK_TICKS = 100;

/**
 * This Node, then Node 22 and 24 through npx, as the test run gets them (BENCH_NODE_VERSIONS); a version npx
 * cannot provide is skipped, and `say` says so.
 */
function nodeBinaries(what, say) {
  const binaries = [process.execPath];
  for (const v of (process.env.BENCH_NODE_VERSIONS ?? '22,24').split(',').filter(Boolean)) {
    const r = spawnSync('npx', ['-y', '-p', `node@${v}`, 'node', '-p', 'process.execPath'], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim() !== '') binaries.push(r.stdout.trim().split('\n').pop());
    else say(`\n(${what} on Node ${v} skipped: npx could not provide it)`);
  }
  return binaries;
}

const fmt = (x, digits = 2) => (x === undefined || Number.isNaN(x) ? 'n/a' : x.toFixed(digits));

async function main() {
  const db = await startPostgres();
  const sink = await startSink();
  const pick = process.env.BENCH_VARIANTS?.split(',');
  const list = variants(sink.url).filter((v) => v.name === 'baseline' || pick === undefined || pick.includes(v.name));
  const report = { machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memGB: Math.round(os.totalmem() / 2 ** 30), node: process.version }, smoke, reps: REPS };
  const lines = [];
  const say = (s = '') => { lines.push(s); console.log(s); };
  say(`# Poolscope benchmark${smoke ? ' (smoke: numbers are meaningless)' : ''}`);
  say(`${report.machine.cpus} × ${report.machine.model}, ${report.machine.memGB} GB, Node ${process.version}; ${REPS} alternating repetitions, medians of per-repetition ratios.`);
  try {
    await seed(db.url);
    if (!only || only.includes('select')) {
      const res = await alternate(list, (v) => run([...v.args, appScript('select-loop.mjs')],
        { ...v.env, DATABASE_URL: db.url, BENCH_DURATION_MS: String(SELECT_MS), BENCH_WARMUP_MS: smoke ? '300' : '1500' }));
      report.select = res;
      say('\n## 1. Worst case: SELECT 1 via pool.query, 8 workers, pool max 10');
      say('| variant | throughput × | CPU per query × | p99 latency × | RSS +MB | median q/s |');
      say('| --- | --- | --- | --- | --- | --- |');
      for (const v of list) {
        const rss = median(res[v.name].map((r, i) => r.rssMB - res.baseline[i].rssMB));
        say(`| ${v.name} | ${fmt(ratio(res, v.name, 'qps'))} | ${fmt(ratio(res, v.name, 'cpuMicrosPerQuery'))} | ${fmt(ratio(res, v.name, 'p99Ms'))} | ${fmt(rss, 1)} | ${Math.round(median(res[v.name].map((r) => r.qps)))} |`);
      }
      if (res['stock-otel+traces'] !== undefined) {
        const tracesVsStock = median(res['poolscope+traces'].map((r, i) => r.qps / res['stock-otel+traces'][i].qps));
        say(`\nTraces on: Poolscope runs at ${fmt(tracesVsStock)}× the throughput of stock OpenTelemetry with traces on.`);
      }
    }
    if (!only || only.includes('checkout')) {
      // Poolscope's own share of the worst case, without the socket and server noise that the ratios above
      // carry (bench/checkout-path.mjs): stock OpenTelemetry patches pg's own Client, not this one, so only
      // the Poolscope variants run.
      const checkoutList = list.filter((v) => v.name === 'baseline' || v.name.startsWith('poolscope'));
      const res = await alternate(checkoutList, (v) => run([...v.args, appScript('checkout-path.mjs')],
        { ...v.env, BENCH_QUERIES: smoke ? '20000' : '1000000' }));
      report.checkout = res;
      say('\n## 1b. The checkout path in process: pool.query() through a real pg-pool to a client that answers on the next turn');
      say('| variant | CPU per query × | added µs per query | median CPU µs per query |');
      say('| --- | --- | --- | --- |');
      for (const v of checkoutList) {
        const added = median(res[v.name].map((r, i) => r.cpuMicrosPerQuery - res.baseline[i].cpuMicrosPerQuery));
        say(`| ${v.name} | ${fmt(ratio(res, v.name, 'cpuMicrosPerQuery'))} | ${fmt(added, 3)} | ${fmt(median(res[v.name].map((r) => r.cpuMicrosPerQuery)), 3)} |`);
      }
    }
    if (!only || only.includes('http')) {
      const pin = pinForRealistic(db);
      const res = await alternate(list, async (v) => {
        const app = await run([...v.args, appScript('http-app.mjs')], { ...v.env, DATABASE_URL: db.url }, { untilListening: true, cpus: pin?.appCpus });
        const url = `http://127.0.0.1:${app.port}`;
        const load = (duration) => autocannon({
          url, connections: 16, duration,
          requests: [{ setupRequest: (req) => ({ ...req, path: `/customers/${1 + Math.floor(Math.random() * 10000)}` }) }],
        });
        await load(smoke ? 0.5 : 2);
        const cpuBefore = cpuSeconds(app.child.pid);
        const wallBefore = performance.now();
        const r = await load(HTTP_SECONDS);
        const cpu = cpuSeconds(app.child.pid) - cpuBefore;
        const cpuMicrosPerRequest = (cpu * 1e6) / r.requests.total;
        // The share of one CPU the application used: near 1, it is the bottleneck (CPU-bound).
        const appCpuShare = cpu / ((performance.now() - wallBefore) / 1000);
        app.child.kill('SIGTERM');
        await app.exited;
        if (r.non2xx > 0 || r.errors > 0) throw new Error(`${v.name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
        return { rps: r.requests.average, p99: r.latency.p99, p50: r.latency.p50, cpuMicrosPerRequest, appCpuShare };
      });
      pin?.restore();
      report.http = res;
      say('\n## 2. Realistic: Express handler with three indexed queries, autocannon 16 connections');
      say(pin ? `The application runs alone on CPU ${pin.appCpus}; autocannon and PostgreSQL share the others.` : 'Unpinned: the application, autocannon and PostgreSQL share every CPU.');
      say('"CPU-bound requests/s" is 1 / (app CPU per request): the throughput ratio of an application whose own CPU is the limit.');
      say('| variant | requests/s × | app CPU per request × | CPU-bound requests/s × | p99 latency × | p50 latency × | median req/s | median app CPU µs/request | app CPU use |');
      say('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const v of list) {
        say(`| ${v.name} | ${fmt(ratio(res, v.name, 'rps'), 3)} | ${fmt(ratio(res, v.name, 'cpuMicrosPerRequest'), 3)} | ${fmt(1 / ratio(res, v.name, 'cpuMicrosPerRequest'), 3)} | ${fmt(ratio(res, v.name, 'p99'), 3)} | ${fmt(ratio(res, v.name, 'p50'), 3)} | ${Math.round(median(res[v.name].map((r) => r.rps)))} | ${Math.round(median(res[v.name].map((r) => r.cpuMicrosPerRequest)))} | ${fmt(median(res[v.name].map((r) => r.appCpuShare)))} |`);
      }
    }
    if (!only || only.includes('abuse')) {
      // The application's own latency while its telemetry port is abused, against the same app left alone.
      // The abuser runs at the lowest CPU priority: on these 2 shared cores its own CPU would otherwise
      // be measured as well, and in production it is on another machine.
      // `abuse elsewhere` floods an idle Poolscope process instead: the same attack traffic on the same
      // cores, none of it in the app, separating the telemetry server's cost from the machine's.
      const abuseList = [{ name: 'quiet' }, { name: 'abused' }, { name: 'abuse elsewhere' }];
      const abuseStats = [];
      const res = await alternate(abuseList, async (v) => {
        const metricsPort = await freePort();
        const app = await run(['--import', register, appScript('http-app.mjs')],
          { DATABASE_URL: db.url, OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), OTEL_LOG_LEVEL: 'error' }, { untilListening: true });
        const url = `http://127.0.0.1:${app.port}`;
        const load = (duration) => autocannon({
          url, connections: 16, duration,
          requests: [{ setupRequest: (req) => ({ ...req, path: `/customers/${1 + Math.floor(Math.random() * 10000)}` }) }],
        });
        let abuser;
        let decoy;
        if (v.name !== 'quiet') {
          let target = metricsPort;
          if (v.name === 'abuse elsewhere') {
            target = await freePort();
            decoy = await run(['--import', register, '-e', "require('http').createServer().listen(0, '127.0.0.1', function () { console.log('LISTENING ' + this.address().port); })"],
              { OTEL_EXPORTER_PROMETHEUS_PORT: String(target), OTEL_LOG_LEVEL: 'error' }, { untilListening: true });
          }
          abuser = spawn('nice', ['-n', '19', process.execPath, path.join(root, 'bench', 'telemetry-abuse.mjs')],
            { env: { ...process.env, BENCH_ABUSE_PORT: String(target) }, stdio: ['ignore', 'pipe', 'inherit'] });
          let out = '';
          abuser.stdout.on('data', (d) => { out += d; });
          abuser.result = once(abuser, 'exit').then(() => JSON.parse(out.trim().split('\n').pop()));
          await new Promise((r) => abuser.stdout.once('data', r));
        }
        await load(smoke ? 0.5 : 2);
        const cpuBefore = cpuSeconds(app.child.pid);
        const r = await load(HTTP_SECONDS);
        const cpuMicrosPerRequest = ((cpuSeconds(app.child.pid) - cpuBefore) * 1e6) / r.requests.total;
        // The telemetry port still answers a scraper during the abuse (possibly 429 at the moment).
        const scrape = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((x) => x.status, (e) => String(e.cause?.code ?? e));
        if (abuser) {
          abuser.kill('SIGTERM');
          const got = await abuser.result;
          if (v.name === 'abused') abuseStats.push({ ...got, scrapeDuringAbuse: scrape });
        }
        if (decoy) {
          decoy.child.kill('SIGTERM');
          await decoy.exited;
        }
        // Peak resident memory of the app over the whole run (Linux).
        const peakRssMB = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${app.child.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
        app.child.kill('SIGTERM');
        await app.exited;
        if (r.non2xx > 0 || r.errors > 0) throw new Error(`${v.name}: ${r.non2xx} non-2xx, ${r.errors} errors`);
        return { rps: r.requests.average, p99: r.latency.p99, p50: r.latency.p50, peakRssMB, cpuMicrosPerRequest };
      });
      report.abuse = { results: res, abuser: abuseStats };
      const ratioTo = (name, field) => median(res[name].map((x, i) => x[field] / res.quiet[i][field]));
      say('\n## 5. Telemetry port abused: the Express service of scenario 2 (with Poolscope) while another process floods /metrics');
      say('| variant | requests/s × | app CPU per request × | p99 latency × | p50 latency × | median p99 ms | median req/s | peak RSS MB |');
      say('| --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const v of abuseList) {
        say(`| ${v.name} | ${fmt(ratioTo(v.name, 'rps'), 3)} | ${fmt(ratioTo(v.name, 'cpuMicrosPerRequest'), 3)} | ${fmt(ratioTo(v.name, 'p99'), 3)} | ${fmt(ratioTo(v.name, 'p50'), 3)} | ${median(res[v.name].map((x) => x.p99))} | ${Math.round(median(res[v.name].map((x) => x.rps)))} | ${fmt(median(res[v.name].map((x) => x.peakRssMB)), 0)} |`);
      }
      // What the abuse costs the app itself: the same attack on the same cores, at the app's port vs at another process's.
      const vsElsewhere = (field) => median(res.abused.map((x, i) => x[field] / res['abuse elsewhere'][i][field]));
      say(`\nAbused vs the same abuse aimed at another process: p99 ${fmt(vsElsewhere('p99'), 3)}×, p50 ${fmt(vsElsewhere('p50'), 3)}×, ` +
        `requests/s ${fmt(vsElsewhere('rps'), 3)}×, app CPU per request ${fmt(vsElsewhere('cpuMicrosPerRequest'), 3)}×.`);
      const a = abuseStats[abuseStats.length - 1];
      if (a) say(`\nAbuser (last repetition): ${a.connectsOpened} connections opened, ${a.connectsClosedByServer} closed by the server, ${a.scrapes} storm requests answered ${JSON.stringify(a.statuses)}; a scrape during the abuse got ${a.scrapeDuringAbuse}.`);
    }
    if (!only || only.includes('collection')) {
      const out = await run(['--expose-gc', path.join(root, 'bench', 'collection.mjs')], {
        DATABASE_URL: db.url, BENCH_SINK: sink.url, OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, BENCH_POOL_COUNTS: smoke ? '1,10' : '1,10,100',
      });
      report.collection = out;
      say('\n## 3. Collection cost (median of 21 scrapes / 11 exports)');
      say('| pools | /metrics scrape ms (another process scraping) | app CPU ms per scrape | scrape bytes | OTLP export ms | OTLP bytes |');
      say('| --- | --- | --- | --- | --- | --- |');
      for (const r of [out].flat()) say(`| ${r.pools} | ${fmt(r.scrapeMs)} | ${fmt(r.appCpuMsPerScrape)} | ${r.scrapeBytes} | ${fmt(r.otlpExportMs)} | ${r.otlpBytes} |`);
    }
    if (!only || only.includes('memory')) {
      const port = await freePort();
      const out = await run(['--expose-gc', '--import', register, appScript('memory.mjs')], {
        DATABASE_URL: db.url, OTEL_EXPORTER_PROMETHEUS_PORT: String(port), OTEL_LOG_LEVEL: 'error',
        BENCH_MEMORY_QUERIES: smoke ? '20000' : '1000000', BENCH_MEMORY_POOLS: smoke ? '40' : '1000',
      });
      report.memory = out;
      say(`\n## 4. Memory under the preload: ${out.queries} queries, then ${out.poolsToChurn} pools created, used and ended`);
      say('| checkpoint | heap MB | RSS MB |');
      say('| --- | --- | --- |');
      for (const c of out.checkpoints) say(`| ${c.label} | ${c.heapMB} | ${c.rssMB} |`);
      say(`\nSeries on /metrics after the churn: ${out.seriesAfterChurn}.`);
    }
    if (!only || only.includes('startup')) {
      const startup = [];
      for (const bin of nodeBinaries('start-up', say)) {
        startup.push(await run([path.join(root, 'bench', 'startup.mjs'), bin, String(smoke ? 2 : Number(process.env.BENCH_STARTUP_RUNS ?? 11))], {}));
      }
      report.startup = startup;
      say('\n## 6. Start-up: `import pg` and end a pool, plain and under the preload (median of paired runs)');
      say('| Node | plain ms | preload +ms | of which: `--import` flag | ESM loader hook | loading the bundle | starting | preload peak RSS +MB | loader thread, where started (Slonik, traces) +ms / +MB |');
      say('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const r of startup) {
        const v = Object.fromEntries(r.variants.map((x) => [x.name, x]));
        const flag = v['empty --import'].plusMs;
        const hook = v['loader hook only'].plusMs - flag;
        const bundle = v['preload, disabled'].plusMs - flag;
        const starting = v.preload.plusMs - flag - hook - bundle;
        say(`| ${r.node} | ${fmt(v.baseline.ms, 0)} | **${fmt(v.preload.plusMs, 0)}** | ${fmt(flag, 0)} | ${fmt(hook, 0)} | ${fmt(bundle, 0)} | ${fmt(starting, 0)} | ${fmt(v.preload.plusRssMB, 1)} | ${r.syncHooks ? 'none (in-thread hooks)' : `${fmt(v['loader thread only'].plusMs - flag, 0)} / ${fmt(v['loader thread only'].plusRssMB, 1)}`} |`);
      }
    }
    if (!only || only.includes('hooks')) {
      const [calls, reps] = smoke ? [20_000, 1] : [2_000_000, 7];
      const hooks = [];
      for (const node of nodeBinaries('hook cost', say)) {
        hooks.push(await run([path.join(root, 'bench', 'hook-cost.mjs'), String(calls), String(reps)], {}, { node }));
      }
      report.hooks = hooks;
      const names = Object.keys(hooks[0].nsPerCall);
      say(`\n## 7. One timed callback, by the way it is hooked: ns of CPU per call (median of ${reps} × ${calls})`);
      say(`| Node | ${names.join(' | ')} |`);
      say(`| --- |${' --- |'.repeat(names.length)}`);
      for (const r of hooks) say(`| ${r.node} | ${names.map((n) => r.nsPerCall[n]).join(' | ')} |`);
    }
  } finally {
    sink.close();
    await db.stop();
    rmSync(appDir, { recursive: true, force: true });
  }
  mkdirSync(path.join(root, '.cache', 'bench'), { recursive: true });
  writeFileSync(path.join(root, '.cache', 'bench', smoke ? 'smoke.json' : 'results.json'), JSON.stringify(report, null, 2));
  writeFileSync(path.join(root, '.cache', 'bench', smoke ? 'smoke.md' : 'results.md'), `${lines.join('\n')}\n`);
}

await main();
