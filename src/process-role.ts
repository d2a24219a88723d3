import { realpathSync } from 'node:fs';
import { getEnvironmentData, isMainThread, setEnvironmentData } from 'node:worker_threads';
import { processState } from './process-state.js';

/**
 * Node processes whose HTTP servers are not the service: test runners and their workers, and front-end dev
 * servers. Under a global NODE_OPTIONS (a dev container, a `.env`, CI) they get the preload too, and an HTTP server of their own
 * made them take the telemetry port (serverStart `auto`): `concurrently "vite" "node server.js"` left the service
 * told the port was taken and its health read from Vite; a `node --test` file serving HTTP bound the port and
 * printed the blind-health line into the test output. Such a process still becomes the service when it uses pg
 * (a SvelteKit or Astro dev server rendering pages that query, a test suite with pools).
 *
 * A list, not a rule such as "the entry point is inside node_modules": `next start`, `remix-serve`, `strapi start`
 * are production services started from a package's CLI, and a readiness probe on the telemetry port must find
 * it bound as soon as they listen.
 */

/**
 * Packages whose CLI is a test runner or a dev server, when the process's main script is inside one of them: a
 * runner's workers run its own script (Mocha's and AVA's workers), while a service a test spawns runs its own
 * and is judged as one.
 */
const TOOL_PACKAGES: readonly string[] = [
  'mocha', 'ava', 'jest', 'jest-cli', 'vitest', 'jasmine', 'karma', '@hapi/lab', 'playwright', '@playwright/test',
  '@web/test-runner',
  'vite', 'webpack', 'webpack-cli', 'webpack-dev-server', 'react-scripts', '@angular/cli', '@angular-devkit/build-angular',
  'parcel', '@parcel/core', 'storybook', '@storybook/cli', '@rsbuild/core', '@rspack/cli', '@web/dev-server',
  'browser-sync', 'live-server', 'astro', 'nuxi', '@nuxt/cli', '@remix-run/dev', '@react-router/dev',
  '@vue/cli-service', 'gatsby', '@docusaurus/core', 'metro', '@expo/cli', 'json-server',
];

/**
 * General-purpose process pools that a test runner runs its workers on, counted only with the runner's mark in
 * the environment: a service may run its own jobs on them.
 */
const RUNNER_POOLS: Readonly<Record<string, readonly [env: string, tool: string]>> = {
  'jest-worker': ['JEST_WORKER_ID', 'Jest'],
  // Not VITEST_POOL_ID: Vitest sets it in a forks worker only after the worker has started (and the preload has
  // judged it), so its test files serving HTTP bound the port and printed the blind-health line.
  tinypool: ['VITEST', 'Vitest'],
};

/** The package a script path lies in, by its last `node_modules/` segment (npm, pnpm, Yarn's zip cache). */
function packageOf(script: string): string | undefined {
  const parts = script.replace(/\\/g, '/').split('/');
  const at = parts.lastIndexOf('node_modules');
  if (at < 0 || at + 1 >= parts.length) return undefined;
  const first = parts[at + 1];
  // `.bin/vite` when the path was not resolved: the shim's name is the tool's.
  if (first === '.bin') return parts[at + 2];
  return first.startsWith('@') && at + 2 < parts.length ? `${first}/${parts[at + 2]}` : first;
}

/** The tool a script path belongs to, if it is one. */
function toolOfScript(script: unknown, env: NodeJS.ProcessEnv): string | undefined {
  if (typeof script !== 'string' || script === '') return undefined;
  let real = script;
  // The real path: npm's `.bin` entries are symlinks to the package's own file. Unreadable (a permission
  // model without fs reads): the path as given.
  try { real = realpathSync(script); } catch { /* as given */ }
  for (const candidate of [real, script]) {
    const pkg = packageOf(candidate);
    if (pkg === undefined) continue;
    if (TOOL_PACKAGES.includes(pkg)) return pkg;
    const pool = RUNNER_POOLS[pkg];
    if (pool !== undefined && env[pool[0]] !== undefined) return pool[1];
  }
  return undefined;
}

/**
 * The test runner or dev server this process is, by name; undefined for everything else (the service). Read from
 * the internal modules Node has loaded and the main script's real path.
 */
export function toolProcessName(argv: readonly string[] = process.argv,
  loaded: readonly string[] | undefined = (process as { moduleLoadList?: string[] }).moduleLoadList,
  env: NodeJS.ProcessEnv = process.env): string | undefined {
  return runsNodeTest(loaded) ? 'node:test' : toolOfScript(argv[1], env);
}

/**
 * A file `node --test` runs, or the runner itself (`--experimental-test-isolation=none`): not by the
 * NODE_TEST_CONTEXT it sets, which a server that a test file spawns inherits, but by node:test in use here.
 */
function runsNodeTest(loaded: readonly string[] | undefined): boolean {
  return loaded?.some((m) => m.startsWith('NativeModule internal/test_runner/')) === true;
}

/** Where a main thread leaves its tool name for its worker threads, whose argv[1] is their own file. */
const kRoleKey = 'poolscope.tool-process';
let byScript: { name: string | undefined } | undefined;

/**
 * {@link toolProcessName} of this process. The script's part is computed once; node:test is looked for at each
 * call, since a test file may load it after the application it tests has started listening. A worker thread
 * takes its main thread's answer (SvelteKit's `vite build` and Nuxt's dev server run pg in workers of files of
 * their own), set by {@link shareToolProcess}.
 */
export function toolProcess(): string | undefined {
  if (runsNodeTest((process as { moduleLoadList?: string[] }).moduleLoadList)) return 'node:test';
  if (byScript === undefined) {
    let inherited: unknown;
    try { inherited = isMainThread ? undefined : getEnvironmentData(kRoleKey); } catch { /* none */ }
    byScript = { name: typeof inherited === 'string' ? inherited : toolOfScript(process.argv[1], process.env) };
  }
  return byScript.name;
}

/** In a main thread that is a tool, hands its name to the worker threads it will start. */
export function shareToolProcess(): void {
  if (!isMainThread) return;
  const name = toolProcess();
  if (name === undefined || name === 'node:test') return;
  try { setEnvironmentData(kRoleKey, name); } catch { /* workers judge for themselves */ }
}

/**
 * Whether HTTP traffic now is a tool's own, not the service's: this process is a test runner or dev server that
 * has not used pg (nor been judged the service). Under the preload its requests are neither measured nor traced:
 * over OTLP they were pushed as the service's, and a collector that was down was told of in the tool's output.
 */
export function toolTraffic(): boolean {
  return processState.inUse !== true && toolProcess() !== undefined;
}
