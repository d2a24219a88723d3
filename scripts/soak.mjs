#!/usr/bin/env node
// Soak test (not run in CI): the demo app (demo/app.mjs under --import dist/register.js) against its own
// PostgreSQL, under load, with faults injected in turn: PostgreSQL restart, collector outage (a fake OTLP
// endpoint answering 503, then hanging), pool exhaustion bursts. It samples Poolscope's view (/metrics,
// /health/database) and the pools' true state (test/fixtures/rel-soak-truth.mjs, preloaded after Poolscope)
// and reports any drift between them. Exit code 1 on drift, on a dead app, or on unbounded memory growth.
//
//   npm run build && node scripts/soak.mjs
//   SOAK_DURATION_SECONDS=120 node scripts/soak.mjs        (default 600)
//   SOAK_FAULT_EVERY_SECONDS=20  SOAK_WORKERS=8  SOAK_MAX_RSS_GROWTH_MB=100  SOAK_REPORT=/tmp/soak.json
//   POOLSCOPE_DIST=/path/to/dist (another build; default ./dist)
//
// Drift is checked two ways: (1) every second, /health/database against the pools' counters read in the same
// tick inside the app — these must be equal, even under load; (2) at a checkpoint after each fault, with the
// load paused and the pools drained, /metrics (used, idle, pending, timeouts, errors by error.type) against the
// truth — these must be equal. /metrics sampled under load is only reported (it is not the same instant).
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort, startPostgres } from './postgres.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const DURATION_MS = Number(env.SOAK_DURATION_SECONDS ?? 600) * 1000;
const FAULT_EVERY_MS = Number(env.SOAK_FAULT_EVERY_SECONDS ?? 30) * 1000;
const WORKERS = Number(env.SOAK_WORKERS ?? 6);
const SAMPLE_MS = Number(env.SOAK_SAMPLE_MS ?? 1000);
const MAX_RSS_GROWTH = Number(env.SOAK_MAX_RSS_GROWTH_MB ?? 100) * 1024 * 1024;
const DIST = env.POOLSCOPE_DIST ?? path.join(root, 'dist'); // another build, e.g. to see the soak fail on a broken one
const POOL_MAX = 10;
const ACQUIRE_TIMEOUT_MS = 1500;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s`;
const log = (msg) => console.log(`[soak ${elapsed()}] ${msg}`);

const report = {
  durationSeconds: DURATION_MS / 1000, faults: [], checkpoints: 0, sameTickSamples: 0, drift: [], metricsUnderLoadMaxDiff: 0,
  requests: {}, otlp: { pushes: 0, seriesResets: 0, decreases: 0 }, rss: [], appStderrLines: 0, appDied: false,
};
const drift = (kind, detail) => {
  report.drift.push({ at: elapsed().trim(), kind, detail });
  log(`DRIFT ${kind}: ${JSON.stringify(detail)}`);
};

// ---- fake OTLP collector -------------------------------------------------------------------------------
let collectorMode = 'ok';
const lastSeries = new Map(); // series key -> { start, count }
const collector = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (collectorMode === '503') { res.writeHead(503); return res.end(); }
    if (collectorMode === 'hang') return undefined;
    report.otlp.pushes++;
    try { checkContinuity(JSON.parse(body)); } catch (err) { drift('otlp-parse', String(err)); }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
/** Cumulative counters and histograms never go back and never restart (same start time). */
function checkContinuity(body) {
  for (const rm of body.resourceMetrics ?? []) for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) {
    const points = m.sum?.isMonotonic ? m.sum.dataPoints : m.histogram?.dataPoints;
    for (const dp of points ?? []) {
      const key = `${m.name}${JSON.stringify(dp.attributes)}`;
      const count = Number(dp.count ?? dp.asInt ?? dp.asDouble);
      const prev = lastSeries.get(key);
      if (prev && prev.start !== String(dp.startTimeUnixNano)) { report.otlp.seriesResets++; drift('otlp-reset', key); }
      if (prev && count < prev.count) { report.otlp.decreases++; drift('otlp-decrease', { key, from: prev.count, to: count }); }
      lastSeries.set(key, { start: String(dp.startTimeUnixNano), count });
    }
  }
}

// ---- helpers -------------------------------------------------------------------------------------------
async function getJson(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return res.json();
}
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((p) => [p[1], p[2]]));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
const pick = (samples, name, labels) => samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
const sum = (xs) => xs.reduce((a, s) => a + s.value, 0);

// ---- load ----------------------------------------------------------------------------------------------
let loadOn = true;
let stopping = false;
const inFlight = new Set();
async function request(url) {
  const p = (async () => {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(15_000) });
      await res.arrayBuffer();
      report.requests[res.status] = (report.requests[res.status] ?? 0) + 1;
    } catch {
      report.requests.failed = (report.requests.failed ?? 0) + 1;
    }
  })();
  inFlight.add(p);
  await p;
  inFlight.delete(p);
}
async function worker(appUrl, i) {
  const paths = ['/work?ms=80', '/orders/1', '/work?ms=150', '/reports/daily', '/broken', '/orders/999999'];
  for (let n = 0; !stopping; n++) {
    if (!loadOn) { await sleep(50); continue; }
    await request(`${appUrl}${paths[(n + i) % paths.length]}`);
  }
}

// ---- faults --------------------------------------------------------------------------------------------
async function faultPgRestart(db) {
  await db.stopServer();
  await sleep(2000);
  await db.startServer();
}
async function faultCollectorOutage() {
  collectorMode = '503';
  await sleep(Math.min(8000, FAULT_EVERY_MS / 3));
  collectorMode = 'hang';
  await sleep(Math.min(8000, FAULT_EVERY_MS / 3));
  collectorMode = 'ok';
  const pushes = report.otlp.pushes;
  const deadline = Date.now() + 10_000;
  while (report.otlp.pushes === pushes && Date.now() < deadline) await sleep(200);
  if (report.otlp.pushes === pushes) drift('otlp-not-resumed', 'no push within 10 s of the collector answering again');
}
async function faultExhaustion(appUrl) {
  // 4× the pool for 2.5 s each: the queue times out after 1.5 s.
  await Promise.all(Array.from({ length: POOL_MAX * 4 }, () => request(`${appUrl}/work?ms=2500`)));
}

// ---- checks --------------------------------------------------------------------------------------------
async function sameTickCheck(truthUrl) {
  const { truth, health, rss } = await getJson(truthUrl);
  report.sameTickSamples++;
  for (const t of truth) {
    const h = health?.find((p) => p.name === t.name);
    const expected = { used: t.total - t.idle, idle: t.idle, pending: t.waiting };
    if (!h) drift('health-missing-pool', t.name);
    else if (h.used !== expected.used || h.idle !== expected.idle || h.pending !== expected.pending) {
      drift('health-vs-truth', { pool: t.name, health: h, truth: expected });
    }
  }
  return { truth, rss };
}
async function metricsUnderLoad(metricsUrl, truthUrl) {
  const [text, { truth }] = await Promise.all([fetch(`${metricsUrl}/metrics`).then((r) => r.text()), getJson(truthUrl)]);
  const s = parseMetrics(text);
  for (const t of truth) {
    const used = sum(pick(s, 'db_client_connection_count', { db_client_connection_pool_name: t.name, db_client_connection_state: 'used' }));
    report.metricsUnderLoadMaxDiff = Math.max(report.metricsUnderLoadMaxDiff, Math.abs(used - (t.total - t.idle)));
    if (used > t.max || used < 0) drift('metrics-out-of-range', { pool: t.name, used });
  }
}
async function checkpoint(label, metricsUrl, truthUrl) {
  loadOn = false;
  await Promise.all([...inFlight]);
  // Drained: nobody waiting, nothing checked out (idle clients may remain).
  const deadline = Date.now() + 20_000;
  let truth;
  for (;;) {
    ({ truth } = await getJson(truthUrl));
    if (truth.every((t) => t.waiting === 0 && t.total === t.idle) || Date.now() > deadline) break;
    await sleep(100);
  }
  await sleep(200);
  const [text, now] = await Promise.all([fetch(`${metricsUrl}/metrics`).then((r) => r.text()), getJson(truthUrl)]);
  truth = now.truth;
  const s = parseMetrics(text);
  report.checkpoints++;
  const summary = [];
  for (const t of truth) {
    const L = { db_client_connection_pool_name: t.name };
    const got = {
      used: sum(pick(s, 'db_client_connection_count', { ...L, db_client_connection_state: 'used' })),
      idle: sum(pick(s, 'db_client_connection_count', { ...L, db_client_connection_state: 'idle' })),
      pending: sum(pick(s, 'db_client_connection_pending_requests', L)),
      timeouts: sum(pick(s, 'db_client_connection_timeouts_total', L)),
      errors: Object.fromEntries(pick(s, 'poolscope_pool_errors_total', L).map((x) => [x.labels.error_type, x.value])),
    };
    const want = { used: t.total - t.idle, idle: t.idle, pending: t.waiting, timeouts: t.timeouts, errors: t.errors };
    const sortKeys = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).sort()));
    if (got.used !== want.used || got.idle !== want.idle || got.pending !== want.pending || got.timeouts !== want.timeouts
      || sortKeys(got.errors) !== sortKeys(want.errors)) {
      drift('metrics-vs-truth', { checkpoint: label, pool: t.name, metrics: got, truth: want });
    }
    summary.push(`${t.name}: used=${got.used} idle=${got.idle} timeouts=${got.timeouts} errors=${sortKeys(got.errors)}`);
  }
  log(`checkpoint after ${label}: ${summary.join('; ')}`);
  loadOn = true;
}

// ---- main ----------------------------------------------------------------------------------------------
async function main() {
  const db = await startPostgres();
  log(`PostgreSQL on 127.0.0.1:${db.port}`);
  const seed = new pg.Client({ connectionString: db.url });
  await seed.connect();
  await seed.query('CREATE TABLE IF NOT EXISTS demo_orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL)');
  await seed.query("INSERT INTO demo_orders (customer, total) SELECT 'c' || g, g * 1.5 FROM generate_series(1, 100) g");
  await seed.end();

  collector.listen(0, '127.0.0.1');
  await once(collector, 'listening');
  const [appPort, metricsPort, truthPort] = [await freePort(), await freePort(), await freePort()];
  const app = spawn(process.execPath, [
    '--import', path.join(DIST, 'register.js'),
    '--import', path.join(root, 'test', 'fixtures', 'rel-soak-truth.mjs'),
    path.join(root, 'demo', 'app.mjs'),
  ], {
    env: {
      ...env, DATABASE_URL: db.url, PORT: String(appPort), DEMO_POOL_MAX: String(POOL_MAX),
      DEMO_ACQUIRE_TIMEOUT_MS: String(ACQUIRE_TIMEOUT_MS), SOAK_TRUTH_PORT: String(truthPort),
      OTEL_SERVICE_NAME: 'poolscope-soak', OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      OTEL_METRICS_EXPORTER: 'prometheus,otlp', OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collector.address().port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', // the fake collector decodes OTLP/JSON
      OTEL_METRIC_EXPORT_INTERVAL: '1000', POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '1000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let appErr = '';
  app.stderr.on('data', (d) => {
    appErr += d;
    for (const line of String(d).split('\n')) if (line.trim()) { report.appStderrLines++; log(`app stderr: ${line.slice(0, 200)}`); }
  });
  app.on('exit', (code, signal) => { if (!stopping) { report.appDied = true; drift('app-died', { code, signal }); } });
  await new Promise((resolve, reject) => {
    let out = '';
    app.stdout.on('data', (d) => { out += d; if (/LISTENING/.test(out)) resolve(); });
    setTimeout(() => reject(new Error(`demo app did not start: ${appErr}`)), 20_000);
  });
  const appUrl = `http://127.0.0.1:${appPort}`;
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  const truthUrl = `http://127.0.0.1:${truthPort}/`;
  log(`demo app ${appUrl}, metrics ${metricsUrl}, fake collector :${collector.address().port}; ${DURATION_MS / 1000}s, fault every ${FAULT_EVERY_MS / 1000}s`);

  const workers = Array.from({ length: WORKERS }, (_, i) => worker(appUrl, i));
  let sampling = true;
  const sampler = (async () => {
    while (sampling && !report.appDied) {
      try {
        if (loadOn) {
          const { rss } = await sameTickCheck(truthUrl);
          report.rss.push(rss);
          await metricsUnderLoad(metricsUrl, truthUrl);
        }
      } catch (err) {
        if (!stopping) drift('sample-failed', String(err?.message ?? err));
      }
      await sleep(SAMPLE_MS);
    }
  })();

  const faults = [
    ['pg-restart', () => faultPgRestart(db)],
    ['collector-outage', () => faultCollectorOutage()],
    ['pool-exhaustion', () => faultExhaustion(appUrl)],
  ];
  await sleep(Math.min(5000, FAULT_EVERY_MS / 2));
  await checkpoint('warm-up', metricsUrl, truthUrl);
  for (let i = 0; Date.now() - started < DURATION_MS - 5000 && !report.appDied; i++) {
    const [name, run] = faults[i % faults.length];
    log(`fault: ${name}`);
    report.faults.push(name);
    const t0 = Date.now();
    await run();
    await sleep(2000); // recovery under load
    await checkpoint(name, metricsUrl, truthUrl);
    const rest = FAULT_EVERY_MS - (Date.now() - t0);
    if (rest > 0) await sleep(Math.min(rest, Math.max(0, DURATION_MS - (Date.now() - started))));
  }

  stopping = true;
  sampling = false;
  await Promise.all([...workers, sampler]);
  // Memory: compare the median RSS of the first and last tenth of the samples.
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const tenth = Math.max(1, Math.floor(report.rss.length / 10));
  const growth = med(report.rss.slice(-tenth)) - med(report.rss.slice(0, tenth));
  report.rssGrowthMB = Math.round(growth / 1024 / 1024);
  if (growth > MAX_RSS_GROWTH) drift('memory', { growthMB: report.rssGrowthMB });
  if (/^\s+at |Unhandled|\(node:\d+\)/m.test(appErr)) drift('app-stderr', appErr.slice(0, 2000));
  report.rss = `${report.rss.length} samples`;
  app.kill('SIGTERM');
  await Promise.race([once(app, 'exit'), sleep(7000)]);
  if (app.exitCode === null && app.signalCode === null) app.kill('SIGKILL');
  collector.closeAllConnections();
  collector.close();
  await db.stop();

  const ok = report.drift.length === 0;
  console.log(JSON.stringify(report, null, 2));
  if (env.SOAK_REPORT) writeFileSync(env.SOAK_REPORT, JSON.stringify(report, null, 2));
  log(ok ? 'PASS: no drift between reported and true pool state' : `FAIL: ${report.drift.length} drift finding(s)`);
  process.exit(ok ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
