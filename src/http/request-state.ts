/*
 * One HTTP request as Poolscope follows it, from the server's 'request' event to the response's 'close':
 * when it arrived, what the duration's attributes need from the request, and what the framework matched.
 * One plain record per request, reached from the request and from the response through a private field
 * stamped onto each as the server emits 'request' (transparent.ts). Nothing of it is visible on either.
 *
 * A record, stamped that early, because of Express: it changes every request's and response's prototype
 * (`Object.setPrototypeOf(req, app.request)`), and V8 caches no property transition from a map made that
 * way, so each request ends up with a map of its own. On such an object, measured on IncomingMessage
 * objects (Node 20): adding any property costs 1.4 to 2.2 µs (an assignment, a define, a private field);
 * storing into an existing private field 0.24 µs; reading a public property (`req.method`,
 * `res.headersSent`) 0.2 to 0.6 µs, an inline-cache miss that walks the prototype chain; reading a private
 * field 15 to 40 ns, as private names are own properties only. So the request's method and version are read
 * as it arrives, the route as it is dispatched, and everything that changes later is written into the
 * record, an object of one stable shape, never onto the request or the response.
 */
import { shared } from '../process-state.js';
import { Stamp } from '../transparent.js';
import { monotonicNow } from '../native-timers.js';

/** Tells a request's route from the framework's own request object. A module-level function: no closure per request. */
export type RouteReader = (from: unknown) => string | undefined;

export interface Exchange {
  /** monotonicNow() at the request's arrival; undefined once its duration is recorded (or when not timed). */
  start: number | undefined;
  readonly req: object;
  scheme: 'http' | 'https';
  /** `http.request.method` as it arrived (unknown methods are `_OTHER`). */
  method: string;
  /** `network.protocol.version`. */
  version: string;
  /** The response emitted 'finish': its headers were sent. */
  finished: boolean;
  /** The response emitted 'close' after 'finish': the request is no longer being handled. */
  closed: boolean;
  /** The template a framework hook stored: a string, or null for "matched nothing". */
  template: string | null | undefined;
  /** The framework's own request object, and the reader that tells the route from it. */
  from: unknown;
  reader: RouteReader | undefined;
  /** The Express layer's (src/http/express.ts): mount frames, and those of the route last dispatched. */
  frames: unknown;
  dispatchedFrames: unknown;
  /** The route object last dispatched (Express's `req.route`, as the dispatch hook saw it). */
  dispatchedRoute: object | undefined;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH', 'QUERY']);

/** A request method as `http.request.method` has it: the standard ones as they are, anything else `_OTHER`. */
export function knownMethod(method: unknown): string {
  return typeof method === 'string' && KNOWN_METHODS.has(method) ? method : '_OTHER';
}

function newExchange(req: object): Exchange {
  return {
    start: undefined, req, scheme: 'http', method: '_OTHER', version: '', finished: false, closed: false,
    template: undefined, from: undefined, reader: undefined, frames: undefined, dispatchedFrames: undefined, dispatchedRoute: undefined,
  };
}

/** What can carry a private field: `#field in value` throws on anything else (a mock request handed over as a primitive, say). */
function canCarry(value: unknown): value is object {
  return value !== null && (typeof value === 'object' || typeof value === 'function');
}

class Stamped extends Stamp {
  #exchange: Exchange;

  constructor(target: object, exchange: Exchange) {
    super(target);
    this.#exchange = exchange;
  }

  static of(target: object): Exchange | undefined {
    return canCarry(target) && #exchange in target ? (target as Stamped).#exchange : undefined;
  }

  /** False where the object cannot carry it (or already carries one). */
  static attach(target: object, exchange: Exchange): boolean {
    if (!canCarry(target) || #exchange in target) return false;
    try {
      new Stamped(target, exchange);
      return true;
    } catch {
      return false;
    }
  }
}

// One class for every Poolscope copy in the process: one copy's framework hook may fill what the copy that
// patched the server (once per process) reads. Versioned: a copy with another record must not take it.
const Exchanges = shared('http-exchange.v1', () => Stamped);

/** The request's (or response's) exchange, if it has one. */
export function exchangeOf(target: object): Exchange | undefined {
  return Exchanges.of(target);
}

/**
 * The request's exchange, made now if the server hook did not make one (a request injected without a server,
 * or one the server hook was off for); undefined where the request cannot carry one.
 */
export function requestExchange(req: object): Exchange | undefined {
  const known = Exchanges.of(req);
  if (known !== undefined) return known;
  const exchange = newExchange(req);
  return Exchanges.attach(req, exchange) ? exchange : undefined;
}

/**
 * A request arrived (the server's 'request' event, or 'checkContinue' / 'checkExpectation', before any
 * listener): its exchange, timed from now. A request handed on to another server (`other.emit('request',
 * req, res)`, after a wait, on another scheme, with its method overridden) is still the request that arrived
 * first: its exchange keeps that arrival. Never throws: a request whose properties cannot be read (a strict
 * test double) goes untimed.
 */
export function arrive(req: object, res: object, scheme: 'http' | 'https'): void {
  let exchange = Exchanges.of(res);
  if (exchange !== undefined && exchange.start !== undefined) return;
  try {
    const { method, httpVersion } = req as { method?: unknown; httpVersion?: unknown };
    if (exchange === undefined) {
      const known = Exchanges.of(req);
      exchange = known ?? newExchange(req);
      if (!Exchanges.attach(res, exchange)) return;
      // A request that cannot carry it still has its duration; only its route is unknown.
      if (known === undefined) Exchanges.attach(req, exchange);
    }
    exchange.method = knownMethod(method);
    // `network.protocol.version` is "2" for HTTP/2, whose requests say '2.0'.
    exchange.version = typeof httpVersion === 'string' ? (httpVersion === '2.0' ? '2' : httpVersion) : '';
    exchange.scheme = scheme;
    exchange.finished = false;
    exchange.closed = false;
    exchange.start = monotonicNow();
  } catch {
    // untimed
  }
}

/**
 * The route a framework hook left, settled as the response closes: a source is read once more and dropped,
 * so that an application keeping the Node request does not keep the framework's request object (Koa's
 * context, and its response body) through it.
 */
export function settleRoute(exchange: Exchange): void {
  if (exchange.reader === undefined) return;
  exchange.template = hookedRoute(exchange) ?? null;
  exchange.reader = undefined;
  exchange.from = undefined;
}

/** What a framework hook left: the template, or read through the source; null for "matched nothing". */
export function hookedRoute(exchange: Exchange): string | null | undefined {
  if (exchange.template !== undefined) return exchange.template;
  const reader = exchange.reader;
  if (reader === undefined) return undefined;
  try {
    return reader(exchange.from) ?? null;
  } catch {
    return null;
  }
}
