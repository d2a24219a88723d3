// Bundles the zero-code entry point (dist/register.js, as compiled by tsc) into one ESM file.
//
// Why: resolving, reading and linking the ~300 small ES modules of the default path (ours plus
// @opentelemetry/api, core, resources, sdk-metrics, instrumentation and semantic-conventions, whose index alone
// is 200 KB of constants) was half of the preload's start-up cost. One file, tree-shaken, measured +142 → +87 ms
// on Node 20 and +138 → +78 ms on Node 22 for `import pg; new pg.Pool().end()` (BENCHMARKS.md, start-up).
//
// What stays outside the bundle, resolved from node_modules at run time as before:
// - import-in-the-middle: its loader hook and the wrapped modules it generates import its registry module by
//   path, so the `Hook` instances must come from that same copy;
// - pg and pg-pool (the application's own copies are the ones instrumented);
// - everything loaded lazily through createRequire: OTLP exporters, tracing, per-framework instrumentations.
// The programmatic API (dist/index.js) stays unbundled; the running instance is shared through a global
// symbol, so `getPoolscope()` from either copy finds the preload's instance.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(dirname(fileURLToPath(import.meta.url))), 'dist');
const entry = join(dist, 'register.js');

await build({
  entryPoints: [entry],
  outfile: entry,
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The packages' ESM builds: tree-shakable, where the CommonJS "main" builds are not.
  mainFields: ['module', 'main'],
  external: ['import-in-the-middle', 'import-in-the-middle/*', 'pg', 'pg-pool', 'pg-native'],
  // CommonJS dependencies (require-in-the-middle, debug) call require() for Node built-ins.
  banner: { js: "import { createRequire as __poolscopeCreateRequire } from 'node:module';\nconst require = __poolscopeCreateRequire(import.meta.url);" },
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: false,
  legalComments: 'none',
  sourcemap: 'linked',
  logLevel: 'warning',
});
