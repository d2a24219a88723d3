// Poolscope's own query spans (src/tracing/pg-query-spans.ts), exported over OTLP from a real app: parents,
// the caller's context in callbacks, queued acquires, errors, and nothing of the statement on them.
import type { Server } from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { otlpReceiver, REGISTER, ROOT, spawnApp, waitFor, type SpawnedApp } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const DATABASE = new URL(DATABASE_URL).pathname.slice(1);
const apps: SpawnedApp[] = [];
const servers: Server[] = [];

afterEach(async () => {
  for (const app of apps.splice(0)) if (app.child.exitCode === null) { app.child.kill('SIGKILL'); await app.exit; }
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

interface ExportedSpan { name: string; spanId: string; parentSpanId?: string; kind: number; scope: string;
  attributes: Record<string, unknown>; status: { code?: number; message?: string } }

async function runFixture(env: Record<string, string> = {}, nodeArgs: string[] = []) {
  const receiver = await otlpReceiver(servers);
  const app = await spawnApp('query-spans.mjs', {
    DATABASE_URL, OTEL_TRACES_EXPORTER: 'otlp', OTEL_METRICS_EXPORTER: 'none', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50', POOLSCOPE_HEALTH_ENDPOINTS: 'false', ...env,
  }, [...nodeArgs, '--import', REGISTER]);
  apps.push(app);
  await app.exit;
  const spans = await waitFor(() => {
    const all: ExportedSpan[] = receiver.bodies.filter((b) => b.path === '/v1/traces').flatMap((b) =>
      b.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans.map((sp: any) => ({
        ...sp, scope: ss.scope.name,
        attributes: Object.fromEntries((sp.attributes ?? []).map((a: any) => [a.key, Object.values(a.value)[0]])),
      })))));
    return all.some((s) => s.name === 'releaser') ? all : undefined;
  });
  return { spans, app, text: JSON.stringify(receiver.bodies) };
}

