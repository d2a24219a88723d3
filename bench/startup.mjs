// Start-up: wall clock and peak RSS of a script that imports pg and ends a pool, plain and under the preload,
// with the preload's parts measured apart (alternating, medians). Run by bench/run.mjs once per Node version:
//   node bench/startup.mjs <node binary> <runs>
// Prints one JSON line.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nodeBin = process.argv[2] ?? process.execPath;
const runs = Number(process.argv[3] ?? 11);
const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-startup-'));
const pgUrl = pathToFileURL(path.join(root, 'node_modules', 'pg', 'lib', 'index.js')).href;

// The script every variant runs: what a CLI, a migration or a test file does first.
const app = path.join(dir, 'app.mjs');
writeFileSync(app, `import pg from ${JSON.stringify(pgUrl)};\nconst pool = new pg.Pool({ host: '127.0.0.1', port: 1 });\nawait pool.end();\n`);
// An empty --import: what the flag alone costs.
const empty = path.join(dir, 'empty.mjs');
writeFileSync(empty, '');
// The ESM loader hook alone, installed as dist/register.js installs it for this script (src/register.ts):
// in-thread where the runtime has synchronous hooks; elsewhere none, since the script needs no loader
// thread (no Slonik installed, no traces). The thread itself is measured apart, as what Slonik or traces add.
const iitm = (f) => JSON.stringify(pathToFileURL(path.join(root, 'node_modules', 'import-in-the-middle', f)).href);
const threadHook = JSON.stringify(pathToFileURL(path.join(root, 'node_modules', '@opentelemetry', 'instrumentation', 'hook.mjs')).href);
const hook = path.join(dir, 'hook.mjs');
writeFileSync(hook, `const { supportsSyncHooks } = await import(${iitm('supports-sync-hooks.mjs')});
if (supportsSyncHooks()) (await import(${iitm('register-hooks.mjs')})).register({ include: ['http', 'https', 'pg', 'pg-pool'] });
`);
const thread = path.join(dir, 'thread.mjs');
writeFileSync(thread, `import { register } from 'node:module';
register(${threadHook}, import.meta.url, { data: { include: ['http', 'https', 'pg', 'pg-pool'] } });
`);
const register = path.join(root, 'dist', 'register.js');

const variants = [
  { name: 'baseline', args: [], env: {} },
  { name: 'empty --import', args: ['--import', empty], env: {} },
  { name: 'loader hook only', args: ['--import', hook], env: {} },
  { name: 'loader thread only', args: ['--import', thread], env: {} },
  // The bundle loaded and evaluated, nothing started (OTEL_SDK_DISABLED is checked first).
  { name: 'preload, disabled', args: ['--import', register], env: { OTEL_SDK_DISABLED: 'true' } },
  { name: 'preload', args: ['--import', register], env: {} },
];

const hasTime = existsSync('/usr/bin/time');

function once(v) {
  const env = { ...process.env, OTEL_EXPORTER_PROMETHEUS_PORT: '0', OTEL_LOG_LEVEL: 'error', ...v.env };
  delete env.NODE_OPTIONS;
  const t = process.hrtime.bigint();
  // GNU time reports the peak RSS; without it, only the wall clock is measured.
  const r = hasTime
    ? spawnSync('/usr/bin/time', ['-f', '%M', nodeBin, ...v.args, app], { env, encoding: 'utf8' })
    : spawnSync(nodeBin, [...v.args, app], { env, encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== 0) throw new Error(`${v.name}: exit ${r.status}: ${r.stderr}`);
  const rssKB = hasTime ? Number(r.stderr.trim().split('\n').pop()) : NaN;
  return { ms, rssMB: rssKB / 1024 };
}

const results = Object.fromEntries(variants.map((v) => [v.name, []]));
for (let i = 0; i < runs; i++) {
  const order = i % 2 === 0 ? variants : [...variants].reverse();
  for (const v of order) results[v.name].push(once(v));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const node = spawnSync(nodeBin, ['-p', 'process.version'], { encoding: 'utf8' }).stdout.trim();
const syncHooks = spawnSync(nodeBin, ['--input-type=module', '-e',
  `const { supportsSyncHooks } = await import(${iitm('supports-sync-hooks.mjs')}); console.log(supportsSyncHooks());`],
{ encoding: 'utf8' }).stdout.trim() === 'true';
process.stdout.write(`${JSON.stringify({
  node,
  runs,
  syncHooks,
  variants: variants.map((v) => ({
    name: v.name,
    ms: median(results[v.name].map((r) => r.ms)),
    // Paired with the baseline run next to it, so machine drift cancels.
    plusMs: median(results[v.name].map((r, i) => r.ms - results.baseline[i].ms)),
    rssMB: median(results[v.name].map((r) => r.rssMB)),
    plusRssMB: median(results[v.name].map((r, i) => r.rssMB - results.baseline[i].rssMB)),
  })),
})}\n`);
