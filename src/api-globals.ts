/*
 * What Poolscope reads of the OpenTelemetry API's process-wide state, which the API itself offers no way to ask
 * about without writing to it.
 */
import { createRequire } from 'node:module';
import { resolve as resolvePath } from 'node:path';

/** The API keeps its registered globals (diag, metrics, trace, …) on this key, one per major version. */
const API_GLOBALS = Symbol.for('opentelemetry.js.api.1');

/** Whether something holds the API's global `slot` (registered through any copy of the API). */
export function apiGlobalHeld(slot: 'diag' | 'metrics' | 'trace' | 'context' | 'propagation'): boolean {
  return (globalThis as Record<symbol, Record<string, unknown> | undefined>)[API_GLOBALS]?.[slot] !== undefined;
}

let sameApi: boolean | undefined;

/**
 * Whether the application's `@opentelemetry/api`, resolved from its main script, is Poolscope's own copy (or it
 * has none). The API takes globals from one version only, set by whoever registers first: Poolscope run from
 * outside the application's tree (a global install, a path in an image) registered its diag logger and meter
 * provider with its own copy, and every global the application's SDK registered then was refused (Sentry sent
 * no transaction at all).
 */
export function sameApiAsApplication(): boolean {
  if (sameApi !== undefined) return sameApi;
  try {
    const ours = createRequire(import.meta.url).resolve('@opentelemetry/api');
    const main = process.argv[1];
    sameApi = createRequire(resolvePath(main === undefined || main === '' ? 'index.js' : main)).resolve('@opentelemetry/api') === ours;
  } catch {
    sameApi = true; // the application has none of its own to conflict with
  }
  return sameApi;
}
