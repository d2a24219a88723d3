// `error.type` on failed queries and connections: low-cardinality, from the error or the error a library wraps.
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { errorType } from '../src/metrics/error-type.js';

describe('error.type', () => {
  it('is the SQLSTATE or system code of the error, else of the error it wraps (bug: Sequelize\'s wrapper class name)', () => {
    expect(errorType(Object.assign(new Error('x'), { code: '28P01' }))).toBe('28P01');
    expect(errorType({ name: 'SequelizeConnectionError', parent: { code: '53300' }, original: { code: '53300' } })).toBe('53300');
    expect(errorType({ name: 'SequelizeConnectionRefusedError', original: { code: 'ECONNREFUSED' } })).toBe('ECONNREFUSED');
    expect(errorType(new Error('timeout', { cause: Object.assign(new Error('reset'), { code: 'ECONNRESET' }) }))).toBe('ECONNRESET');
  });

  it('is the class name when nothing carries a code, and _OTHER when there is no usable name', () => {
    expect(errorType(new TypeError('x'))).toBe('TypeError');
    expect(errorType({ name: 'KnexTimeoutError', code: 'not a code' })).toBe('KnexTimeoutError');
    expect(errorType({ name: 'has spaces' })).toBe('_OTHER');
    expect(errorType(undefined)).toBe('_OTHER');
  });

  it('looks three wraps deep at most, through cycles and hostile objects, and never throws', () => {
    expect(errorType({ name: 'A', cause: { cause: { cause: { code: '42P01' } } } })).toBe('42P01');
    expect(errorType({ name: 'A', cause: { cause: { cause: { cause: { code: '42P01' } } } } })).toBe('A');
    const cyclic: { name: string; cause?: unknown } = { name: 'Cyclic' };
    cyclic.cause = cyclic;
    expect(errorType(cyclic)).toBe('Cyclic');
    const hostile = { name: 'Hostile', get parent(): unknown { throw new Error('no'); } };
    expect(errorType(hostile)).toBe('Hostile');
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(errorType(proxy)).toBe('_OTHER');
  });

  // Found running libraries over pg: pg's query_timeout (and its other fixed-message errors) were all "Error".
  it('names node-postgres\'s own errors, which carry no code, by what happened', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl'), query_timeout: 50 });
    await client.connect();
    const timedOut = await client.query('select pg_sleep(2)').catch((e: unknown) => e);
    expect(errorType(timedOut)).toBe('query_timeout');
    await client.end();
    const closed = await client.query('select 1').catch((e: unknown) => e);
    expect(errorType(closed)).toBe('client_closed');
    const pool = new pg.Pool({ connectionString: inject('databaseUrl') });
    await pool.end();
    expect(errorType(await pool.query('select 1').catch((e: unknown) => e))).toBe('pool_ended');
    expect(errorType(new Error('Connection terminated unexpectedly'))).toBe('connection_terminated');
    expect(errorType(new Error('some other message'))).toBe('Error');
  });
});
