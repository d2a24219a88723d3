import { describe, it, expect, afterAll } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { HTTP_DURATION_BUCKETS } from '../../src/semconv.js';

/*
 * The SLO declaration (prometheus/slo.yaml) and what is generated from it (scripts/generate-slo-rules.mjs →
 * prometheus/rules/slo.yml, regression.yml): the committed rules are exactly what the declaration gives,
 * every number in them traces back to it and to the SRE workbook's table, the latency thresholds are
 * buckets the code really exports, bad declarations are refused with the setting named, and a change to a
 * window, factor, threshold or bucket matcher makes the promtool tests (prometheus/tests/slo.yml,
 * regression.yml) fail.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TOOLS_BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache', 'tools', 'bin');
const GENERATOR = path.join(ROOT, 'scripts', 'generate-slo-rules.mjs');
const DECLARATION = path.join(ROOT, 'prometheus', 'slo.yaml');
const RULES_DIR = path.join(ROOT, 'prometheus', 'rules');
const TESTS_DIR = path.join(ROOT, 'prometheus', 'tests');

interface Declaration {
  period: string;
  defaults: { availability: { objective: number }; latency: { objective: number; threshold_seconds: number } };
  services: Record<string, { availability?: { objective?: number }; latency?: { objective?: number; threshold_seconds?: number } }>;
  burn_rate_alerts: { severity: string; budget_consumed: number; long_window: string; short_window: string }[];
  regression: { http: { ratio: number; min_increase_seconds: number; min_requests_per_second: number }; query: { ratio: number } };
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
}
interface RuleFile {
  groups: { name: string; interval?: string; rules: Rule[] }[];
}

const declaration = (): Declaration => parseYaml(fs.readFileSync(DECLARATION, 'utf8')) as Declaration;
const rules = (file: string): Rule[] =>
  (parseYaml(fs.readFileSync(path.join(RULES_DIR, file), 'utf8')) as RuleFile).groups.flatMap((g) => g.rules);

const temps: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'poolscope-slo-'));
  temps.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of temps) fs.rmSync(dir, { recursive: true, force: true });
});

function generator(args: string[]) {
  const r = spawnSync(process.execPath, [GENERATOR, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Generates from `text` (a declaration) into a fresh rules dir next to a copy of the promtool tests. */
function generateInto(text: string): string {
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, 'rules'));
  fs.cpSync(TESTS_DIR, path.join(dir, 'tests'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'slo.yaml'), text);
  const r = generator(['--declaration', path.join(dir, 'slo.yaml'), '--out', path.join(dir, 'rules')]);
  expect(r.status, r.stderr).toBe(0);
  return dir;
}

/** promtool test rules, asynchronously (these runs take seconds to a minute; a blocked worker times out). */
function promtoolTest(files: string[], run?: string): Promise<{ status: number | null; output: string }> {
  const promtool = path.join(TOOLS_BIN, 'promtool');
  if (!fs.existsSync(promtool)) throw new Error(`promtool not found at ${promtool}: build it with scripts/build-tools.sh`);
  return new Promise((resolve, reject) => {
    const child = spawn(promtool, ['test', 'rules', ...(run ? [`--run=${run}`] : []), ...files], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, output }));
  });
}

