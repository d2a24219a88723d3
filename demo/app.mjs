// The demo service: an ordinary Express + pg app with no telemetry code. Poolscope is added from the
// command line: node --import ./dist/register.js demo/app.mjs
import express from 'express';
import pg from 'pg';

const databaseUrl = process.env.DATABASE_URL;
const pool = new pg.Pool({
  connectionString: databaseUrl,
  max: Number(process.env.DEMO_POOL_MAX ?? 10),
  connectionTimeoutMillis: Number(process.env.DEMO_ACQUIRE_TIMEOUT_MS ?? 1500),
  poolName: 'orders-db',
});
// A second, small pool: pools are reported separately, by name.
const reports = new pg.Pool({ connectionString: databaseUrl, max: 2, poolName: 'reports-db' });
pool.on('error', (err) => console.error('idle client error:', err.message));
reports.on('error', (err) => console.error('idle client error:', err.message));

const app = express();

// Holds a connection for `ms` milliseconds: the load generator uses it to set pool utilization.
app.get('/work', async (req, res) => {
  const ms = Math.min(Number(req.query.ms ?? 100), 10_000);
  try {
    await pool.query('SELECT pg_sleep($1)', [ms / 1000]);
    res.json({ ok: true });
  } catch (err) {
    res.status(503).json({ error: err.message });
  }
});

// A transaction left open while the handler waits `ms` milliseconds (as for a call to another service):
// the connection sits idle inside it, holding its snapshot. Poolscope counts such checkouts
// (poolscope.pool.idle_in_transaction) and the PoolIdleInTransaction alert names them.
app.get('/transfer', async (req, res) => {
  const ms = Math.min(Number(req.query.ms ?? 100), 10_000);
  let client;
  try {
    client = await pool.connect();
    await client.query('BEGIN');
    await client.query('SELECT count(*) FROM demo_orders');
    await new Promise((resolve) => setTimeout(resolve, ms));
    await client.query('COMMIT');
    res.json({ ok: true });
  } catch (err) {
    await client?.query('ROLLBACK').catch(() => undefined);
    res.status(503).json({ error: err.message });
  } finally {
    client?.release();
  }
});

app.get('/orders/:id', async (req, res) => {
  try {
    const { rows } = await pool.query('SELECT id, customer, total FROM demo_orders WHERE id = $1', [req.params.id]);
    if (rows.length === 0) return res.status(404).json({ error: 'not found' });
    res.json(rows[0]);
  } catch (err) {
    res.status(503).json({ error: err.message });
  }
});

app.get('/reports/daily', async (_req, res) => {
  try {
    const { rows } = await reports.query('SELECT count(*)::int AS orders, sum(total)::float AS revenue FROM demo_orders');
    res.json(rows[0]);
  } catch (err) {
    res.status(503).json({ error: err.message });
  }
});

// Fails on purpose: drives the query error ratio and HTTP 5xx panels.
app.get('/broken', async (_req, res) => {
  try {
    await pool.query('SELECT * FROM demo_missing_table');
    res.json({ ok: true });
  } catch {
    res.status(500).json({ error: 'query failed' });
  }
});

const port = Number(process.env.PORT ?? 3000);
const server = app.listen(port, process.env.DEMO_HOST ?? '127.0.0.1', (err) => {
  // Express 5 hands a listen error to this callback (a port in use): say so and end, not a TypeError.
  if (err) {
    console.error(`demo app: cannot listen on port ${port}: ${err.code ?? err.message}`);
    process.exit(1);
  }
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});

process.on('SIGTERM', () => {
  server.close();
  Promise.all([pool.end(), reports.end()]).finally(() => process.exit(0));
});
