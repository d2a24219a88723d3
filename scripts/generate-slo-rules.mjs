#!/usr/bin/env node
// Generates prometheus/rules/slo.yml (SLO error ratios and multi-window multi-burn-rate alerts) and
// prometheus/rules/regression.yml (week-over-week p95 regressions) from the declaration in prometheus/slo.yaml.
//
// Usage: node scripts/generate-slo-rules.mjs [--check] [--declaration FILE] [--out DIR]
//   --check        write nothing; exit 1 and name the stale file if a generated file differs from what the
//                  declaration gives (the drift test and CI run this)
//   --declaration  the declaration to read (default prometheus/slo.yaml)
//   --out          where the two rule files go (default prometheus/rules)
//
// The output is written as text, not through a YAML serializer, so that it reads like the hand-written
// rule files next to it (folded PromQL, comments saying where each number came from).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DECLARATION = 'prometheus/slo.yaml';

// Metric names as Prometheus stores them (README "Metrics"; recording.yml reads the same ones).
const HTTP = 'http_server_request_duration_seconds';
const QUERY = 'db_client_operation_duration_seconds';
const RUNBOOK = 'https://github.com/poolscope/poolscope/blob/main/RUNBOOK.md#';
const GRAFANA = 'http://localhost:3000/d/';
// The SLO and regression groups are evaluated once a minute, not every 5s like the others: their windows
// are 5 minutes to 3 days long, and the long windows are sums over the 5m-rate samples.
const GROUP_INTERVAL = '1m';
// Except the fastest page (the pair whose short window is the shortest, 1h/5m): with the 5m rates, its two
// ratios and its alert evaluated once a minute, two evaluations stood between the first 5xx and the page
// (measured 67–125 s in the e2e test, over the 60 s page goal). At 15 s the rules add at most ~30 s. The 5m
// rates are then sampled every 15 s; the long windows' sums read 4× the samples, still one series per service.
const FAST_INTERVAL = '15s';
const SHORTEST_WINDOW = '5m';

class DeclarationError extends Error {}

function fail(where, message) {
  throw new DeclarationError(`${DECLARATION}: ${where}: ${message}`);
}

const UNIT_SECONDS = { m: 60, h: 3600, d: 86400, w: 604800 };

/** Seconds in a Prometheus duration of one unit ("5m", "1d"); the only form the declaration uses. */
function seconds(value, where) {
  const m = /^(\d+)([mhdw])$/.exec(String(value));
  if (!m || Number(m[1]) === 0) fail(where, `"${value}" is not a duration like 5m, 6h, 1d, 1w`);
  return Number(m[1]) * UNIT_SECONDS[m[2]];
}

function number(value, where, { min = -Infinity, max = Infinity, exclusive = false } = {}) {
  const ok = typeof value === 'number' && Number.isFinite(value) &&
    (exclusive ? value > min && value < max : value >= min && value <= max);
  if (!ok) fail(where, `${JSON.stringify(value)} must be a number ${exclusive ? 'strictly ' : ''}between ${min} and ${max}`);
  return value;
}

function onlyKeys(obj, allowed, where) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) fail(where, 'must be a mapping');
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) fail(where, `unknown setting "${key}" (allowed: ${allowed.join(', ')})`);
  }
  return obj;
}

/** Rounds away binary noise (1 − 0.999 = 0.0010000000000000009) so that numbers print as declared. */
const clean = (x) => Number(x.toPrecision(10));

/** A PromQL double-quoted string (JSON escaping is a subset of PromQL's Go-style escapes). */
const str = (s) => JSON.stringify(s);
/** An RE2 pattern matching exactly `s`, as a PromQL string. */
const literalRegex = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The `le` matcher for a bucket bound. Prometheus 3 stores scraped bounds in float notation (le="1.0")
 * but OTLP-pushed ones as Go's shortest form (le="1"), so a whole-number bound must match both.
 */
function leMatcher(bound) {
  const text = String(bound);
  return Number.isInteger(bound) ? `le=~${str(`${text}|${text}\\.0`)}` : `le=${str(text)}`;
}

const percent = (x) => `${clean(x * 100)}%`;
const duration = (s) => (s < 1 ? `${clean(s * 1000)}ms` : `${clean(s)}s`);

