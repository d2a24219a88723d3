/*
 * Route templates for Koa 2/3 with @koa/router (or the older koa-router): the router leaves the template
 * of the layer it dispatched to in `ctx._matchedRoute`, prefixes and nested-router mount paths included,
 * and sets nothing when no route matched. Koa's `createContext` is wrapped to remember the context on
 * the Node request; the template is read when the response ends.
 */
import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { setRouteSource, templateOf, type RoutedRequest } from './route.js';
import { exportedFunction, unwrapMethod, wrapMethod } from './wrap.js';

function koaRoute(ctx: unknown): string | undefined {
  return templateOf((ctx as { _matchedRoute?: unknown } | undefined)?._matchedRoute);
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
