// npm run demo: embedded PostgreSQL (or $DATABASE_URL), the demo service under --import ./dist/register.js,
// and a load generator that walks the main pool from healthy to warning to critical and back.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { bindable, freePort, startPostgres } from '../scripts/postgres.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const env = process.env;
const appHost = env.DEMO_HOST ?? '127.0.0.1';
const metricsHost = env.OTEL_EXPORTER_PROMETHEUS_HOST ?? '127.0.0.1';
let appPort;
let metricsPort;
const poolMax = Number(env.DEMO_POOL_MAX ?? 10);
const cycles = Number(env.DEMO_CYCLES ?? 0); // 0 = until Ctrl-C
const quiet = env.DEMO_QUIET === '1';

// Each phase: concurrent clients, and how long each request holds a connection.
// Utilization ≈ workers / max while workers < max; above max, requests queue (pending) and time out.
const PHASES = {
  healthy: { workers: Math.round(poolMax * 0.3), holdMs: 200 },
  warning: { workers: Math.round(poolMax * 0.85), holdMs: 300 },
  critical: { workers: poolMax * 4, holdMs: 600 },
  recovery: { workers: Math.round(poolMax * 0.2), holdMs: 100 },
};
const schedule = (env.DEMO_PHASES ?? 'healthy:15,warning:15,critical:20,recovery:15').split(',').map((p) => {
  const [name, seconds] = p.split(':');
  if (!PHASES[name]) throw new Error(`DEMO_PHASES: unknown phase ${name} (known: ${Object.keys(PHASES).join(', ')})`);
  return { name, seconds: Number(seconds) };
});

let stopping = false;
let db;
let app;

/** A setting the demo cannot run with: said in one line, without a stack trace. */
class DemoSetupError extends Error {}

// Any error but a port in use (a host that is not this machine's, say) reads as not free too.
const isFree = (port, host) => bindable(port, host).then((bound) => bound !== undefined, () => false);

/**
 * The port set in `name`, which must be free, else `fallback`, else any free port. With 9464 taken by another
 * service, the status lines read that service's /health/database and printed "overall unknown" while the demo's
 * own telemetry server had no port.
 */
async function choosePort(name, host, fallback, what) {
  if (env[name]) {
    if (!(await isFree(Number(env[name]), host))) throw new DemoSetupError(`${name}=${env[name]} is in use by another process; set ${name} to a free port.`);
    return Number(env[name]);
  }
  if (await isFree(fallback, host)) return fallback;
  const port = await freePort();
  console.log(`Port ${fallback} is in use by another process: ${what} uses ${port} (set ${name} to choose).`);
  return port;
}