export function parseDeclaration(text) {
  const doc = onlyKeys(parseYaml(text) ?? {}, ['period', 'defaults', 'services', 'burn_rate_alerts', 'regression'], 'top level');
  const period = seconds(doc.period, 'period');

  const sli = (value, base, where) => {
    const v = onlyKeys(value ?? {}, ['availability', 'latency'], where);
    const a = onlyKeys(v.availability ?? {}, ['objective'], `${where}.availability`);
    const l = onlyKeys(v.latency ?? {}, ['objective', 'threshold_seconds'], `${where}.latency`);
    return {
      availability: {
        objective: number(a.objective ?? base?.availability.objective, `${where}.availability.objective`, { min: 0, max: 1, exclusive: true }),
      },
      latency: {
        objective: number(l.objective ?? base?.latency.objective, `${where}.latency.objective`, { min: 0, max: 1, exclusive: true }),
        threshold: number(l.threshold_seconds ?? base?.latency.threshold, `${where}.latency.threshold_seconds`, { min: 0, exclusive: true }),
      },
    };
  };
  const defaults = sli(doc.defaults, undefined, 'defaults');
  const services = Object.entries(onlyKeys(doc.services ?? {}, Object.keys(doc.services ?? {}), 'services'))
    .map(([job, value]) => {
      if (!job) fail('services', 'a service name (job) is empty');
      return { job, ...sli(value, defaults, `services.${job}`) };
    });

  if (!Array.isArray(doc.burn_rate_alerts) || doc.burn_rate_alerts.length === 0) fail('burn_rate_alerts', 'must be a non-empty list');
  const windows = doc.burn_rate_alerts.map((w, i) => {
    const where = `burn_rate_alerts[${i}]`;
    onlyKeys(w, ['severity', 'budget_consumed', 'long_window', 'short_window'], where);
    if (!['critical', 'warning'].includes(w.severity)) fail(`${where}.severity`, `"${w.severity}" must be critical (page) or warning (ticket)`);
    const long = seconds(w.long_window, `${where}.long_window`);
    const short = seconds(w.short_window, `${where}.short_window`);
    if (short >= long) fail(where, 'short_window must be shorter than long_window');
    if (short < seconds(SHORTEST_WINDOW, 'SHORTEST_WINDOW')) fail(`${where}.short_window`, `must be at least ${SHORTEST_WINDOW}`);
    if (long > period) fail(`${where}.long_window`, 'must not be longer than the period');
    const consumed = number(w.budget_consumed, `${where}.budget_consumed`, { min: 0, max: 1, exclusive: true });
    return {
      severity: w.severity,
      consumed,
      long: w.long_window,
      short: w.short_window,
      factor: clean((consumed * period) / long),
    };
  });
  // A burn factor × budget at or above 100% is an error ratio no service can exceed: the alert could never fire.
  for (const s of [{ job: 'defaults', ...defaults }, ...services]) {
    for (const kind of ['availability', 'latency']) {
      for (const w of windows) {
        const budget = 1 - s[kind].objective;
        if (w.factor * budget >= 1) {
          fail(`${s.job === 'defaults' ? 'defaults' : `services.${s.job}`}.${kind}.objective`,
            `${s[kind].objective} leaves a ${percent(budget)} budget; burning it ${w.factor}× needs an error ratio of ` +
            `${percent(w.factor * budget)}, which can never happen, so the ${w.long}/${w.short} alert could never fire`);
        }
      }
    }
  }

  const r = onlyKeys(doc.regression, ['quantile', 'window', 'offset', 'for', 'http', 'query'], 'regression');
  const guard = (g, where) => {
    onlyKeys(g, ['ratio', 'min_increase_seconds', 'min_requests_per_second'], where);
    return {
      ratio: number(g.ratio, `${where}.ratio`, { min: 1, exclusive: true, max: Infinity }),
      minIncrease: number(g.min_increase_seconds, `${where}.min_increase_seconds`, { min: 0 }),
      minRate: number(g.min_requests_per_second, `${where}.min_requests_per_second`, { min: 0 }),
    };
  };
  seconds(r.window, 'regression.window');
  seconds(r.offset, 'regression.offset');
  seconds(r.for, 'regression.for');
  const regression = {
    quantile: number(r.quantile, 'regression.quantile', { min: 0, max: 1, exclusive: true }),
    window: r.window,
    offset: r.offset,
    for: r.for,
    http: guard(r.http, 'regression.http'),
    query: guard(r.query, 'regression.query'),
  };

  const allWindows = [...new Set([SHORTEST_WINDOW, ...windows.flatMap((w) => [w.short, w.long])])]
    .sort((a, b) => seconds(a, '') - seconds(b, ''));
  return { period: doc.period, defaults, services, windows, allWindows, regression };
}

