/*
 * Bounds of the telemetry server. It shares the application's process, event loop and file descriptors,
 * so everything a client can make it hold or do is capped: a scraper flood, a pipelining or slow client
 * costs the application at most these amounts. Legitimate use is a few Prometheus servers (HA pairs,
 * agents) scraping every 10-60 s, health probes every few seconds and a human with curl: far below
 * every limit here.
 */
export const SERVER_LIMITS = Object.freeze({
  /**
   * Open connections (file descriptors are the app's). A connection beyond it replaces the oldest one that
   * has no request in progress, or is closed at once when every connection is serving one.
   */
  maxConnections: 16,
  /** Requests on one keep-alive connection; the last one is answered with `Connection: close`. */
  maxRequestsPerConnection: 100,
  /** Pipelined requests waiting for their response on one connection; more closes the connection. */
  maxPendingPerConnection: 4,
  /** Request headers; larger is 431. */
  maxHeaderBytes: 8 * 1024,
  /** Time to receive the headers, and the whole request (slow-loris). */
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  /** Node checks the two above only this often (30 s by default). */
  connectionsCheckingIntervalMs: 1_000,
  /** From request to the last byte of the response handed to the kernel: a client that does not read is cut. */
  responseTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
  /** Requests per second over all connections (token bucket); beyond it 429 and the connection closed. */
  requestsPerSecond: 50,
  requestBurst: 100,
  /**
   * Concurrent scrapes always share one collection. Its encoded result is reused only during a scrape
   * flood (more than `metricsFloodRequests` requests within one second), for this long or for ten times the
   * collection's duration if longer: a flood then costs at most about 10 % of the event loop and one
   * response body of memory, while ordinary scrapes (a few a minute) always see a fresh collection.
   */
  metricsCacheMs: 1_000,
  metricsCacheDurationFactor: 10,
  metricsFloodRequests: 10,
});
