/*
 * Route templates for Fastify 4 and 5 (NestJS's Fastify adapter included): every instance the factory
 * creates gets an `onRequest` hook that stores `request.routeOptions.url` (before 4.10 `request.routerPath`),
 * the matched route's URL with prefixes, on the Node request. Unmatched requests (the 404 handler) have no URL, so no route.
 */
import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { sameArity } from '../transparent.js';
import { setRoute, type RoutedRequest } from './route.js';

const kWrapped = Symbol.for('poolscope.fastify-patched');

type FastifyRequest = { raw?: RoutedRequest; routeOptions?: { url?: unknown }; routerPath?: unknown };

function onRequest(request: FastifyRequest, _reply: unknown, done: () => void): void {
  try {
    // Fastify before 4.10 has no routeOptions, only routerPath (no route at all on 4.0–4.9, found by a review of
    // the supported versions); from 4.10 on, reading routerPath prints a deprecation warning, so only without it.
    const options = request.routeOptions;
    const url = options === undefined ? request.routerPath : options.url;
    if (request.raw !== undefined && typeof url === 'string') setRoute(request.raw, url);
  } catch {
    // never disturb the request
  }
  done();
}

function wrapFactory(factory: unknown): unknown {
  if (typeof factory !== 'function') return factory;
  const f = factory as ((...args: unknown[]) => unknown) & Record<PropertyKey, unknown>;
  if (f[kWrapped] !== undefined) return f[kWrapped];
  const wrapped = function fastify(this: unknown, ...args: unknown[]) {
    const app = f.apply(this, args) as { addHook?: (name: string, hook: unknown) => unknown } | undefined;
    try {
      app?.addHook?.('onRequest', onRequest);
    } catch {
      // an unexpected fastify shape: no routes, but never a broken app
    }
    return app;
  };
  for (const [key, descriptor] of Object.entries(Object.getOwnPropertyDescriptors(f))) {
    if (key !== 'length' && key !== 'name' && key !== 'prototype') Object.defineProperty(wrapped, key, descriptor);
  }
  sameArity(wrapped, f);
  // The CommonJS export is the factory and also its own `fastify` and `default` properties.
  for (const key of ['fastify', 'default']) if (f[key] === f) (wrapped as unknown as Record<string, unknown>)[key] = wrapped;
  Object.defineProperty(f, kWrapped, { value: wrapped });
  return wrapped;
}

export function fastifyDefinition(): InstrumentationNodeModuleDefinition {
  return new InstrumentationNodeModuleDefinition('fastify', ['>=4.0.0 <6'],
    (exports: unknown) => {
      if (typeof exports === 'function') return wrapFactory(exports);
      const ns = exports as Record<string, unknown> | null;
      if (ns !== null && typeof ns === 'object') {
        for (const key of ['default', 'fastify']) if (typeof ns[key] === 'function') ns[key] = wrapFactory(ns[key]);
      }
      return exports;
    },
    (exports: unknown) => exports);
}