// ---------------------------------------------------------------------------------------------------------
// slo.yml

/**
 * Selector branches: one per overridden service, plus the defaults for every other job. Each carries the
 * label matcher that selects its jobs.
 */
function branches(decl) {
  const overridden = decl.services.map((s) => s.job);
  const rest = overridden.length ? `job!~${str(overridden.map(literalRegex).join('|'))}` : '';
  return [
    { name: 'every other service', matcher: rest, ...decl.defaults },
    ...decl.services.map((s) => ({ name: s.job, matcher: `job=${str(s.job)}`, ...s })),
  ];
}

const sel = (...matchers) => {
  const m = matchers.filter(Boolean);
  return m.length ? `{${m.join(',')}}` : '';
};

function indent(text, spaces) {
  const pad = ' '.repeat(spaces);
  return text.split('\n').map((l) => (l ? pad + l : l)).join('\n');
}

/** A recording rule: `expr` is PromQL, possibly several lines (folded block). */
function record(name, expr, comment) {
  const lines = [];
  if (comment) lines.push(...comment.split('\n').map((c) => `# ${c}`));
  lines.push(`- record: ${name}`);
  if (expr.includes('\n')) lines.push('  expr: >', indent(expr, 4));
  else lines.push(`  expr: ${expr}`);
  return lines.join('\n');
}

function quoted(s) {
  return `'${s.replaceAll("'", "''")}'`;
}

function alert({ name, expr, forDuration, labels, summary, description, runbook, dashboard, comment }) {
  const lines = [];
  if (comment) lines.push(...comment.split('\n').map((c) => `# ${c}`));
  lines.push(`- alert: ${name}`, '  expr: >', indent(expr, 4));
  if (forDuration) lines.push(`  for: ${forDuration}`);
  lines.push('  labels:');
  for (const [k, v] of Object.entries(labels)) lines.push(`    ${k}: ${v}`);
  lines.push('  annotations:', `    summary: ${quoted(summary)}`, '    description: >-', indent(description, 6));
  lines.push(`    runbook_url: ${RUNBOOK}${name.toLowerCase()}`, `    dashboard_url: ${quoted(dashboard)}`);
  return lines.join('\n');
}

const ruleList = (rules) => indent(rules.join('\n\n'), 6);

const REQUESTS = `job:${HTTP}_count:rate5m`;
const SLI = {
  availability: {
    alert: 'HttpAvailabilityBudgetBurn',
    family: 'slo-availability',
    objective: 'job:poolscope_slo_availability_objective:ratio',
    bad: 'job:http_server_requests_5xx:rate5m',
    ratio: (w) => `job:http_server_request_5xx_per_requests:ratio_rate${w}`,
    bad_events: 'answered with a 5xx',
    describe: (b) => `${percent(b.availability.objective)} of responses not 5xx`,
  },
  latency: {
    alert: 'HttpLatencyBudgetBurn',
    family: 'slo-latency',
    objective: 'job:poolscope_slo_latency_objective:ratio',
    threshold: 'job:poolscope_slo_latency_threshold:seconds',
    bad: 'job:http_server_requests_slow:rate5m',
    ratio: (w) => `job:http_server_request_slow_per_requests:ratio_rate${w}`,
    bad_events: 'took longer than {{ with printf "job:poolscope_slo_latency_threshold:seconds{job=%q}" $labels.job | query }}{{ . | first | value | humanizeDuration }}{{ end }} to respond',
    describe: (b) => `${percent(b.latency.objective)} of responses within ${b.latency.threshold}s`,
  },
};

/** One value per service that has the HTTP histogram: `value` for the jobs of each branch. */
function perService(bs, value) {
  return bs.map((b) => `${value(b)} * group by (job) (${HTTP}_count${sel(b.matcher)})`).join('\nor\n');
}

