/*
 * Which HTTP request is current, so a pool checkout can be charged to the endpoint that made it.
 *
 * The request object itself is the store (no allocation per request): the route is not known when the
 * request arrives — the router matches later, often after the first acquire has started — so it is read
 * from the request when it is needed (at release, or when a long hold is reported), by which time the
 * framework has left it there.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';
import { exchangeOf, knownMethod } from '../http/request-state.js';
import { routeOf as httpRouteOf } from '../http/route.js';
import { patchMarks, wrapEmit } from '../http/wrap.js';
import { shared } from '../process-state.js';

const require = createRequire(import.meta.url);

/** Each server prototype's wrapper state, shared by every copy (not on the prototype: util.inspect shows it there). */
const patched = patchMarks<{ active: boolean }>('poolscope.request-context.patched-prototypes');

export type RoutedRequest = IncomingMessage;

/**
 * The HTTP request whose handling is running, per async context: one for every Poolscope copy in the process
 * (ESM and CJS builds share one context, and patch once).
 */
export const requestContext: AsyncLocalStorage<RoutedRequest> = shared('request-context.storage', () => new AsyncLocalStorage<RoutedRequest>());

/** The request being handled here, if any. Cheap: a store read and a private field's, no allocation. */
export function currentRequest(): RoutedRequest | undefined {
  const req = requestContext.getStore();
  // Timers and promises a request started keep its context after its response closed: a job queue started
  // lazily by a request (pg-boss) polled on, and every checkout of it was charged to that route for good.
  return req !== undefined && exchangeOf(req)?.closed === true ? undefined : req;
}

/** The request's method as `http.request.method` has it: as it arrived, when the server hook saw it arrive. */
export function methodOf(req: RoutedRequest): string {
  return exchangeOf(req)?.method ?? knownMethod(req.method);
}

/**
 * The route template the framework matched so far, or undefined (no route matched yet, or a framework
 * we cannot read). Never the raw path: that would put ids (and sometimes secrets) into labels.
 */
export function routeOf(req: RoutedRequest): string | undefined {
  // The HTTP layer's own reading: the template the framework matched (mount patterns joined for Express),
  // never req.baseUrl, which holds the matched path values (user ids, e-mail addresses).
  return httpRouteOf(req as never);
}

type ServerProto = { emit: (event: string | symbol, ...args: unknown[]) => boolean };

function emitOriginal(original: ServerProto['emit'], self: unknown, args: IArguments): boolean {
  return original.apply(self, args as unknown as Parameters<ServerProto['emit']>);
}

/**
 * Runs every HTTP(S) server's `request` listeners inside {@link requestContext}, by wrapping
 * `Server.prototype.emit` (process-wide, so CommonJS and ESM servers alike, with no loader hook). Returns
 * the undo. A wrapper someone else installed on top of ours stays valid: undoing only switches ours off.
 */
export function installRequestContext(): () => void {
  const undos: Array<() => void> = [];
  for (const mod of ['node:http', 'node:https']) {
    const proto = (require(mod) as { Server: { prototype: ServerProto } }).Server.prototype;
    const existing = patched.get(proto);
    if (existing !== undefined) {
      existing.active = true;
      undos.push(() => { existing.active = false; });
      continue;
    }
    const state = { active: true };
    patched.set(proto, state);
    const undo = wrapEmit(proto, (original) => function emit(this: unknown, event: string | symbol, req?: unknown) {
      if (event === 'request' && state.active && req !== null && typeof req === 'object') {
        // `arguments`, not a rest parameter: emit runs for every request and passes everything through.
        // eslint-disable-next-line prefer-rest-params
        return requestContext.run(req as RoutedRequest, emitOriginal, original(), this, arguments);
      }
      // eslint-disable-next-line prefer-rest-params
      return original().apply(this, arguments as unknown as Parameters<ServerProto['emit']>);
    });
    undos.push(() => {
      state.active = false;
      // Still wrapped by someone else's emit on top of ours: ours stays as an inert pass-through.
      if (undo()) patched.delete(proto);
    });
  }
  return () => { for (const undo of undos.splice(0)) undo(); };
}
