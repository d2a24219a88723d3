/*
 * Keeping what Poolscope touches looking as it did: applications, their tests and other agents inspect
 * functions and objects (a wrapper's arity, `util.inspect(req)`, `assert.deepStrictEqual`, `{ ...config }`),
 * and a comparison of upstream test suites and probes with and without the preload found each difference.
 */

/**
 * Gives a wrapper the arity and name of what it wraps: rest-parameter wrappers have length 0, and code that
 * tells callback APIs from promise APIs by a function's length (or a test that checks it) would see a difference.
 */
export function sameArity<F extends object>(wrapper: F, original: unknown): F {
  const length = typeof original === 'function' ? original.length : 0;
  Object.defineProperty(wrapper, 'length', { value: length, configurable: true });
  // And its name: the wrapper's own is the usual one, but what it wraps may be anonymous (pg.native.Client's
  // query is), and a wrapper named 'query' was then a difference.
  if (typeof original === 'function' && original.name !== (wrapper as { name?: unknown }).name) {
    Object.defineProperty(wrapper, 'name', { value: original.name, configurable: true });
  }
  return wrapper;
}

/**
 * The base class of Poolscope's hidden slots: its constructor returns the object it is given, so a subclass's
 * private fields are stamped onto that object (`new Stamped(req, …)`). A value kept so is invisible to everything
 * that inspects the object: its own keys and symbols, `util.inspect` (even with showHidden), deep equality,
 * JSON, structuredClone. A symbol property had to be defined non-enumerable to be as discreet, and
 * `Object.defineProperty` was then the largest item of ours in the HTTP benchmark's profile (0.9 µs per
 * Express request for three of them); stamping a field and updating it costs 77 ns where a define and an
 * update cost 258 ns (IncomingMessage objects, Node 20).
 *
 * A subclass is written out for each use, with every field it needs (src/http/request-state.ts keeps one,
 * pointing to a plain record): classes made by one factory function share their inline caches, which then
 * see every slot's private name on every kind of object and go megamorphic (three slots on requests and
 * responses: 600 ns against 219 ns written out).
 */
export const Stamp = function (target: object) { return target; } as unknown as new (target: object) => object;

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

type Shimmed = Method & { __wrapped?: unknown; __original?: unknown; __unwrap?: unknown };

/** Whether `f` is a layer of shimmer's (what OpenTelemetry's instrumentations and others wrap with), as they test it. */
function isShimmed(f: unknown): f is Shimmed & { __original: Method } {
  return typeof f === 'function' && (f as Shimmed).__wrapped === true && typeof (f as Shimmed).__original === 'function' &&
    typeof (f as Shimmed).__unwrap === 'function';
}

/**
 * Lets a prototype wrapper of Poolscope's stand in a chain of other agents' wrappers. An agent that wraps with
 * shimmer tests the method it finds for shimmer's marks and undoes that layer before wrapping again.
 * instrumentation-pg wraps pg's client twice in one load (`pg/lib/client.js`, then `pg`), undoing the first
 * before the second: with Poolscope's wrapper in between, the marks were not there, the first layer stayed, and
 * the application's own agent recorded every query and connect twice. The wrapper now shows the marks of the
 * layer beneath it, and an unwrap removes that layer (by pointing the wrapper past it) and keeps Poolscope's.
 * Agents with a shimmer of their own mark their wrappers with symbols and skip a method so marked (Elastic APM:
 * every ES-module request was recorded twice): the layer beneath's symbol-keyed marks are shown too.
 */
export function shimmerTransparent(wrapper: Method, inner: () => Method, setInner: (m: Method) => void): void {
  for (const key of Object.getOwnPropertySymbols(inner())) {
    if (Object.prototype.hasOwnProperty.call(wrapper, key)) continue;
    Object.defineProperty(wrapper, key, {
      get: () => (inner() as unknown as Record<symbol, unknown>)[key],
      set: (value: unknown) => { (inner() as unknown as Record<symbol, unknown>)[key] = value; },
      configurable: true,
      enumerable: false,
    });
  }
  Object.defineProperties(wrapper, {
    __wrapped: { get: () => isShimmed(inner()), configurable: true, enumerable: false },
    __original: { get: () => (isShimmed(inner()) ? inner() : undefined), configurable: true, enumerable: false },
    __unwrap: {
      value: () => {
        const beneath = inner();
        if (isShimmed(beneath)) setInner(beneath.__original);
      },
      configurable: true,
      enumerable: false,
      writable: true,
    },
  });
}
