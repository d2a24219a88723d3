/*
 * A cluster's primary that used pg before forking (migrations at start-up, then cluster.fork()) bound the
 * telemetry port as any process with a pool does, and held it for its life: every worker, which holds the
 * service's pools, found it taken, /metrics showed no pool at all and /health/database answered "unknown" about
 * the migration's ended pool; with a port per worker (base + i), worker 0's was the primary's (found by a
 * review of process fleets). Such a primary, forking with no pool open, gives the port back to its workers,
 * and takes it again only once it opens a pool of its own.
 */
import { createRequire } from 'node:module';
import type { Cluster } from 'node:cluster';
import type { PoolscopeLogger } from '../logger.js';
import { pollUntil } from '../native-timers.js';
import type { TelemetryServer } from './telemetry-server.js';

const require = createRequire(import.meta.url);
/** How often a process holding the port looks whether the application loaded `cluster`, and a primary whether it opened a pool again. */
const CHECK_MILLIS = 1_000;

/**
 * Watches, while `server` holds the port, for this process to become a cluster's primary. `cluster` is never
 * loaded by Poolscope (3 ms of every process's start): only once the application did (`process.moduleLoadList`).
 * Returns what stops watching.
 */
export function leavePortToWorkers(server: TelemetryServer, hasPools: () => boolean, logger: PoolscopeLogger): () => void {
  let cluster: Cluster | undefined;
  const onFork = () => {
    if (!server.listening || hasPools()) return;
    logger.debug('poolscope: this cluster primary has no pool open and forked a worker: the telemetry port is left to the workers');
    server.release((listen) => pollUntil(hasPools, listen, CHECK_MILLIS).cancel);
  };
  const loaded = pollUntil(() => (process as { moduleLoadList?: string[] }).moduleLoadList?.includes('NativeModule cluster') === true, () => {
    cluster = require('node:cluster') as Cluster;
    if (!cluster.isPrimary) return;
    cluster.on('fork', onFork);
    // Workers forked before the application's `cluster` was seen here.
    if (Object.keys(cluster.workers ?? {}).length > 0) onFork();
  }, CHECK_MILLIS);
  return () => {
    loaded.cancel();
    cluster?.off('fork', onFork);
  };
}
