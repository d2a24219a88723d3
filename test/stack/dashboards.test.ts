// The Grafana side of the stack: dashboards as code (no drift between grafana/dashboards-src and the
// committed JSON), grafana's dashboard-linter in strict mode, our own conventions on top of it, and the
// provisioning files Grafana loads them with.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TOOLS_BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache/tools/bin');
const DASHBOARDS = path.join(ROOT, 'grafana/dashboards');
const SOURCES = path.join(ROOT, 'grafana/dashboards-src');
const UIDS = ['poolscope-pools', 'poolscope-queries', 'poolscope-http', 'poolscope-alerts'];

/** A tool binary under .cache/tools/bin; missing is a failure with the command that builds it. */
function tool(name: string, buildWith: string): string {
  const bin = path.join(TOOLS_BIN, name);
  if (!existsSync(bin)) {
    throw new Error(`${name} not found at ${bin} (POOLSCOPE_TOOLS_BIN or .cache/tools/bin): build it with ${buildWith}`);
  }
  return bin;
}

function run(cmd: string, args: string[], opts: { cwd?: string } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? ROOT, encoding: 'utf8', timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Target { expr?: string; refId?: string; datasource?: { type?: string; uid?: string }; format?: string; instant?: boolean }
interface Panel {
  id?: number;
  type: string;
  title?: string;
  description?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  fieldConfig?: { defaults?: Record<string, any> };
  options?: Record<string, any>;
  gridPos: { x: number; y: number; w: number; h: number };
}
interface Variable {
  type: string; name: string; label?: string; query?: unknown; datasource?: { type?: string; uid?: string };
  multi?: boolean; includeAll?: boolean; allValue?: string; refresh?: number; current?: { value?: unknown };
}
interface Dashboard {
  uid: string; title: string; editable: boolean; panels: Panel[]; templating: { list: Variable[] }; tags?: string[];
  annotations: { list: Array<{ name: string; expr?: string }> };
}

/** Panel titles a .lint rule exclusion names for one dashboard (entries with a `panel`). */
function lintExemptPanels(rule: string, dashboardTitle: string): Set<string> {
  const config = parseYaml(readFileSync(path.join(DASHBOARDS, '.lint'), 'utf8')) as {
    exclusions?: Record<string, { entries?: Array<{ dashboard?: string; panel?: string }> }>;
  };
  return new Set((config.exclusions?.[rule]?.entries ?? [])
    .filter((e) => e.dashboard === dashboardTitle && e.panel !== undefined).map((e) => e.panel!));
}

const committed = (uid: string): Dashboard => JSON.parse(readFileSync(path.join(DASHBOARDS, `${uid}.json`), 'utf8'));
const dashboards = () => UIDS.map(committed);
const contentPanels = (d: Dashboard) => d.panels.filter((p) => p.type !== 'row');
const exprs = (d: Dashboard) => contentPanels(d).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
const variable = (d: Dashboard, name: string) => d.templating.list.find((v) => v.name === name);

describe('dashboards as code', () => {
  let build: string;
  let out: string;

  beforeAll(() => {
    // Compiled inside the repo (under .cache) so the output resolves node_modules and package.json's
    // "type": "module"; the JSON goes to a temp dir.
    mkdirSync(path.join(ROOT, '.cache'), { recursive: true });
    build = mkdtempSync(path.join(ROOT, '.cache/dashboards-gen-test-'));
    out = mkdtempSync(path.join(os.tmpdir(), 'poolscope-dashboards-'));
    const tsc = run(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', SOURCES, '--outDir', build]);
    expect(tsc.code, `tsc -p grafana/dashboards-src failed:\n${tsc.out}`).toBe(0);
  }, 120_000);

  afterAll(() => {
    if (build) rmSync(build, { recursive: true, force: true });
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('regenerates exactly the committed JSON, file for file', () => {
    const gen = run(process.execPath, [path.join(build, 'generate.js'), '--out', out]);
    expect(gen.code, gen.out).toBe(0);
    const generated = readdirSync(out).filter((f) => f.endsWith('.json')).sort();
    const onDisk = readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json')).sort();
    expect(generated).toEqual(UIDS.map((u) => `${u}.json`).sort());
    expect(onDisk, 'grafana/dashboards/ has JSON the sources do not generate').toEqual(generated);
    for (const file of generated) {
      const fresh = readFileSync(path.join(out, file), 'utf8');
      const current = readFileSync(path.join(DASHBOARDS, file), 'utf8');
      expect(current, `grafana/dashboards/${file} drifted from grafana/dashboards-src: regenerate with ` +
        '`npx tsc -p grafana/dashboards-src && node .cache/dashboards-gen/generate.js`').toBe(fresh);
    }
  });

  it('has a --check mode that passes on the committed JSON and fails on a hand edit', () => {
    const ok = run(process.execPath, [path.join(build, 'generate.js'), '--check', '--out', DASHBOARDS]);
    expect(ok.code, ok.out).toBe(0);

    const edited = mkdtempSync(path.join(os.tmpdir(), 'poolscope-dashboards-edited-'));
    try {
      cpSync(DASHBOARDS, edited, { recursive: true });
      const file = path.join(edited, 'poolscope-http.json');
      writeFileSync(file, readFileSync(file, 'utf8').replace('"Request rate by route"', '"Requests"'));
      const bad = run(process.execPath, [path.join(build, 'generate.js'), '--check', '--out', edited]);
      expect(bad.code).toBe(1);
      expect(bad.out).toContain('poolscope-http.json: differs');
    } finally {
      rmSync(edited, { recursive: true, force: true });
    }
  });
});

describe('dashboard-linter', () => {
  const linter = () => tool('dashboard-linter', 'scripts/build-dashboard-linter.sh');

  it.each(UIDS)('passes %s with --strict (exclusions only from grafana/dashboards/.lint)', (uid) => {
    const r = run(linter(), ['lint', '--strict', path.join(DASHBOARDS, `${uid}.json`)]);
    expect(r.code, r.out).toBe(0);
  });

  it('rejects a dashboard that breaks its rules (the linter really checks)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-lint-'));
    try {
      const d = committed('poolscope-pools');
      const panel = contentPanels(d).find((p) => p.title === 'Acquire timeouts')!;
      panel.targets![0]!.expr = panel.targets![0]!.expr!.replace('[$__rate_interval]', '[5m]');
      delete panel.description;
      const file = path.join(dir, 'broken.json');
      writeFileSync(file, JSON.stringify(d));
      const r = run(linter(), ['lint', '--strict', file]);
      expect(r.code).not.toBe(0);
      expect(r.out).toMatch(/should use \$__rate_interval/);
      expect(r.out).toMatch(/missing title or description/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('justifies every exclusion in grafana/dashboards/.lint and scopes it to one dashboard', () => {
    const config = parseYaml(readFileSync(path.join(DASHBOARDS, '.lint'), 'utf8')) as {
      exclusions?: Record<string, { reason?: string; entries?: Array<{ dashboard?: string }> }>;
      warnings?: unknown;
    };
    expect(config.warnings, 'no rule is downgraded to a warning').toBeUndefined();
    const titles = new Set(dashboards().map((d) => d.title));
    for (const [rule, exclusion] of Object.entries(config.exclusions ?? {})) {
      expect(exclusion.reason, `${rule}: reason`).toBeTruthy();
      expect(exclusion.entries?.length, `${rule}: must name the dashboards it applies to`).toBeGreaterThan(0);
      for (const e of exclusion.entries ?? []) expect(titles, `${rule}: unknown dashboard`).toContain(e.dashboard);
    }
  });
});

describe('dashboard conventions', () => {
  it('has the four dashboards with fixed uids, read-only and tagged', () => {
    for (const uid of UIDS) {
      const d = committed(uid);
      expect(d.uid).toBe(uid);
      expect(d.editable).toBe(false);
      expect(d.tags).toContain('poolscope');
      // Grafana expects the annotation list (with its built-in entry); firing alerts are marked on every graph.
      expect(d.annotations.list.map((a) => a.name)).toEqual(['Annotations & Alerts', 'Firing alerts']);
      expect(d.annotations.list[1]!.expr).toMatch(/^ALERTS\{alertstate="firing", job=~"\$job"\}$/);
    }
  });

  it('gives every panel a title, a description and a unit', () => {
    for (const d of dashboards()) {
      for (const p of contentPanels(d)) {
        const where = `${d.uid} / ${p.title ?? p.type}`;
        expect(p.title, where).toBeTruthy();
        expect(p.description?.length, `${where}: description`).toBeGreaterThan(20);
        expect(p.fieldConfig?.defaults?.unit, `${where}: unit`).toMatch(/\S/);
      }
    }
  });

  it('queries through the datasource variable, which defaults to the provisioned Prometheus uid', () => {
    for (const d of dashboards()) {
      const ds = variable(d, 'datasource');
      expect(ds?.type).toBe('datasource');
      expect(ds?.query).toBe('prometheus');
      expect(ds?.current?.value).toBe('prometheus');
      for (const p of contentPanels(d).filter((p) => p.targets?.length)) {
        expect(p.datasource, `${d.uid} / ${p.title}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
        for (const t of p.targets!) expect(t.datasource, `${d.uid} / ${p.title}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
      }
      for (const v of d.templating.list.filter((v) => v.type === 'query')) {
        expect(v.datasource, `${d.uid} variable ${v.name}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
      }
    }
  });

  it('uses $__rate_interval as the range of every rate() and increase()', () => {
    for (const d of dashboards()) {
      for (const expr of exprs(d)) {
        const ranges = [...expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').matchAll(/\[([^\]]*)\]/g)].map((m) => m[1]);
        for (const r of ranges) expect(r, `${d.uid}: ${expr}`).toBe('$__rate_interval');
        if (/\b(rate|irate|increase)\(/.test(expr)) expect(ranges.length, expr).toBeGreaterThan(0);
      }
    }
  });

  it('offers job, instance and pool variables (multi, include all, refreshed with the time range)', () => {
    const expected: Record<string, Record<string, string>> = {
      'poolscope-pools': {
        job: 'label_values(db_client_connection_max, job)',
        instance: 'label_values(db_client_connection_max{job=~"$job"}, instance)',
        pool: 'label_values(db_client_connection_max{job=~"$job"}, db_client_connection_pool_name)',
      },
      'poolscope-queries': {
        job: 'label_values(db_client_connection_max, job)',
        instance: 'label_values(db_client_connection_max{job=~"$job"}, instance)',
        pool: 'label_values(db_client_connection_max{job=~"$job"}, db_client_connection_pool_name)',
      },
      'poolscope-http': {
        job: 'label_values(http_server_request_duration_seconds_count, job)',
        instance: 'label_values(http_server_request_duration_seconds_count{job=~"$job"}, instance)',
        route: 'label_values(http_server_request_duration_seconds_count{job=~"$job"}, http_route)',
      },
      'poolscope-alerts': {
        job: 'label_values(ALERTS, job)',
        pool: 'label_values(ALERTS{job=~"$job"}, db_client_connection_pool_name)',
      },
    };
    for (const [uid, vars] of Object.entries(expected)) {
      const d = committed(uid);
      expect(d.templating.list.filter((v) => v.type === 'query').map((v) => v.name)).toEqual(Object.keys(vars));
      for (const [name, query] of Object.entries(vars)) {
        const v = variable(d, name)!;
        expect(v.query, `${uid} ${name}`).toBe(query);
        // "All" never selects a missing label, except the alerts dashboard's jobs: the connection-budget alerts
        // carry none, and were missing from its "every alert firing now" (review).
        const all = uid === 'poolscope-alerts' && name === 'job' ? '.*' : '.+';
        expect(v, `${uid} ${name}`).toMatchObject({ multi: true, includeAll: true, allValue: all, refresh: 2 });
      }
      // Every query filters on every variable the dashboard offers, except on panels whose series are per
      // service (the ones .lint exempts from the instance matcher): those filter on job alone.
      const perService = lintExemptPanels('target-instance-rule', d.title);
      for (const p of contentPanels(d)) {
        const names = perService.has(p.title!) ? ['job'] : Object.keys(vars);
        for (const expr of (p.targets ?? []).map((t) => t.expr ?? '')) {
          for (const name of names) expect(expr, `${uid} / ${p.title} filters on $${name}`).toContain(`"$${name}`);
        }
      }
    }
  });

  it('shows pool utilization against the 75 % / 90 % thresholds, and a health status from them', () => {
    const d = committed('poolscope-pools');
    const utilization = contentPanels(d).find((p) => p.title === 'Pool utilization')!;
    const steps = utilization.fieldConfig!.defaults!.thresholds.steps.map((s: { value: number | null }) => s.value);
    expect(steps).toEqual([null, 0.75, 0.9]);
    expect(utilization.fieldConfig!.defaults!.custom.thresholdsStyle.mode).toBe('line+area');

    const health = contentPanels(d).find((p) => p.title === 'Pool health')!;
    expect(health.type).toBe('stat');
    expect(health.targets![0]!.expr).toContain('poolscope_pool_utilization_ratio');
    // Grafana's range mapping: the first mapping whose numeric [from, to] contains the value wins.
    const mappings = health.fieldConfig!.defaults!.mappings as Array<{ type: string; options: { from: number; to: number; result: { text: string } } }>;
    const status = (value: number) =>
      mappings.find((m) => m.type === 'range' && typeof m.options.from === 'number' && typeof m.options.to === 'number' &&
        value >= m.options.from && value <= m.options.to)?.options.result.text;
    expect([0, 0.5, 0.7499, 0.75, 0.8, 0.8999, 0.9, 0.95, 1].map(status)).toEqual(
      ['Healthy', 'Healthy', 'Healthy', 'Warning', 'Warning', 'Warning', 'Critical', 'Critical', 'Critical']);
  });

  it('covers every Poolscope metric the brief lists', () => {
    const all = (uid: string) => exprs(committed(uid)).join('\n');
    const pools = all('poolscope-pools');
    for (const m of ['poolscope_pool_utilization_ratio', 'db_client_connection_count', 'db_client_connection_max',
      'db_client_connection_idle_min', 'db_client_connection_pending_requests', 'poolscope_pool_overflow',
      'db_client_connection_wait_time_seconds_bucket', 'db_client_connection_use_time_seconds_bucket',
      'db_client_connection_create_time_seconds_bucket', 'db_client_connection_timeouts_total', 'poolscope_pool_errors_total',
      'poolscope_pool_used_peak', 'poolscope_pool_pending_peak', 'poolscope_pool_saturated_time_seconds_total',
      'poolscope_pool_acquires_total', 'poolscope_pool_closes_total', 'poolscope_pool_stuck', 'poolscope_pool_health_score',
      'poolscope_pool_leaks_total', 'poolscope_pool_long_held', 'poolscope_pool_idle_in_transaction_total',
      'poolscope_pool_hold_time_seconds_bucket']) {
      expect(pools).toContain(`${m}{`);
    }
    expect(pools).toContain('poolscope_stuck_reason');
    expect(pools).toContain('histogram_quantile(0.95, sum by (job, db_client_connection_pool_name, http_route, le) (rate(poolscope_pool_hold_time_seconds_bucket{');
    // The server budget (recording rules of prometheus/rules/budget.yml), drawn from the names the rules record.
    const budget = readFileSync(path.join(ROOT, 'prometheus', 'rules', 'budget.yml'), 'utf8');
    for (const m of ['server:db_client_connection_max:sum', 'server:postgresql_connection_available:max', 'server:postgresql_backends:sum']) {
      expect(budget).toContain(`record: ${m}\n`);
      expect(pools).toContain(`${m} and on (server_address, server_port) group by (server_address, server_port) (poolscope_pool_info{`);
    }
    expect(pools).toContain('poolscope_acquire_path');
    expect(pools).toContain('poolscope_close_reason');
    const queries = all('poolscope-queries');
    expect(queries).toContain('db_client_operation_duration_seconds_count{');
    for (const q of ['0.5', '0.95', '0.99']) {
      expect(queries).toContain(`histogram_quantile(${q}, sum by (job, db_client_connection_pool_name, db_operation_name, le)`);
    }
    expect(queries).toContain('error_type!=""');
    const http = all('poolscope-http');
    expect(http).toContain('http_response_status_code=~"5.."');
    expect(http).toContain('histogram_quantile(0.95, sum by (job, http_request_method, http_route, le) (rate(http_server_request_duration_seconds_bucket{');
    for (const m of ['job:poolscope_slo_availability_objective:ratio', 'job:poolscope_slo_latency_objective:ratio']) {
      expect(http).toContain(`${m}{`);
    }
    const alerts = committed('poolscope-alerts');
    expect(exprs(alerts).join('\n')).toContain('ALERTS{alertstate="firing"');
    const table = contentPanels(alerts).find((p) => p.type === 'table')!;
    expect(table.targets![0]).toMatchObject({ format: 'table', instant: true });
    expect(contentPanels(alerts).map((p) => p.type)).toEqual(expect.arrayContaining(['alertlist', 'alertGroups']));
  });

  it('draws the pool signal alerts\' thresholds exactly where prometheus/rules/pool-signals.yml puts them', () => {
    type Rule = { alert?: string; expr: string; labels?: Record<string, string> };
    const rules = (parseYaml(readFileSync(path.join(ROOT, 'prometheus/rules/pool-signals.yml'), 'utf8')) as {
      groups: { rules: Rule[] }[];
    }).groups.flatMap((g) => g.rules);
    const rule = (alert: string, cause?: string) => {
      const found = rules.filter((r) => r.alert === alert && r.labels?.cause === cause);
      expect(found, `${alert} ${cause ?? ''}`).toHaveLength(1);
      return found[0]!.expr.replace(/\s+/g, ' ');
    };
    /** The number compared against right after `before` in a rule's expression. */
    const threshold = (expr: string, before: RegExp) => {
      const m = new RegExp(`${before.source} > ([\\d.]+)`).exec(expr);
      expect(m, `${before} > N in ${expr}`).not.toBeNull();
      return Number(m![1]);
    };
    const panels = contentPanels(committed('poolscope-pools'));
    const panel = (title: RegExp) => {
      const p = panels.find((x) => title.test(x.title ?? ''));
      expect(p, String(title)).toBeDefined();
      return p!;
    };
    const lines = (p: Panel) => p.fieldConfig!.defaults!.thresholds.steps.map((s: { value: number | null }) => s.value);

    // PoolSaturatedSustained: the share of time at capacity.
    const saturated = rule('PoolSaturatedSustained');
    expect(saturated).toContain('rate(poolscope_pool_saturated_time_seconds_total[5m])');
    expect(lines(panel(/^Time at capacity$/))).toEqual([null, threshold(saturated, /\)\)/)]);

    // PoolConnectionCloseStorm, cause errors: closes by error or server per window, in pool sizes.
    const errors = rule('PoolConnectionCloseStorm', 'errors');
    const storm = panel(/^Closes by error or server, in pool sizes per \d+m$/);
    expect(lines(storm)).toEqual([null, threshold(errors, /\)/)]);
    const window = /\[(\d+)m\]/.exec(errors)![1]!;
    expect(storm.title).toBe(`Closes by error or server, in pool sizes per ${window}m`);
    expect(storm.targets![0]!.expr).toContain(`* ${Number(window) * 60} / on`);
    expect(errors).toContain('poolscope_close_reason=~"error|server_terminated"');
    expect(storm.targets![0]!.expr).toContain('poolscope_close_reason=~"error|server_terminated"');

    // PoolConnectionCloseStorm, cause churn: share of acquires that open a connection.
    const churn = rule('PoolConnectionCloseStorm', 'churn');
    expect(lines(panel(/^New connections per acquire$/))).toEqual([null, threshold(churn, /\[10m\]\)\)/)]);
  });

  it('draws SLO burn rates against the slowest ticket and the slowest page factor of prometheus/slo.yaml', () => {
    const slo = parseYaml(readFileSync(path.join(ROOT, 'prometheus/slo.yaml'), 'utf8')) as {
      period: string; burn_rate_alerts: { severity: string; budget_consumed: number; long_window: string }[];
    };
    const hours = (d: string) => Number(d.slice(0, -1)) * ({ m: 1 / 60, h: 1, d: 24, w: 168 } as Record<string, number>)[d.slice(-1)]!;
    const factor = (a: { budget_consumed: number; long_window: string }) =>
      Number((a.budget_consumed * hours(slo.period) / hours(a.long_window)).toPrecision(10));
    const slowest = (severity: string) => Math.min(...slo.burn_rate_alerts.filter((a) => a.severity === severity).map(factor));
    const http = contentPanels(committed('poolscope-http'));
    for (const title of ['Availability error budget burn rate', 'Latency error budget burn rate']) {
      const p = http.find((x) => x.title === title)!;
      expect(p.fieldConfig!.defaults!.thresholds.steps.map((s: { value: number | null }) => s.value), title)
        .toEqual([null, slowest('warning'), slowest('critical')]);
      // One line per burn-rate window the rules record, each divided by that service's budget.
      for (const t of p.targets!) expect(t.expr).toMatch(/ratio_rate(5m|1h|6h|1d|3d)\{job=~"\$job"\} \/ on \(job\) \(1 - job:poolscope_slo_\w+_objective:ratio\{job=~"\$job"\}\)$/);
    }
  });

  it('lays panels out on the 24-column grid without overlaps', () => {
    for (const d of dashboards()) {
      const boxes = d.panels.map((p) => ({ ...p.gridPos, title: p.title }));
      for (const b of boxes) expect(b.x + b.w, `${d.uid} / ${b.title}`).toBeLessThanOrEqual(24);
      for (let i = 0; i < boxes.length; i++) {
        for (let j = i + 1; j < boxes.length; j++) {
          const a = boxes[i]!;
          const b = boxes[j]!;
          const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
          expect(overlap, `${d.uid}: "${a.title}" overlaps "${b.title}"`).toBe(false);
        }
      }
      const ids = d.panels.map((p) => p.id);
      expect(new Set(ids).size, `${d.uid}: panel ids unique`).toBe(ids.length);
    }
  });
});

describe('Grafana provisioning', () => {
  const read = (rel: string) => readFileSync(path.join(ROOT, rel), 'utf8');
  const compose = () => parseYaml(read('docker-compose.yml'), { merge: true }) as {
    services: Record<string, { volumes?: string[]; environment?: Record<string, string> }>;
  };

  it('opens each provisioning file with a one-line purpose comment', () => {
    for (const rel of ['grafana/provisioning/datasources/datasources.yml', 'grafana/provisioning/dashboards/dashboards.yml']) {
      expect(read(rel).split('\n')[0], rel).toMatch(/^# \S.{20,}/);
    }
  });

  it('provisions Prometheus and Alertmanager with the fixed uids and names the dashboards reference', () => {
    const { datasources } = parseYaml(read('grafana/provisioning/datasources/datasources.yml')) as {
      datasources: Array<{ name: string; uid: string; type: string; url: string; jsonData?: Record<string, unknown> }>;
    };
    const prom = datasources.find((d) => d.uid === 'prometheus');
    const am = datasources.find((d) => d.uid === 'alertmanager');
    expect(prom).toMatchObject({ type: 'prometheus', url: '${PROMETHEUS_URL}' });
    expect(am).toMatchObject({ type: 'alertmanager', url: '${ALERTMANAGER_URL}' });
    expect(am!.jsonData).toMatchObject({ implementation: 'prometheus' });
    // Rate windows ($__rate_interval, at least 4 × timeInterval) hold two samples of a series pushed at the
    // slowest interval the README allows (review: at 5s, a service pushing every 15s drew two thirds empty).
    const slowestPush = Number(/OTEL_METRIC_EXPORT_INTERVAL=\d+` \(at most (\d+)\)/.exec(readFileSync(path.join(ROOT, 'README.md'), 'utf8'))?.[1]);
    expect(slowestPush).toBeGreaterThan(0);
    expect(Number.parseInt(String(prom!.jsonData!.timeInterval), 10) * 1000).toBeGreaterThanOrEqual(slowestPush);
    // Panels that read alert state by datasource name (alert list, alert groups) name these.
    const alerts = contentPanels(committed('poolscope-alerts'));
    expect(alerts.find((p) => p.type === 'alertlist')!.options!.datasource).toBe(prom!.name);
    expect(alerts.find((p) => p.type === 'alertGroups')!.options!.alertmanager).toBe(am!.name);
    // Grafana expands ${VAR} with no default syntax: compose must set both for the Grafana container.
    const env = compose().services.grafana!.environment!;
    expect(env.PROMETHEUS_URL).toMatch(/^\$\{PROMETHEUS_URL:-http:\/\/prometheus:9090\}$/);
    expect(env.ALERTMANAGER_URL).toMatch(/^\$\{ALERTMANAGER_URL:-http:\/\/alertmanager-1:9093\}$/);
  });

  it('loads the dashboards from where docker-compose.yml mounts grafana/dashboards', () => {
    const { providers } = parseYaml(read('grafana/provisioning/dashboards/dashboards.yml')) as {
      providers: Array<{ type: string; options: { path: string } }>;
    };
    expect(providers).toHaveLength(1);
    expect(providers[0]!.type).toBe('file');
    const mounts = compose().services.grafana!.volumes!;
    expect(mounts).toContain(`./grafana/dashboards:${providers[0]!.options.path}:ro`);
    expect(mounts).toContain('./grafana/provisioning:/etc/grafana/provisioning:ro');
  });
});
