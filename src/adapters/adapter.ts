import type { InstrumentationNodeModuleDefinition } from '@opentelemetry/instrumentation';
import type { AdapterContext, MonitorPoolOptions, PoolMark } from './shared.js';

/**
 * One pool library. An adapter hooks the library's module for zero-code use, recognises its pools for
 * `monitorPool()`, and reports each pool's lifecycle into the context's observer plus a live snapshot
 * read at collection time. Adding a library is one file implementing this and a line in ./index.ts;
 * no recorder changes.
 */
export interface PoolAdapter {
  readonly library: string;
  /** Hooks for require-in-the-middle / import-in-the-middle. */
  modules(): InstrumentationNodeModuleDefinition[];
  /** True when `pool` is one of this library's pools. */
  matches(pool: unknown): boolean;
  /** Starts observing `pool` in `ctx`; idempotent (the existing mark is returned). */
  attach(pool: object, ctx: AdapterContext, options: MonitorPoolOptions): PoolMark | undefined;
}
