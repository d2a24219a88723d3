// Abuses a telemetry port until SIGTERM, then prints one JSON line of what it got: a connection flood,
// pipelined requests never read, slow-loris headers, clients that never read a response, and a scrape
// storm. Run by bench/run.mjs (--only=abuse) against the app under test: BENCH_ABUSE_PORT.
import http from 'node:http';
import net from 'node:net';

const port = Number(process.env.BENCH_ABUSE_PORT);
const host = '127.0.0.1';
const stats = { statuses: {}, connectsOpened: 0, connectsClosedByServer: 0, scrapes: 0, scrapeErrors: 0 };
let stopping = false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const GET = 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n';

/** Opens a socket, runs `use` on it, reopens when the server closes it. */
async function loop(use) {
  while (!stopping) {
    await new Promise((resolve) => {
      const s = net.connect(port, host);
      stats.connectsOpened++;
      s.on('error', () => undefined);
      s.once('close', () => { stats.connectsClosedByServer++; resolve(); });
      s.once('connect', () => use(s));
      const stop = setInterval(() => { if (stopping) s.destroy(); }, 200);
      s.once('close', () => clearInterval(stop));
    });
    await sleep(20); // the attacker's own pace: reconnect, but not in a hot loop
  }
}

const floods = [];
// Idle connections held open (connection flood).
for (let i = 0; i < 100; i++) floods.push(loop(() => undefined));
// Pipelined requests, responses never read.
for (let i = 0; i < 20; i++) floods.push(loop((s) => { s.pause(); s.write(GET.repeat(1000)); }));
// Slow-loris: one header byte a second.
for (let i = 0; i < 20; i++) {
  floods.push(loop((s) => {
    s.write('GET /metrics HTTP/1.1\r\n');
    const t = setInterval(() => s.write('X'), 1000);
    s.once('close', () => clearInterval(t));
  }));
}
// A request whose response is never read.
for (let i = 0; i < 20; i++) floods.push(loop((s) => { s.pause(); s.write(GET); }));
// Scrape storm: as many scrapes as the server answers, over keep-alive.
const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
for (let i = 0; i < 32; i++) {
  floods.push((async () => {
    while (!stopping) {
      await new Promise((resolve) => {
        const req = http.get({ host, port, path: '/metrics', agent }, (res) => {
          stats.statuses[res.statusCode] = (stats.statuses[res.statusCode] ?? 0) + 1;
          res.resume();
          res.on('end', resolve);
          res.on('error', resolve);
        });
        req.on('error', () => { stats.scrapeErrors++; resolve(); });
      });
      stats.scrapes++;
      if (stats.scrapeErrors > 0) await sleep(5);
    }
  })());
}

process.on('SIGTERM', async () => {
  stopping = true;
  agent.destroy();
  await Promise.race([Promise.all(floods), sleep(2000)]);
  process.stdout.write(`${JSON.stringify(stats)}\n`);
  process.exit(0);
});
process.stdout.write('ABUSING\n');
