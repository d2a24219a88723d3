/*
 * A cluster's primary that used pg (migrations at start-up, before or after cluster.fork()) bound the telemetry
 * port as any process with a pool does: every worker, which holds the service's pools, found it taken, /metrics
 * showed no pool at all and /health/database answered "unknown" about the migration's ended pool; with a port
 * per worker (base + i), worker 0's was the primary's (found by a review of process fleets). A primary that
 * found the port held by its workers tried again every few seconds and took it in the gap of a worker's restart.
 * So a primary with workers alive leaves the port to them, and takes it again only once it has none.
 */
import { createRequire } from 'node:module';
import type { Cluster } from 'node:cluster';
import type { PoolscopeLogger } from '../logger.js';
import { pollUntil } from '../native-timers.js';
import type { TelemetryServer } from './telemetry-server.js';

const require = createRequire(import.meta.url);
/** How often a process holding the port looks whether the application loaded `cluster`, and a primary whether its workers are gone. */
const CHECK_MILLIS = 1_000;

/**
 * Watches, from when `server` binds the port, for this process to become a cluster's primary. `cluster` is never
 * loaded by Poolscope (3 ms of every process's start): only once the application did (`process.moduleLoadList`).
 * Returns what stops watching.
 */
export function leavePortToWorkers(server: TelemetryServer, hasPools: () => boolean, logger: PoolscopeLogger): () => void {
  let cluster: Cluster | undefined;
  let poolsSaid = false;
  const noWorkers = () => Object.keys(cluster?.workers ?? {}).length === 0;
  const leave = () => {
    if (noWorkers()) return;
    // Its pools are still measured (and pushed with OTLP): only this port is not theirs.
    if (hasPools() && !poolsSaid) {
      poolsSaid = true;
      logger.warn('server:cluster-primary', 'poolscope: this cluster primary has a connection pool open, but leaves the telemetry ' +
        'port to its workers while it has any: its pools are not on their /metrics and /health. Push with OTLP, or ' +
        'give the primary a port of its own (OTEL_EXPORTER_PROMETHEUS_PORT).');
    }
    logger.debug('poolscope: this cluster primary has workers: the telemetry port is left to them');
    server.release((listen) => pollUntil(noWorkers, listen, CHECK_MILLIS).cancel);
  };
  const loaded = pollUntil(() => (process as { moduleLoadList?: string[] }).moduleLoadList?.includes('NativeModule cluster') === true, () => {
    cluster = require('node:cluster') as Cluster;
    if (!cluster.isPrimary) return;
    cluster.on('fork', leave);
    // Workers forked before the application's `cluster` was seen here.
    leave();
  }, CHECK_MILLIS);
  return () => {
    loaded.cancel();
    cluster?.off('fork', leave);
  };
}
