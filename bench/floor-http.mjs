// The HTTP part of the diagnostic preloads (bench/floor.mjs, bench/probe-sketch.mjs): every request's duration,
// handed to `record` in seconds, as cheaply as it can be taken.
import http from 'node:http';

export function timeRequests(record) {
  // The request's start goes on the response while its map is still shared (before a framework changes its
  // prototype); its 'close' is seen through the response's emit, with no listener added.
  const kStart = Symbol('floor.start');
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