async function main() {
  appPort = await choosePort('PORT', appHost, 3000, 'the demo service');
  metricsPort = await choosePort('OTEL_EXPORTER_PROMETHEUS_PORT', metricsHost, 9464, "Poolscope's /metrics and /health");
  if (env.DATABASE_URL) {
    db = { url: env.DATABASE_URL, stop: async () => {} };
    console.log(`PostgreSQL: using DATABASE_URL`);
  } else {
    db = await startPostgres();
    console.log(`PostgreSQL: embedded server on 127.0.0.1:${db.port}`);
  }
  await seed(db.url);

  app = spawn(process.execPath, ['--import', path.join(root, 'dist', 'register.js'), path.join(root, 'demo', 'app.mjs')], {
    env: {
      ...env,
      DATABASE_URL: db.url,
      PORT: String(appPort),
      DEMO_HOST: appHost,
      OTEL_SERVICE_NAME: env.OTEL_SERVICE_NAME ?? 'poolscope-demo',
      OTEL_EXPORTER_PROMETHEUS_HOST: metricsHost,
      OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
      POOLSCOPE_HEALTH_SAMPLE_INTERVAL: env.POOLSCOPE_HEALTH_SAMPLE_INTERVAL ?? '1000',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  app.on('exit', (code, signal) => {
    if (!stopping) {
      console.error(`demo app exited (${signal ?? code})`);
      void shutdown(1);
    }
  });
  await new Promise((resolve) => app.stdout.on('data', (d) => { if (String(d).includes('LISTENING')) resolve(); }));

  const base = `http://${appHost === '0.0.0.0' ? '127.0.0.1' : appHost}:${appPort}`;
  const telemetry = `http://${metricsHost === '0.0.0.0' ? '127.0.0.1' : metricsHost}:${metricsPort}`;
  console.log(`Demo service:     ${base}/orders/1`);
  console.log(`Prometheus:       ${telemetry}/metrics`);
  console.log(`Pool health:      ${telemetry}/health/database`);
  console.log(`Phases:           ${schedule.map((p) => `${p.name} ${p.seconds}s`).join(' → ')}${cycles ? ` × ${cycles}` : ', repeating (Ctrl-C stops)'}`);

  for (let cycle = 0; !stopping && (cycles === 0 || cycle < cycles); cycle++) {
    for (const phase of schedule) {
      if (stopping) break;
      await runPhase(base, telemetry, phase);
    }
  }
  await shutdown(0);
}

async function seed(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`CREATE TABLE IF NOT EXISTS demo_orders (
    id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL)`);
  await client.query(`INSERT INTO demo_orders
    SELECT g, 'customer-' || (g % 500), (g % 997) / 10.0 FROM generate_series(1, 10000) g ON CONFLICT DO NOTHING`);
  await client.end();
}

async function runPhase(base, telemetry, { name, seconds }) {
  const { workers, holdMs } = PHASES[name];
  const until = Date.now() + seconds * 1000;
  const stats = { ok: 0, failed: 0 };
  const worker = async (i) => {
    while (!stopping && Date.now() < until) {
      const url = i % 7 === 6 ? `${base}/orders/${1 + Math.floor(Math.random() * 10000)}`
        : i % 11 === 10 ? `${base}/reports/daily`
          : i % 13 === 12 ? `${base}/broken`
            : `${base}/work?ms=${holdMs}`;
      try {
        const res = await fetch(url);
        await res.arrayBuffer();
        if (res.ok) stats.ok++; else stats.failed++;
      } catch {
        stats.failed++;
        await sleep(100);
      }
    }
  };
  const ticker = setInterval(() => void status(telemetry, name, stats), 1000);
  await Promise.all(Array.from({ length: workers }, (_, i) => worker(i)));
  clearInterval(ticker);
}

async function status(telemetry, phase, stats) {
  if (stopping) return;
  try {
    const health = await (await fetch(`${telemetry}/health/database`)).json();
    const metrics = await (await fetch(`${telemetry}/metrics`)).text();
    const timeouts = metrics.split('\n')
      .filter((l) => l.startsWith('db_client_connection_timeouts_total'))
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    const pools = health.pools.map((p) =>
      `${p.name} ${p.status.padEnd(8)} used ${p.used}/${p.max} idle ${p.idle} pending ${p.pending} util ${Math.round(p.utilization * 100)}%`).join(' | ');
    const line = `[${new Date().toISOString().slice(11, 19)}] phase ${phase.padEnd(8)} overall ${health.status.padEnd(8)} ${pools} | timeouts ${timeouts} | requests ok ${stats.ok} failed ${stats.failed}`;
    if (!quiet) console.log(line);
  } catch (err) {
    if (!quiet) console.log(`status unavailable: ${err.message}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function shutdown(code) {
  if (stopping && code !== 1) return;
  stopping = true;
  if (app && app.exitCode === null && app.signalCode === null) {
    const exited = new Promise((r) => app.once('exit', r));
    app.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
  }
  await db?.stop();
  process.exit(code);
}

process.on('SIGINT', () => { console.log('\nstopping…'); void shutdown(0); });
// `npm run demo | head`: the reader went away. Without a listener the EPIPE ended this process at once and left
// the service running, holding its ports.
process.stdout.on('error', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
main().catch((err) => {
  // A PostgreSQL start failure already says what went wrong and how to fix it: no stack trace.
  console.error(err?.name === 'PostgresStartError' || err instanceof DemoSetupError ? err.message : err);
  void shutdown(1);
});
