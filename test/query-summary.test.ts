// db.query.summary: opt-in, values never kept, cardinality bounded.
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { MAX_QUERY_SUMMARIES, QuerySummaries, querySummary, SUMMARY_OVERFLOW } from '../src/metrics/query-summary.js';
import { find, inProcess } from './helpers.js';

describe('querySummary', () => {
  it.each([
    ['SELECT * FROM orders WHERE id = $1', 'SELECT orders'],
    ['select o.id from public.orders o join customers c on c.id = o.customer_id', 'SELECT public.orders customers'],
    ['INSERT INTO audit_log (a) VALUES ($1)', 'INSERT audit_log'],
    ['UPDATE Accounts SET balance = 0', 'UPDATE accounts'],
    ['DELETE FROM sessions WHERE expires < now()', 'DELETE sessions'],
    ['-- FROM secret_comment\nSELECT 1', 'SELECT'],
    ["SELECT * FROM t WHERE name = 'x FROM leaked_literal'", 'SELECT t'],
    ["SELECT * FROM t WHERE name = 'it''s FROM leaked'", 'SELECT t'],
    ['SELECT * FROM "weird name; DROP" x', 'SELECT'],
    ['WITH x AS (SELECT 1) SELECT * FROM x', 'WITH SELECT SELECT x'],
    ['TRUNCATE TABLE jobs', 'TRUNCATE jobs'],
    ['DO $$ BEGIN PERFORM 1 FROM secret_in_body; END $$', 'DO'],
    // Found by adversarial review: literal values became labels (bug: "SELECT alice_ssn_123" and the like).
    ["SELECT E'\\' from alice_ssn_123 --'", 'SELECT'],
    ["SELECT e'it\\'s' FROM t", 'SELECT t'],
    ['SELECT $tag$ from bob_card_4111 $tag$', 'SELECT'],
    ['SELECT $a$ $$ from inner_body $$ $a$ FROM t', 'SELECT t'],
    ['SELECT /* a /* b */ from carol_pw_hunter2 */ 1', 'SELECT'],
    ['INSERT INTO t VALUES ($v$ into dave_secret $v$)', 'INSERT t'],
    ["SELECT * FROM t WHERE a = U&'d\\0061t from x'", 'SELECT t'],
    ['SELECT $1 FROM orders WHERE id = $2', 'SELECT orders'],
    ['SELECT $ä$ FROM users WHERE password = hunter2 $ä$ AS v', 'SELECT'],
    [`SELECT $${'t'.repeat(70)}$ JOIN secret_token_abc $${'t'.repeat(70)}$ AS v`, 'SELECT'],
    // Found by a bounds review: a Unicode-escaped identifier's U, a non-ASCII name cut short, a later statement's table.
    ['SELECT * FROM U&"d\\0061ta"', 'SELECT'],
    ['SELECT * FROM café_table', 'SELECT café_table'],
    ["SELECT 1; SELECT 'x'; UPDATE tbl_multi SET a = 1", 'SELECT'],
    // Found by a new user's audit: keywords became table names (bug: "CREATE if", "DROP if", "SELECT lateral").
    ['CREATE TABLE IF NOT EXISTS jobs (id int)', 'CREATE jobs'],
    ['DROP TABLE IF EXISTS jobs', 'DROP jobs'],
    ['ALTER TABLE IF EXISTS ONLY jobs ADD COLUMN x int', 'ALTER jobs'],
    ['SELECT * FROM orders o, LATERAL (SELECT * FROM items i WHERE i.o = o.id) x', 'SELECT orders SELECT items'],
    ['SELECT * FROM orders o JOIN LATERAL unnest(o.tags) t ON true', 'SELECT orders'],
    ['SELECT n FROM generate_series(1, 10) n', 'SELECT'],
    ['SELECT extract(year FROM created_at), substring(name FROM 2) FROM users', 'SELECT users'],
    ['CREATE TABLE t (a int DEFAULT extract(epoch FROM now()))', 'CREATE t'],
    ['SELECT * FROM a WHERE id IN (SELECT a_id FROM b)', 'SELECT a SELECT b'],
    ['INSERT INTO t (a, b) SELECT x, y FROM s', 'INSERT t SELECT s'],
    // Found by review: locking clauses and upserts named their keywords.
    ['SELECT * FROM jobs WHERE state = 1 FOR UPDATE SKIP LOCKED', 'SELECT jobs'],
    ['SELECT * FROM a FOR NO KEY UPDATE OF a NOWAIT', 'SELECT a'],
    ['INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a', 'INSERT t'],
    ['UPDATE ONLY accounts SET x = 1', 'UPDATE accounts'],
    // The conventions' examples (database-spans.md, "Generating a summary of the query"); the nested form was
    // missing (bug: `INSERT shipping_details orders`, `SELECT orders customers` for an anonymous table).
    ['INSERT INTO shipping_details (order_id, address) SELECT order_id, address FROM orders WHERE order_id = $1', 'INSERT shipping_details SELECT orders'],
    ['SELECT * FROM songs, artists WHERE songs.artist_id = artists.id', 'SELECT songs artists'],
    ['SELECT a, b FROM songs s, LATERAL unnest(s.tags) t, artists a WHERE x IN (1, 2) ORDER BY a, b', 'SELECT songs artists'],
    ['UPDATE t SET a = 1, b = 2 FROM s, u WHERE t.id = s.id', 'UPDATE t s u'],
    ['SELECT order_date FROM (SELECT * FROM orders o JOIN customers c ON o.customer_id = c.customer_id)', 'SELECT SELECT orders customers'],
    ['INSERT INTO archive SELECT * FROM jobs', 'INSERT archive SELECT jobs'],
    ['SELECT a FROM t1 UNION ALL SELECT a FROM t1', 'SELECT t1 SELECT t1'],
    ['WITH moved AS (DELETE FROM queue RETURNING *) INSERT INTO done SELECT * FROM moved', 'WITH DELETE queue INSERT done SELECT moved'],
    ['EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t', 'EXPLAIN SELECT t'],
    ['CREATE TABLE t2 AS SELECT * FROM t', 'CREATE t2 SELECT t'],
    // A quoted name is that exact table (bug: "Users" and users were one summary); a quoted keyword is a name.
    ['SELECT * FROM "Users" JOIN users ON true', 'SELECT Users users'],
    ['SELECT * FROM "from"', 'SELECT from'],
    // UPDATE names a table only as an operation (bug: `GRANT UPDATE ON t` read `on`, a foreign key's ON UPDATE its action).
    ['GRANT UPDATE ON accounts TO app', 'GRANT'],
    ['CREATE TABLE t (a int REFERENCES p ON UPDATE CASCADE)', 'CREATE t'],
    ['CREATE TRIGGER tr BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION f()', 'CREATE'],
    ['MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a', 'MERGE t'],
    // Found by a lexer review: a comment ended only at \n (PostgreSQL also ends it at \r), and a backslash before
    // a quote ends a plain string only with standard_conforming_strings on: with it off, the value went on, and
    // what followed it was read as a table.
    ['SELECT 1 -- a comment\rFROM orders', 'SELECT orders'],
    ["SELECT * FROM t WHERE a = 'x\\' FROM leaked_literal --'", 'SELECT t'],
    ["SELECT * FROM t WHERE a = 'x\\\\' AND b IN (SELECT id FROM s)", 'SELECT t SELECT s'],
  ])('%s → %s', (sql, expected) => {
    expect(querySummary(sql)).toBe(expected);
  });

  // The conventions cut at 255 characters between parts (bug: cut inside a table name).
  it('cuts a long summary before the part that would pass 255 characters, and keeps nothing after it', () => {
    const t = (c: string) => c.repeat(100);
    const summary = querySummary(`SELECT * FROM ${t('a')} JOIN ${t('b')} ON true JOIN ${t('c')} ON true JOIN d ON true`);
    expect(summary).toBe(`SELECT ${t('a')} ${t('b')}`);
  });

  it('stops at eight operations and tables', () => {
    expect(querySummary(Array.from({ length: 20 }, (_, i) => `SELECT * FROM t${i}`).join(' UNION '))).toBe('SELECT t0 SELECT t1 SELECT t2 SELECT t3');
  });

  it('has no summary for text that is not a PostgreSQL command', () => {
    expect(querySummary('hello FROM world')).toBeUndefined();
    expect(querySummary(42)).toBeUndefined();
  });

  // A bounds review found the warning repeated once a minute (the logger's limit) for as long as new texts came.
  it(`reports at most ${MAX_QUERY_SUMMARIES} distinct summaries, then ${SUMMARY_OVERFLOW}, warning once (bug: again for each new text)`, () => {
    let overflows = 0;
    const summaries = new QuerySummaries(() => { overflows++; });
    for (let i = 0; i < MAX_QUERY_SUMMARIES; i++) expect(summaries.summaryOf(`SELECT * FROM t${i}`)).toBe(`SELECT t${i}`);
    expect(summaries.summaryOf('SELECT * FROM one_too_many')).toBe(SUMMARY_OVERFLOW);
    expect(summaries.summaryOf('SELECT * FROM t0')).toBe('SELECT t0');
    expect(summaries.summaryOf('SELECT * FROM two_too_many')).toBe(SUMMARY_OVERFLOW);
    expect(overflows).toBe(1);
  });

  // Found by a bounds review: every distinct text was kept whole as a cache key, and an application sending
  // distinct 10 MB statements ran out of memory with the summary on.
  it('keeps statement texts up to a bounded total, summarises the longest without keeping them, and keeps a 2 KB ORM statement (bug: every text kept whole)', () => {
    const summaries = new QuerySummaries(() => undefined);
    const huge = (i: number) => `SELECT * FROM big_${i % 3} WHERE x IN (${'1,'.repeat(40_000)}${i})`;
    for (let i = 0; i < 10; i++) expect(summaries.summaryOf(huge(i))).toBe(`SELECT big_${i % 3}`);
    expect(summaries.cachedTexts).toBe(0);
    // Review: bounded at 1,024 characters, an ORM's 2 KB SELECT was summarised again at every query.
    const orm = `SELECT ${Array.from({ length: 80 }, (_, i) => `"t"."column_${i}" AS "t__column_${i}"`).join(', ')} FROM orders t`;
    expect(orm.length).toBeGreaterThan(2_000);
    expect(summaries.summaryOf(orm)).toBe('SELECT orders');
    expect(summaries.cachedTexts).toBe(1);
    // 60 KB texts, distinct: the total stays under its bound, however many come.
    for (let i = 0; i < 200; i++) summaries.summaryOf(`SELECT * FROM t WHERE v IN (${'2,'.repeat(30_000)}${i})`);
    expect(summaries.cachedTexts).toBeLessThanOrEqual(67);
  });
});

describe('db.query.summary on query durations', () => {
  const url = inject('databaseUrl');
  const pools: pg.Pool[] = [];
  afterAll(async () => { await Promise.all(pools.map((p) => p.end())); });

  it.each([false, true])('is present only when turned on (querySummary=%s)', async (querySummary) => {
    const ps = inProcess({ localAggregation: true, querySummary });
    try {
      const pool = new pg.Pool({ connectionString: url, max: 1 });
      pools.push(pool);
      const name = ps.instrumentation.monitorPool(pool, { name: `summary-${querySummary}` })!;
      await pool.query("SELECT relname FROM pg_class WHERE relname = 'pg_type'");
      const samples = find(await ps.scrape(), 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: name });
      expect(samples).toHaveLength(1);
      expect(samples[0]!.labels.db_query_summary).toBe(querySummary ? 'SELECT pg_class' : undefined);
      expect(JSON.stringify(samples)).not.toContain('pg_type');
    } finally {
      await ps.close();
    }
  });
});
