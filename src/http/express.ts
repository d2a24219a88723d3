/*
 * Route templates for Express 4 and 5 (and anything built on them, NestJS's Express adapter included).
 *
 * Express records the matched *values* of mount paths in req.baseUrl (`/users/42`), never their
 * patterns, and its layers do not keep the pattern either (Express 4). So the router's `use()` and
 * `route()` are wrapped to remember the owner router and path pattern of what they create:
 *  - a mount with a path gets an own `handle_request`/`handleRequest` on its layer, which pushes a frame
 *    {base URL it produced → its template}, its parent's template plus its own pattern;
 *  - a router entered with a non-empty base URL (`Router#handle`) pushes a frame naming itself, with the
 *    template of the newest frame for that base URL (the mount that led to it);
 *  - a route keeps its owner and pattern on the Route object; Express leaves the route it dispatched to on
 *    the request (`req.route`), and its template, its owner router's template joined with its own path, is
 *    read from there when the request's route is asked for.
 * Frames are a per-request linked list, allocated only under mounts with a path; a request to a route on
 * the application itself costs nothing. A router left without a response restores req.baseUrl (Express
 * does), and the newest-first lookup by router identity skips the frames it left behind.
 */
import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { passOn, type Method } from '../transparent.js';
import { exchangeOf, requestExchange } from './request-state.js';
import { kRouteTemplate, templateOf, type RoutedRequest, type RouteTemplateReader } from './route.js';
import { exportedFunction, unwrapMethod, wrapMethod } from './wrap.js';

const kOwner = Symbol('poolscope.express-owner');
const kPattern = Symbol('poolscope.express-pattern');
const kLayerOriginal = Symbol('poolscope.express-layer-original');
/** Set by the NestJS source on the handler Nest registers for unmatched paths (a wildcard *route*). */
export const kNotFoundHandler = Symbol.for('poolscope.not-found-handler');
let notFoundHandlersMarked = false;

export function markNotFoundHandler(handler: unknown): void {
  if (typeof handler !== 'function') return;
  Object.defineProperty(handler, kNotFoundHandler, { value: true, configurable: true });
  notFoundHandlersMarked = true;
}

interface Frame {
  url: string;
  /** null: the template is unknown (a mount we did not see), so no route is recorded below it. */
  template: string | null;
  router: unknown;
  prev: Frame | undefined;
}

type ExpressRequest = RoutedRequest;

/** The request's mount frames, newest first (kept in its exchange: request-state.ts). */
function framesOf(req: ExpressRequest): Frame | undefined {
  return exchangeOf(req)?.frames as Frame | undefined;
}

function pushFrame(req: ExpressRequest, frame: Frame): void {
  const exchange = requestExchange(req);
  if (exchange !== undefined) exchange.frames = frame;
}

type Handle = (this: Layer, req: ExpressRequest, res: unknown, next: unknown) => unknown;
interface ExpressRoute {
  stack?: Array<{ handle?: Record<symbol, unknown> }>;
  [kOwner]?: unknown;
  [kPattern]?: string;
  [kRouteTemplate]?: RouteTemplateReader;
}
interface Layer {
  route?: ExpressRoute;
  [kOwner]?: unknown;
  [kPattern]?: string;
  /** The handler method the mount handle passes on to (see passOn). */
  [kLayerOriginal]?: (self: object) => Method;
}
interface RouterLike {
  stack?: Layer[];
}

function routerTemplate(req: ExpressRequest, router: unknown): string | null {
  return templateIn(framesOf(req), router);
}

function templateIn(frames: Frame | undefined, router: unknown): string | null {
  for (let f = frames; f !== undefined; f = f.prev) if (f.router === router) return f.template;
  // Never entered with a non-empty base URL: the application's router or one mounted at '/'.
  return '';
}

function join(parent: string, pattern: string): string {
  if (parent === '') return pattern;
  return pattern === '/' ? parent : parent + pattern;
}

