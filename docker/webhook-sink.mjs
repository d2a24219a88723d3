// Webhook sink for the compose stack: stands in for the pager and the chat channel. Alertmanager posts
// its notifications here (POST /pager, POST /chat — any path names the receiver); each one is logged as a
// one-line summary plus its JSON (`docker compose logs -f webhook-sink`) and kept in memory, newest first,
// at GET /notifications (?receiver=pager to filter). GET /healthz answers 200. No dependencies: node only.
//
// Env: PORT (default 8080; 0 picks a free port), HOST (default 127.0.0.1; the compose file sets 0.0.0.0),
//      SINK_KEEP (notifications kept, default 200). Prints `LISTENING <port>` once bound.
import http from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '127.0.0.1';
const keep = Number(process.env.SINK_KEEP ?? 200);
const MAX_BODY = 1024 * 1024;

/** @type {Array<Record<string, unknown>>} */
const notifications = [];

function send(res, status, body) {
  const json = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(json) });
  res.end(json);
}

/** One readable line per notification: receiver, status and each alert with its service and pool. */
function summary(receiver, payload) {
  const alerts = Array.isArray(payload.alerts) ? payload.alerts : [];
  const names = alerts.map((a) => {
    const l = a.labels ?? {};
    const where = [l.job, l.db_client_connection_pool_name ?? l.http_route].filter(Boolean).join('/');
    return `${l.alertname ?? '?'}[${l.severity ?? '?'}]${where ? ` ${where}` : ''} ${a.status ?? ''}`.trim();
  });
  return `${new Date().toISOString()} ${receiver} ${payload.status ?? '?'} ${alerts.length} alert(s): ${names.join('; ')}`;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://sink');
  if (req.method === 'GET' && url.pathname === '/healthz') return send(res, 200, { status: 'ok' });
  if (req.method === 'GET' && (url.pathname === '/' || url.pathname === '/notifications')) {
    const receiver = url.searchParams.get('receiver');
    return send(res, 200, receiver ? notifications.filter((n) => n.receiver === receiver) : notifications);
  }
  if (req.method !== 'POST') return send(res, 405, { error: 'POST a notification, or GET /notifications' });

  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      send(res, 413, { error: 'body too large' });
      req.destroy();
    } else chunks.push(chunk);
  });
  req.on('end', () => {
    if (res.headersSent) return;
    let payload;
    try {
      payload = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 400, { error: 'body is not JSON' });
    }
    const receiver = url.pathname.replace(/^\/+/, '') || 'default';
    notifications.unshift({ receivedAt: new Date().toISOString(), receiver, payload });
    notifications.length = Math.min(notifications.length, keep);
    console.log(summary(receiver, payload));
    console.log(JSON.stringify({ receiver, payload }));
    send(res, 200, { ok: true });
  });
});

server.listen(port, host, () => {
  console.log(`LISTENING ${server.address().port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