export function sloRules(decl) {
  const bs = branches(decl);
  const fastPairs = decl.windows.filter((w) => w.severity === 'critical' && w.short === SHORTEST_WINDOW);
  const fastWindows = [...new Set([SHORTEST_WINDOW, ...fastPairs.map((w) => w.long)])];
  const isFast = (w) => fastPairs.includes(w);
  const header = [
    '# HTTP availability and latency SLOs: error ratios over every burn-rate window, and multi-window multi-burn-rate alerts.',
    '#',
    `# GENERATED by scripts/generate-slo-rules.mjs from ${DECLARATION}: do not edit; change the declaration and run`,
    '# `npm run slo-rules` (test/stack/slo.test.ts fails while this file and the declaration disagree).',
    '#',
    `# Period ${decl.period}; objectives (1 − objective = error budget):`,
    ...bs.map((b) => `#   ${b.name}: ${SLI.availability.describe(b)}; ${SLI.latency.describe(b)}`),
    '#',
    `# Windows: ${decl.allWindows.join(', ')}. Only the ${SHORTEST_WINDOW} rates read raw series; every longer window sums`,
    `# those ${SHORTEST_WINDOW} rates (one sample every ${FAST_INTERVAL}), which weighs each moment by its traffic exactly as a raw`,
    '# rate() over the window would, but reads one sample per service instead of every raw series at every',
    '# 5s scrape (a 3d raw window is 51,840 samples per series, per evaluation). The price: a window W covers W',
    `# plus the ${SHORTEST_WINDOW} lead-in of its first sample, immaterial next to the windows' lengths.`,
    '#',
    `# The objectives, the ${SHORTEST_WINDOW} rates, the ratios of the fastest page (${fastWindows.join(' and ')}) and its alerts are`,
    `# evaluated every ${FAST_INTERVAL} so that page comes within a minute; everything else every ${GROUP_INTERVAL}.`,
    '',
    'groups:',
  ];

  const objectives = [
    record(SLI.availability.objective, perService(bs, (b) => String(b.availability.objective)),
      'Each service\'s objectives, as series, so one alert rule serves every service and dashboards can draw them.\n' +
      'A service has them while it exports the HTTP histogram.'),
    record(SLI.latency.objective, perService(bs, (b) => String(b.latency.objective))),
    record(SLI.latency.threshold, perService(bs, (b) => String(b.latency.threshold))),
  ];
  const requests = record(REQUESTS, `sum by (job) (rate(${HTTP}_count[${SHORTEST_WINDOW}]))`,
    'Every response, the denominator of both SLIs.');
  const bad5xx = record(SLI.availability.bad,
    `sum by (job) (rate(${HTTP}_count${sel('http_response_status_code=~"5.."')}[${SHORTEST_WINDOW}]))\nor\n${REQUESTS} * 0`,
    'Availability: 5xx responses (4xx are the client\'s doing). `or … * 0` makes a service without errors 0,\n' +
    'not absent, so its ratios are 0 and the long windows count its good minutes.');
  const slow = record(SLI.latency.bad, bs.map((b) =>
    'clamp_min(\n' +
    `  sum by (job) (rate(${HTTP}_count${sel(b.matcher)}[${SHORTEST_WINDOW}]))\n` +
    `  - sum by (job) (rate(${HTTP}_bucket${sel(b.matcher, leMatcher(b.latency.threshold))}[${SHORTEST_WINDOW}])),\n` +
    '  0\n' +
    ')').join('\nor\n'),
  'Latency: responses slower than the service\'s threshold = all − those in the threshold\'s `le` bucket\n' +
    `(${bs.map((b) => `${b.name}: ${b.latency.threshold}s`).join('; ')}). The threshold must be a bucket bound. A whole-number\n` +
    'bound is le="1.0" when scraped and le="1" when pushed over OTLP (Prometheus 3), so both are matched.\n' +
    'clamp_min: a scrape may catch _count a moment ahead of the buckets.');

  const ratios = [];
  const fastRatios = [];
  for (const kind of ['availability', 'latency']) {
    for (const w of decl.allWindows) {
      const expr = w === SHORTEST_WINDOW
        ? `${SLI[kind].bad} / ${REQUESTS}`
        : `sum_over_time(${SLI[kind].bad}[${w}])\n/\nsum_over_time(${REQUESTS}[${w}])`;
      (fastWindows.includes(w) ? fastRatios : ratios).push(record(SLI[kind].ratio(w), expr));
    }
  }

  const alerts = [];
  const fastAlerts = [];
  for (const kind of ['availability', 'latency']) {
    for (const w of decl.windows) {
      const page = w.severity === 'critical';
      const burn = (window) => `${SLI[kind].ratio(window)} / on (job) (1 - ${SLI[kind].objective}) > ${w.factor}`;
      const objective = `{{ with printf "${SLI[kind].objective}{job=%q}" $labels.job | query }}{{ . | first | value | humanizePercentage }}{{ end }}`;
      (isFast(w) ? fastAlerts : alerts).push(alert({
        name: SLI[kind].alert,
        comment: `${page ? 'Page' : 'Ticket'}: ${percent(w.consumed)} of the ${decl.period} budget within ${w.long} = ${w.factor}× the sustainable burn, ` +
          `still going on over the last ${w.short}.`,
        expr: `${burn(w.long)}\nand\n${burn(w.short)}`,
        labels: {
          severity: w.severity,
          alert_family: SLI[kind].family,
          slo: kind,
          long_window: w.long,
          short_window: w.short,
        },
        summary: `{{ $labels.job }} burns its ${kind} error budget {{ printf "%.1f" $value }}× too fast (${w.long} and ${w.short} windows)`,
        description:
          `Over the last ${w.long}, {{ $labels.job }} ${SLI[kind].bad_events} {{ printf "%.1f" $value }}× as often as its\n` +
          `${kind} objective allows (${objective} over ${decl.period}), and still above ${w.factor}× over the last ${w.short}.\n` +
          `At ${w.factor}×, ${percent(w.consumed)} of the ${decl.period} error budget is gone within ${w.long}.`,
        dashboard: `${GRAFANA}poolscope-http?var-job={{ $labels.job | urlquery }}`,
      }));
    }
  }

  return [
    ...header,
    // One group, so its alerts read the ratios recorded moments before in the same evaluation. The
    // objectives are here too: a service's first page waited up to a minute for them when they were
    // recorded once a minute (the e2e test measured 112 s once).
    '  - name: poolscope-slo.fast',
    `    interval: ${FAST_INTERVAL}`,
    '    rules:',
    ruleList([...objectives, requests, bad5xx, slow, ...fastRatios, ...fastAlerts]),
    '',
    '  - name: poolscope-slo.recording',
    `    interval: ${GROUP_INTERVAL}`,
    '    rules:',
    ruleList(ratios),
    '',
    '  - name: poolscope-slo.alerts',
    `    interval: ${GROUP_INTERVAL}`,
    '    rules:',
    ruleList(alerts),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// regression.yml

export function regressionRules(decl) {
  const r = decl.regression;
  const q = `p${clean(r.quantile * 100)}`;
  const targets = [
    {
      kind: 'http',
      alert: 'HttpLatencyRegression',
      family: 'http-latency',
      metric: HTTP,
      level: 'job_route',
      by: 'job, http_route',
      guard: r.http,
      where: '{{ $labels.job }} {{ with $labels.http_route }}{{ . }}{{ else }}(unknown route){{ end }}',
      labelsQuery: 'job=%q,http_route=%q}" $labels.job $labels.http_route',
      dashboard: `${GRAFANA}poolscope-http?var-job={{ $labels.job | urlquery }}&var-route={{ $labels.http_route | urlquery }}`,
      unit: 'requests',
    },
    {
      kind: 'query',
      alert: 'QueryLatencyRegression',
      family: 'query-latency',
      metric: QUERY,
      level: 'job_pool_operation',
      by: 'job, db_client_connection_pool_name, db_operation_name',
      guard: r.query,
      where: '{{ with $labels.db_operation_name }}{{ . }}{{ else }}unclassified{{ end }} queries on pool {{ $labels.db_client_connection_pool_name }} of {{ $labels.job }}',
      labelsQuery: 'job=%q,db_client_connection_pool_name=%q,db_operation_name=%q}" $labels.job $labels.db_client_connection_pool_name $labels.db_operation_name',
      dashboard: `${GRAFANA}poolscope-queries?var-job={{ $labels.job | urlquery }}&var-pool={{ $labels.db_client_connection_pool_name | urlquery }}`,
      unit: 'queries',
    },
  ];

  const recording = [];
  const alerts = [];
  for (const t of targets) {
    const buckets = `${t.level}:${t.metric}_bucket:rate${r.window}`;
    const quantile = `${t.level}:${t.metric}:${q}_rate${r.window}`;
    const rate = `${t.level}:${t.metric}_count:rate${r.window}`;
    recording.push(
      record(buckets, `sum by (${t.by}, le) (rate(${t.metric}_bucket[${r.window}]))`),
      record(quantile, `histogram_quantile(${r.quantile}, ${buckets})`),
      record(rate, `sum by (${t.by}) (rate(${t.metric}_count[${r.window}]))`),
    );
    const g = t.guard;
    const then = (s) => `${s} offset ${r.offset}`;
    // The current and the week-old quantile, looked up by the alert's own labels (%q quotes and escapes
    // them as PromQL strings; an absent label is "" and matches series without it).
    const valueAt = (offset) =>
      `{{ with printf "${quantile}{${t.labelsQuery}${offset ? ` | printf "%s offset ${r.offset}"` : ''} | query }}` +
      '{{ . | first | value | humanizeDuration }}{{ end }}';
    alerts.push(alert({
      name: t.alert,
      expr: `${quantile} / ${then(quantile)} > ${g.ratio}\n` +
        `and\n${quantile} - ${then(quantile)} > ${g.minIncrease}\n` +
        `and\n${rate} >= ${g.minRate}\n` +
        `and\n${then(rate)} >= ${g.minRate}`,
      forDuration: r.for,
      labels: { severity: 'warning', alert_family: t.family },
      summary: `${q} of ${t.where} is {{ printf "%.1f" $value }}× what it was a week ago`,
      description:
        `${q} duration of ${t.where} over the last ${r.window} has been at least ${g.ratio}× and ${duration(g.minIncrease)} above\n` +
        `what it was at the same time ${r.offset} earlier for over ${r.for}, at ≥ ${g.minRate} ${t.unit}/s now and then:\n` +
        `now ${valueAt(false)}, then ${valueAt(true)}.`,
      dashboard: t.dashboard,
    }));
  }

  return [
    `# Week-over-week regressions: ${q} of HTTP routes and of queries now against the same time ${r.offset} earlier.`,
    '#',
    `# GENERATED by scripts/generate-slo-rules.mjs from ${DECLARATION}: do not edit; change the declaration and run`,
    '# `npm run slo-rules`.',
    '#',
    `# ${r.window} windows, evaluated once a minute: a regression is a change that stays, so a window long enough`,
    `# to hold a few hundred requests matters more than seeing it within seconds. The offset reads this rule's`,
    `# own recorded series, so the alerts need ${r.offset} of history after the rules are first loaded before they can fire.`,
    '',
    'groups:',
    '  - name: poolscope-regression.recording',
    `    interval: ${GROUP_INTERVAL}`,
    '    rules:',
    ruleList(recording),
    '',
    '  - name: poolscope-regression.alerts',
    `    interval: ${GROUP_INTERVAL}`,
    '    rules:',
    ruleList(alerts),
    '',
  ].join('\n');
}

export function generate(declarationText) {
  const decl = parseDeclaration(declarationText);
  return { 'slo.yml': sloRules(decl), 'regression.yml': regressionRules(decl) };
}

function main(argv) {
  let check = false;
  let declaration = path.join(ROOT, DECLARATION);
  let out = path.join(ROOT, 'prometheus', 'rules');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--check') check = true;
    else if (a === '--declaration' && argv[i + 1]) declaration = path.resolve(argv[++i]);
    else if (a === '--out' && argv[i + 1]) out = path.resolve(argv[++i]);
    else {
      process.stderr.write(`generate-slo-rules: unknown argument ${a}\nusage: node scripts/generate-slo-rules.mjs [--check] [--declaration FILE] [--out DIR]\n`);
      return 2;
    }
  }
  let files;
  try {
    files = generate(fs.readFileSync(declaration, 'utf8'));
  } catch (e) {
    process.stderr.write(`generate-slo-rules: ${e instanceof DeclarationError ? e.message : e.stack}\n`);
    return 1;
  }
  let stale = 0;
  let written = 0;
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(out, name);
    const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : undefined;
    if (current === text) continue;
    if (check) {
      process.stderr.write(`generate-slo-rules: ${path.relative(process.cwd(), file)} is out of date with ${path.relative(process.cwd(), declaration)}: run \`npm run slo-rules\`\n`);
      stale++;
    } else {
      fs.writeFileSync(file, text);
      written++;
      process.stdout.write(`generate-slo-rules: wrote ${path.relative(process.cwd(), file)}\n`);
    }
  }
  if (stale === 0 && written === 0) process.stdout.write('generate-slo-rules: up to date\n');
  return stale ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
