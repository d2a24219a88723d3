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
 * config (also with its Slack and e-mail examples enabled) and routes every alert, and a real Alertmanager
 * shows that inhibition mutes exactly the warning twin of a critical alert and that the examples deliver. The binaries come from POOLSCOPE_TOOLS_BIN or <repo>/.cache/tools/bin
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

/**
 * `run` without blocking the event loop, for the minute-long promtool runs: a synchronous wait that long
 * starves vitest's worker RPC, which then reports a timeout as an unhandled error.
 */
function runAsync(name: string, args: string[], timeout: number): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool(name), args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, output: `${stdout}\n${stderr}` });
    });
  });
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
  file: string;
  labels: Record<string, string>;
  severity: string;
  family: string | undefined;
  runbookUrl: string | undefined;
  dashboardUrl: string | undefined;
}

function ruleFile(name: string): RuleFile {
  return parseYaml(fs.readFileSync(path.join(RULES_DIR, name), 'utf8')) as RuleFile;
}

const RULE_FILES = ['alerts.yml', 'budget.yml', 'pool-health.yml', 'pool-signals.yml', 'recording.yml', 'regression.yml', 'slo.yml'];

/** Alerting rules of every rule file (alerts.yml and pool-signals.yml by hand; slo.yml and regression.yml generated). */
function alertRules(): AlertRule[] {
  return RULE_FILES.flatMap((file) => ruleFile(file).groups.flatMap((g) =>
    g.rules.filter((r) => r.alert !== undefined).map((r) => {
      const labels = (r.labels ?? {}) as Record<string, string>;
      const annotations = (r.annotations ?? {}) as Record<string, string>;
      return {
        alert: String(r.alert),
        file,
        labels,
        severity: labels.severity ?? '',
        family: labels.alert_family,
        runbookUrl: annotations.runbook_url,
        dashboardUrl: annotations.dashboard_url,
      };
    }),
  ));
}

function recordingRules(): string[] {
  return RULE_FILES.flatMap((file) =>
    ruleFile(file).groups.flatMap((g) => g.rules.filter((r) => r.record !== undefined).map((r) => String(r.record))));
}

