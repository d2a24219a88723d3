/*
 * Route templates for Koa 2/3 with @koa/router (or the older koa-router): the router leaves the template
 * of the layer it dispatched to in `ctx._matchedRoute`, prefixes and nested-router mount paths included,
 * and sets nothing when no route matched. Koa's `createContext` is wrapped to remember the context on
 * the Node request; the template is read when the response ends.
 */
import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { setRouteSource, templateOf, type RoutedRequest } from './route.js';
import { exportedFunction, unwrapMethod, wrapMethod } from './wrap.js';

interface RouterLayer { path?: unknown; methods?: unknown }
interface RouterContext { _matchedRoute?: unknown; matched?: unknown; method?: unknown }

/**
 * The route the router dispatched to. `_matchedRoute` is rewritten by every layer the request passes, and the
 * layers of `router.use()` are in that chain too: a route that awaits next() (an SPA fallback, Strapi's admin
 * and public routes) was reported under a pathless middleware's stand-in path, `([^/]*)` or `(?:\/|$)`. When the
 * path is only a middleware's (no methods), the route is the last one for the request's method that ran before
 * it and passed the request on, else the one the request was headed to (a guard that answered first).
 */
function koaRoute(ctx: unknown): string | undefined {
  const c = ctx as RouterContext | undefined;
  const route = c?._matchedRoute;
  const layers = Array.isArray(c?.matched) ? c.matched as RouterLayer[] : undefined;
  if (route === undefined || layers === undefined) return templateOf(route);
  let middleware = -1;
  for (let i = 0; i < layers.length; i++) {
    if (layers[i]?.path !== route) continue;
    // A route of that path for this method: the template as the router left it.
    if (serves(layers[i], c?.method)) return templateOf(route);
    if (isMiddleware(layers[i])) middleware = i;
  }
  if (middleware < 0) return templateOf(route);
  for (let i = middleware - 1; i >= 0; i--) if (serves(layers[i], c?.method)) return templateOf(layers[i]!.path);
  for (let i = middleware + 1; i < layers.length; i++) if (serves(layers[i], c?.method)) return templateOf(layers[i]!.path);
  return undefined;
}

function serves(layer: RouterLayer | undefined, method: unknown): boolean {
  return Array.isArray(layer?.methods) && layer.methods.includes(method);
}

function isMiddleware(layer: RouterLayer | undefined): boolean {
  return Array.isArray(layer?.methods) && layer.methods.length === 0;
}

function applicationProto(exports: unknown): Record<string, unknown> | undefined {
  const proto = (exportedFunction(exports) as { prototype?: Record<string, unknown> } | undefined)?.prototype;
  return typeof proto?.createContext === 'function' ? proto : undefined;
}

export function koaDefinition(): InstrumentationNodeModuleDefinition {
  return new InstrumentationNodeModuleDefinition('koa', ['>=2.0.0 <4'],
    (exports: unknown) => {
      const proto = applicationProto(exports);
      if (proto !== undefined) {
        wrapMethod(proto, 'createContext', (original) => function createContext(this: unknown, req: RoutedRequest, res: unknown) {
          const ctx = original.call(this, req, res);
          // Never throws: a request that cannot carry it (an injected one, say) has no route.
          setRouteSource(req, ctx, koaRoute);
          return ctx;
        });
      }
      return exports;
    },
    (exports: unknown) => {
      const proto = applicationProto(exports);
      if (proto !== undefined) unwrapMethod(proto, 'createContext');
      return exports;
    });
}
