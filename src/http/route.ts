/**
 * The matched route template, carried on the Node request from the framework that matched it to the
 * duration recorder. A framework source either stores the template itself (`kRoute`: a string, or null
 * for "matched nothing") or, when the framework decides the route after the request started, the
 * framework's own request object and a reader for it (`kRouteFrom`, `kRouteReader`): no per-request
 * closure, the reader is a module-level function.
 */
export const kRoute = Symbol.for('poolscope.http-route');
export const kRouteFrom = Symbol('poolscope.http-route-from');
export const kRouteReader = Symbol('poolscope.http-route-reader');
/**
 * On a framework's route object that the framework itself leaves on the request as `req.route` (Express): how
 * to read that route's template for a request, so matching costs the request nothing (src/http/express.ts).
 */
export const kRouteTemplate = Symbol.for('poolscope.http-route-template');

export type RouteReader = (from: unknown) => string | undefined;
export type RouteTemplateReader = (req: RoutedRequest, route: object) => string | undefined;

export interface RoutedRequest {
  [kRoute]?: string | null;
  [kRouteFrom]?: unknown;
  [kRouteReader]?: RouteReader;
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

/** The route template of a finished request, or undefined when no route matched. */
export function routeOf(req: RoutedRequest): string | undefined {
  const explicit = req[kRoute];
  if (explicit !== undefined) return explicit ?? undefined;
  const reader = req[kRouteReader];
  if (reader !== undefined) {
    try {
      return reader(req[kRouteFrom]);
    } catch {
      return undefined;
    }
  }
  const route = req.route;
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
