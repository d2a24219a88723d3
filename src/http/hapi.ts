/*
 * Route templates for hapi: `request.route.path` is the matched route's path as declared (`/orders/{id}`,
 * plugin prefixes included). A request no route matched is served by hapi's special notFound route,
 * whose path is the catch-all `/{p*}` and whose method is `_special`: such requests get no route.
 * hapi creates its request object in the internal `Request.generate`; the wrapper remembers it on the
 * Node request and the route is read when the response ends.
 */
import { InstrumentationNodeModuleDefinition, InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import { setRouteSource, type RoutedRequest } from './route.js';
import { unwrapMethod, wrapMethod } from './wrap.js';

const VERSIONS = ['>=20.0.0 <22'];

function hapiRoute(request: unknown): string | undefined {
  const route = (request as { route?: { method?: unknown; path?: unknown } } | undefined)?.route;
  if (route === undefined || route.method === '_special') return undefined;
  return typeof route.path === 'string' ? route.path : undefined;
}

export function hapiDefinition(): InstrumentationNodeModuleDefinition {
  return new InstrumentationNodeModuleDefinition('@hapi/hapi', VERSIONS, undefined, undefined, [
    new InstrumentationNodeModuleFile('@hapi/hapi/lib/request.js', VERSIONS,
      (exports: unknown) => {
        if (typeof exports === 'function') {
          wrapMethod(exports, 'generate', (original) => function generate(this: unknown, server: unknown, req: RoutedRequest, res: unknown, options: unknown) {
            const request = original.call(this, server, req, res, options);
            // Never throws: a request that cannot carry it (anything stranger than shot's injected one) has no route.
            setRouteSource(req, request, hapiRoute);
            return request;
          });
        }
        return exports;
      },
      (exports: unknown) => {
        if (typeof exports === 'function') unwrapMethod(exports, 'generate');
        return exports;
      }),
  ]);
}
