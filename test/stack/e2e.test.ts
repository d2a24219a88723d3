/*
 * End to end, with the real programs as local processes on 127.0.0.1: PostgreSQL, the demo service
 * under the preload twice (one scraped by Prometheus, one pushing OTLP through the collector), the
 * OpenTelemetry Collector built from collector/builder-config.yaml, Prometheus 3 with the shipped config
 * and rules, two clustered Alertmanager peers with the shipped routing, and a webhook receiver here.
 */
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { dashboardPanelQueries, REGISTER, ROOT, waitFor } from '../helpers.js';
import { collectorEnv, StackProcesses, tool } from './stack-tools.js';

const DATABASE_URL = inject('databaseUrl');
const SCRAPED_JOB = 'poolscope-demo';
const PUSHED_JOB = 'poolscope-demo-otlp';
/** A third demo service, used only by the stuck and leak phase, so its alerts cannot mix with the saturation phase's. */
const STUCK_JOB = 'poolscope-demo-stuck';


interface Notification {
  receiver: 'pager' | 'chat';
  at: number;
  status: string;
  alerts: Array<{ status: string; labels: Record<string, string> }>;
  groupLabels: Record<string, string>;
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'poolscope-e2e-'));
const stack = new StackProcesses(tmp);
const notifications: Notification[] = [];
let hook: Server;
const ports: Record<string, number> = {};
let promUrl = '';
let stopLoad: (() => Promise<void>) | undefined;

async function promQuery(query: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(query)}`);
  const body = (await res.json()) as { status: string; error?: string; data: { result: never[] } };
  if (body.status !== 'success') throw new Error(`query failed: ${query}: ${body.error}`);
  return body.data.result;
}

/** Concurrent clients against the demo service's /work route; returns a stop function. */
function load(port: number, workers: number, holdMs: number, route: '/work' | '/transfer' = '/work'): () => Promise<void> {
  let stopped = false;
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped) {
      await fetch(`http://127.0.0.1:${port}${route}?ms=${holdMs}`).then((r) => r.arrayBuffer()).catch(() => undefined);
    }
  });
  return async () => {
    stopped = true;
    await Promise.all(loops);
  };
}

async function seed(): Promise<void> {
  const c = new pg.Client({ connectionString: DATABASE_URL });
  await c.connect();
  await c.query('CREATE TABLE IF NOT EXISTS demo_orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL)');
  await c.query(`INSERT INTO demo_orders SELECT g, 'customer-' || g, g / 10.0 FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING`);
  await c.end();
}

function startDemo(name: string, env: Record<string, string>): Promise<void> {
  const child = stack.start(name, process.execPath, ['--import', REGISTER, path.join(ROOT, 'demo', 'app.mjs')], {
    DATABASE_URL,
    OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1',
    DEMO_POOL_MAX: '10',
    DEMO_ACQUIRE_TIMEOUT_MS: '1500',
    POOLSCOPE_HEALTH_SAMPLE_INTERVAL: '1000',
    // Hold time and leaks by route (the "Hold time by route" panel has data only with routes on), and a
    // leak threshold a test request can cross in seconds instead of a minute.
    POOLSCOPE_POOL_ROUTES: 'true',
    POOLSCOPE_LEAK_THRESHOLD: '2000',
    ...env,
  });
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => { if (String(d).includes('LISTENING')) resolve(); });
    child.once('exit', () => reject(new Error(`${name} exited: ${stack.logOf(name)}`)));
  });
}

