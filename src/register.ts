/*
 * Zero-code entry point: `node --import poolscope/register app.js` (or `--import ./dist/register.js`).
 * This is the only module with process-wide side effects: the ESM loader hook, the diag logger, the
 * running Poolscope and the flush-on-exit handlers. It obeys the resolved configuration: with
 * OTEL_SDK_DISABLED=true none of them is installed (no hook, no logger, no handlers, no Poolscope).
 */
import { AsyncResource, createHook, executionAsyncId } from 'node:async_hooks';
import { createRequire, register } from 'node:module';
import { isMainThread } from 'node:worker_threads';
import { errorText, installLogging, poolscopeDiag } from './logger.js';
import { normalizeConfig } from './config.js';
import { HTTP_ROUTE_MODULES } from './http-metrics.js';
import { SLONIK_ESM_FILES, SLONIK_PACKAGE } from './adapters/slonik.js';
import { esmOnlyPackageInstalled, installCjsImportHook, otherLoaderPresent } from './cjs-import-hook.js';
import { collectorUnreachable, PROBE_LIMIT_MS } from './export/collector-probe.js';
import { getPoolscope, startPoolscope, type Poolscope } from './sdk.js';
import { nativeTimers, pollUntil, settledWithin } from './native-timers.js';
import { shareToolProcess, toolProcess } from './process-role.js';


let poolscope: Poolscope | undefined;
const BUILTINS = ['http', 'https', 'http2'];

