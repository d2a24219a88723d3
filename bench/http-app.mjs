// Realistic workload: an Express service whose handler runs three indexed queries on a seeded table.
import express from 'express';
import pg from 'pg';

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
const app = express();
app.get('/customers/:id', async (req, res) => {
  const id = Number(req.params.id);
  const customer = await pool.query('SELECT id, name FROM bench_customers WHERE id = $1', [id]);
  const orders = await pool.query('SELECT id, total FROM bench_orders WHERE customer_id = $1 ORDER BY id DESC LIMIT 5', [id]);
  const sum = await pool.query('SELECT count(*)::int AS n, coalesce(sum(total), 0)::float AS total FROM bench_orders WHERE customer_id = $1', [id]);
  res.json({ customer: customer.rows[0], orders: orders.rows, summary: sum.rows[0] });
});
const server = app.listen(0, '127.0.0.1', () => process.stdout.write(`LISTENING ${server.address().port}\n`));
process.on('SIGTERM', () => { server.close(); pool.end().then(() => process.exit(0)); });