/** Rules (alerting and recording) in one file, as promtool counts them. */
function ruleCount(file: string): number {
  return ruleFile(file).groups.reduce((n, g) => n + g.rules.length, 0);
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

/**
 * Rewrites `from` (which must occur exactly once) to `to` in a copy of rules/`ruleFile`, runs promtool on
 * the copy's test files `testFiles` picks, and expects them to fail naming `alert`: the unit tests pin that
 * threshold, window or `for:`.
 */
function expectMutationCaught(ruleFile: string, from: string, to: string, alert: string, testFiles: (testsDir: string) => string[]): void {
  const dir = copyRulesAndTests();
  try {
    const rules = path.join(dir, 'rules', ruleFile);
    const text = fs.readFileSync(rules, 'utf8');
    expect(text.split(from).length - 1, `"${from}" must occur exactly once`).toBe(1);
    fs.writeFileSync(rules, text.replace(from, to));
    const r = run('promtool', ['test', 'rules', ...testFiles(path.join(dir, 'tests'))]);
    expect(r.status, r.output).not.toBe(0);
    expect(r.output).toContain(`alertname: ${alert}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const EXAMPLE_START = /^\s*# >>> example: (\w+)$/;
const EXAMPLE_END = /^\s*# <<< example: (\w+)$/;

/**
 * alertmanager.yml with the commented examples enabled exactly as its header tells a reader to: one "# "
 * removed from every line between `# >>> example: NAME` and `# <<< example: NAME`.
 */
function enableExamples(text: string): { text: string; names: string[] } {
  const names: string[] = [];
  let open: string | undefined;
  const lines = text.split('\n').map((line) => {
    const start = EXAMPLE_START.exec(line);
    const end = EXAMPLE_END.exec(line);
    if (start) {
      expect(open, `example ${start[1]} opens inside ${open}`).toBeUndefined();
      open = start[1];
      names.push(open!);
      return line;
    }
    if (end) {
      expect(end[1], 'example markers pair up').toBe(open);
      open = undefined;
      return line;
    }
    if (!open) return line;
    expect(line, `every line of example ${open} is commented`).toMatch(/^\s*# /);
    return line.replace(/^(\s*)# /, '$1');
  });
  expect(open, `example ${open} is closed`).toBeUndefined();
  return { text: lines.join('\n'), names };
}

interface Receivers { pager: string; ticket: string; chat: string }
/** What the examples' secret files hold in a local copy, and where its e-mail goes. */
interface ExampleSecrets { slackApiUrl: string; smtpPassword: string; smarthost: string }

/**
 * alertmanager.yml with its secret file paths moved into a temp dir holding webhook URLs on 127.0.0.1.
 * With `examples`, the Slack and e-mail examples are enabled, their secret files written, and the e-mail
 * relay pointed at a local one (without TLS: the stand-in has no certificate, and Go's SMTP client sends
 * a plain-auth password in clear only to 127.0.0.1).
 */
function localAlertmanagerConfig(urls: Receivers, examples?: ExampleSecrets): { dir: string; config: string } {
  const dir = tempDir('am');
  const secrets = path.join(dir, 'secrets');
  fs.mkdirSync(secrets);
  for (const [name, url] of Object.entries(urls)) fs.writeFileSync(path.join(secrets, `${name}_url`), `${url}\n`);
  let text = fs.readFileSync(AM_CONFIG, 'utf8');
  for (const name of Object.keys(urls)) expect(text).toContain(`url_file: ${SECRETS_DIR}${name}_url`);
  if (examples) {
    fs.writeFileSync(path.join(secrets, 'slack_api_url'), `${examples.slackApiUrl}\n`);
    fs.writeFileSync(path.join(secrets, 'smtp_password'), `${examples.smtpPassword}\n`);
    const enabled = enableExamples(text);
    expect(enabled.names.sort()).toEqual(['email', 'slack']);
    text = enabled.text;
    for (const [from, to] of [
      ['smarthost: smtp.example.com:587', `smarthost: ${examples.smarthost}`],
      ['require_tls: true', 'require_tls: false'],
    ]) {
      expect(text.split(from).length - 1, from).toBe(1);
      text = text.replace(from, to);
    }
  }
  const config = path.join(dir, 'alertmanager.yml');
  fs.writeFileSync(config, text.replaceAll(SECRETS_DIR, `${secrets}/`));
  return { dir, config };
}

const RECEIVERS_ON_DISCARD: Receivers = {
  pager: 'http://127.0.0.1:9/pager',
  ticket: 'http://127.0.0.1:9/ticket',
  chat: 'http://127.0.0.1:9/chat',
};

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
    for (const rules of RULE_FILES) expect(r.output).toContain(`rules/${rules}`);
  });

  it('accepts every rule file with linting on', () => {
    const files = yamlFiles(RULES_DIR);
    expect(files.map((f) => path.basename(f))).toEqual(RULE_FILES);
    const r = run('promtool', ['check', 'rules', '--lint=all', '--lint-fatal', ...files]);
    expect(r.status, r.output).toBe(0);
    // promtool's own count, file by file, agrees with the parser the other tests use.
    for (const file of RULE_FILES) {
      expect(r.output).toMatch(new RegExp(`Checking \\S*rules/${file.replace('.', '\\.')}\\s+SUCCESS: ${ruleCount(file)} rules found`));
    }
  });

  // The SLO and regression tests replay days of one-minute evaluations (slo.yml, regression.yml): about
  // half a minute of CPU, more on a busy machine.
  it('passes the rule unit tests: each alert fires on time with its labels and annotations, and stays quiet otherwise', async () => {
    const files = yamlFiles(TESTS_DIR);
    expect(files.map((f) => path.basename(f))).toEqual(expect.arrayContaining(['regression.yml', 'slo.yml']));
    const r = await runAsync('promtool', ['test', 'rules', ...files], 540_000);
    expect(r.status, r.output).toBe(0);
    expect(r.output).not.toMatch(/FAILED/);
    expect(r.output.match(/SUCCESS/g)?.length).toBe(files.length);
  }, 600_000);

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
    const untested = recordingRules().filter((r) => !/_bucket:rate\w+$/.test(r) && !tested.has(r));
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
    // Only the test files that load alerts.yml: the SLO and regression files replay days and test other rules.
    expectMutationCaught('alerts.yml', from, to, alert,
      (tests) => yamlFiles(tests).filter((f) => fs.readFileSync(f, 'utf8').includes('../rules/alerts.yml')));
  });

  // pool-signals.yml: each threshold and `for:` is pinned by prometheus/tests/pool-signals.yml.
  it.each([
    ['time at capacity: the threshold is raised from 50% to 60%', '[5m])) > 0.5', '[5m])) > 0.6', 'PoolSaturatedSustained'],
    ['time at capacity: the threshold is lowered from 50% to 35% (the 40% pool fires)', '[5m])) > 0.5', '[5m])) > 0.35', 'PoolSaturatedSustained'],
    ['time at capacity: for: shrinks from 5m to 2m (the 3-minute burst fires)', '> 0.5\n        for: 5m', '> 0.5\n        for: 2m', 'PoolSaturatedSustained'],
    ['time at capacity: for: grows from 5m to 6m', '> 0.5\n        for: 5m', '> 0.5\n        for: 6m', 'PoolSaturatedSustained'],
    ['close storm: the threshold is lowered from 2 to 1 pool sizes', ') > 2\n', ') > 1\n', 'PoolConnectionCloseStorm'],
    ['close storm: the threshold is raised from 2 to 2.5 pool sizes', ') > 2\n', ') > 2.5\n', 'PoolConnectionCloseStorm'],
    ['close storm: server terminations are no longer counted', '"error|server_terminated"', '"error"', 'PoolConnectionCloseStorm'],
    ['close storm: for: grows from 2m to 3m', 'for: 2m', 'for: 3m', 'PoolConnectionCloseStorm'],
    ['churn: the new-connection share is raised from 50% to 70%', '> 0.5\n            )', '> 0.7\n            )', 'PoolConnectionCloseStorm'],
    ['churn: the share threshold is lowered from 50% to 30% (the 40% pool fires)', '> 0.5\n            )', '> 0.3\n            )', 'PoolConnectionCloseStorm'],
    ['churn: the volume floor is lowered from 1/s to 0.1/s (the quiet pool fires)', '[10m])) > 1\n', '[10m])) > 0.1\n', 'PoolConnectionCloseStorm'],
    ['churn: for: grows from 5m to 6m', '> 1\n          )\n        for: 5m', '> 1\n          )\n        for: 6m', 'PoolConnectionCloseStorm'],
  ])('fails the pool signal unit tests when %s', (_what, from, to, alert) => {
    expectMutationCaught('pool-signals.yml', from, to, alert, (tests) => [path.join(tests, 'pool-signals.yml')]);
  });

  // pool-health.yml: each threshold, window and `for:` is pinned by prometheus/tests/pool-health.yml.
  it.each([
    ['stuck: for: grows from 10s to 20s', 'for: 10s', 'for: 20s', 'PoolStuck'],
    ['stuck: for: shrinks from 10s to 0s (the one-sample blip pages)', 'for: 10s', 'for: 0s', 'PoolStuck'],
    ['stuck: the reason is dropped from the page', 'db_client_connection_pool_name, poolscope_stuck_reason) (poolscope_pool_stuck and', 'db_client_connection_pool_name) (poolscope_pool_stuck and', 'PoolStuck'],
    ['stuck: any replica no longer decides (min instead of max)', 'max by (job, db_client_connection_pool_name, poolscope_stuck_reason)', 'min by (job, db_client_connection_pool_name, poolscope_stuck_reason)', 'PoolStuck'],
    ['leaks: the threshold is raised from 0 to 1 leak', 'poolscope_pool_leaks_total[10m])\n          ) > 0', 'poolscope_pool_leaks_total[10m])\n          ) > 1', 'PoolConnectionLeaks'],
    ['leaks: the window shrinks from 10m to 5m', 'increase(poolscope_pool_leaks_total[10m])', 'increase(poolscope_pool_leaks_total[5m])', 'PoolConnectionLeaks'],
    ['leaks: a series born with its first leak is no longer counted', 'poolscope_pool_leaks_total unless poolscope_pool_leaks_total offset 10m', 'poolscope_pool_leaks_total unless poolscope_pool_leaks_total', 'PoolConnectionLeaks'],
    // Both clauses of the "new series" branch bound it to 10m (the second keeps a scrape gap from looking new).
    ['leaks: a new series is counted for 15m instead of 10m',
      'poolscope_pool_leaks_total offset 10m)\n              unless (\n                (last_over_time(poolscope_pool_leaks_total[1h] offset 10m)',
      'poolscope_pool_leaks_total offset 15m)\n              unless (\n                (last_over_time(poolscope_pool_leaks_total[1h] offset 15m)', 'PoolConnectionLeaks'],
    ['leaks: a scrape gap reads as a new series again', '(last_over_time(poolscope_pool_leaks_total[1h] offset 10m) == poolscope_pool_leaks_total)',
      '(last_over_time(poolscope_pool_leaks_total[1h] offset 10m) == -1)', 'PoolConnectionLeaks'],
    ['leaks: a restart at the old count reads as a scrape gap', 'count_over_time(poolscope_pool_leaks_total[70m]) >=', 'count_over_time(poolscope_pool_leaks_total[70m]) <', 'PoolConnectionLeaks'],
    ['connection errors: for: grows from 3m to 5m', 'for: 3m', 'for: 5m', 'PoolConnectionErrors'],
    ['connection errors: for: shrinks from 3m to 30s (the failover\'s burst warns)', 'for: 3m', 'for: 30s', 'PoolConnectionErrors'],
    ['connection errors: the threshold is raised from 0 to 6 a minute', '(increase(poolscope_pool_errors_total[1m])) > 0', '(increase(poolscope_pool_errors_total[1m])) > 6', 'PoolConnectionErrors'],
    ['idle in transaction: the threshold is raised from 0 to 1', 'poolscope_pool_idle_in_transaction_total[10m])\n          ) > 0', 'poolscope_pool_idle_in_transaction_total[10m])\n          ) > 1', 'PoolIdleInTransaction'],
    ['idle in transaction: a new series is counted for 5m instead of 10m',
      'poolscope_pool_idle_in_transaction_total offset 10m)\n              unless (\n                (last_over_time(poolscope_pool_idle_in_transaction_total[1h] offset 10m)',
      'poolscope_pool_idle_in_transaction_total offset 5m)\n              unless (\n                (last_over_time(poolscope_pool_idle_in_transaction_total[1h] offset 5m)', 'PoolIdleInTransaction'],
  ])('fails the pool health unit tests when %s', (_what, from, to, alert) => {
    expectMutationCaught('pool-health.yml', from, to, alert, (tests) => [path.join(tests, 'pool-health.yml')]);
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

  // Found by running the stack: the runbook's "How to confirm" named panels by titles they no longer had
  // (*Utilization*, *Acquire wait p95*, row *Leaks*, *Duration by route* …).
  it('names in RUNBOOK.md\'s "How to confirm" only dashboards, rows and panels that exist', () => {
    const titles = new Set<string>();
    for (const uid of DASHBOARD_UIDS) {
      const d = JSON.parse(fs.readFileSync(path.join(ROOT, 'grafana', 'dashboards', `${uid}.json`), 'utf8')) as {
        title: string; panels: { title: string }[];
      };
      titles.add(d.title.replace(/^Poolscope \/ /, ''));
      for (const p of d.panels) titles.add(p.title);
    }
    const named: string[] = [];
    for (const paragraph of fs.readFileSync(path.join(ROOT, 'RUNBOOK.md'), 'utf8').split(/\n\s*\n/)) {
      if (!paragraph.startsWith('**How to confirm.**')) continue;
      for (const [, name] of paragraph.matchAll(/(?<![*\w])\*([^*\n][^*]*?)\*(?![*\w])/g)) named.push(name!.replace(/\s+/g, ' '));
    }
    expect(named.length).toBeGreaterThan(20);
    // Prometheus's own UI, named where a target is down.
    expect(named.filter((n) => !titles.has(n) && n !== 'Status → Targets')).toEqual([]);
  });
});

describe('Alertmanager configuration (amtool)', () => {
  let local: { dir: string; config: string };
  let withExamples: { dir: string; config: string };

  beforeAll(() => {
    local = localAlertmanagerConfig(RECEIVERS_ON_DISCARD);
    withExamples = localAlertmanagerConfig(RECEIVERS_ON_DISCARD, {
      slackApiUrl: 'http://127.0.0.1:9/slack', smtpPassword: 'not-a-real-password', smarthost: '127.0.0.1:25',
    });
  });
  afterAll(() => {
    for (const l of [local, withExamples]) if (l) fs.rmSync(l.dir, { recursive: true, force: true });
  });

  it('uses Alertmanager 0.31 tools', () => {
    const r = run('amtool', ['--version']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/amtool, version 0\.(3[1-9]|[4-9]\d)\./);
  });

  it.each([
    ['as shipped (secrets mounted at run time)', () => AM_CONFIG],
    ['with the webhook URL files present on 127.0.0.1', () => local.config],
    ['with the Slack and e-mail examples enabled', () => withExamples.config],
  ])('accepts the config %s', (_how, file) => {
    const r = run('amtool', ['check-config', file()]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS/);
    expect(r.output).toMatch(/3 receivers/);
    expect(r.output).toMatch(/1 inhibit rules/);
  });

  it('enables real Slack and e-mail receivers, both reading their secret from a file', () => {
    const config = parseYaml(fs.readFileSync(withExamples.config, 'utf8')) as {
      receivers: { name: string; slack_configs?: Record<string, unknown>[]; email_configs?: Record<string, unknown>[] }[];
    };
    const byName = new Map(config.receivers.map((r) => [r.name, r]));
    expect(byName.get('chat')!.slack_configs).toEqual([
      expect.objectContaining({ api_url_file: path.join(withExamples.dir, 'secrets', 'slack_api_url'), send_resolved: true }),
    ]);
    expect(byName.get('ticket')!.email_configs).toEqual([
      expect.objectContaining({ auth_password_file: path.join(withExamples.dir, 'secrets', 'smtp_password'), send_resolved: true }),
    ]);
    for (const r of config.receivers) {
      for (const c of [...(r.slack_configs ?? []), ...(r.email_configs ?? [])]) {
        expect(Object.keys(c), `${r.name}: no inline secret`).not.toEqual(expect.arrayContaining(['api_url', 'auth_password']));
      }
    }
    // As shipped the examples are comments: the receivers above are webhooks only.
    const shipped = parseYaml(fs.readFileSync(AM_CONFIG, 'utf8')) as { receivers: Record<string, unknown>[] };
    for (const r of shipped.receivers) expect(Object.keys(r).sort()).toEqual(['name', 'webhook_configs']);
    // The shipped example keeps TLS on; only the local test copy turns it off.
    expect(fs.readFileSync(AM_CONFIG, 'utf8')).toMatch(/^\s*# {5}require_tls: true$/m);
  });

  it('commits no webhook URL: every receiver reads its URL or password from a secrets file', () => {
    const text = fs.readFileSync(AM_CONFIG, 'utf8');
    expect(text).not.toMatch(/^\s*(#\s*)?(-\s*)?(url|api_url|auth_password):/m);
    expect(text).not.toMatch(/https?:\/\//);
  });

  // Every alert name and severity the rules can produce, with the labels its rule sets (so routing on
  // `slo` sees what the generated rules really carry), and where it must end up.
  const expectedReceiver = (a: AlertRule) => (a.severity === 'critical' ? 'pager' : a.labels.slo ? 'ticket' : 'chat');
  // Rules that share a name and severity but differ by `cause` are routed one by one: their labels differ.
  const routed = [...new Map(alertRules().map((a) => [`${a.alert}/${a.severity}/${a.labels.cause ?? ''}`, a])).values()].map(
    (a) => [a.labels.cause ? `${a.alert} (cause ${a.labels.cause})` : a.alert, a.severity, expectedReceiver(a), a] as const,
  );
  it('routes SLO pages to the pager, SLO tickets to the ticket queue and week-over-week regressions to chat', () => {
    const where = new Map(routed.map(([, severity, receiver, rule]) => [`${rule.alert}/${severity}`, receiver]));
    expect(where.get('HttpAvailabilityBudgetBurn/critical')).toBe('pager');
    expect(where.get('HttpLatencyBudgetBurn/critical')).toBe('pager');
    expect(where.get('HttpAvailabilityBudgetBurn/warning')).toBe('ticket');
    expect(where.get('HttpLatencyBudgetBurn/warning')).toBe('ticket');
    expect(where.get('HttpLatencyRegression/warning')).toBe('chat');
    expect(where.get('QueryLatencyRegression/warning')).toBe('chat');
    expect(routed.length).toBeGreaterThanOrEqual(20);
  });
  it('routes the pool signal alerts (time at capacity, close storm by errors and by churn) to chat', () => {
    const signals = routed.filter(([, , , rule]) => rule.file === 'pool-signals.yml');
    expect(signals.map(([name, severity, receiver]) => `${name}/${severity} → ${receiver}`).sort()).toEqual([
      'PoolConnectionCloseStorm (cause churn)/warning → chat',
      'PoolConnectionCloseStorm (cause errors)/warning → chat',
      'PoolSaturatedSustained/warning → chat',
    ]);
  });
  it('pages for a stuck pool and sends failing connection attempts, leaks and idle transactions to chat', () => {
    const health = routed.filter(([, , , rule]) => rule.file === 'pool-health.yml');
    expect(health.map(([name, severity, receiver]) => `${name}/${severity} → ${receiver}`).sort()).toEqual([
      'PoolConnectionErrors/warning → chat',
      'PoolConnectionLeaks/warning → chat',
      'PoolIdleInTransaction/warning → chat',
      'PoolStuck/critical → pager',
    ]);
  });
  it.each(routed)('routes %s (%s) to %s', (_alert, _severity, receiver, rule) => {
    const labels = [
      ...Object.entries({ ...rule.labels, job: 'poolscope-demo', db_client_connection_pool_name: 'orders-db' }).map(([k, v]) => `${k}=${v}`),
      `alertname=${rule.alert}`,
    ];
    for (const config of [local.config, withExamples.config]) {
      const r = run('amtool', ['config', 'routes', 'test', `--config.file=${config}`, ...labels]);
      expect(r.status, r.output).toBe(0);
      expect(r.stdout.trim()).toBe(receiver);
    }
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
      ticket: `http://127.0.0.1:${sinkPort}/ticket`,
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
      // Time at capacity shares the utilization family: the page covers it. A close storm does not.
      { alertname: 'PoolSaturatedSustained', severity: 'warning', alert_family: 'pool-utilization', ...base, db_client_connection_pool_name: 'orders-db' },
      { alertname: 'PoolConnectionCloseStorm', severity: 'warning', alert_family: 'pool-connection-churn', cause: 'errors', ...base, db_client_connection_pool_name: 'orders-db' },
      // Collector: export failing on one collector mutes its own dropping-data warning only.
      { alertname: 'CollectorExportFailing', severity: 'critical', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c1:8888', exporter: 'otlp_http' },
      { alertname: 'CollectorDroppingData', severity: 'warning', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c1:8888', exporter: 'otlp_http' },
      { alertname: 'CollectorDroppingData', severity: 'warning', alert_family: 'collector-pipeline', job: 'otel-collector', instance: 'c2:8888', receiver: 'otlp' },
      // An SLO page mutes the same SLO's ticket for the same service, not another service's.
      { alertname: 'HttpAvailabilityBudgetBurn', severity: 'critical', alert_family: 'slo-availability', slo: 'availability', long_window: '1h', short_window: '5m', job: 'checkout' },
      { alertname: 'HttpAvailabilityBudgetBurn', severity: 'warning', alert_family: 'slo-availability', slo: 'availability', long_window: '1d', short_window: '2h', job: 'checkout' },
      { alertname: 'HttpAvailabilityBudgetBurn', severity: 'warning', alert_family: 'slo-availability', slo: 'availability', long_window: '1d', short_window: '2h', job: 'search' },
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
    expect(muted({ alertname: 'PoolSaturatedSustained' })).toBe(true);
    expect(muted({ alertname: 'PoolConnectionCloseStorm' })).toBe(false);
    expect(muted({ alertname: 'CollectorDroppingData', instance: 'c1:8888' })).toBe(true);
    expect(muted({ alertname: 'CollectorDroppingData', instance: 'c2:8888' })).toBe(false);
    expect(muted({ alertname: 'TelemetryMissing' })).toBe(false);
    expect(muted({ alertname: 'PoolUtilizationCritical' })).toBe(false);
    expect(muted({ alertname: 'HttpAvailabilityBudgetBurn', severity: 'warning', job: 'checkout' })).toBe(true);
    expect(muted({ alertname: 'HttpAvailabilityBudgetBurn', severity: 'warning', job: 'search' })).toBe(false);
    expect(muted({ alertname: 'HttpAvailabilityBudgetBurn', severity: 'critical' })).toBe(false);

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

describe('the Slack and e-mail examples, enabled in a copy of the shipped config', () => {
  interface Mail { auth: string; from: string; to: string[]; data: string }
  const slack: Record<string, unknown>[] = [];
  const webhooks: string[] = [];
  const mails: Mail[] = [];
  let sink: http.Server;
  let smtp: net.Server;
  let am: ChildProcess | undefined;
  let amLog = '';
  let local: { dir: string; config: string };
  let amUrl = '';
  let setupError: unknown;
  const password = `pw-${process.pid}-${Date.now()}`;

  /** Just enough ESMTP for Alertmanager: EHLO advertising AUTH PLAIN, MAIL, RCPT, DATA, QUIT. */
  function smtpServer(): net.Server {
    return net.createServer((socket) => {
      socket.setEncoding('utf8');
      const mail: Mail = { auth: '', from: '', to: [], data: '' };
      let buffer = '';
      let inData = false;
      socket.write('220 127.0.0.1 ESMTP stand-in\r\n');
      socket.on('error', () => {});
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        for (;;) {
          if (inData) {
            const end = buffer.indexOf('\r\n.\r\n');
            if (end < 0) return;
            mails.push({ ...mail, data: buffer.slice(0, end) });
            buffer = buffer.slice(end + 5);
            inData = false;
            socket.write('250 queued\r\n');
            continue;
          }
          const nl = buffer.indexOf('\r\n');
          if (nl < 0) return;
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 2);
          const [verb = '', , initial = ''] = line.split(' ');
          switch (verb.toUpperCase()) {
            case 'EHLO': socket.write('250-127.0.0.1\r\n250 AUTH PLAIN\r\n'); break;
            case 'AUTH': mail.auth = Buffer.from(initial, 'base64').toString('utf8'); socket.write('235 accepted\r\n'); break;
            case 'MAIL': mail.from = line; socket.write('250 ok\r\n'); break;
            case 'RCPT': mail.to.push(line); socket.write('250 ok\r\n'); break;
            case 'DATA': inData = true; socket.write('354 end with .\r\n'); break;
            case 'QUIT': socket.end('221 bye\r\n'); return;
            default: socket.write('250 ok\r\n');
          }
        }
      });
    });
  }

  beforeAll(async () => {
    let binary: string;
    try {
      binary = tool('alertmanager');
    } catch (e) {
      setupError = e;
      return;
    }
    sink = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        if (req.url === '/slack') slack.push(JSON.parse(body) as Record<string, unknown>);
        else webhooks.push(req.url ?? '');
        res.end('ok');
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    smtp = smtpServer();
    await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(sink.address() as net.AddressInfo).port}`;
    local = localAlertmanagerConfig(
      { pager: `${base}/pager`, ticket: `${base}/ticket`, chat: `${base}/chat` },
      { slackApiUrl: `${base}/slack`, smtpPassword: password, smarthost: `127.0.0.1:${(smtp.address() as net.AddressInfo).port}` },
    );
    // Only the waits change, so the test does not sit out the shipped 30s and 1m group_wait.
    const text = fs.readFileSync(local.config, 'utf8');
    fs.writeFileSync(local.config, text.replace(/group_wait: (30s|1m)$/gm, 'group_wait: 1s'));
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port: p } = s.address() as net.AddressInfo;
        s.close(() => resolve(p));
      });
    });
    amUrl = `http://127.0.0.1:${port}`;
    am = spawn(binary, [
      `--config.file=${local.config}`,
      `--storage.path=${path.join(local.dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--cluster.listen-address=',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    am.stdout!.on('data', (d) => (amLog += d));
    am.stderr!.on('data', (d) => (amLog += d));
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ready = await fetch(`${amUrl}/-/ready`).then((r) => r.ok, () => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`Alertmanager not ready:\n${amLog}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }, 60_000);

  afterAll(async () => {
    if (am && am.exitCode === null) {
      const exited = new Promise((r) => am!.once('exit', r));
      am.kill('SIGTERM');
      await exited;
    }
    if (sink) await new Promise((r) => sink.close(r));
    if (smtp) await new Promise((r) => smtp.close(r));
    if (local) fs.rmSync(local.dir, { recursive: true, force: true });
  });

  it('posts chat alerts to Slack and mails SLO tickets, with the secrets read from their files', async () => {
    if (setupError) throw setupError;
    const startsAt = new Date().toISOString();
    const alerts = [
      {
        labels: { alertname: 'HttpLatencyRegression', severity: 'warning', alert_family: 'http-latency', job: 'checkout', http_route: '/orders/:id' },
        annotations: {
          summary: 'p95 of checkout /orders/:id is 2.1× what it was a week ago',
          runbook_url: 'https://github.com/poolscope/poolscope/blob/main/RUNBOOK.md#httplatencyregression',
          dashboard_url: 'http://localhost:3000/d/poolscope-http?var-job=checkout',
        },
      },
      {
        labels: { alertname: 'HttpAvailabilityBudgetBurn', severity: 'warning', alert_family: 'slo-availability', slo: 'availability', long_window: '1d', short_window: '2h', job: 'checkout' },
        annotations: { summary: 'checkout burns its availability error budget 3.5× too fast (1d and 2h windows)' },
      },
    ];
    const post = await fetch(`${amUrl}/api/v2/alerts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(alerts.map((a) => ({ ...a, startsAt }))),
    });
    expect(post.status, await post.text()).toBe(200);

    const deadline = Date.now() + 30_000;
    while ((slack.length === 0 || mails.length === 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(slack, `no Slack message arrived\n${amLog}`).toHaveLength(1);
    expect(mails, `no mail arrived\n${amLog}`).toHaveLength(1);

    // Slack: the example's channel, title and one line per alert with its runbook and dashboard links.
    const message = slack[0] as { channel: string; attachments: { title: string; text: string; color: string }[] };
    expect(message.channel).toBe('#poolscope-alerts');
    expect(message.attachments[0]!.title).toBe('1 firing: HttpLatencyRegression in checkout');
    expect(message.attachments[0]!.color).toBe('warning');
    expect(message.attachments[0]!.text).toBe(
      'p95 of checkout /orders/:id is 2.1× what it was a week ago · ' +
        '<https://github.com/poolscope/poolscope/blob/main/RUNBOOK.md#httplatencyregression|runbook> · ' +
        '<http://localhost:3000/d/poolscope-http?var-job=checkout|dashboard>\n',
    );

    // E-mail: authenticated with the password from smtp_password, to the example's ticket address.
    const mail = mails[0]!;
    expect(mail.auth).toBe(`\0alertmanager@example.com\0${password}`);
    expect(mail.from).toMatch(/^MAIL FROM:<alertmanager@example\.com>/i);
    expect(mail.to).toEqual([expect.stringMatching(/^RCPT TO:<poolscope-slo@example\.com>/i)]);
    expect(mail.data).toMatch(/^Subject: \[FIRING\] HttpAvailabilityBudgetBurn: checkout availability SLO\r?$/m);

    // The webhooks of the same receivers still fire next to them.
    expect(webhooks.sort()).toEqual(['/chat', '/ticket']);
  }, 60_000);
});
