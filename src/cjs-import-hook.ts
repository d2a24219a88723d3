/*
 * CommonJS packages imported from ES modules, seen without a loader thread.
 *
 * Where Node has no in-thread module hooks (Node 20, and 22 and 24 before 22.22.3 and 24.11.1), the ESM loader
 * hook import-in-the-middle needs runs in a thread of its own: measured at +11 MB of resident memory on Node 20,
 * most of Poolscope's memory budget (BENCHMARKS.md). Most packages Poolscope hooks are CommonJS (Slonik and
 * NestJS 12 are not: see esmOnlyPackageInstalled), and Node loads a CommonJS file an ES module imports with the
 * CommonJS loader (`Module._extensions`) outside any `require()` call, which is where the require hook of
 * `@opentelemetry/instrumentation` waits. So once such a file has compiled, it is required once more through the
 * hook: Node returns the cached module, the hook patches it as it patches any `require`, and an export the patch
 * replaced is written back before Node takes the importer's view of the exports. Nested files the package
 * requires itself already go through the hook.
 */
import Module, { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';

type LoadedModule = { exports: unknown; loaded?: boolean };
type CompileJs = (module: LoadedModule, filename: string) => unknown;
type RequireFn = (this: unknown, id: string) => unknown;

const kInstalled = Symbol.for('poolscope.cjs-import-hook');
const NODE_MODULES = `${sep}node_modules${sep}`;

/** Hooks CommonJS files loaded by ES-module imports into the require hook (see above). Once per process. */
export function installCjsImportHook(): void {
  const ModuleClass = Module as unknown as {
    _cache: Record<string, unknown>; _extensions: Record<string, CompileJs>; prototype: { require: RequireFn };
  } & Record<symbol, unknown>;
  if (ModuleClass[kInstalled] === true) return;
  Object.defineProperty(ModuleClass, kInstalled, { value: true });
  const extensions = ModuleClass._extensions;
  const compileJs = extensions['.js'];
  const originalRequire = ModuleClass.prototype.require;
  if (typeof compileJs !== 'function' || typeof originalRequire !== 'function') return;
  // How many require() calls are running: a file compiled outside any was loaded by an ES-module import (or
  // is the entry point). `module.parent` would say so too, but reading it is a (pending) deprecation of its
  // own, a warning under --pending-deprecation and an exit under --throw-deprecation.
  let requiring = 0;
  ModuleClass.prototype.require = function require(this: unknown, id: string) {
    requiring++;
    try {
      // eslint-disable-next-line prefer-rest-params
      return originalRequire.apply(this, arguments as unknown as [string]);
    } finally {
      requiring--;
    }
  };
  // At the end of compiling rather than after `Module#load`: Node 20.20 takes the importer's snapshot of
  // `module.exports` inside `load`, right after this returns, so an export replaced later was never seen.
  extensions['.js'] = function compileAndHook(this: unknown, module: LoadedModule, filename: string) {
    // eslint-disable-next-line prefer-rest-params
    const result = compileJs.apply(this, arguments as unknown as [LoadedModule, string]);
    // A file some `require` loaded goes through the hook anyway. Only the module Node cached is required
    // again; anything else would be evaluated a second time.
    if (requiring === 0 && module !== null && typeof module === 'object' && module.loaded !== true &&
      typeof filename === 'string' && filename.includes(NODE_MODULES) && ModuleClass._cache[filename] === module) {
      // `require` hands out a cached module as is only once it counts as loaded; `load` sets the flag
      // right after this returns, so setting it now changes nothing else.
      module.loaded = true;
      try {
        const patched: unknown = createRequire(filename)(filename);
        if (patched !== module.exports && patched !== undefined && patched !== null) module.exports = patched;
      } catch {
        // The hook's own failure: the module stays as Node loaded it, unpatched, never broken.
      }
    }
    return result;
  };
}

/**
 * Whether a package Poolscope hooks is installed as an ES module (`"type": "module"`: Slonik, NestJS 12) for
 * this application: at the top of a `node_modules` of the entry point's directory, the working directory or
 * one above them, or in pnpm's store. Such a package never passes `Module._extensions`, so only the loader
 * thread sees it. A copy nested under another package (npm does that for a second version) is not looked for,
 * since listing every package costs start-up time in every process: `esmLoaderThread: 'always'` covers it.
 */
export function esmOnlyPackageInstalled(names: readonly string[], entry: string | undefined = process.argv[1]): boolean {
  const starts = [process.cwd()];
  if (typeof entry === 'string' && entry !== '') starts.unshift(dirname(resolve(entry)));
  const seen = new Set<string>();
  for (const start of starts) {
    for (let dir = start; ; dir = dirname(dir)) {
      const modules = join(dir, 'node_modules');
      if (!seen.has(modules)) {
        seen.add(modules);
        if (installedIn(modules, names)) return true;
      }
      if (dirname(dir) === dir) break;
    }
  }
  return false;
}

function installedIn(modules: string, names: readonly string[]): boolean {
  const has = (under: string) => names.some((name) => isEsModulePackage(join(under, name)));
  if (has(modules) || has(join(modules, '.pnpm', 'node_modules'))) return true;
  // pnpm keeps a dependency's dependencies in its store only: one listing, `<name>@<version>` directories
  // (`@scope+name@<version>` for a scoped package).
  let store: string[];
  try {
    store = readdirSync(join(modules, '.pnpm'));
  } catch {
    return false;
  }
  return store.some((d) => names.some((name) => d.startsWith(`${name.replace('/', '+')}@`) &&
    isEsModulePackage(join(modules, '.pnpm', d, 'node_modules', name))));
}

/** Larger than any real package.json: what is bigger (or no file at all: a FIFO, /dev/zero) is not read. */
const MAX_PACKAGE_JSON_BYTES = 1 << 20;

function isEsModulePackage(dir: string): boolean {
  try {
    const file = join(dir, 'package.json');
    // Only a regular file of sane size: reading a FIFO there hung start-up, and /dev/zero took gigabytes.
    const stats = statSync(file, { throwIfNoEntry: false });
    if (stats === undefined || !stats.isFile() || stats.size > MAX_PACKAGE_JSON_BYTES) return false;
    return (JSON.parse(readFileSync(file, 'utf8')) as { type?: unknown } | null)?.type === 'module';
  } catch {
    return false; // not readable, or not JSON: nothing to hook
  }
}

/**
 * Whether the process runs another module loader (`--loader`, or an `--import` besides ours, e.g. tsx), from
 * the command line or NODE_OPTIONS. Node then gives CommonJS files that loader's source and compiles them
 * without `Module._extensions`, where installCjsImportHook waits; and all `module.register` hooks share one
 * thread, so the loader hook adds little there.
 */
export function otherLoaderPresent(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): boolean {
  const args = [...execArgv, ...nodeOptions.split(/\s+/).filter(Boolean)];
  let imports = 0;
  for (const a of args) {
    if (/^--(experimental-)?loader(=|$)/.test(a)) return true;
    if (/^--import(=|$)/.test(a)) imports++;
  }
  return imports > 1;
}
