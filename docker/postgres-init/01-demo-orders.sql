-- Demo schema for the compose stack: the table the demo service's /orders/:id and /reports/daily read
-- (the same as demo/run.mjs seeds for `npm run demo`). Runs once, when the data volume is first created.
CREATE TABLE IF NOT EXISTS demo_orders (
  id int PRIMARY KEY,
  customer text NOT NULL,
  total numeric(10, 2) NOT NULL
);
INSERT INTO demo_orders
  SELECT g, 'customer-' || (g % 500), (g % 997) / 10.0 FROM generate_series(1, 10000) g
  ON CONFLICT DO NOTHING;
