/*
 * NestJS routes come from the adapter's framework (Express or Fastify), with the global prefix and
 * controller paths already joined. One exception: with a global prefix, Nest's Express adapter answers
 * unmatched paths under the prefix from a wildcard *route* (`<prefix>/*path`), which would label every
 * 404 with that wildcard. The handler Nest passes to `setNotFoundHandler` is marked, and a route
 * dispatching to it records no route.
 */
import { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import { markNotFoundHandler } from './express.js';
import { unwrapMethod, wrapMethod } from './wrap.js';

function adapterProto(exports: unknown): Record<string, unknown> | undefined {
  const Adapter: unknown = (exports as { ExpressAdapter?: unknown } | null | undefined)?.ExpressAdapter;
  const proto = typeof Adapter === 'function' ? (Adapter.prototype as Record<string, unknown> | undefined) : undefined;
  return typeof proto?.setNotFoundHandler === 'function' ? proto : undefined;
}

export function nestExpressDefinition(): InstrumentationNodeModuleDefinition {
  return new InstrumentationNodeModuleDefinition('@nestjs/platform-express', ['>=8.0.0 <13'],
    (exports: unknown) => {
      const proto = adapterProto(exports);
      if (proto !== undefined) {
        wrapMethod(proto, 'setNotFoundHandler', (original) => function setNotFoundHandler(this: unknown, ...args: unknown[]) {
          markNotFoundHandler(args[0]);
          return original.apply(this, args);
        });
      }
      return exports;
    },
    (exports: unknown) => {
      const proto = adapterProto(exports);
      if (proto !== undefined) unwrapMethod(proto, 'setNotFoundHandler');
      return exports;
    });
}
