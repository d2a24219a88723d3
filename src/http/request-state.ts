/*
 * What Poolscope keeps on a Node HTTP request: when it arrived, and what the framework matched. Private
 * fields stamped onto the request (transparent.ts), all of them at once when the server emits 'request'.
 *
 * At once and that early because of Express: it changes every request's prototype
 * (`Object.setPrototypeOf(req, app.request)`), and V8 caches no property transition from a map made that
 * way. Every property added to such a request afterwards makes a new map: 1.4 to 2.2 µs each, measured on
 * IncomingMessage objects whatever the property (an assignment, a define, a private field). Fields that
 * exist before Express runs are plain stores.
 */
import { Stamp } from '../transparent.js';

/** Tells a request's route from the framework's own request object. A module-level function: no closure per request. */
export type RouteReader = (from: unknown) => string | undefined;

class RequestState extends Stamp {
  /** performance.now() at arrival; undefined once recorded. */
  #start: number | undefined = undefined;
  #scheme: 'http' | 'https' = 'http';
  /** A string, or null for "matched nothing". */
  #template: string | null | undefined = undefined;
  #from: unknown = undefined;
  #reader: RouteReader | undefined = undefined;
  /** The Express layer's (src/http/express.ts). */
  #frames: unknown = undefined;
  #dispatched: unknown = undefined;

  /** Stamps the request if it is not yet (false where it cannot be). */
  static own(req: object): boolean {
    if (#start in req) return true;
    try {
      new RequestState(req);
      return true;
    } catch {
      return false;
    }
  }

  static arrive(req: object, scheme: 'http' | 'https'): void {
    if (!RequestState.own(req)) return;
    (req as RequestState).#start = performance.now();
    (req as RequestState).#scheme = scheme;
  }

  /** The arrival time, cleared: an application emitting 'close' a second time does not record twice. */
  static take(req: object): number | undefined {
    if (!(#start in req)) return undefined;
    const start = (req as RequestState).#start;
    (req as RequestState).#start = undefined;
    return start;
  }

  static scheme(req: object): 'http' | 'https' {
    return #start in req ? (req as RequestState).#scheme : 'http';
  }

  static setTemplate(req: object, template: string | null): void {
    if (RequestState.own(req)) (req as RequestState).#template = template;
  }

  static setSource(req: object, from: unknown, reader: RouteReader): void {
    if (!RequestState.own(req)) return;
    (req as RequestState).#from = from;
    (req as RequestState).#reader = reader;
  }

  /** The template stored, or read through the source: null for "matched nothing", undefined when neither was left. */
  static route(req: object): string | null | undefined {
    if (!(#start in req)) return undefined;
    const r = req as RequestState;
    if (r.#template !== undefined) return r.#template;
    const reader = r.#reader;
    if (reader === undefined) return undefined;
    try {
      return reader(r.#from) ?? null;
    } catch {
      return null;
    }
  }

  static frames(req: object): unknown {
    return #start in req ? (req as RequestState).#frames : undefined;
  }

  static setFrames(req: object, frames: unknown): void {
    if (RequestState.own(req)) (req as RequestState).#frames = frames;
  }

  static dispatched(req: object): unknown {
    return #start in req ? (req as RequestState).#dispatched : undefined;
  }

  static setDispatched(req: object, frames: unknown): void {
    if (RequestState.own(req)) (req as RequestState).#dispatched = frames;
  }
}

// One class for every Poolscope copy in the process: one copy's framework hook may fill what the copy that
// patched the server (once per process) reads.
// Versioned: a copy with other fields must not take this class for its own.
const kRequestState = Symbol.for('poolscope.request-state.v1');
const g = globalThis as { [kRequestState]?: typeof RequestState };

/** The request-side state, as static accessors taking the request. */
export const requestState: typeof RequestState = (g[kRequestState] ??= RequestState);
