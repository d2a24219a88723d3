/**
 * Method wrapping for the framework route sources. Wrapping again starts from the original, so a module
 * seen by both the CommonJS and the ESM hook (or an instrumentation enabled twice) is wrapped once.
 */
const kOriginal = Symbol('poolscope.original');

type Fn = (this: any, ...args: any[]) => unknown;

export function wrapMethod(target: object, name: string, make: (original: Fn) => Fn): boolean {
  const t = target as Record<string, unknown>;
  const current = t[name];
  if (typeof current !== 'function') return false;
  const original = ((current as unknown as Record<symbol, unknown>)[kOriginal] as Fn | undefined) ?? (current as Fn);
  const wrapped = make(original);
  Object.defineProperty(wrapped, kOriginal, { value: original });
  const enumerable = Object.getOwnPropertyDescriptor(target, name)?.enumerable ?? false;
  Object.defineProperty(target, name, { value: wrapped, writable: true, configurable: true, enumerable });
  return true;
}

export function unwrapMethod(target: object, name: string): void {
  const t = target as Record<string, unknown>;
  const original = (t[name] as Record<symbol, unknown> | undefined)?.[kOriginal];
  if (typeof original !== 'function') return;
  const enumerable = Object.getOwnPropertyDescriptor(target, name)?.enumerable ?? false;
  Object.defineProperty(target, name, { value: original, writable: true, configurable: true, enumerable });
}

/** The function a module exports, as `module.exports` (CommonJS) or as the ESM namespace's default. */
export function exportedFunction(exports: unknown): Fn | undefined {
  if (typeof exports === 'function') return exports as Fn;
  const fallback = (exports as Record<string, unknown> | null | undefined)?.default;
  return typeof fallback === 'function' ? (fallback as Fn) : undefined;
}
