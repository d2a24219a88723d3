// The HTTP part of the diagnostic preloads (bench/floor.mjs, bench/probe-sketch.mjs): every request's duration,
// handed to `record` in seconds, as cheaply as it can be taken. BENCH_FLOOR_HTTP=channels takes it from Node's
// own diagnostics channels instead of the two emit wrappers Poolscope uses (diag:floor-http-channels), to
// show whether subscribing would be cheaper.
import dc from 'node:diagnostics_channel';
import http from 'node:http';

export function timeRequests(record) {
  const kStart = Symbol('floor.start');
  if (process.env.BENCH_FLOOR_HTTP === 'channels') {
    dc.subscribe('http.server.request.start', ({ response }) => { response[kStart] = performance.now(); });
    dc.subscribe('http.server.response.finish', ({ response }) => {
      if (response[kStart] !== undefined) record((performance.now() - response[kStart]) / 1000);
    });
    return;
  }
  // The request's start goes on the response while its map is still shared (before a framework changes its
  // prototype); its 'close' is seen through the response's emit, with no listener added.
  const emit = http.Server.prototype.emit;
  http.Server.prototype.emit = function (event, req, res) {
    if (event === 'request') res[kStart] = performance.now();
    return emit.apply(this, arguments);
  };
  const responseEmit = http.ServerResponse.prototype.emit;
  http.ServerResponse.prototype.emit = function (event) {
    if (event === 'close' && this[kStart] !== undefined) record((performance.now() - this[kStart]) / 1000);
    return responseEmit.apply(this, arguments);
  };
}
