// Poolscope's own query spans are encoded for OTLP/protobuf from cached bytes (src/export/own-span-encoding.ts):
// the result must be what upstream's serializer makes of the same spans.
import { context, trace, TraceFlags, type Span } from '@opentelemetry/api';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { describe, expect, it } from 'vitest';
import { withOwnSpanEncoding, type SpanSerializer } from '../src/export/own-span-encoding.js';
import { PgQuerySpans } from '../src/tracing/pg-query-spans.js';

const upstream = ProtobufTraceSerializer as unknown as SpanSerializer;

/** A processor that adds to some spans as they end, as an application's own processor may. */
function meddler(): SpanProcessor {
  return {
    onStart: () => undefined,
    onEnding: (span: Span) => {
      const r = span as unknown as ReadableSpan;
      // The second span of a shape whose first went out unchanged, and every DELETE.
      if ((r.name === 'SELECT orders' && r.parentSpanContext !== undefined) || r.name.startsWith('DELETE')) span.setAttribute('app.extra', 'x');
      // A value changed, the count the same, on the second span of a shape (the first, remote-parented, is not).
      if (r.name === 'INSERT billing' && r.parentSpanContext === undefined) span.setAttribute('server.address', 'redacted');
      if ((span as unknown as ReadableSpan).name.startsWith('UPDATE')) span.addEvent('app.event');
    },
    onEnd: () => undefined,
    forceFlush: async () => undefined,
    shutdown: async () => undefined,
  } as unknown as SpanProcessor;
}

function makeSpans(): ReadableSpan[] {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'checkout', 'process.command_args': ['node', 'app.js'], 'host.cpus': 2 }),
    spanProcessors: [meddler(), new SimpleSpanProcessor(exporter)],
  });
  const spans = new PgQuerySpans(provider.getTracer('poolscope', '1.2.3'), false);
  const client = (database: string) => ({ host: '10.0.0.7', port: 5432, database, user: 'app', query: () => undefined });
  const a = client('orders');
  const b = client('billing');
  const request = provider.getTracer('app').startSpan('GET /orders');
  const local = trace.setSpan(context.active(), request);
  const remote = trace.setSpanContext(context.active(), {
    traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true,
  });
  const base = performance.timeOrigin;
  const t = (ms: number) => ms - base + 1_767_225_599_999.999;
  spans.end(context.active(), a, 'SELECT 1', t(0), t(1.5), undefined);
  spans.end(local, a, 'SELECT id FROM t', t(2), t(2.25), undefined);
  spans.end(remote, b, 'INSERT INTO x VALUES (1)', t(3), t(30), undefined);
  spans.end(context.active(), b, 'INSERT INTO x VALUES (2)', t(30), t(31), undefined);
  spans.end(local, a, 'SELECT 1', t(31), t(1000.000001), Object.assign(new Error('boom'), { code: '40P01' }));
  spans.end(remote, b, 'DELETE FROM x', t(40), t(41), undefined);
  spans.end(local, a, 'UPDATE x SET y = 1', t(42), t(43), undefined);
  spans.end(context.active(), b, 'SELECT 1', t(44), t(45), new Error('plain'));
  provider.getTracer('app').startSpan('foreign').end();
  request.end();
  return exporter.getFinishedSpans();
}

/** Every span of an OTLP request as (resource, scope, span) bytes: what a receiver reads from it. */
function spansOf(request: Uint8Array): string[] {
  const fields = (buf: Uint8Array, from = 0, to = buf.length) => {
    const out: Array<{ n: number; bytes: Uint8Array; body: Uint8Array }> = [];
    let at = from;
    const varint = () => { let v = 0; let s = 0; for (;;) { const b = buf[at++]!; v += (b & 0x7f) * 2 ** s; if (b < 0x80) return v; s += 7; } };
    while (at < to) {
      const start = at;
      const tag = varint();
      const wire = tag % 8;
      let bodyStart = at;
      if (wire === 0) varint();
      else if (wire === 1) at += 8;
      else if (wire === 5) at += 4;
      else if (wire === 2) { const len = varint(); bodyStart = at; at += len; } else throw new Error(`wire ${wire}`);
      out.push({ n: Math.floor(tag / 8), bytes: buf.subarray(start, at), body: buf.subarray(bodyStart, at) });
    }
    return out;
  };
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  const found: string[] = [];
  for (const rs of fields(request)) {
    const rsFields = fields(rs.body);
    const resource = rsFields.filter((f) => f.n !== 2).map((f) => hex(f.bytes)).join('');
    for (const ss of rsFields.filter((f) => f.n === 2)) {
      const ssFields = fields(ss.body);
      const scope = ssFields.filter((f) => f.n !== 2).map((f) => hex(f.bytes)).join('');
      for (const span of ssFields.filter((f) => f.n === 2)) found.push(`${resource} | ${scope} | ${hex(span.body)}`);
    }
  }
  return found.sort();
}