function enterRouter(router: unknown, req: ExpressRequest): void {
  const url = req.baseUrl;
  const frames = framesOf(req);
  if (typeof url !== 'string' || url === '') {
    // Entered at the root after an earlier visit under a mount: shadow that visit's frame.
    if (frames !== undefined && routerTemplate(req, router) !== '') pushFrame(req, { url: '', template: '', router, prev: frames });
    return;
  }
  let template: string | null = null;
  for (let f = frames; f !== undefined; f = f.prev) {
    if (f.url === url) {
      template = f.template;
      break;
    }
  }
  pushFrame(req, { url, template, router, prev: frames });
}

function mountHandle(this: Layer, req: ExpressRequest, res: unknown, next: unknown): unknown {
  try {
    const url = req.baseUrl;
    if (typeof url === 'string') {
      const parent = routerTemplate(req, this[kOwner]);
      pushFrame(req, { url, template: parent === null ? null : join(parent, this[kPattern]!), router: undefined, prev: framesOf(req) });
    }
  } catch {
    // never disturb the dispatch
  }
  return this[kLayerOriginal]!(this).call(this, req, res, next);
}

function isNotFoundRoute(route: ExpressRoute): boolean {
  const stack = route.stack;
  if (!Array.isArray(stack)) return false;
  for (const l of stack) if (l?.handle?.[kNotFoundHandler] === true) return true;
  return false;
}

/**
 * The template of the route Express dispatched to, read from `req.route`, which Express sets on every route
 * dispatch, only when the request's route is asked for. (An own `handle_request` on each route layer did this
 * on every dispatch and made the router's calls on its layers polymorphic: 1.2 µs per request of its own and
 * about 2 µs more in the router's `next()` and `Layer#match`, in the realistic benchmark's profile.)
 */
function routeTemplate(req: ExpressRequest, route: ExpressRoute): string | undefined {
  if (notFoundHandlersMarked && isNotFoundRoute(route)) return undefined;
  // The frames as they were when the route was dispatched: its router may have been entered again since,
  // under another mount, after the route called next(). (Reading the current ones named that mount.)
  const exchange = exchangeOf(req);
  const captured = exchange?.dispatchedFrames as Frame | null | undefined;
  const frames = captured === undefined ? exchange?.frames as Frame | undefined : captured ?? undefined;
  const parent = frames === undefined ? '' : templateIn(frames, route[kOwner]);
  return parent === null ? undefined : join(parent, route[kPattern]!);
}

/**
 * Remembers the route and the request's mount frames as each route is dispatched. Frames form an immutable
 * list, so keeping its head is the snapshot. Wrapped on the Route prototype before any route exists: Express 4
 * binds each route's dispatch when it creates the route.
 */
function patchRoute(proto: Record<string, unknown>): void {
  wrapMethod(proto, 'dispatch', (original) => function dispatch(this: unknown, req: ExpressRequest) {
    try {
      const exchange = req !== null && typeof req === 'object' && this !== null && typeof this === 'object' ? requestExchange(req) : undefined;
      if (exchange !== undefined) {
        exchange.dispatchedRoute = this as object;
        exchange.dispatchedFrames = exchange.frames ?? null;
      }
    } catch {
      // never disturb the dispatch
    }
    // eslint-disable-next-line prefer-rest-params
    return original.apply(this, arguments as unknown as unknown[]);
  });
}

/** Express's Route class (exported by Express 4 and 5 alike). */
function routeProto(exports: unknown): Record<string, unknown> | undefined {
  const Route = (exportedFunction(exports) as { Route?: { prototype?: Record<string, unknown> } } | undefined)?.Route;
  return typeof Route?.prototype?.dispatch === 'function' ? Route.prototype : undefined;
}

function instrumentRoute(route: ExpressRoute, owner: unknown, pattern: string): void {
  if (route === null || typeof route !== 'object' || route[kRouteTemplate] !== undefined) return;
  Object.defineProperty(route, kOwner, { value: owner, configurable: true });
  Object.defineProperty(route, kPattern, { value: pattern, configurable: true });
  Object.defineProperty(route, kRouteTemplate, { value: routeTemplate, configurable: true });
}

