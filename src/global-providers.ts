/*
 * The OpenTelemetry API's global providers belong to the application. Services that adopt Poolscope often run
 * an SDK of their own already (NodeSDK, an APM built on OpenTelemetry), and the API keeps one global of each
 * kind: whoever registers second is refused, with an error stack on stderr. Poolscope's own instruments never
 * need the global (they are handed Poolscope's providers):
 * - a global held by another SDK when Poolscope starts (loaded by `--require`, say) is left to it, and
 *   Poolscope's traces stay off: that SDK traces the process (two would make two spans of each request);
 * - the meter provider is handed over when the application registers its own after Poolscope started (its SDK
 *   set up in its first lines), so that its exporter receives its metrics as without the preload. Left alone,
 *   the application's SDK was refused and its exporter received nothing.
 * - the tracer provider is not handed over: instrumentations made while Poolscope's was global hold its
 *   tracers already. The application's registration is refused, as the API would, with one line that says why;
 * - none is taken when the application has its own copy of the API (api-globals.ts).
 */
import { context, metrics, propagation, trace } from '@opentelemetry/api';
import { apiGlobalHeld, sameApiAsApplication } from './api-globals.js';
import { sameArity } from './transparent.js';
import type { PoolscopeLogger } from './logger.js';

type Slot = 'metrics' | 'trace';

type Global = Parameters<typeof apiGlobalHeld>[0];

/**
 * The API's setters an SDK registers through, each with the global it sets: a meter provider, or a tracer
 * provider with its context and propagation.
 */
const SETTERS: Record<Slot, Array<[object, string, Global]>> = {
  metrics: [[metrics, 'setGlobalMeterProvider', 'metrics']],
  trace: [[trace, 'setGlobalTracerProvider', 'trace'], [context, 'setGlobalContextManager', 'context'],
    [propagation, 'setGlobalPropagator', 'propagation']],
};

type OnCall = (setter: (...a: unknown[]) => unknown, self: unknown, args: unknown[], unwatch: () => void, global: Global) => unknown;

/** Replaces the API's setters for `slot` with `onCall`. Returns what puts them back. */
function watchSetters(slot: Slot, onCall: OnCall): () => void {
  const watched = SETTERS[slot];
  const unwatch = () => {
    for (const [api, name] of watched) delete (api as Record<string, unknown>)[name];
  };
  for (const [api, name, global] of watched) {
    const setter = (api as Record<string, (...a: unknown[]) => unknown>)[name]!;
    Object.defineProperty(api, name, {
      configurable: true,
      writable: true,
      enumerable: false,
      value: sameArity(function watchedSetter(this: unknown, ...args: unknown[]) {
        return onCall(setter, this, args, unwatch, global);
      }, setter),
    });
  }
  return unwatch;
}

/**
 * Registers Poolscope's meter provider for the application's metrics globally (`register`) unless another SDK
 * holds the slot (said at info level: nothing is lost), and hands the slot over when the application registers
 * its own later (`handOver` first: that provider's meters, taken before, are not Poolscope's to collect any more).
 * Returns what stops watching; Poolscope's shutdown releases its own registration as before.
 */
export function registerMeterProviderUnlessOwned(register: () => void, handOver: () => void, logger: PoolscopeLogger): () => void {
  const own = 'Poolscope still serves its own metrics as configured, and what the application records through the API goes to that SDK';
  if (apiGlobalHeld('metrics')) {
    logger.info('global:metrics', `poolscope: another OpenTelemetry SDK holds the global meter provider; ${own}.`);
    return () => undefined;
  }
  if (!sameApiAsApplication()) {
    logger.info('global:metrics', 'poolscope: the application has its own copy of @opentelemetry/api, so Poolscope registers no ' +
      'global meter provider (what the application records through the API is not on Poolscope\'s /metrics); its own metrics are unaffected.');
    return () => undefined;
  }
  register();
  return watchSetters('metrics', (setter, self, args, unwatch) => {
    unwatch();
    try {
      handOver();
      metrics.disable();
      logger.info('global:metrics', `poolscope: the application registered an OpenTelemetry SDK's global meter provider, so Poolscope handed the global over; ${own}.`);
    } catch { /* ours stays; the application's registration is refused as without this watch */ }
    return setter.apply(self, args);
  });
}

/**
 * Whether Poolscope's traces stay off although asked for: another OpenTelemetry SDK traces the process already
 * (loaded before Poolscope, by `--require`, say, and often configured by the same OTEL_TRACES_EXPORTER), and two
 * tracing SDKs make two spans of every request while the API keeps only the first's context and propagation.
 */
export function tracedElsewhere(logger: PoolscopeLogger): boolean {
  if (apiGlobalHeld('trace')) {
    logger.info('global:trace', 'poolscope: another OpenTelemetry SDK traces this process, so Poolscope\'s traces stay off (OTEL_TRACES_EXPORTER is read by both); its metrics are unaffected.');
    return true;
  }
  // Its tracer provider, context and propagation would claim the API's globals for Poolscope's copy (api-globals.ts).
  if (!sameApiAsApplication()) {
    logger.warn('global:trace', 'poolscope: traces are off: the application has its own copy of @opentelemetry/api, whose ' +
      'globals Poolscope\'s would take. Install poolscope into the application (npm install poolscope) for its traces; its metrics are unaffected.');
    return true;
  }
  return false;
}

/**
 * Registers Poolscope's tracer provider, context manager and propagator (`register`), tracedElsewhere() having
 * found them Poolscope's to take. An SDK registering later is refused, as the API would refuse it, with
 * one line instead of an error stack for each of the three. Returns what stops watching.
 */
export function registerTracingRefusingLater(register: () => void, logger: PoolscopeLogger): () => void {
  register();
  // Each of the three setters is refused while Poolscope's registration holds its global, with one line for them
  // all. A global the application released first (`trace.disable()`) is the application's to set again.
  return watchSetters('trace', (setter, self, args, _unwatch, global) => {
    if (!apiGlobalHeld(global)) return setter.apply(self, args);
    logger.warn('global:trace', 'poolscope: the application registered an OpenTelemetry SDK\'s tracing after Poolscope\'s traces started, and the API keeps the first: its spans go to Poolscope\'s trace exporter. Start that SDK before Poolscope (`--require` or `--import` ahead of Poolscope\'s), and Poolscope leaves tracing to it.');
    return false;
  });
}
