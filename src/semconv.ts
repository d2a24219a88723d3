/*
 * Metric and attribute names. Database connection metrics come from the OpenTelemetry semantic
 * conventions (database client metrics, still "development" there, so they are not exported by the
 * stable @opentelemetry/semantic-conventions entry point and are declared here, as contrib packages do).
 * Names under `poolscope.` are our own and documented in the README.
 */
export const METRIC_CONNECTION_COUNT = 'db.client.connection.count';
export const METRIC_CONNECTION_MAX = 'db.client.connection.max';
export const METRIC_CONNECTION_IDLE_MAX = 'db.client.connection.idle.max';
export const METRIC_CONNECTION_IDLE_MIN = 'db.client.connection.idle.min';
export const METRIC_CONNECTION_PENDING_REQUESTS = 'db.client.connection.pending_requests';
export const METRIC_CONNECTION_TIMEOUTS = 'db.client.connection.timeouts';
export const METRIC_CONNECTION_WAIT_TIME = 'db.client.connection.wait_time';
export const METRIC_CONNECTION_USE_TIME = 'db.client.connection.use_time';
export const METRIC_CONNECTION_CREATE_TIME = 'db.client.connection.create_time';
export const METRIC_OPERATION_DURATION = 'db.client.operation.duration';
export const METRIC_POOL_UTILIZATION = 'poolscope.pool.utilization';
export const METRIC_POOL_OVERFLOW = 'poolscope.pool.overflow';
export const METRIC_POOL_ERRORS = 'poolscope.pool.errors';

export const ATTR_POOL_NAME = 'db.client.connection.pool.name';
export const ATTR_CONNECTION_STATE = 'db.client.connection.state';
export const ATTR_DB_SYSTEM_NAME = 'db.system.name';
export const ATTR_DB_OPERATION_NAME = 'db.operation.name';
export const ATTR_DB_QUERY_SUMMARY = 'db.query.summary';
export const ATTR_DB_QUERY_TEXT = 'db.query.text';
export const ATTR_DB_NAMESPACE = 'db.namespace';
export const ATTR_DB_RESPONSE_STATUS_CODE = 'db.response.status_code';
export const ATTR_SERVER_ADDRESS = 'server.address';
export const ATTR_SERVER_PORT = 'server.port';
export const ATTR_ERROR_TYPE = 'error.type';

export const DB_SYSTEM_POSTGRESQL = 'postgresql';

/*
 * Histogram bucket boundaries in seconds. Each set has a boundary at every threshold the shipped
 * alert rules use (0.5 s and 2 s for queries, 1 s and 2 s for HTTP), so the alerts' quantile
 * estimates are exact at the threshold instead of interpolated across a wide bucket.
 */
/** Acquire wait: a hand-over from the idle list is sub-millisecond; a starved pool waits until its timeout. */
export const WAIT_TIME_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Checkout to release: one query up to a long transaction. */
export const USE_TIME_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** TCP + TLS + authentication handshake for a new physical connection. */
export const CREATE_TIME_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const OPERATION_DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10];
export const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2, 2.5, 5, 10];

export const DESCRIPTION_WAIT_TIME = 'Time from pool.connect() to the hand-over of a connection.';
export const DESCRIPTION_USE_TIME = 'Time a connection was checked out, from hand-over to release.';
export const DESCRIPTION_CREATE_TIME = 'Time to open a new physical connection (connect, TLS, authentication, onConnect).';
export const DESCRIPTION_OPERATION_DURATION = 'Duration of database client operations.';

/*
 * Pool signals no convention defines (our own, documented in the README): how acquires are served, why
 * connections close, and what happened between two collections.
 */
export const METRIC_POOL_ACQUIRES = 'poolscope.pool.acquires';
export const ATTR_ACQUIRE_PATH = 'poolscope.acquire.path';
export const METRIC_POOL_CLOSES = 'poolscope.pool.closes';
export const ATTR_CLOSE_REASON = 'poolscope.close.reason';
export const METRIC_POOL_USED_PEAK = 'poolscope.pool.used.peak';
export const METRIC_POOL_PENDING_PEAK = 'poolscope.pool.pending.peak';
export const METRIC_POOL_SATURATED_TIME = 'poolscope.pool.saturated.time';

/*
 * Connection budget (issue 10, item 6). One series per pool, value 1, naming the server the pool connects
 * to, so Prometheus can sum every instance's `db.client.connection.max` per server (prometheus/rules/budget.yml)
 * without adding labels to the semantic-convention pool metrics themselves.
 */
export const METRIC_POOL_INFO = 'poolscope.pool.info';

/*
 * Leak, long-hold and idle-in-transaction detection, and who holds the connections
 * (src/recorders/leak-detector.ts). `http.route` is the stable HTTP semantic-convention attribute.
 */
export const METRIC_POOL_LEAKS = 'poolscope.pool.leaks';
export const METRIC_POOL_LONG_HELD = 'poolscope.pool.long_held';
export const METRIC_POOL_IDLE_IN_TRANSACTION = 'poolscope.pool.idle_in_transaction';
export const METRIC_POOL_HOLD_TIME = 'poolscope.pool.hold_time';
export const ATTR_HTTP_ROUTE = 'http.route';
export const DESCRIPTION_POOL_LEAKS = 'Checkouts held longer than the leak threshold, counted once each, by the http.route that acquired them.';
export const DESCRIPTION_POOL_LONG_HELD = 'Connections checked out longer than the leak threshold now.';
export const DESCRIPTION_POOL_IDLE_IN_TRANSACTION =
  'Checkouts flagged once for sitting idle inside an open transaction longer than the threshold, by http.route.';
export const DESCRIPTION_POOL_HOLD_TIME = 'Time a connection was checked out (as db.client.connection.use_time), by the http.route that acquired it.';

/*
 * Health (stuck detection and score, src/health/): read at collection time from the health monitor.
 * `poolscope.pool.stuck` is one series per reason, 0 or 1, so an alert can page on any reason and the
 * series set never changes shape; the score is the one on /health/database.
 */
export const METRIC_POOL_STUCK = 'poolscope.pool.stuck';
export const METRIC_POOL_HEALTH_SCORE = 'poolscope.pool.health.score';
export const ATTR_STUCK_REASON = 'poolscope.stuck.reason';