function instrumentLayer(layer: Layer | undefined, owner: unknown, pattern: string, handle: Handle): void {
  if (layer === null || typeof layer !== 'object') return;
  const l = layer as unknown as Record<string, unknown>;
  // Express 4's Layer calls it handle_request, the router package (Express 5) handleRequest.
  const name = typeof l.handle_request === 'function' ? 'handle_request' : typeof l.handleRequest === 'function' ? 'handleRequest' : undefined;
  if (name === undefined || l[name] === handle) return;
  Object.defineProperty(layer, kOwner, { value: owner, configurable: true });
  Object.defineProperty(layer, kPattern, { value: pattern, configurable: true });
  // So that a spy or patch put on Layer.prototype after this mount is still reached.
  Object.defineProperty(layer, kLayerOriginal, { value: passOn(layer, name), configurable: true });
  Object.defineProperty(layer, name, { value: handle, writable: true, configurable: true, enumerable: false });
}

/** The path argument of `use()`, decided as Express decides it: the first argument unless it is (a list of) functions. */
function mountPath(args: unknown[]): unknown {
  let arg = args[0];
  if (typeof arg === 'function') return '/';
  while (Array.isArray(arg) && arg.length !== 0) arg = arg[0];
  return typeof arg === 'function' ? '/' : args[0];
}

/** A mount pattern as it contributes to req.baseUrl: no trailing slash ('' for the root). */
function mountTemplate(path: unknown): string | undefined {
  if (Array.isArray(path)) {
    const parts = path.flat(Infinity).map(mountTemplate);
    return parts.includes(undefined) ? undefined : parts.join(',');
  }
  const t = templateOf(path);
  return typeof path === 'string' ? t?.replace(/\/+$/, '') : t;
}

function patchRouter(proto: Record<string, unknown>): void {
  wrapMethod(proto, 'use', (original) => function use(this: RouterLike, ...args: unknown[]) {
    const before = Array.isArray(this?.stack) ? this.stack.length : -1;
    const result = original.apply(this, args);
    try {
      const pattern = before < 0 ? undefined : mountTemplate(mountPath(args));
      // A mount at '/' leaves req.baseUrl as it is, so it needs no frame.
      if (pattern !== undefined && pattern !== '') {
        for (let i = before; i < this.stack!.length; i++) instrumentLayer(this.stack![i], this, pattern, mountHandle);
      }
    } catch {
      // an unexpected router shape: no templates below this mount, but never a broken app
    }
    return result;
  });
  wrapMethod(proto, 'route', (original) => function route(this: RouterLike, ...args: unknown[]) {
    const result = original.apply(this, args);
    try {
      const layer = this.stack?.[this.stack.length - 1];
      const pattern = templateOf(args[0]);
      if (layer !== undefined && layer.route === result && pattern !== undefined) instrumentRoute(result as ExpressRoute, this, pattern);
    } catch {
      // as above
    }
    return result;
  });
  wrapMethod(proto, 'handle', (original) => function handle(this: unknown, req: ExpressRequest, res: unknown, out: unknown) {
    try {
      if (req !== null && typeof req === 'object') enterRouter(this, req);
    } catch {
      // as above
    }
    return original.call(this, req, res, out);
  });
}

/** Express 5's Router is a class (the `router` package); Express 4's is a function whose own properties are the methods. */
function routerProto(exports: unknown): Record<string, unknown> | undefined {
  const found: unknown = (exportedFunction(exports) as { Router?: unknown } | undefined)?.Router;
  if (typeof found !== 'function') return undefined;
  const Router = found as unknown as { prototype?: Record<string, unknown> } & Record<string, unknown>;
  if (typeof Router.prototype?.use === 'function' && typeof Router.prototype.route === 'function') return Router.prototype;
  if (typeof Router.use === 'function' && typeof Router.route === 'function') return Router;
  return undefined;
}

export function expressDefinition(): InstrumentationNodeModuleDefinition {
  return new InstrumentationNodeModuleDefinition('express', ['>=4.0.0 <6'],
    (exports: unknown) => {
      const proto = routerProto(exports);
      if (proto !== undefined) patchRouter(proto);
      const route = routeProto(exports);
      if (route !== undefined) patchRoute(route);
      return exports;
    },
    (exports: unknown) => {
      const proto = routerProto(exports);
      if (proto !== undefined) for (const name of ['use', 'route', 'handle']) unwrapMethod(proto, name);
      const route = routeProto(exports);
      if (route !== undefined) unwrapMethod(route, 'dispatch');
      return exports;
    });
}
