// Standalone pg.Clients (no pool): their queries are recorded under the attributes they resolve to, so two
// clients that resolve alike share one series instead of exporting two with the same label set.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { find, inProcess } from './helpers.js';

const url = inject('databaseUrl');
const u = new URL(url);
let admin: pg.Client;

beforeAll(async () => {
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lone_other') THEN CREATE ROLE lone_other LOGIN; END IF; END $$");
  if ((await admin.query("SELECT 1 FROM pg_database WHERE datname = 'lone_other'")).rowCount === 0) {
    await admin.query('CREATE DATABASE lone_other OWNER lone_other');
  }
});
afterAll(async () => { await admin.end(); });

describe('standalone clients', () => {
  it('two clients without a configured database (pg uses each user name) share one series (bug: two series, same labels)', async () => {
    const ps = inProcess({ localAggregation: true });
    try {
      const a = new pg.Client({ host: u.hostname, port: Number(u.port), user: 'postgres' });
      const b = new pg.Client({ host: u.hostname, port: Number(u.port), user: 'lone_other' });
      ps.instrumentation.enable();
      for (const c of [a, b]) {
        await c.connect();
        await c.query('SELECT 1');
        await c.end();
      }
      const text = await ps.scrapeText();
      const counts = find(await ps.scrape(), 'db_client_operation_duration_seconds_count', { db_operation_name: 'SELECT' });
      expect(counts).toHaveLength(1);
      expect(counts[0]!.value).toBe(2);
      // Neither user name became a label.
      expect(counts[0]!.labels.db_namespace).toBeUndefined();
      expect(text).not.toContain('lone_other');
      // Every series in the exposition is unique.
      const seriesLines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.replace(/ [^ ]+$/, ''));
      expect(new Set(seriesLines).size).toBe(seriesLines.length);
    } finally {
      await ps.close();
    }
  });
});
