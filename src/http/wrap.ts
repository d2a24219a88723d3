/**
 * Method wrapping for the framework route sources. Wrapping again starts from the original, so a module
 * seen by both the CommonJS and the ESM hook (or an instrumentation enabled twice) is wrapped once.
 */
import { shared } from '../process-state.js';
import { passOn, sameArity, shimmerTransparent, type Method } from '../transparent.js';

const kOriginal = Symbol('poolscope.original');

type Fn = (this: any, ...args: any[]) => unknown;

export function wrapMethod(target: object, name: string, make: (original: Fn) => Fn): boolean {
  const t = target as Record<string, unknown>;
  const current = t[name];
  if (typeof current !== 'function') return false;
  const original = ((current as unknown as Record<symbol, unknown>)[kOriginal] as Fn | undefined) ?? (current as Fn);
  const wrapped = sameArity(make(original), original);
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

type Emit = (this: any, event: string | symbol, ...args: any[]) => boolean;

/**
 * Puts an `emit` of Poolscope's own on a builtin prototype (http.Server, http.ServerResponse) and returns the
 * undo. `make` gets a function returning the emit to pass on to, as passOn decides it: the one the prototype
 * had as its own, else the inherited one at each call, so a patch made later on EventEmitter.prototype (a
 * spy, another agent) is still reached. The wrapper keeps the arity of what it replaces. The undo restores
 * only while ours is the outermost wrapper, and says whether it did: a wrapper installed on top of ours must
 * keep reaching what it wrapped, so ours then stays, and must pass through.
 */
export function wrapEmit(proto: object, make: (original: () => Emit) => Emit): () => boolean {
  const p = proto as { emit: Emit };
  const hadOwn = Object.prototype.hasOwnProperty.call(proto, 'emit');
  // `let`: an agent's unwrap may point the wrapper past the layer beneath it (shimmerTransparent).
  let own = p.emit;
  const inherited = passOn(proto, 'emit');
  const wrapper = sameArity(make(hadOwn ? () => own : () => inherited(proto) as Emit), own);
  // An agent whose hook runs for both `require('http')` and `import 'node:http'` (Sentry, via instrumentation-http)
  // undoes its first wrapper before the second by shimmer's marks: with ours between them, every request was
  // traced twice.
  if (hadOwn) shimmerTransparent(wrapper as Method, () => own as Method, (m) => { own = m as Emit; });
  p.emit = wrapper;
  return () => {
    if (p.emit !== wrapper) return false;
    if (hadOwn) p.emit = own;
    else delete (p as Partial<typeof p>).emit;
    return true;
  };
}

/** The function a module exports, as `module.exports` (CommonJS) or as the ESM namespace's default. */
export function exportedFunction(exports: unknown): Fn | undefined {
  if (typeof exports === 'function') return exports as Fn;
  const fallback = (exports as Record<string, unknown> | null | undefined)?.default;
  return typeof fallback === 'function' ? (fallback as Fn) : undefined;
}

/**
 * Which builtin prototypes (`http.Server`, `ServerResponse`) Poolscope has patched, with its state for each:
 * kept in a WeakMap every Poolscope copy shares (process-state.ts), rather than on the prototype, where
 * `util.inspect(res, { showHidden: true })` printed the mark on every instance.
 */
export function patchMarks<V>(name: string): WeakMap<object, V> {
  return shared(name, () => new WeakMap<object, V>());
}
