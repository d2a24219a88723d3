import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

/*
 * The shipped Prometheus and Alertmanager configuration, checked with the real tools: promtool loads the
 * config and rules and runs the rule unit tests (prometheus/tests), amtool validates the Alertmanager
 * config and routes every alert, and a real Alertmanager shows that inhibition mutes exactly the warning
 * twin of a critical alert. The binaries come from POOLSCOPE_TOOLS_BIN or <repo>/.cache/tools/bin
 * (scripts/build-tools.sh builds them); a missing binary fails the test, it is never skipped.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TOOLS_BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache', 'tools', 'bin');
const PROM_DIR = path.join(ROOT, 'prometheus');
const RULES_DIR = path.join(PROM_DIR, 'rules');
const TESTS_DIR = path.join(PROM_DIR, 'tests');
const AM_CONFIG = path.join(ROOT, 'alertmanager', 'alertmanager.yml');
const SECRETS_DIR = '/etc/alertmanager/secrets/';
const RUNBOOK_BASE = 'https://github.com/poolscope/poolscope/blob/main/RUNBOOK.md#';
const DASHBOARD_UIDS = ['poolscope-pools', 'poolscope-queries', 'poolscope-http', 'poolscope-alerts'];

function tool(name: string): string {
  const bin = path.join(TOOLS_BIN, name);
  if (!fs.existsSync(bin)) {
    throw new Error(
      `${name} not found at ${bin}. Build it with scripts/build-tools.sh (Prometheus 3.9 / Alertmanager 0.31 ` +
        'from the Go module proxy) or point POOLSCOPE_TOOLS_BIN at a directory that has it.',
    );
  }
  return bin;
}

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
  output: string;
}

function run(name: string, args: string[], cwd = ROOT): Result {
  const r = spawnSync(tool(name), args, { cwd, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, output: `${r.stdout}\n${r.stderr}` };
}

function yamlFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.yml'))
    .sort()
    .map((f) => path.join(dir, f));
}

interface RuleFile {
  groups: { name: string; rules: Record<string, unknown>[] }[];
}

interface AlertRule {
  alert: string;
  severity: string;
  family: string | undefined;
  runbookUrl: string | undefined;
  dashboardUrl: string | undefined;
}

function ruleFile(name: string): RuleFile {
  return parseYaml(fs.readFileSync(path.join(RULES_DIR, name), 'utf8')) as RuleFile;
}

function alertRules(): AlertRule[] {
  return ruleFile('alerts.yml').groups.flatMap((g) =>
    g.rules.map((r) => {
      const labels = (r.labels ?? {}) as Record<string, string>;
      const annotations = (r.annotations ?? {}) as Record<string, string>;
      return {
        alert: String(r.alert),
        severity: labels.severity ?? '',
        family: labels.alert_family,
        runbookUrl: annotations.runbook_url,
        dashboardUrl: annotations.dashboard_url,
      };
    }),
  );
}

function recordingRules(): string[] {
  return ruleFile('recording.yml').groups.flatMap((g) => g.rules.map((r) => String(r.record)));
}

interface UnitTestFile {
  tests: {
    alert_rule_test?: { alertname: string; exp_alerts?: { exp_labels?: Record<string, string> }[] }[];
    promql_expr_test?: { expr: string }[];
  }[];
}

function unitTests(): UnitTestFile[] {
  return yamlFiles(TESTS_DIR).map((f) => parseYaml(fs.readFileSync(f, 'utf8')) as UnitTestFile);
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  for (const m of markdown.matchAll(/^#{1,6} (.+)$/gm)) {
    anchors.add(m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-'));
  }
  return anchors;
}

function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `poolscope-${prefix}-`));
}

/** A copy of prometheus/rules and prometheus/tests, laid out as in the repo, for mutation tests. */
function copyRulesAndTests(): string {
  const dir = tempDir('rules');
  fs.cpSync(RULES_DIR, path.join(dir, 'rules'), { recursive: true });
  fs.cpSync(TESTS_DIR, path.join(dir, 'tests'), { recursive: true });
  return dir;
}

/** alertmanager.yml with its url_file paths moved into a temp dir holding webhook URLs on 127.0.0.1. */
function localAlertmanagerConfig(urls: { pager: string; chat: string }): { dir: string; config: string } {
  const dir = tempDir('am');
  const secrets = path.join(dir, 'secrets');
  fs.mkdirSync(secrets);
  fs.writeFileSync(path.join(secrets, 'pager_url'), `${urls.pager}\n`);
  fs.writeFileSync(path.join(secrets, 'chat_url'), `${urls.chat}\n`);
  const original = fs.readFileSync(AM_CONFIG, 'utf8');
  expect(original).toContain(`url_file: ${SECRETS_DIR}pager_url`);
  expect(original).toContain(`url_file: ${SECRETS_DIR}chat_url`);
  const config = path.join(dir, 'alertmanager.yml');
  fs.writeFileSync(config, original.replaceAll(SECRETS_DIR, `${secrets}/`));
  return { dir, config };
}