beforeAll(async () => {
  for (const name of ['prom', 'am1', 'am1Cluster', 'am2', 'am2Cluster', 'otelHttp', 'otelGrpc', 'otelHealth', 'otelMetrics',
    'scrapedApp', 'scrapedMetrics', 'pushedApp', 'pushedMetrics', 'stuckApp', 'stuckMetrics']) {
    ports[name] = await freePort();
  }
  promUrl = `http://127.0.0.1:${ports.prom}`;

  hook = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      const parsed = JSON.parse(body);
      notifications.push({ receiver: req.url === '/pager' ? 'pager' : 'chat', at: Date.now(), ...parsed });
      res.end('ok');
    });
  });
  hook.listen(0, '127.0.0.1');
  await once(hook, 'listening');
  const hookPort = (hook.address() as { port: number }).port;

  // Alertmanager: the shipped config, with the webhook URLs in files as in production.
  const amDir = path.join(tmp, 'alertmanager');
  mkdirSync(amDir, { recursive: true });
  writeFileSync(path.join(amDir, 'pager_url'), `http://127.0.0.1:${hookPort}/pager`);
  writeFileSync(path.join(amDir, 'chat_url'), `http://127.0.0.1:${hookPort}/chat`);
  writeFileSync(path.join(amDir, 'ticket_url'), `http://127.0.0.1:${hookPort}/ticket`);
  const amConfig = readFileSync(path.join(ROOT, 'alertmanager', 'alertmanager.yml'), 'utf8')
    .replaceAll('/etc/alertmanager/secrets/', `${amDir}/`);
  writeFileSync(path.join(amDir, 'alertmanager.yml'), amConfig);
  for (const [self, other] of [['am1', 'am2'], ['am2', 'am1']] as const) {
    stack.start(self, tool('alertmanager'), [
      `--config.file=${path.join(amDir, 'alertmanager.yml')}`,
      `--storage.path=${path.join(amDir, self)}`,
      `--web.listen-address=127.0.0.1:${ports[self]}`,
      `--cluster.listen-address=127.0.0.1:${ports[`${self}Cluster`]}`,
      `--cluster.advertise-address=127.0.0.1:${ports[`${self}Cluster`]}`,
      `--cluster.peer=127.0.0.1:${ports[`${other}Cluster`]}`,
    ]);
  }

  // Prometheus: the shipped config and rules; only the file_sd target files are written for this run.
  const promDir = path.join(tmp, 'prometheus');
  cpSync(path.join(ROOT, 'prometheus'), promDir, { recursive: true });
  const targets = (list: string[]) => `- targets: [${list.map((t) => `'${t}'`).join(', ')}]\n`;
  writeFileSync(path.join(promDir, 'targets', 'poolscope-demo.yml'), targets([`127.0.0.1:${ports.scrapedMetrics}`]));
  writeFileSync(path.join(promDir, 'targets', 'otel-collector.yml'), targets([`127.0.0.1:${ports.otelMetrics}`]));
  writeFileSync(path.join(promDir, 'targets', 'prometheus.yml'), targets([`127.0.0.1:${ports.prom}`]));
  writeFileSync(path.join(promDir, 'targets', 'alertmanager.yml'), targets([`127.0.0.1:${ports.am1}`, `127.0.0.1:${ports.am2}`]));
  stack.start('prometheus', tool('prometheus'), [
    `--config.file=${path.join(promDir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(promDir, 'data')}`,
    `--web.listen-address=127.0.0.1:${ports.prom}`,
    '--web.enable-otlp-receiver',
    '--enable-feature=otlp-deltatocumulative',
  ]);

  stack.start('collector', tool('poolscope-otelcol'), ['--config', path.join(ROOT, 'collector', 'otelcol-config.yaml')], {
    ...collectorEnv(ports, promUrl),
  });

  await Promise.all([
    stack.ready('prometheus', `${promUrl}/-/ready`),
    stack.ready('am1', `http://127.0.0.1:${ports.am1}/-/ready`),
    stack.ready('am2', `http://127.0.0.1:${ports.am2}/-/ready`),
    stack.ready('collector', `http://127.0.0.1:${ports.otelHealth}/`),
  ]);

  await seed();
  await Promise.all([
    startDemo('scraped-app', { OTEL_SERVICE_NAME: SCRAPED_JOB, PORT: String(ports.scrapedApp), OTEL_EXPORTER_PROMETHEUS_PORT: String(ports.scrapedMetrics) }),
    startDemo('pushed-app', {
      OTEL_SERVICE_NAME: PUSHED_JOB,
      PORT: String(ports.pushedApp),
      OTEL_EXPORTER_PROMETHEUS_PORT: String(ports.pushedMetrics),
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${ports.otelHttp}`,
      OTEL_METRIC_EXPORT_INTERVAL: '2000',
    }),
  ]);

  // Ordinary traffic on every route of both services, so every series exists on both paths.
  for (const port of [ports.scrapedApp, ports.pushedApp]) {
    for (let i = 1; i <= 20; i++) {
      for (const route of [`/orders/${i}`, '/reports/daily', '/broken', '/work?ms=5', '/orders/999999']) {
        await fetch(`http://127.0.0.1:${port}${route}`).then((r) => r.arrayBuffer());
      }
    }
  }
  // One checkout held past the leak threshold on each service, so the leak series (by route) exist.
  await Promise.all([ports.scrapedApp, ports.pushedApp].map((port) =>
    fetch(`http://127.0.0.1:${port}/work?ms=2500`).then((r) => r.arrayBuffer())));
  // A database-side disconnect of idle clients (as in a failover): each service's pool reports it as an
  // idle-client error, so the error panels and counters have data on both paths.
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE pid <> pg_backend_pid() AND datname = current_database() AND state = 'idle'`);
  await admin.end();
  await waitFor(async () => {
    const [a, b] = await Promise.all([
      promQuery(`poolscope_pool_errors_total{job="${SCRAPED_JOB}"}`),
      promQuery(`poolscope_pool_errors_total{job="${PUSHED_JOB}"}`),
    ]);
    return a.length > 0 && b.length > 0 ? true : undefined;
  }, 60_000, 500);
}, 240_000);

afterAll(async () => {
  await stopLoad?.();
  await stack.stopAll();
  hook?.close();
  if (process.env.POOLSCOPE_KEEP_E2E !== '1') rmSync(tmp, { recursive: true, force: true });
});

describe('telemetry stack end to end', () => {
  it('stores the same metric names and labels whether scraped or pushed through the collector', async () => {
    const names = async (job: string) => new Set((await promQuery(`group by (__name__) ({job="${job}", __name__=~"db_.*|poolscope_.*|http_.*"})`))
      .map((r) => r.metric.__name__));
    const scraped = await names(SCRAPED_JOB);
    const pushed = await names(PUSHED_JOB);
    expect(scraped.size).toBeGreaterThanOrEqual(20);
    expect([...pushed].sort()).toEqual([...scraped].sort());
    for (const metric of ['db_client_operation_duration_seconds_bucket', 'db_client_connection_count', 'http_server_request_duration_seconds_count']) {
      const labelsOf = async (job: string) => new Set((await promQuery(`${metric}{job="${job}"}`))
        .flatMap((r) => Object.keys(r.metric)).filter((k) => k !== 'instance'));
      expect([...(await labelsOf(PUSHED_JOB))].sort(), metric).toEqual([...(await labelsOf(SCRAPED_JOB))].sort());
    }
    const collectorUp = await waitFor(async () => {
      const up = await promQuery('up{job="otel-collector"}');
      return up.length > 0 ? up : undefined;
    }, 30_000, 500);
    expect(collectorUp.map((r) => r.value[1])).toEqual(['1']);
    // The collector's own throughput reaches the recording rule the collector alerts are built on.
    await waitFor(async () => ((await promQuery('job_instance_exporter:otelcol_exporter_sent_metric_points:rate1m > 0')).length > 0 ? true : undefined), 60_000, 1000);
  });

  it('pages the critical pool alert within 60 s of saturation, once through two clustered Alertmanagers, for both paths, then resolves it', async () => {
    const onset = Date.now();
    const stops = [load(ports.scrapedApp, 40, 600), load(ports.pushedApp, 40, 600)];
    stopLoad = async () => { await Promise.all(stops.map((s) => s())); };
    const firing = (job: string) => notifications.find((n) => n.receiver === 'pager' && n.status === 'firing' &&
      n.alerts.some((a) => a.labels.alertname === 'PoolUtilizationCritical' && a.labels.job === job && a.labels.db_client_connection_pool_name === 'orders-db'));
    const first = await waitFor(() => firing(SCRAPED_JOB), 120_000, 250);
    const pushed = await waitFor(() => firing(PUSHED_JOB), 60_000, 250);
    const latency = (first.at - onset) / 1000;
    const pushedLatency = (pushed.at - onset) / 1000;
    console.log(`saturation onset → page: ${latency.toFixed(1)} s (scraped), ${pushedLatency.toFixed(1)} s (OTLP via collector)`);
    mkdirSync(path.join(ROOT, '.cache', 'results'), { recursive: true });
    writeFileSync(path.join(ROOT, '.cache', 'results', 'e2e-page-latency.txt'),
      `scraped ${latency.toFixed(1)}\notlp ${pushedLatency.toFixed(1)}\n`);
    expect(latency).toBeLessThan(60);
    expect(pushedLatency).toBeLessThan(60);

    // Warnings go to chat, never to the pager; the critical alert was not notified twice by the HA pair.
    await new Promise((r) => setTimeout(r, 20_000));
    await stopLoad();
    stopLoad = undefined;
    expect(notifications.filter((n) => n.receiver === 'pager' && n.alerts.some((a) => a.labels.severity === 'warning'))).toEqual([]);
    const pagesFor = (job: string) => notifications.filter((n) => n.receiver === 'pager' && n.status === 'firing' &&
      n.groupLabels.alertname === 'PoolUtilizationCritical' && n.groupLabels.job === job);
    expect(pagesFor(SCRAPED_JOB)).toHaveLength(1);
    expect(pagesFor(PUSHED_JOB)).toHaveLength(1);
    const timeouts = await promQuery(`sum by (job) (db_client_connection_timeouts_total{db_client_connection_pool_name="orders-db"})`);
    expect(timeouts.map((r) => r.metric.job).sort()).toEqual([SCRAPED_JOB, PUSHED_JOB].sort());

    const resolved = await waitFor(() => notifications.find((n) => n.receiver === 'pager' && n.status === 'resolved' &&
      n.groupLabels.alertname === 'PoolUtilizationCritical' && n.groupLabels.job === SCRAPED_JOB), 180_000, 500);
    console.log(`load stopped → resolved notification: ${((resolved.at - onset) / 1000).toFixed(1)} s after onset`);
  }, 420_000);

  it('keeps readiness at 200 for a busy pool, then pages PoolStuck (and the 5xx burst\'s fast burn) and posts the leak to chat once every connection is held', async () => {
    await startDemo('stuck-app', {
      OTEL_SERVICE_NAME: STUCK_JOB,
      PORT: String(ports.stuckApp),
      OTEL_EXPORTER_PROMETHEUS_PORT: String(ports.stuckMetrics),
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${ports.otelHttp}`,
      OTEL_METRIC_EXPORT_INTERVAL: '2000',
      DEMO_POOL_MAX: '3',
      POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '2000',
    });
    const port = ports.stuckApp;
    const readiness = async () => {
      const res = await fetch(`http://127.0.0.1:${ports.stuckMetrics}/health/database`);
      return { code: res.status, body: (await res.json()) as { status: string; stuck: boolean; pools: { name: string; stuckReason?: string }[] } };
    };
    const since = Date.now();
    const after = (n: Notification) => n.at >= since;

    // Busy: 6 callers on 3 connections, 300 ms each: always full and queueing, but every wait (≤ ~600 ms) ends
    // well before the 1.5 s acquire timeout. Readiness stays 200 the whole time.
    const busy = load(port, 6, 300);
    const busyCodes: number[] = [];
    let sawFull = false;
    try {
      for (let i = 0; i < 12; i++) {
        await new Promise((r) => setTimeout(r, 500));
        const { code, body } = await readiness();
        busyCodes.push(code);
        if (body.status === 'critical') sawFull = true;
        expect(body.stuck).toBe(false);
      }
    } finally {
      await busy();
    }
    expect(busyCodes.every((c) => c === 200), busyCodes.join(',')).toBe(true);
    expect(sawFull).toBe(true);

    // Stuck: three 10 s holds take every connection while other callers time out waiting (1.5 s). Each
    // hold is a transaction left open while the handler waits, so it crosses both the 2 s leak threshold and
    // the 2 s idle-in-transaction threshold.
    const onset = Date.now();
    const holders = load(port, 3, 10_000, '/transfer');
    const waiters = load(port, 3, 5);
    try {
      const unready = await waitFor(async () => {
        const r = await readiness();
        return r.code === 503 ? r : undefined;
      }, 30_000, 250);
      expect(unready.body.pools.find((p) => p.name === 'orders-db')?.stuckReason).toMatch(/^(acquire_timeouts|no_progress)$/);
      const page = await waitFor(() => notifications.find((n) => after(n) && n.receiver === 'pager' && n.status === 'firing' &&
        n.alerts.some((a) => a.labels.alertname === 'PoolStuck' && a.labels.job === STUCK_JOB && a.labels.db_client_connection_pool_name === 'orders-db')), 90_000, 250);
      const leak = await waitFor(() => notifications.find((n) => after(n) && n.receiver === 'chat' && n.status === 'firing' &&
        n.alerts.some((a) => a.labels.alertname === 'PoolConnectionLeaks' && a.labels.job === STUCK_JOB)), 120_000, 250);
      const idleTx = await waitFor(() => notifications.find((n) => after(n) && n.receiver === 'chat' && n.status === 'firing' &&
        n.alerts.some((a) => a.labels.alertname === 'PoolIdleInTransaction' && a.labels.job === STUCK_JOB)), 120_000, 250);
      // The callers that time out get a 503 (/work answers 503 when the query fails): a burst of 5xx on a service
      // with none before burns its availability budget far above 14.4× on both the 1h and 5m windows: a fast-burn page.
      const burn = await waitFor(() => notifications.find((n) => after(n) && n.receiver === 'pager' && n.status === 'firing' &&
        n.alerts.some((a) => a.labels.alertname === 'HttpAvailabilityBudgetBurn' && a.labels.job === STUCK_JOB && a.labels.long_window === '1h')), 180_000, 250);
      const pageSeconds = (page.at - onset) / 1000;
      const leakSeconds = (leak.at - onset) / 1000;
      const burnSeconds = (burn.at - onset) / 1000;
      const idleTxSeconds = (idleTx.at - onset) / 1000;
      console.log(`stuck onset → PoolStuck page: ${pageSeconds.toFixed(1)} s; first leak hold → PoolConnectionLeaks in chat: ` +
        `${leakSeconds.toFixed(1)} s; first idle transaction → PoolIdleInTransaction in chat: ${idleTxSeconds.toFixed(1)} s; ` +
        `first 5xx → HttpAvailabilityBudgetBurn page: ${burnSeconds.toFixed(1)} s`);
      mkdirSync(path.join(ROOT, '.cache', 'results'), { recursive: true });
      writeFileSync(path.join(ROOT, '.cache', 'results', 'e2e-stuck-leak-latency.txt'),
        `stuck-page ${pageSeconds.toFixed(1)}\nleak-chat ${leakSeconds.toFixed(1)}\nidle-tx-chat ${idleTxSeconds.toFixed(1)}\nburn-page ${burnSeconds.toFixed(1)}\n`);
      expect(pageSeconds).toBeLessThan(60);
      // The page goal. It failed (67–125 s) while the fast-burn rules were evaluated once a minute, like the slower pairs.
      expect(burnSeconds).toBeLessThan(60);
      expect(page.alerts.find((a) => a.labels.alertname === 'PoolStuck')!.labels.poolscope_stuck_reason).toMatch(/^(acquire_timeouts|no_progress)$/);
      // The busy phase never paged PoolStuck for this service: the only page is the one after the onset.
      expect(notifications.filter((n) => n.receiver === 'pager' && n.at < onset && n.groupLabels.job === STUCK_JOB)).toEqual([]);
    } finally {
      await Promise.all([holders(), waiters()]);
    }
  }, 300_000);

  it('answers every dashboard panel query with data from the real Prometheus', async () => {
    const empty: string[] = [];
    let checked = 0;
    for (const { where, expr } of dashboardPanelQueries(`${SCRAPED_JOB}|${PUSHED_JOB}|${STUCK_JOB}`)) {
      // Not produced by this run: the per-server budget series, which need the collector's postgresql
      // receiver (collector/otelcol-postgresql.yaml); test/stack/budget.test.ts checks those panels.
      if (/server:|postgresql_/.test(expr)) continue;
      checked++;
      if ((await promQuery(expr)).length === 0) empty.push(`${where}: ${expr}`);
    }
    expect(checked).toBeGreaterThan(20);
    expect(empty).toEqual([]);
  });
});