describe('own query spans encoded for OTLP/protobuf', () => {
  it('encodes a batch of query spans to the very bytes upstream\'s serializer makes of it', () => {
    const own = makeSpans().filter((s) => s.instrumentationScope.name === 'poolscope' && s.attributes['app.extra'] === undefined &&
      s.events.length === 0 && s.attributes['server.address'] !== 'redacted');
    expect(own).toHaveLength(3);
    const ours = withOwnSpanEncoding(upstream);
    // Twice: the first batch fills the caches, the second is written from them.
    for (let i = 0; i < 2; i++) expect(Buffer.from(ours.serializeRequest(own)!).equals(Buffer.from(upstream.serializeRequest(own)!))).toBe(true);
  });

  it('writes every start and end time as upstream does, across second boundaries and 32-bit carries', () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const spans = new PgQuerySpans(provider.getTracer('poolscope', '1.2.3'), false);
    const client = { host: 'db', port: 5432, database: 'd', query: () => undefined };
    let seed = 7;
    const random = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
    for (let i = 0; i < 400; i++) {
      // Epoch milliseconds from 2001 to 2100, with sub-microsecond fractions, as performance.now() readings.
      const at = 1e12 + random() * 3.1e12 - performance.timeOrigin;
      spans.end(context.active(), client, 'SELECT 1', at, at + random() * 5000, undefined);
    }
    const all = exporter.getFinishedSpans();
    const ours = withOwnSpanEncoding(upstream);
    for (let i = 0; i < 2; i++) expect(Buffer.from(ours.serializeRequest(all)!).equals(Buffer.from(upstream.serializeRequest(all)!))).toBe(true);
  });

  it('gives a receiver the same spans as upstream for a mixed batch: foreign spans and query spans a processor added to', () => {
    const all = makeSpans();
    expect(all.map((s) => s.name)).toEqual(expect.arrayContaining(['foreign', 'GET /orders']));
    const ours = withOwnSpanEncoding(upstream);
    for (let i = 0; i < 2; i++) {
      const got = spansOf(ours.serializeRequest(all)!);
      expect(got).toHaveLength(all.length);
      expect(got).toEqual(spansOf(upstream.serializeRequest(all)!));
    }
    // The added attribute and event reached the wire, through upstream's serializer.
    const text = Buffer.from(ours.serializeRequest(all)!).toString('latin1');
    expect(text).toContain('app.extra');
    expect(text).toContain('app.event');
    expect(text).toContain('redacted');
  });

  it('groups query spans of several resources and scopes as upstream does', () => {
    const exporter = new InMemorySpanExporter();
    const client = { host: 'db', port: 5432, database: 'd', query: () => undefined };
    for (const service of ['a', 'b']) {
      const provider = new BasicTracerProvider({
        resource: resourceFromAttributes({ 'service.name': service }), spanProcessors: [new SimpleSpanProcessor(exporter)],
      });
      for (const version of ['1', '2']) {
        const spans = new PgQuerySpans(provider.getTracer('poolscope', version), false);
        spans.end(context.active(), client, 'SELECT 1', 10, 11, undefined);
        spans.end(context.active(), client, 'UPDATE t SET x = 1', 12, 13, undefined);
      }
    }
    const all = exporter.getFinishedSpans();
    const ours = withOwnSpanEncoding(upstream);
    for (let i = 0; i < 2; i++) {
      expect(Buffer.from(ours.serializeRequest(all)!).equals(Buffer.from(upstream.serializeRequest(all)!))).toBe(true);
      // Interleaved, the groups are still whole: the same spans reach a receiver.
      const mixed = [all[0]!, all[7]!, all[2]!, all[5]!, all[1]!, all[6]!, all[3]!, all[4]!];
      expect(spansOf(ours.serializeRequest(mixed)!)).toEqual(spansOf(upstream.serializeRequest(mixed)!));
    }
  });

  it('passes an empty batch and a batch without query spans to upstream unchanged', () => {
    const ours = withOwnSpanEncoding(upstream);
    const foreign = makeSpans().filter((s) => s.instrumentationScope.name !== 'poolscope');
    expect(Buffer.from(ours.serializeRequest(foreign)!).equals(Buffer.from(upstream.serializeRequest(foreign)!))).toBe(true);
    expect(ours.serializeRequest([])).toEqual(upstream.serializeRequest([]));
  });
});