describe('Prometheus configuration and rules (promtool)', () => {
  it('uses a Prometheus 3 promtool', () => {
    const r = run('promtool', ['--version']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/promtool, version 3\.\d+\.\d+/);
  });

  it('loads prometheus.yml together with its rule files and target files', () => {
    const r = run('promtool', ['check', 'config', path.join(PROM_DIR, 'prometheus.yml')]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS: .*prometheus\.yml is valid prometheus config file syntax/);
    for (const rules of ['alerts.yml', 'recording.yml']) expect(r.output).toContain(`rules/${rules}`);
  });

  it('accepts every rule file with linting on', () => {
    const files = yamlFiles(RULES_DIR);
    // budget.yml: the connection budget's own rules and alerts (checked further in test/stack/budget.test.ts).
    expect(files.map((f) => path.basename(f))).toEqual(['alerts.yml', 'budget.yml', 'recording.yml']);
    const r = run('promtool', ['check', 'rules', '--lint=all', '--lint-fatal', ...files]);
    expect(r.status, r.output).toBe(0);
    // promtool's own count agrees with the parser the other tests use.
    expect(r.output).toContain(`SUCCESS: ${alertRules().length} rules found`);
    expect(r.output).toContain(`SUCCESS: ${recordingRules().length} rules found`);
  });

  it('passes the rule unit tests: each alert fires on time with its labels and annotations, and stays quiet otherwise', () => {
    const files = yamlFiles(TESTS_DIR);
    expect(files.length).toBeGreaterThan(0);
    const r = run('promtool', ['test', 'rules', ...files]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).not.toMatch(/FAILED/);
    expect(r.output.match(/SUCCESS/g)?.length).toBe(files.length);
  });

  it('has a unit test that expects each alert and severity to fire, and one for each recording rule', () => {
    const files = unitTests();
    const fired = new Set<string>();
    for (const check of files.flatMap((f) => f.tests.flatMap((t) => t.alert_rule_test ?? []))) {
      for (const a of check.exp_alerts ?? []) fired.add(`${check.alertname}/${a.exp_labels?.severity}`);
    }
    const expected = [...new Set(alertRules().map((a) => `${a.alert}/${a.severity}`))];
    expect(expected.filter((a) => !fired.has(a))).toEqual([]);

    const exprs = files.flatMap((f) => f.tests.flatMap((t) => (t.promql_expr_test ?? []).map((e) => e.expr)));
    const tested = new Set(exprs.flatMap((e) => e.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? []));
    // Intermediate aggregates (bucket rates) are covered through the quantiles computed from them.
    const untested = recordingRules().filter((r) => !r.endsWith('_bucket:rate1m') && !tested.has(r));
    expect(untested).toEqual([]);
  });

  it.each([
    ['the critical utilization threshold is raised from 90% to 99%', '>= 0.90', '>= 0.99', 'PoolUtilizationCritical'],
    ['the critical utilization for: grows from 15s to 30s', 'for: 15s', 'for: 30s', 'PoolUtilizationCritical'],
    [
      'the query error warning threshold is lowered from 5% to 3%',
      'errors_per_operations:ratio_rate1m > 0.05',
      'errors_per_operations:ratio_rate1m > 0.03',
      'QueryErrorRatio',
    ],
  ])('fails its unit tests when %s', (_what, from, to, alert) => {
    const dir = copyRulesAndTests();
    try {
      const alerts = path.join(dir, 'rules', 'alerts.yml');
      const text = fs.readFileSync(alerts, 'utf8');
      expect(text.split(from).length - 1, `"${from}" must occur exactly once`).toBe(1);
      fs.writeFileSync(alerts, text.replace(from, to));
      const r = run('promtool', ['test', 'rules', ...yamlFiles(path.join(dir, 'tests'))]);
      expect(r.status, r.output).not.toBe(0);
      expect(r.output).toContain(`alertname: ${alert}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('links every alert to an existing RUNBOOK.md section and a known Grafana dashboard', () => {
    const anchors = headingAnchors(fs.readFileSync(path.join(ROOT, 'RUNBOOK.md'), 'utf8'));
    for (const rule of alertRules()) {
      expect(rule.severity, rule.alert).toMatch(/^(critical|warning)$/);
      expect(rule.family, rule.alert).toMatch(/^[a-z-]+$/);
      expect(rule.runbookUrl, rule.alert).toBe(`${RUNBOOK_BASE}${rule.alert.toLowerCase()}`);
      expect(anchors.has(rule.alert.toLowerCase()), `RUNBOOK.md has a "## ${rule.alert}" section`).toBe(true);
      const uid = /^http:\/\/localhost:3000\/d\/([\w-]+)\?/.exec(rule.dashboardUrl ?? '')?.[1];
      expect(DASHBOARD_UIDS, `${rule.alert}: ${rule.dashboardUrl}`).toContain(uid);
      // The preset variables exist on that dashboard (grafana/dashboards/<uid>.json).
      const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'grafana', 'dashboards', `${uid}.json`), 'utf8')) as {
        templating: { list: { name: string }[] };
      };
      const variables = dashboard.templating.list.map((v) => v.name);
      for (const [, name] of rule.dashboardUrl!.matchAll(/[?&]var-(\w+)=/g)) {
        expect(variables, `${rule.alert}: ${uid} has a "${name}" variable`).toContain(name);
      }
    }
  });
});

describe('Alertmanager configuration (amtool)', () => {
  let local: { dir: string; config: string };

  beforeAll(() => {
    local = localAlertmanagerConfig({ pager: 'http://127.0.0.1:9/pager', chat: 'http://127.0.0.1:9/chat' });
  });
  afterAll(() => {
    if (local) fs.rmSync(local.dir, { recursive: true, force: true });
  });

  it('uses Alertmanager 0.31 tools', () => {
    const r = run('amtool', ['--version']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/amtool, version 0\.(3[1-9]|[4-9]\d)\./);
  });

  it.each([
    ['as shipped (secrets mounted at run time)', AM_CONFIG],
    ['with the webhook URL files present on 127.0.0.1', ''],
  ])('accepts the config %s', (_how, file) => {
    const r = run('amtool', ['check-config', file || local.config]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS/);
    expect(r.output).toMatch(/2 receivers/);
    expect(r.output).toMatch(/1 inhibit rules/);
  });

  it('commits no webhook URL: both receivers read theirs from a secrets file', () => {
    const text = fs.readFileSync(AM_CONFIG, 'utf8');
    expect(text).not.toMatch(/^\s*url:/m);
    expect(text).not.toMatch(/https?:\/\//);
  });

  const routed = [...new Map(alertRules().map((a) => [`${a.alert}/${a.severity}`, a])).values()].map(
    (a) => [a.alert, a.severity, a.severity === 'critical' ? 'pager' : 'chat'] as const,
  );
  it.each(routed)('routes %s (%s) to %s', (alert, severity, receiver) => {
    const labels = [
      `alertname=${alert}`,
      `severity=${severity}`,
      'job=poolscope-demo',
      'db_client_connection_pool_name=orders-db',
    ];
    const r = run('amtool', ['config', 'routes', 'test', `--config.file=${local.config}`, ...labels]);
    expect(r.status, r.output).toBe(0);
    expect(r.stdout.trim()).toBe(receiver);
  });

  it('sends alerts without a severity to chat, never to the pager', () => {
    const r = run('amtool', ['config', 'routes', 'test', `--config.file=${local.config}`, 'alertname=Unclassified', 'job=x']);
    expect(r.status, r.output).toBe(0);
    expect(r.stdout.trim()).toBe('chat');
  });
});

describe('a running Alertmanager with the shipped config', () => {
  interface Notification {
    receiver: string;
    status: string;
    alerts: { status: string; labels: Record<string, string> }[];
  }
  const received: { path: string; body: Notification }[] = [];
  let sink: http.Server;
  let am: ChildProcess | undefined;
  let amLog = '';
  let local: { dir: string; config: string };
  let amUrl = '';

  async function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
  }

  async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        const v = await fn();
        if (v !== undefined) return v;
      } catch {
        // not ready yet
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\nalertmanager log:\n${amLog}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  let setupError: unknown;

  beforeAll(async () => {
    let binary: string;
    try {
      binary = tool('alertmanager');
    } catch (e) {
      // Reported by the test below as its failure, rather than as a skipped test.
      setupError = e;
      return;
    }
    sink = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ path: req.url ?? '', body: JSON.parse(body) as Notification });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const sinkPort = (sink.address() as net.AddressInfo).port;
    local = localAlertmanagerConfig({
      pager: `http://127.0.0.1:${sinkPort}/pager`,
      chat: `http://127.0.0.1:${sinkPort}/chat`,
    });
    const port = await freePort();
    amUrl = `http://127.0.0.1:${port}`;
    am = spawn(
      binary,
      [
        `--config.file=${local.config}`,
        `--storage.path=${path.join(local.dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        // A single peer: clustering is the end-to-end test's subject.
        '--cluster.listen-address=',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    am.stdout!.on('data', (d) => (amLog += d));
    am.stderr!.on('data', (d) => (amLog += d));
    await until('Alertmanager to be ready', async () => ((await fetch(`${amUrl}/-/ready`)).ok ? true : undefined));
  }, 60_000);

  afterAll(async () => {
    if (am && am.exitCode === null) {
      const exited = new Promise((r) => am!.once('exit', r));
      am.kill('SIGTERM');
      await exited;
    }
    if (sink) await new Promise((r) => sink.close(r));
    if (local) fs.rmSync(local.dir, { recursive: true, force: true });
  });

  it('pages the critical alert and mutes only the warning twin of the same family, service, pool and instance', async () => {
    if (setupError) throw setupError;
    const base = { job: 'poolscope-demo' };
    const alerts = [
      { alertname: 'PoolUtilizationCritical', severity: 'critical', alert_family: 'pool-utilization', ...base, db_client_connection_pool_name: 'orders-db' },
      // Its twin on the same pool: muted.
      { alertname: 'PoolUtilizationWarning', severity: 'warning', alert_family: 'pool-utilization', ...base, db_client_connection_pool_name: 'orders-db' },
      // Same family, another pool: not muted.
      { alertname: 'PoolUtilizationWarning', severity: 'warning', alert_family: 'pool-utilization', ...base, db_client_connection_pool_name: 'reports-db' },
      // Another family on the same pool: not muted.
      { alertname: 'PoolRequestsWaiting', severity: 'warning', alert_family: 'pool-requests-waiting', ...base, db_client_connection_pool_name: 'orders-db' },
      // Collector: export failing on one collector mutes its own dropping-data warning only.
      { alertname: 'CollectorExportFailing', severity: 'critical', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c1:8888', exporter: 'otlp_http' },
      { alertname: 'CollectorDroppingData', severity: 'warning', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c1:8888', exporter: 'otlp_http' },
      { alertname: 'CollectorDroppingData', severity: 'warning', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c2:8888', receiver: 'otlp' },
      // A critical alert without a family mutes nothing, even warnings whose other labels all match.
      { alertname: 'SomethingElse', severity: 'critical', job: 'other-service' },
      { alertname: 'TelemetryMissing', severity: 'warning', alert_family: 'telemetry-missing', job: 'other-service' },
    ];
    const startsAt = new Date().toISOString();
    const post = await fetch(`${amUrl}/api/v2/alerts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(alerts.map((labels) => ({ labels, annotations: { summary: labels.alertname }, startsAt }))),
    });
    expect(post.status, await post.text()).toBe(200);

    type ApiAlert = { labels: Record<string, string>; status: { state: string; inhibitedBy: string[] } };
    const state = await until('all alerts to be listed', async () => {
      const list = (await (await fetch(`${amUrl}/api/v2/alerts`)).json()) as ApiAlert[];
      return list.length === alerts.length ? list : undefined;
    });
    const muted = (labels: Record<string, string>) =>
      state.find((a) => Object.entries(labels).every(([k, v]) => a.labels[k] === v))!.status.inhibitedBy.length > 0;
    expect(muted({ alertname: 'PoolUtilizationWarning', db_client_connection_pool_name: 'orders-db' })).toBe(true);
    expect(muted({ alertname: 'PoolUtilizationWarning', db_client_connection_pool_name: 'reports-db' })).toBe(false);
    expect(muted({ alertname: 'PoolRequestsWaiting' })).toBe(false);
    expect(muted({ alertname: 'CollectorDroppingData', instance: 'c1:8888' })).toBe(true);
    expect(muted({ alertname: 'CollectorDroppingData', instance: 'c2:8888' })).toBe(false);
    expect(muted({ alertname: 'TelemetryMissing' })).toBe(false);
    expect(muted({ alertname: 'PoolUtilizationCritical' })).toBe(false);

    // The critical route's 5s group_wait: the pager hears about the saturated pool within seconds.
    const page = await until(
      'the pager webhook to receive PoolUtilizationCritical',
      () => received.find((n) => n.path === '/pager' && n.body.alerts.some((a) => a.labels.alertname === 'PoolUtilizationCritical')),
      15_000,
    );
    expect(page.body.receiver).toBe('pager');
    expect(page.body.status).toBe('firing');
    expect(page.body.alerts.map((a) => a.labels.alertname)).toEqual(['PoolUtilizationCritical']);
    expect(received.filter((n) => n.path === '/pager').flatMap((n) => n.body.alerts.map((a) => a.labels.severity))).not.toContain('warning');
  }, 40_000);
});