async function start(): Promise<void> {
  // Resolving the environment is pure: startPoolscope() resolves the same environment to the same
  // configuration and logs its warnings, once, through the logger installed here.
  const { config } = normalizeConfig();
  if (config.disabled) return;
  installLogging(config.logLevel);
  // A worker thread inherits --import, but each thread would run its own Poolscope with its own port and
  // registry: its pools cannot join the main thread's /metrics. Say so instead of failing on the port.
  if (!isMainThread) {
    // Not to a worker that did as the line says (it was told all the same).
    whenWorkerLoadsPg(() => {
      // Nor to a test runner's or build tool's worker (process-role.ts): SvelteKit's `vite build` loads pg in one.
      if (getPoolscope() === undefined && toolProcess() === undefined) poolscopeDiag().warn('poolscope: not started in a worker thread (pools in worker threads are ' +
        'not monitored; call startPoolscope({ port }) in the worker to monitor them with their own endpoint).');
    });
    return;
  }

  // Before the application starts any worker thread: a tool's workers are told they belong to a tool.
  shareToolProcess();

  const wasm = (globalThis as { WebAssembly?: unknown }).WebAssembly !== undefined;
  const syncHooks = wasm ? await loadSyncHooks() : undefined;
  // import-in-the-middle patches ESM imports (`import express from 'express'`, Slonik); limited to the
  // modules we instrument so every other import loads untouched.
  // Node's builtins only for traces: metrics patch their prototypes and need no hook (http/server-duration.ts).
  // Hooked, a CommonJS file whose source a loader hands Node (Yarn Plug'n'Play's, a custom `load` hook) got
  // import-in-the-middle's ES-module wrapper for `require('node:http')`, and before Node 24 the application died
  // at start-up (ERR_VM_MODULE_LINK_FAILURE). On the loader thread, a loader registered after this one that
  // answers `node:` URLs itself (ts-node's) got `node:http?iitm=true`, and the application failed to start
  // (nodejs/import-in-the-middle#174).
  const hookBuiltins = config.tracesExporter !== undefined && !builtinHooksBreakRequire();
  const include = [...(hookBuiltins ? BUILTINS : []), 'pg', 'pg-pool', ...HTTP_ROUTE_MODULES, SLONIK_ESM_FILES];
  // Slonik is ES-module-only, NestJS is from 12 on, and any other hooked package may become so.
  const hookedPackages = ['pg', 'pg-pool', ...HTTP_ROUTE_MODULES, SLONIK_PACKAGE];
  let cjsImportHook = false;
  try {
    if (!wasm) {
      // import-in-the-middle reads modules' exports with cjs-module-lexer's WebAssembly build only: without
      // WebAssembly (--jitless, --no-expose-wasm) its hooks broke every ES-module import of a hooked package.
      cjsImportHook = true;
      if (config.tracesExporter !== undefined) poolscopeDiag().warn('poolscope: WebAssembly is off (--jitless or --no-expose-wasm): ' +
        'ES-module imports of http are not hooked, so their spans are missing; metrics are complete.');
    } else if (syncHooks) {
      // In-thread synchronous hooks where Node has them working (22.22.3+, 24.11.1+): no loader thread to
      // start and no message round-trip per imported module, which was most of the preload's start-up cost.
      syncHooks.register({ include });
    } else if (config.esmLoaderThread === 'always' || (config.esmLoaderThread === 'auto' &&
      (config.tracesExporter !== undefined || esmOnlyPackageInstalled(hookedPackages) || otherLoaderPresent()))) {
      // The loader thread, only where something needs it: a hooked package installed as an ES module, traces (whose
      // upstream HTTP instrumentation wraps `http.request` in ES-module namespaces), or another loader.
      register('./esm-hook.mjs', import.meta.url, { data: { include } });
    } else {
      // Every other hooked package is CommonJS: seen when imported, without the thread's memory.
      cjsImportHook = true;
    }
  } catch (err) {
    // (--frozen-intrinsics: import-in-the-middle sets Error.stackTraceLimit.) CommonJS packages that ES modules
    // import are still seen without it; ES-module-only ones (Slonik) and, with traces, ESM imports of http are not.
    cjsImportHook = true;
    // Node's permission model refuses the loader thread (a worker) unless --allow-worker is given.
    const denied = (err as { code?: unknown })?.code === 'ERR_ACCESS_DENIED' ? ' (under --permission, --allow-worker lets it run)' : '';
    poolscopeDiag().warn(`poolscope: ES-module loader hook unavailable (${errorText(err, 160)})${denied}; ES-module-only ` +
      'packages (Slonik) are not monitored, and with traces on, ES-module imports of http have no spans.');
  }

  poolscope = startPoolscope({}, true);
  // After the instrumentations' require hook, so that its wrapper of `require` (in node_modules) runs inside ours:
  // Node warns of a deprecated builtin a dependency requires unless the innermost frame outside Node is in
  // node_modules, and ours, innermost, made `require('punycode')` warn (DEP0040) on Node 22 and 24.
  if (cjsImportHook && !poolscope.config.disabled) installCjsImportHook();
  const running = poolscope;
  if (running.config.disabled ||
    !(running.config.metricsExporters.includes('otlp') || running.config.tracesExporter === 'otlp')) return;

  // Flush the final metrics on the way out. A signal is only intercepted to flush: if the application has
  // no handler of its own, the signal is re-raised afterwards so the process ends exactly as it would have.
  const FLUSH_LIMIT_MS = 5_000;
  const endpoints = [
    ...(running.config.metricsExporters.includes('otlp') ? [running.config.otlpMetrics] : []),
    ...(running.config.tracesExporter === 'otlp' ? [running.config.otlpTraces] : []),
  ];
  let finalExportStarted = false;
  let finalExportDone = false;
  /**
   * The last export, skipped at once when no collector in use accepts a connection (collector-probe.ts):
   * retrying it would only keep the process alive. Resolves with false when it did not finish in time.
   * Said, never silent: the last interval's telemetry may not have reached the collector.
   */
  const finalExport = async (flush: () => Promise<void>): Promise<boolean> => {
    finalExportStarted = true;
    const unreachable = await Promise.all(endpoints.map((e) => collectorUnreachable(e.endpoint, PROBE_LIMIT_MS, e.protocol)));
    finalExportDone = unreachable.every((why) => why !== undefined);
    if (finalExportDone) {
      // Said only where there was something to lose: every node process under the preload (npm, `node -p`
      // in a build step) ends this way while the collector is down, and node-gyp fails a `node -p` that
      // writes to stderr (native-module builds broke under the preload).
      if (running.observedAnything) poolscopeDiag().warn(`poolscope: the final OTLP export was skipped: the collector is unreachable (${unreachable[0]}); ` +
        'the telemetry since the last successful export is lost.');
      return true;
    }
    const settled = await settledWithin(flush(), FLUSH_LIMIT_MS);
    finalExportDone = true;
    if (settled) return true;
    poolscopeDiag().warn(`poolscope: the final OTLP export did not finish within ${FLUSH_LIMIT_MS / 1000} s ` +
      'of the process ending; the telemetry since the last successful export may be lost.');
    return false;
  };
  // The one way out that skips both: process.exit() (or an uncaught error). Nothing asynchronous can run
  // here, so it is said instead: unless the application shut Poolscope down itself, or no pool was ever
  // seen (`knex --version`, a test runner's own exit).
  process.on('exit', () => {
    if (finalExportDone) return;
    if (finalExportStarted) {
      poolscopeDiag().warn('poolscope: the process exited before the final OTLP export finished; the telemetry since the last successful export is lost.');
    } else if (getPoolscope() === running && running.observedAnything) {
      poolscopeDiag().warn('poolscope: the process exited without the final OTLP export (process.exit() or an uncaught error); the telemetry ' +
        'since the last export is lost. Await getPoolscope()?.shutdown() before process.exit() to send it.');
    }
  });
  // The first signal is taken with once(): the listener is gone before the application's listeners run, so a library
  // that re-raises only when its own listeners are alone (signal-exit: execa, ora, write-file-atomic) finds itself
  // alone. (Kept installed, it made such a process never end.) A handler that cleans up first and raises the signal
  // again later (NestJS's enableShutdownHooks, within milliseconds) finds the guard installed after them: ending the
  // process, Node's default action, then waits for the export, which was otherwise lost with nothing said. A
  // re-raise from inside a listener (signal-exit's) still ends the process at once, as it would without Poolscope.
  let exporting: Promise<boolean> | undefined;
  let guarded = false;
  const endAfterExport = (signal: NodeJS.Signals) => {
    void exporting!.then(() => {
      process.off('SIGTERM', guard);
      process.off('SIGINT', guard);
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  };
  const guard = (signal: NodeJS.Signals) => {
    // Another listener: the application decides what this signal does.
    if (process.listenerCount(signal) === 1) endAfterExport(signal);
  };
  const onSignal = (signal: NodeJS.Signals) => {
    const appHandlesSignal = process.listenerCount(signal) > 0;
    exporting ??= finalExport(() => running.shutdown());
    if (!appHandlesSignal) {
      endAfterExport(signal);
      return;
    }
    if (guarded) return;
    guarded = true;
    process.nextTick(() => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      process.on('SIGTERM', guard);
      process.on('SIGINT', guard);
    });
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  /**
   * What is listed as active at the end, to tell later what is new. Stdio is left out: a line written to
   * stderr (our own final-export warning) shows its pipe as active on Node 22 and 24 while the write is under
   * way, and a listener's own output is no work that keeps a process alive.
   */
  const resources = () => process.getActiveResourcesInfo().filter((r) => r !== 'PipeWrap' && r !== 'TTYWrap');
  /**
   * Whether anything is active now that was not at the first 'beforeExit'. Only new things count: what closed
   * meanwhile (an idle keep-alive socket) is not work; comparing the lists whole took it for some, and the
   * application's 'beforeExit' listeners ran twice.
   */
  const nothingNew = (before: string[]) => {
    const left = new Map<string, number>();
    for (const r of before) left.set(r, (left.get(r) ?? 0) + 1);
    for (const r of resources()) {
      const n = left.get(r) ?? 0;
      if (n === 0) return false;
      left.set(r, n - 1);
    }
    return true;
  };
  // First among the listeners, whenever registered: what the others start is then told from what was already
  // there by the async hook. Run after an agent's listener (an --require preload, registered before us), the
  // work that listener started (Elastic APM re-refs its socket and writes) was already active at our snapshot,
  // so it read as nothing new, and the process was ended before the agent's flush was done.
  process.prependListener('beforeExit', () => {
    if (finalExportStarted) return;
    const idle = resources();
    const others = watchOtherWork();
    void others.ours.runInAsyncScope(() => finalExport(() => running.forceFlush()).then((settled) => {
      // Not settled: the exporter's retry timers keep the event loop alive; the process was about to exit,
      // so it exits now. Unless another 'beforeExit' listener exists: the application (or a library) may
      // have started work of its own there, and ending it, with whatever exit code it would have set, is not
      // ours to do. The exporter's own timeout then bounds how long the flush outlives that work.
      if (!settled) {
        if (process.listenerCount('beforeExit') <= 1) process.exit();
        return;
      }
      // The export kept the event loop alive: once it is done the loop empties again, and Node would emit
      // 'beforeExit' a second time, running the application's own listeners twice. When nothing but the export
      // has started since, the process ends now, with its exit code, as it would have without the export.
      // Work an application's listener started there, even work done before the export (a flush that queued
      // more), gets the second 'beforeExit' it would have had: ending then lost what that flush had queued.
      nativeTimers.setImmediate(() => {
        others.stop();
        if (!others.started() && nothingNew(idle)) process.exit();
      });
    }));
  });
}

const NOT_LOOP_WORK = new Set(['PROMISE', 'TickObject', 'Microtask']);

/**
 * Watches, from the first 'beforeExit' on, whether the application's 'beforeExit' listeners started
 * asynchronous work that then ran: a handle or request descending from the 'beforeExit' emit, whose callback
 * came from the event loop. Promises and next-tick callbacks keep no process alive (a console.log to a pipe
 * completes with one), and an unref'd timer would not have kept it either. Run the export in `ours`: what it
 * starts, and what that starts in turn, is told apart by its trigger. So is what older handles do meanwhile
 * (a keep-alive socket closing counted as the listener's work, and a listener that only logs ran twice).
 * Costs an async hook for the last moments of the process only. Call it from a 'beforeExit' listener.
 */
function watchOtherWork(): { ours: AsyncResource; started: () => boolean; stop: () => void } {
  const ours = new AsyncResource('poolscope.final-export');
  const mine = new Set<number>([ours.asyncId()]);
  const theirs = new Set<number>([executionAsyncId()]);
  const loopWork = new Map<number, { hasRef?: () => boolean }>();
  let started = false;
  const hook = createHook({
    init(asyncId, type, triggerAsyncId, resource) {
      if (mine.has(triggerAsyncId)) {
        mine.add(asyncId);
      } else if (theirs.has(triggerAsyncId)) {
        theirs.add(asyncId);
        if (!NOT_LOOP_WORK.has(type)) loopWork.set(asyncId, resource as { hasRef?: () => boolean });
      }
    },
    before(asyncId) {
      const work = loopWork.get(asyncId);
      if (work !== undefined && (typeof work.hasRef !== 'function' || work.hasRef())) started = true;
    },
  }).enable();
  return { ours, started: () => started, stop: () => { hook.disable(); mine.clear(); theirs.clear(); loopWork.clear(); } };
}

const PG_FILE = /[\\/]node_modules[\\/](?:pg|pg-pool)[\\/]/;

/**
 * Calls `then` once, if this worker thread loads pg: checked every 2 s, when the worker's loop empties, and
 * as it exits (a worker that ran its queries and called process.exit() within 2 s was not told).
 * Test runners (ava) and tools (esbuild, tsx) start workers of their own, which inherit --import; each said
 * it was not monitored, on the stderr of commands that never touched a pool.
 */
function whenWorkerLoadsPg(then: () => void): void {
  const cache = (createRequire(import.meta.url)('node:module') as { _cache?: Record<string, unknown> })._cache;
  const { check } = pollUntil(() => cache !== undefined && Object.keys(cache).some((file) => PG_FILE.test(file)), then, 2_000);
  process.once('beforeExit', check);
  process.once('exit', check);
}

/**
 * Whether import-in-the-middle's hooks on builtins may break `require()` in the CommonJS files another loader hands
 * Node the source of: before Node 24 (on the loader thread as in-thread). Left out there, the upstream HTTP
 * instrumentation's spans were all still made (ES-module imports of http included, named ones too: Node 20 and
 * 22, tsx, a no-op loader, Yarn Plug'n'Play), so nothing is said.
 */
function builtinHooksBreakRequire(): boolean {
  return Number(process.versions.node.split('.')[0]) < 24 && otherLoaderPresent();
}

type SyncHooks = { register(options: { include: Array<string | RegExp> }): void };

/** import-in-the-middle's synchronous registration, loaded only where the runtime supports it. */
async function loadSyncHooks(): Promise<SyncHooks | undefined> {
  // Specifiers in variables: the package ships these entry points without type declarations.
  const supportsSpec = 'import-in-the-middle/supports-sync-hooks.mjs';
  const registerSpec = 'import-in-the-middle/register-hooks.mjs';
  try {
    const { supportsSyncHooks } = await import(supportsSpec) as { supportsSyncHooks(): boolean };
    return supportsSyncHooks() ? await import(registerSpec) as SyncHooks : undefined;
  } catch {
    return undefined;
  }
}

try {
  await start();
} catch (err) {
  // A defect of ours must never stop the application from starting.
  poolscopeDiag().error(`poolscope: failed to start, the application runs without it: ${(err as Error)?.stack ?? err}`);
}

export { poolscope };
