// What one timed callback costs, by the way it is hooked (`--only=hooks`): the design question behind issue 12's
// CPU-bound target. Poolscope wraps pg's and pg-pool's methods by hand (a closure per call and two clock
// readings); the alternative proposed upstream (brianc/node-postgres#3650) is a diagnostics_channel
// TracingChannel that the library publishes to and an agent subscribes to. The operation here calls back at
// once, so what is left is the hook's own cost. Prints one JSON line: nanoseconds of CPU per call, medians.
import dc from 'node:diagnostics_channel';

const CALLS = Number(process.argv[2] ?? 2_000_000);
const REPS = Number(process.argv[3] ?? 7);

let sink = 0;
const operation = (x, cb) => cb(null, x + 1);
const done = (_err, r) => { sink += r; };

const variants = {
  'no hook': operation,
  // Only what any timing needs, without a closure: two clock readings.
  'two clock readings': (x, cb) => {
    const start = performance.now();
    sink += performance.now() - start;
    return operation(x, cb);
  },
  // Poolscope's shape: read the clock, wrap the callback, read the clock when it runs.
  'hand wrapper (Poolscope)': (x, cb) => {
    const start = performance.now();
    return operation(x, (err, r) => {
      sink += performance.now() - start;
      cb(err, r);
    });
  },
};

// The upstream proposal's shape: the library calls traceCallback; the agent times start → asyncStart.
const channel = dc.tracingChannel('poolscope.bench:operation');
channel.subscribe({
  start(ctx) { ctx.start = performance.now(); },
  end() {},
  asyncStart(ctx) { sink += performance.now() - ctx.start; },
  asyncEnd() {},
  error() {},
});
variants['TracingChannel.traceCallback (upstream proposal)'] = function (x, cb) {
  return channel.traceCallback(operation, 1, { x }, this, x, cb);
};

function nsPerCall(fn) {
  const before = process.cpuUsage();
  for (let i = 0; i < CALLS; i++) fn(i, done);
  const used = process.cpuUsage(before);
  return ((used.user + used.system) * 1000) / CALLS;
}

const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (let rep = 0; rep < REPS; rep++) {
  for (const [name, fn] of Object.entries(variants)) samples[name].push(nsPerCall(fn));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const result = { node: process.versions.node, sink: Number.isFinite(sink) };
result.nsPerCall = Object.fromEntries(Object.entries(samples).map(([k, xs]) => [k, Math.round(median(xs))]));
process.stdout.write(`${JSON.stringify(result)}\n`);
