// Load generator for the compose stack: walks the demo service's main pool through healthy → warning →
// critical → recovery, over and over, so every dashboard panel and the pool alerts have something to show.
// The same phases as `npm run demo` (demo/run.mjs): utilization ≈ workers / pool max while below the max;
// above it requests queue (pending) and time out. A few workers also hit /orders/:id (a point query),
// /reports/daily (the second pool) and /broken (failing queries, HTTP 500s). No dependencies: node only.
//
// Env: APP_URL (default http://127.0.0.1:3000), LOADGEN_POOL_MAX (the app's DEMO_POOL_MAX, default 10),
//      LOADGEN_PHASES (default healthy:60,warning:60,critical:90,recovery:60 — name:seconds),
//      LOADGEN_CYCLES (0 = until stopped, the default), LOADGEN_HEARTBEAT (file touched after every
//      response, for the container health check; default /tmp/loadgen.heartbeat).
import { writeFileSync } from 'node:fs';

const env = process.env;
const base = (env.APP_URL ?? 'http://127.0.0.1:3000').replace(/\/+$/, '');
const poolMax = Number(env.LOADGEN_POOL_MAX ?? 10);
const cycles = Number(env.LOADGEN_CYCLES ?? 0);
const heartbeat = env.LOADGEN_HEARTBEAT ?? '/tmp/loadgen.heartbeat';

const PHASES = {
  healthy: { workers: Math.max(1, Math.round(poolMax * 0.3)), holdMs: 200 },
  warning: { workers: Math.max(1, Math.round(poolMax * 0.85)), holdMs: 300 },
  critical: { workers: poolMax * 4, holdMs: 600 },
  recovery: { workers: Math.max(1, Math.round(poolMax * 0.2)), holdMs: 100 },
};

const schedule = (env.LOADGEN_PHASES ?? 'healthy:60,warning:60,critical:90,recovery:60').split(',').map((p) => {
  const [name, seconds] = p.split(':');
  if (!PHASES[name] || !(Number(seconds) > 0)) {
    throw new Error(`LOADGEN_PHASES: bad phase "${p}" (name:seconds, names: ${Object.keys(PHASES).join(', ')})`);
  }
  return { name, seconds: Number(seconds) };
});

let stopping = false;
let lastBeat = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function beat() {
  const now = Date.now();
  if (now - lastBeat < 1000) return;
  lastBeat = now;
  try {
    writeFileSync(heartbeat, String(now));
  } catch {
    // the health check will report it
  }
}

function urlFor(i, holdMs) {
  if (i % 7 === 6) return `${base}/orders/${1 + Math.floor(Math.random() * 10000)}`;
  if (i % 11 === 10) return `${base}/reports/daily`;
  if (i % 13 === 12) return `${base}/broken`;
  return `${base}/work?ms=${holdMs}`;
}

async function runPhase({ name, seconds }) {
  const { workers, holdMs } = PHASES[name];
  const until = Date.now() + seconds * 1000;
  const stats = { ok: 0, failed: 0, unreachable: 0 };
  const worker = async (i) => {
    while (!stopping && Date.now() < until) {
      try {
        const res = await fetch(urlFor(i, holdMs), { signal: AbortSignal.timeout(15_000) });
        await res.arrayBuffer();
        beat();
        if (res.ok) stats.ok++;
        else stats.failed++;
      } catch {
        stats.unreachable++;
        await sleep(500);
      }
    }
  };
  await Promise.all(Array.from({ length: workers }, (_, i) => worker(i)));
  console.log(`${new Date().toISOString()} phase ${name} (${workers} workers, ${holdMs} ms hold, ${seconds}s): ` +
    `ok ${stats.ok}, failed ${stats.failed}, unreachable ${stats.unreachable}`);
}

async function main() {
  console.log(`loadgen: ${base}, pool max ${poolMax}, phases ${schedule.map((p) => `${p.name}:${p.seconds}s`).join(' → ')}` +
    `${cycles ? ` × ${cycles}` : ', repeating'}`);
  for (let cycle = 0; !stopping && (cycles === 0 || cycle < cycles); cycle++) {
    for (const phase of schedule) {
      if (stopping) break;
      await runPhase(phase);
    }
  }
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    stopping = true;
  });
}
main().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
