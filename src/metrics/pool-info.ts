import type { Attributes, Meter, ObservableCallback, ObservableGauge } from '@opentelemetry/api';
import type { ObservedPool } from '../pools/observed-pool.js';
import type { PoolRegistry } from '../pools/registry.js';
import * as sc from '../semconv.js';

/**
 * `poolscope.pool.info`: 1 per live pool whose server is known, with the pool's name, `server.address`
 * and `server.port`. Only this series carries the server, so the pool metrics keep one series per pool
 * and their label sets stay what the semantic conventions define; Prometheus joins it onto
 * `db.client.connection.max` by pool name to sum a fleet's pools per server. Pools whose target was
 * withheld (a mis-read connection string) have no server and no info series.
 */
export class PoolInfoGauge {
  private readonly gauge: ObservableGauge;
  private readonly attributes = new WeakMap<ObservedPool, Attributes>();
  private readonly callback: ObservableCallback;

  constructor(meter: Meter, registry: PoolRegistry) {
    this.gauge = meter.createObservableGauge(sc.METRIC_POOL_INFO, {
      description: 'Always 1: the server (server.address, server.port) each pool connects to, for per-server sums of pool max.',
    });
    this.callback = (result) => {
      for (const [pool] of registry.snapshots()) {
        const attrs = this.attributesOf(pool);
        if (attrs !== undefined) result.observe(1, attrs);
      }
    };
    this.gauge.addCallback(this.callback);
  }

  dispose(): void {
    this.gauge.removeCallback(this.callback);
  }

  private attributesOf(pool: ObservedPool): Attributes | undefined {
    const server = pool.server;
    if (server === undefined) return undefined;
    let attrs = this.attributes.get(pool);
    if (attrs === undefined) {
      attrs = Object.freeze({ ...pool.attributes, [sc.ATTR_SERVER_ADDRESS]: server.address, [sc.ATTR_SERVER_PORT]: server.port });
      this.attributes.set(pool, attrs);
    }
    return attrs;
  }
}