describe('the SLO declaration and the rules generated from it', () => {
  it('matches the committed rule files byte for byte (npm run slo-rules leaves nothing to do)', () => {
    const r = generator(['--check']);
    expect(r.status, `${r.stderr}\nrun \`npm run slo-rules\` and commit the result`).toBe(0);
  });

  it('reports a committed rule file as out of date when the declaration changes', () => {
    const dir = tempDir();
    const changed = fs.readFileSync(DECLARATION, 'utf8').replace('objective: 0.999', 'objective: 0.9995');
    fs.writeFileSync(path.join(dir, 'slo.yaml'), changed);
    const r = generator(['--check', '--declaration', path.join(dir, 'slo.yaml')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/prometheus\/rules\/slo\.yml is out of date with .*slo\.yaml: run `npm run slo-rules`/);
    expect(r.stderr).not.toMatch(/regression\.yml/);
  });

  it('opens each generated file with a one-line purpose comment and says it is generated', () => {
    for (const file of ['slo.yml', 'regression.yml']) {
      const text = fs.readFileSync(path.join(RULES_DIR, file), 'utf8');
      expect(text.split('\n')[0], file).toMatch(/^# \S.+\.$/);
      expect(text, file).toContain('GENERATED by scripts/generate-slo-rules.mjs from prometheus/slo.yaml: do not edit');
    }
    expect(fs.readFileSync(DECLARATION, 'utf8').split('\n')[0]).toMatch(/^# \S.+\.$/);
  });

  it('declares every latency threshold on a bucket bound of the HTTP duration histogram the code exports', () => {
    const decl = declaration();
    const thresholds = [
      decl.defaults.latency.threshold_seconds,
      ...Object.values(decl.services).flatMap((s) => (s.latency?.threshold_seconds === undefined ? [] : [s.latency.threshold_seconds])),
    ];
    expect(thresholds.length).toBeGreaterThanOrEqual(2);
    for (const t of thresholds) expect(HTTP_DURATION_BUCKETS, `threshold ${t}s`).toContain(t);
    // And the recorded thresholds in slo.yml are those values, per service.
    const recorded = rules('slo.yml').find((r) => r.record === 'job:poolscope_slo_latency_threshold:seconds')!;
    for (const t of thresholds) expect(recorded.expr).toMatch(new RegExp(`(^| or )${String(t).replace('.', '\\.')} \\* group by \\(job\\)`));
  });

  it('derives the burn-rate alerts from the declaration: the SRE workbook table, for both SLIs, with no `for:`', () => {
    const decl = declaration();
    expect(decl.period).toBe('30d');
    // Workbook table 5-8 (and Sloth's defaults): page 14.4× 1h/5m and 6× 6h/30m; ticket 3× 1d/2h and 1× 3d/6h.
    const expected = [
      ['critical', 14.4, '1h', '5m'],
      ['critical', 6, '6h', '30m'],
      ['warning', 3, '1d', '2h'],
      ['warning', 1, '3d', '6h'],
    ] as const;
    const hours: Record<string, number> = { '1h': 1, '6h': 6, '1d': 24, '3d': 72 };
    expect(decl.burn_rate_alerts.map((w) => [w.severity, Number(((w.budget_consumed * 720) / hours[w.long_window]!).toFixed(6)), w.long_window, w.short_window]))
      .toEqual(expected.map((e) => [...e]));

    const alerts = rules('slo.yml').filter((r) => r.alert);
    for (const [alert, sli, ratio, objective] of [
      ['HttpAvailabilityBudgetBurn', 'availability', 'job:http_server_request_5xx_per_requests', 'job:poolscope_slo_availability_objective:ratio'],
      ['HttpLatencyBudgetBurn', 'latency', 'job:http_server_request_slow_per_requests', 'job:poolscope_slo_latency_objective:ratio'],
    ] as const) {
      const mine = alerts.filter((r) => r.alert === alert);
      expect(mine.map((r) => [r.labels!.severity, r.labels!.long_window, r.labels!.short_window]))
        .toEqual(expected.map(([severity, , long, short]) => [severity, long, short]));
      for (const [i, [, factor, long, short]] of expected.entries()) {
        const rule = mine[i]!;
        expect(rule.labels).toMatchObject({ slo: sli, alert_family: `slo-${sli}` });
        expect(rule.for, 'the short window, not for:, is what keeps a burn-rate alert from flapping').toBeUndefined();
        expect(rule.expr.replace(/\s+/g, ' ').trim()).toBe(
          `${ratio}:ratio_rate${long} / on (job) (1 - ${objective}) > ${factor} and ` +
            `${ratio}:ratio_rate${short} / on (job) (1 - ${objective}) > ${factor}`);
      }
    }
    // Every window an alert reads is recorded, for both SLIs, and no other.
    const windows = ['5m', '30m', '1h', '2h', '6h', '1d', '3d'];
    const recorded = rules('slo.yml').flatMap((r) => (r.record ? [r.record] : []));
    for (const prefix of ['job:http_server_request_5xx_per_requests', 'job:http_server_request_slow_per_requests']) {
      expect(recorded.filter((r) => r.startsWith(`${prefix}:`)).sort()).toEqual(windows.map((w) => `${prefix}:ratio_rate${w}`).sort());
    }
  });

  it('evaluates the fastest page (1h and 5m) every 15 s, in one group with the objectives, the 5m rates and the two ratios it reads', () => {
    const groups = (parseYaml(fs.readFileSync(path.join(RULES_DIR, 'slo.yml'), 'utf8')) as RuleFile).groups;
    const fast = groups.filter((g) => g.rules.some((r) => r.alert && r.labels?.long_window === '1h'));
    expect(fast).toHaveLength(1);
    expect(fast[0]!.interval).toBe('15s');
    const inFast = fast[0]!.rules;
    expect(inFast.filter((r) => r.alert).map((r) => `${r.alert} ${r.labels!.long_window}/${r.labels!.short_window}`).sort())
      .toEqual(['HttpAvailabilityBudgetBurn 1h/5m', 'HttpLatencyBudgetBurn 1h/5m']);
    // Every series the fast alerts read is recorded earlier in the same group, the objectives included (a new
    // service's first page waited up to a minute for them while they were recorded in the 1m group).
    const recordedBefore = new Set<string>();
    for (const r of inFast) {
      if (r.record) recordedBefore.add(r.record);
      else for (const name of r.expr.match(/job:[a-z0-9_:]+/g) ?? []) expect(recordedBefore.has(name), name).toBe(true);
    }
    // The slower pairs stay at 1m: their windows are 30 m and longer.
    for (const g of groups.filter((x) => x !== fast[0])) expect(g.interval).toBe('1m');
  });

  it('gives each service its own objectives: the default for every job not listed, the override for those listed', () => {
    const decl = declaration();
    const overridden = Object.keys(decl.services);
    expect(overridden).toContain('poolscope-demo');
    const objective = rules('slo.yml').find((r) => r.record === 'job:poolscope_slo_availability_objective:ratio')!.expr;
    expect(objective).toContain(`${decl.defaults.availability.objective} * group by (job) (http_server_request_duration_seconds_count{job!~"${overridden.join('|')}"})`);
    for (const [job, s] of Object.entries(decl.services)) {
      const value = s.availability?.objective ?? decl.defaults.availability.objective;
      expect(objective).toContain(`${value} * group by (job) (http_server_request_duration_seconds_count{job="${job}"})`);
    }
  });

  it('reads the metrics the hand-written recording rules read (and the end-to-end test proves exist)', () => {
    const handWritten = fs.readFileSync(path.join(RULES_DIR, 'recording.yml'), 'utf8');
    const raw = (text: string) => new Set([...text.matchAll(/\b((?:http_server|db_client)_[a-z_]+?_(?:bucket|count))\b/g)].map((m) => m[1]!));
    for (const file of ['slo.yml', 'regression.yml']) {
      const used = raw(fs.readFileSync(path.join(RULES_DIR, file), 'utf8'));
      expect(used.size, file).toBeGreaterThan(0);
      for (const metric of used) expect(handWritten, `${file} reads ${metric}`).toContain(metric);
    }
  });

  it.each([
    ['an objective so low that a page could never fire', (t: string) => t.replace('objective: 0.95', 'objective: 0.9'),
      /services\.poolscope-demo\.latency\.objective: 0\.9 leaves a 10% budget; burning it 14\.4× needs an error ratio of 144%/],
    ['a misspelled setting', (t: string) => t.replace('threshold_seconds: 0.5', 'threshold_second: 0.5'),
      /defaults\.latency: unknown setting "threshold_second" \(allowed: objective, threshold_seconds\)/],
    ['a window that is not a duration', (t: string) => t.replace('short_window: 5m', 'short_window: five minutes'),
      /burn_rate_alerts\[0\]\.short_window: "five minutes" is not a duration/],
    ['a short window longer than its long window', (t: string) => t.replace('short_window: 30m', 'short_window: 7h'),
      /burn_rate_alerts\[1\]: short_window must be shorter than long_window/],
    ['an objective of 100%', (t: string) => t.replace('objective: 0.999', 'objective: 1'),
      /defaults\.availability\.objective: 1 must be a number strictly between 0 and 1/],
  ])('refuses %s, naming the setting, and writes nothing', (_what, change, message) => {
    const dir = tempDir();
    const text = fs.readFileSync(DECLARATION, 'utf8');
    const changed = change(text);
    expect(changed).not.toBe(text);
    fs.writeFileSync(path.join(dir, 'slo.yaml'), changed);
    const r = generator(['--declaration', path.join(dir, 'slo.yaml'), '--out', dir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(fs.readdirSync(dir)).toEqual(['slo.yaml']);
  });
});

describe('the promtool tests fail when the generated rules change (each was seen to catch its break)', () => {
  const original = () => fs.readFileSync(DECLARATION, 'utf8');

  it.each([
    [
      'the fast page needs 2.5% of the budget in an hour (18×) instead of 2% (14.4×)',
      (t: string) => t.replace('budget_consumed: 0.02', 'budget_consumed: 0.025'),
      (r: string) => r,
      'slo.yml', 'availability — a fast burn', /alertname: HttpAvailabilityBudgetBurn, time: 1d12h30m/,
    ],
    [
      'the fast page is confirmed over 30m instead of 5m (it no longer resolves minutes after the errors stop)',
      (t: string) => t.replace('short_window: 5m', 'short_window: 30m'),
      (r: string) => r,
      'slo.yml', 'availability — a fast burn', /alertname: HttpAvailabilityBudgetBurn, time: 1d12h40m/,
    ],
    [
      'the 1d ticket needs 15% of the budget in a day (4.5×) instead of 10% (3×)',
      (t: string) => t.replace('budget_consumed: 0.10', 'budget_consumed: 0.15'),
      (r: string) => r,
      'slo.yml', 'availability — a steady 0.5%', /alertname: HttpAvailabilityBudgetBurn, time: 2d4h40m/,
    ],
    [
      'a whole-number latency bound matches only the scraped spelling le="1.0"',
      (t: string) => t,
      (r: string) => r.replace('le=~"1|1\\\\.0"', 'le="1.0"'),
      'slo.yml', '^latency', /got: \{job="poolscope-demo"\} 9E-01/,
    ],
    [
      'the regression ratio is raised from 1.5× to 2.5×',
      (t: string) => t.replace('ratio: 1.5\n    min_increase_seconds: 0.1', 'ratio: 2.5\n    min_increase_seconds: 0.1'),
      (r: string) => r,
      'regression.yml', '', /alertname: HttpLatencyRegression, time: 7d1h30m/,
    ],
    [
      'the regression request-rate floor is dropped',
      (t: string) => t.replaceAll('min_requests_per_second: 1', 'min_requests_per_second: 0'),
      (r: string) => r,
      'regression.yml', '', /alertname: HttpLatencyRegression, time: 7d1h30m[\s\S]*http_route="\/admin"/,
    ],
  ])('%s', async (_what, changeDeclaration, changeRules, testFile, run, failure) => {
    const dir = generateInto(changeDeclaration(original()));
    const generated = path.join(dir, 'rules', testFile);
    fs.writeFileSync(generated, changeRules(fs.readFileSync(generated, 'utf8')));
    // The break really reached the rules under test.
    expect(fs.readFileSync(generated, 'utf8')).not.toBe(fs.readFileSync(path.join(RULES_DIR, testFile), 'utf8'));
    const r = await promtoolTest([path.join(dir, 'tests', testFile)], run || undefined);
    expect(r.status, r.output).not.toBe(0);
    expect(r.output).toMatch(failure);
  }, 300_000);

  it('passes unchanged when regenerated from the committed declaration (the breaks above are the only difference)', async () => {
    const dir = generateInto(original());
    for (const file of ['slo.yml', 'regression.yml']) {
      expect(fs.readFileSync(path.join(dir, 'rules', file), 'utf8')).toBe(fs.readFileSync(path.join(RULES_DIR, file), 'utf8'));
    }
    const r = await promtoolTest([path.join(dir, 'tests', 'slo.yml')], 'availability — a fast burn|^latency');
    expect(r.status, r.output).toBe(0);
  }, 300_000);
});
