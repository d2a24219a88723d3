// Bundles the package's two entry points (dist/register.js and dist/index.js, as compiled by tsc) into ES
// modules that share one chunk of code.
//
// Why: resolving, reading and linking the ~300 small ES modules of the default path (ours plus OpenTelemetry's
// core, resources, sdk-metrics, instrumentation and semantic-conventions, whose index alone is 200 KB of
// constants) was half of the preload's start-up cost. Bundled and tree-shaken: +142 → +73 ms on Node 20 for
// `import pg; new pg.Pool().end()` (BENCHMARKS.md, start-up). One shared chunk, so `poolscope` and
// `poolscope/register` are the same classes and the same module state.
//
// What stays outside, resolved from node_modules at run time as before:
// - @opentelemetry/api and api-logs: the application's copy must be the one whose globals (meter and tracer
//   providers, context manager, propagators, diag) Poolscope registers. A bundled copy of another version made
//   the application's own metrics and trace context silently no-ops (the API refuses a mismatched global).
// - import-in-the-middle: its loader hook and the wrapped modules it generates import its registry module by
//   path, so the `Hook` instances must come from that same copy;
// - pg and pg-pool (the application's own copies are the ones instrumented);
// - require-in-the-middle: its wrapper of `require` is on the stack of every require(), and Node warns of a
//   deprecated builtin (DEP0040, `punycode`) required from a frame outside node_modules. Bundled into a checkout's
//   ./dist, a dependency's `require('punycode')` warned under the preload alone, and exited under
//   --throw-deprecation, on Node 22 and 24;
// - everything loaded lazily through createRequire: OTLP exporters, tracing, per-framework instrumentations.
import { build } from 'esbuild';
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(dirname(fileURLToPath(import.meta.url))), 'dist');

/*
 * require-in-the-middle through the CommonJS loader (the banner's `require`), not an ES-module import. Imported, it
 * passed Node's ES-module loader, and a loader there that hands Node the source of CommonJS files (a `load` hook
 * given with --experimental-loader, which runs before the preload) had it compiled with that loader's own
 * `require`, which has no `require.cache`: its hook then threw a TypeError into every later require() of the
 * application.
 */
const RITM = 'require-in-the-middle';
const requireRitm = {
  name: 'require-ritm',
  setup(b) {
    b.onResolve({ filter: /^require-in-the-middle$/ }, (args) => (args.kind === 'import-statement'
      ? { path: RITM, namespace: 'require-ritm' } : { path: RITM, external: true }));
    b.onLoad({ filter: /.*/, namespace: 'require-ritm' }, () => ({ contents: `export const { Hook } = require('${RITM}');`, loader: 'js' }));
  },
};
// Chunk names carry a content hash: the previous build's would stay behind.
rmSync(join(dist, 'chunks'), { recursive: true, force: true });

const { metafile } = await build({
  entryPoints: [join(dist, 'register.js'), join(dist, 'index.js')],
  outdir: dist,
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  splitting: true,
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The packages' ESM builds: tree-shakable, where the CommonJS "main" builds are not.
  mainFields: ['module', 'main'],
  external: ['@opentelemetry/api', '@opentelemetry/api-logs', 'import-in-the-middle', 'import-in-the-middle/*', 'pg', 'pg-pool', 'pg-native', 'require-in-the-middle'],
  // CommonJS dependencies (require-in-the-middle, debug) call require() for Node built-ins.
  banner: { js: "import { createRequire as __poolscopeCreateRequire } from 'node:module';\nconst require = __poolscopeCreateRequire(import.meta.url);" },
  minifyWhitespace: true,
  minifySyntax: true,
  // The wrappers Poolscope installs (`emit`, `connect`, `query`, `_release`) keep their names in the
  // application's stack traces and `.name`: bundling renames clashing functions, and minifying drops the names
  // of function expressions.
  keepNames: true,
  legalComments: 'none',
  sourcemap: 'linked',
  metafile: true,
  logLevel: 'warning',
  plugins: [requireRitm],
});

// Only what the two entry points load is shipped. tsc's per-file JavaScript, the bundle's input, was shipped too:
// 140 dead files (1.1 MB) whose maps point at sources the package does not include. esbuild also writes a chunk
// for each dynamic import it saw, even in code it then shook out (the resources package's machine-id readers).
// The declarations stay: they are the package's types.
const loaded = new Set();
const visit = (file) => {
  if (loaded.has(file)) return;
  loaded.add(file);
  loaded.add(`${file}.map`);
  for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*"(\.\.?\/[^"]+\.js)"/g)) visit(join(dirname(file), m[1]));
};
visit(join(dist, 'register.js'));
visit(join(dist, 'index.js'));
for (const name of readdirSync(dist, { recursive: true })) {
  const file = join(dist, name);
  if (/\.js(\.map)?$/.test(file) && !loaded.has(file)) rmSync(file);
}

// The bundle carries other packages' code (OpenTelemetry's, under Apache-2.0), and
// legalComments: 'none' drops the notices inside it: their licenses go beside it, one file, package by package.
const root = dirname(dist);
const packages = new Map();
for (const input of Object.keys(metafile.inputs)) {
  const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (m === null || packages.has(m[1])) continue;
  const dir = join(root, m[1]);
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const licenseFile = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
  // Code a package vendors keeps its own license beside it (@opentelemetry/instrumentation's shimmer, BSD-2-Clause,
  // in LICENSES/shimmer/LICENSE, was left out).
  const vendored = existsSync(join(dir, 'LICENSES'))
    ? readdirSync(join(dir, 'LICENSES'), { recursive: true }).filter((f) => /licen[cs]e/i.test(f)).sort()
      .map((f) => `Vendored code (LICENSES/${f}):\n\n${readFileSync(join(dir, 'LICENSES', f), 'utf8').trim()}`)
    : [];
  packages.set(m[1], { name: manifest.name, version: manifest.version, license: manifest.license,
    text: [licenseFile === undefined ? undefined : readFileSync(join(dir, licenseFile), 'utf8').trim(), ...vendored]
      .filter((t) => t !== undefined).join('\n\n') || undefined });
}
const notices = [...packages.values()].sort((a, b) => a.name.localeCompare(b.name)).map((p) =>
  `${p.name} ${p.version} (${p.license})\n\n${p.text ?? `No license file in the package; its package.json says ${p.license}.`}`);
writeFileSync(join(dist, 'THIRD-PARTY-LICENSES.txt'), 'Code of these packages is bundled into dist/register.js, ' +
  `dist/index.js and dist/chunks/.\n\n${notices.join(`\n\n${'-'.repeat(78)}\n\n`)}\n`);

// What `--require poolscope/register` finds (package.json's "require" condition): not built, it is plain CommonJS.
copyFileSync(join(root, 'src', 'register.cjs'), join(dist, 'register.cjs'));
// The loader thread's hooks, which register.js registers by URL (no import of it for the bundle to follow).
copyFileSync(join(root, 'src', 'esm-hook.mjs'), join(dist, 'esm-hook.mjs'));
