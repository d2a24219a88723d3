/*
 * The route template of a finished Node HTTP request: what a framework hook left in the request's state
 * (request-state.ts), or what Express leaves on the request as `req.route`.
 */
import { createLogger, type PoolscopeLogger } from '../logger.js';
import { shared } from '../process-state.js';
import { exchangeOf, hookedRoute, requestExchange, type RouteReader } from './request-state.js';

/**
 * Distinct `http.route` values one process records. Templates come from the application's code, so a
 * real service stays far below; a generated route table (a route per tenant, say) does not, and every
 * value multiplies the series of every histogram it labels (request duration, hold time by route). Beyond the
 * cap, new routes are recorded as HTTP_ROUTE_OVERFLOW.
 */
export const MAX_HTTP_ROUTES = 300;
export const HTTP_ROUTE_OVERFLOW = '_OTHER';

/** Longest route label; a longer template (a generated regular expression, say) is cut, marked with '…'. */
const MAX_ROUTE_LENGTH = 200;

/** Route templates as label values: each as itself until MAX_HTTP_ROUTES are known, then HTTP_ROUTE_OVERFLOW. */
export class RouteCap {
  private readonly routes = new Set<string>();

  /** `overflowed` is called at each route turned away (the caller's logger limits the lines). */
  constructor(private readonly overflowed: () => void) {}

  admit(template: string): string {
    // Control characters out, length bounded: the label is the same wherever the route is one.
    let route = template.replace(/[\x00-\x1f\x7f]/g, '?');
    if (route.length > MAX_ROUTE_LENGTH) route = `${route.slice(0, MAX_ROUTE_LENGTH)}…`;
    if (this.routes.has(route)) return route;
    if (this.routes.size < MAX_HTTP_ROUTES) {
      this.routes.add(route);
      return route;
    }
    this.overflowed();
    return HTTP_ROUTE_OVERFLOW;
  }
}

let capLog: PoolscopeLogger | undefined;
/** This copy's handle on the shared cap: looked up once, not at every checkout's route. */
let cap: RouteCap | undefined;

/**
 * The process's one route cap, for every histogram labelled by route (request duration, hold time) and every
 * Poolscope copy: with a cap each, a route past the 300th that checks out connections was `_OTHER` in one and
 * named in the other, and the two could not be joined by route.
 */
export function routeCap(): RouteCap {
  return cap ??= shared('http-route-cap', () => new RouteCap(() => (capLog ??= createLogger()).warn('http-route-cap',
    `poolscope: more than ${MAX_HTTP_ROUTES} distinct http.route values; further routes are recorded as http.route="${HTTP_ROUTE_OVERFLOW}".`)));
}

/**
 * On a framework's route object that the framework itself leaves on the request as `req.route` (Express): how
 * to read that route's template for a request, so matching costs the request nothing (src/http/express.ts).
 */
export const kRouteTemplate = Symbol.for('poolscope.http-route-template');

export type RouteTemplateReader = (req: RoutedRequest, route: object) => string | undefined;

export interface RoutedRequest {
  route?: { path?: unknown; [kRouteTemplate]?: RouteTemplateReader };
  baseUrl?: string;
}

/** A framework's route path as a label value: strings as written, regular expressions as source, lists joined by ','. */
export function templateOf(path: unknown): string | undefined {
  if (typeof path === 'string') return path;
  if (path instanceof RegExp) return String(path);
  if (Array.isArray(path)) {
    const parts: string[] = [];
    for (const p of path.flat(Infinity)) {
      const t = templateOf(p);
      if (t === undefined) return undefined;
      parts.push(t);
    }
    return parts.join(',');
  }
  return undefined;
}

/** The template the framework matched for this request, or null for "matched nothing". */
export function setRoute(req: object, template: string | null): void {
  const exchange = requestExchange(req);
  if (exchange !== undefined) exchange.template = template;
}

/** The framework's own request object, from which `reader` tells the route once it is decided. Never throws. */
export function setRouteSource(req: object, from: unknown, reader: RouteReader): void {
  const exchange = requestExchange(req);
  if (exchange === undefined) return;
  exchange.from = from;
  exchange.reader = reader;
}

/** The route template of a finished request, or undefined when no route matched. */
export function routeOf(req: RoutedRequest): string | undefined {
  const exchange = exchangeOf(req);
  const hooked = exchange === undefined ? undefined : hookedRoute(exchange);
  if (hooked !== undefined) return hooked ?? undefined;
  // The route Express dispatched to, as the dispatch hook saw it (the one it leaves as req.route): reading
  // req.route itself misses the inline cache on every Express request (request-state.ts).
  const route = (exchange?.dispatchedRoute ?? req.route) as RoutedRequest['route'];
  if (route !== null && typeof route === 'object') {
    const template = route[kRouteTemplate];
    if (template !== undefined) {
      try {
        return template(req, route);
      } catch {
        return undefined;
      }
    }
  }
  // An Express whose router we did not instrument (loaded under another package name, or before
  // Poolscope): its route path is a template only for routes on the application itself; under a mount,
  // req.baseUrl holds the *matched* path values, which must never become a label.
  if (req.baseUrl === '' && req.route !== undefined) return templateOf(req.route.path);
  return undefined;
}