describe('query spans (traces on)', () => {
  it('are children of the span the query was made in, named and attributed by the database span conventions', async () => {
    const { spans, app } = await runFixture();
    const byName = (n: string) => spans.filter((s) => s.name === n);
    const parentOf = (child: ExportedSpan) => spans.find((s) => s.spanId === child.parentSpanId)?.name;
    const selects = byName(`SELECT ${DATABASE}`).filter((s) => s.attributes['error.type'] === undefined && parentOf(s) !== 'sequence');
    expect(selects).toHaveLength(3);
    expect(selects.map(parentOf).sort()).toEqual(['callback-form', 'promise-form', 'waiter']);
    for (const s of selects) {
      expect(s.scope).toBe('poolscope');
      expect(s.kind).toBe(3); // CLIENT in OTLP's enumeration
      expect(s.attributes).toEqual({
        'db.system.name': 'postgresql', 'db.namespace': DATABASE, 'db.operation.name': 'SELECT',
        'server.address': '127.0.0.1', 'server.port': Number(new URL(DATABASE_URL).port),
      });
    }
    // A query made outside any span is a root span.
    const show = byName(`SHOW ${DATABASE}`);
    expect(show).toHaveLength(1);
    expect(show[0].parentSpanId ?? '').toBe('');
    expect(app.stdout()).toContain('callback ran in callback-form');
    // Callers without a span make root spans, whichever span released the connection or once opened it
    // (instrumentation-pg bound only callers with a span, so these took the releaser's and the opener's).
    for (const op of ['VALUES', 'TABLE', 'WITH', 'RESET']) {
      const [span, ...more] = spans.filter((s) => s.attributes['db.operation.name'] === op);
      expect(more).toEqual([]);
      expect({ op, parent: span ? parentOf(span) ?? span.parentSpanId ?? '' : 'missing' }).toEqual({ op, parent: '' });
    }
    expect(app.stdout()).toContain('root callback ran in no span');
    // (The only line on stderr is Poolscope's warning that the one-connection pool was fully used.)
    expect(app.stderr().split('\n').filter((l) => l !== '' && !l.includes('utilization'))).toEqual([]);
  }, 60_000);

  it('a failed query has error.type and its SQLSTATE, never its message or statement', async () => {
    const { spans, text } = await runFixture();
    const failed = spans.find((s) => s.attributes['error.type'] !== undefined)!;
    expect(failed.attributes).toMatchObject({ 'error.type': '42P01', 'db.response.status_code': '42P01', 'db.operation.name': 'SELECT' });
    expect(spans.find((s) => s.spanId === failed.parentSpanId)?.name).toBe('failing');
    // No description: the conventions advise against repeating error.type there (a review found it did).
    expect(failed.status).toEqual({ code: 2 });
    expect(text).not.toContain('missing_table_spans');
    expect(text).not.toContain('spans-named');
    expect(text).not.toContain('db.query.text');
  }, 60_000);

  it('POOLSCOPE_TRACE_SQL_TEXT=true adds the statement, and still not the database error message (it echoes values)', async () => {
    const { spans } = await runFixture({ POOLSCOPE_TRACE_SQL_TEXT: 'true' });
    const failed = spans.find((s) => s.attributes['error.type'] !== undefined)!;
    expect(failed.attributes['db.query.text']).toBe('SELECT * FROM missing_table_spans');
    expect(failed.status.message).toBeUndefined();
  }, 60_000);

  // The conventions name a span by db.query.summary when there is one; with the summary on, spans had neither.
  it('POOLSCOPE_QUERY_SUMMARY=true names query spans by their db.query.summary and puts it on them (bug: only on durations)', async () => {
    const { spans } = await runFixture({ POOLSCOPE_QUERY_SUMMARY: 'true' });
    const failed = spans.find((s) => s.attributes['error.type'] !== undefined)!;
    expect(failed.name).toBe('SELECT missing_table_spans');
    expect(failed.attributes['db.query.summary']).toBe('SELECT missing_table_spans');
    const cte = spans.find((s) => s.attributes['db.operation.name'] === 'WITH')!;
    expect({ name: cte.name, summary: cte.attributes['db.query.summary'] }).toEqual({ name: 'WITH SELECT SELECT x', summary: 'WITH SELECT SELECT x' });
    // A statement without a table is named by its summary too: its operation alone.
    expect(spans.filter((s) => s.name === 'SELECT' && s.attributes['db.query.summary'] === 'SELECT').length).toBeGreaterThanOrEqual(3);
  }, 60_000);

  it('every callback form pg accepts is timed and traced, its follow-up queries under the caller\'s span (a config\'s own callback and query(text, cb, undefined) once made no span and no duration)', async () => {
    const { spans, app } = await runFixture();
    const parentOf = (child: ExportedSpan) => spans.find((s) => s.spanId === child.parentSpanId)?.name;
    const byOperation = (op: string) => spans.filter((s) => s.attributes['db.operation.name'] === op).map(parentOf).sort();
    // A config carrying its own callback (twice, the same object), and its follow-up query.
    expect(byOperation('ANALYZE')).toEqual(['config-callback', 'config-callback']);
    expect(byOperation('LISTEN')).toEqual(['config-callback']);
    // query(text, cb, undefined): pg takes the function in the values' place as the callback.
    expect(byOperation('DISCARD')).toEqual(['callback-in-values']);
    expect(byOperation('NOTIFY')).toEqual(['callback-in-values']);
    expect(app.stdout()).toContain('config callback ran once per query: 2');
  }, 60_000);

  const sequenceInOrder = (spans: ExportedSpan[]) => {
    const sequence = spans.find((s) => s.name === 'sequence')!;
    const ns = (t: unknown) => BigInt(String(t));
    const children = spans.filter((s) => s.parentSpanId === sequence.spanId)
      .map((s) => ({ start: ns((s as any).startTimeUnixNano), end: ns((s as any).endTimeUnixNano) }))
      .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    expect(children).toHaveLength(30);
    const outOfOrder = children.filter((c, i) => i > 0 && c.start < children[i - 1]!.end);
    expect(outOfOrder).toEqual([]);
    expect(children[0]!.start >= ns((sequence as any).startTimeUnixNano)).toBe(true);
  };

  it('sequential queries have start and end times in order, inside their parent span (times through one clock origin, not a per-span conversion)', async () => {
    sequenceInOrder((await runFixture()).spans);
  }, 60_000);

  // Converted through performance.timeOrigin, query spans were stamped on the monotonic clock and the
  // application's spans on the wall clock: a query started before its parent by as much as the two disagreed
  // (a fraction of a millisecond on CI machines, the whole pause after a machine slept).
  it('query spans started inside their parent span when the wall clock had moved away from the monotonic one (bug: stamped through performance.timeOrigin)', async () => {
    const { spans } = await runFixture({ AHEAD_MS: '10000' }, ['--require', path.join(ROOT, 'test', 'fixtures', 'wall-clock-ahead.cjs')]);
    sequenceInOrder(spans);
  }, 60_000);

  // Found by a configuration review: the SDK read the variable itself and said so twice (the value, then "blank").
  it('an OTEL_TRACES_SAMPLER_ARG a ratio sampler cannot take is one line naming the fallback, and every trace is sampled (bug: two SDK lines)', async () => {
    for (const arg of ['abc', '2']) {
      const { spans, app } = await runFixture({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: arg });
      expect(app.stderr().trim().split('\n')).toEqual([
        "poolscope: OTEL_TRACES_SAMPLER_ARG is not a probability from 0 to 1 (the ratio sampler's); using 1 (every trace sampled).",
      ]);
      expect(spans.filter((s) => s.name === 'sequence')).toHaveLength(1);
    }
  }, 60_000);

  it('none with pg instrumentation disabled, the application spans still exported', async () => {
    const { spans } = await runFixture({ OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg' });
    expect(spans.filter((s) => s.scope === 'poolscope')).toEqual([]);
    expect(spans.map((s) => s.name)).toContain('waiter');
  }, 60_000);
});
