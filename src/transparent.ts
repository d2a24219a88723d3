/*
 * Keeping what Poolscope touches looking as it did: applications, their tests and other agents inspect
 * functions and objects (a wrapper's arity, `util.inspect(req)`, `assert.deepStrictEqual`, `{ ...config }`),
 * and a comparison of upstream test suites and probes with and without the preload found each difference.
 */

/**
 * Gives a wrapper the arity of what it wraps: rest-parameter wrappers have length 0, and code that tells
 * callback APIs from promise APIs by a function's length (or a test that checks it) would see a difference.
 */
export function sameArity<F extends object>(wrapper: F, original: unknown): F {
  const length = typeof original === 'function' ? original.length : 0;
  Object.defineProperty(wrapper, 'length', { value: length, configurable: true });
  return wrapper;
}

/**
 * Sets a property Poolscope keeps on an application's object (a request, a response) without making it
 * enumerable: defined on the first write, a plain assignment afterwards (which keeps it non-enumerable, and
 * costs what an assignment costs). Returns false, leaving the object as it was, when it cannot be written
 * (a frozen mock, say).
 */
export function setHidden(target: object, key: symbol, value: unknown): boolean {
  try {
    if (Object.prototype.hasOwnProperty.call(target, key)) (target as Record<symbol, unknown>)[key] = value;
    else Object.defineProperty(target, key, { value, writable: true, configurable: true, enumerable: false });
    return true;
  } catch {
    return false;
  }
}

/** A method as the wrappers call it. */
export type Method = (...a: unknown[]) => unknown;

/** A method the object holds as its own property (`this.acquire = this.acquire.bind(this)`), if any. */
export function ownMethod(target: object, key: string): Method | undefined {
  const own = Object.prototype.hasOwnProperty.call(target, key) ? (target as Record<string, unknown>)[key] : undefined;
  return typeof own === 'function' ? own as Method : undefined;
}

/**
 * What a wrapper Poolscope puts on `target` passes on to: the method `target` had as its own property, if it
 * had one; otherwise the one `self`'s prototype has at the time of the call, rather than the one it had when
 * the wrapper was put there, so that a patch made there later (sinon.stub, jest.spyOn, another agent) is
 * still reached, as it would be without Poolscope. `self` is the object the wrapper runs on for a wrapper on
 * an instance, and `target` itself for one on a prototype.
 */
export function passOn(target: object, key: string): (self: object) => Method {
  const own = ownMethod(target, key);
  if (own !== undefined) return () => own;
  return (self) => (Object.getPrototypeOf(self) as Record<string, Method>)[key]!;
}
