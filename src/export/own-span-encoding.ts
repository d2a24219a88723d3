/*
 * OTLP/protobuf for Poolscope's own query spans, written from bytes cached per span shape.
 *
 * Why not only upstream's serializer: in the worst-case benchmark with traces on, it was the largest single
 * cost of a traced query, 2.4 µs per span (it encodes every span twice, once to size the buffer and once to
 * write it, with each name and attribute UTF-8-encoded again). A query span's name, attributes and status
 * are one of a few cached shapes (src/tracing/pg-query-spans.ts), so their encoding is taken once from
 * upstream's serializer, as are the resource and scope, and only ids, times and flags are written per span.
 * Any span that is not exactly its shape goes through upstream's serializer, and the two encodings are
 * concatenated: protobuf merges repeated fields of concatenated messages, so the request carries both sets
 * of `resource_spans`.
 */
import type { Attributes, HrTime } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';

/** What the query spans promise about a span they made: its name, attributes and status. */
export interface OwnSpanShape {
  readonly name: string;
  readonly attributes: Attributes;
  readonly attributeCount: number;
  /** The status code; query spans set no status description. */
  readonly statusCode: number;
  /**
   * Filled on first export: the span's encoded name, attributes and status (tag, length and bytes of each
   * field, in that order), and where the attributes and the status start in it.
   */
  encoded?: { bytes: Uint8Array; attributesAt: number; statusAt: number };
}

/**
 * On a span the query spans made: its shape. A property rather than a WeakMap entry, which cost 0.35 µs per
 * span in the traced worst case's profile (a symbol key stays out of for-in, Object.keys and JSON).
 */
const kShape = Symbol('poolscope.span-shape');
type Marked = { [kShape]?: OwnSpanShape };

/** Called by the query spans for every span they end. */
export function markOwnSpan(span: object, shape: OwnSpanShape): void {
  (span as Marked)[kShape] = shape;
}

function shapeOf(span: object): OwnSpanShape | undefined {
  return (span as Marked)[kShape];
}

export interface SpanSerializer {
  serializeRequest(spans: ReadableSpan[]): Uint8Array | undefined;
  deserializeResponse(data: Uint8Array): unknown;
}

/** The resource and scope of a group, as upstream encoded them (tag, length and bytes of each field). */
interface Group {
  resourceFields: Uint8Array;
  scopeFields: Uint8Array;
  spans: ReadableSpan[];
  /** The encoded ScopeSpans' length, worked out before writing. */
  size: number;
}

const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;

/** Upstream's serializer, with Poolscope's own query spans written from cached bytes. */
export function withOwnSpanEncoding(upstream: SpanSerializer): SpanSerializer {
  const groups = new WeakMap<object, Map<object, { resourceFields: Uint8Array; scopeFields: Uint8Array }>>();
  return {
    deserializeResponse: (data) => upstream.deserializeResponse(data),
    serializeRequest(spans) {
      let own: Map<object, Map<object, Group>> | undefined;
      let rest: ReadableSpan[] | undefined;
      // A batch is nearly always one resource and one scope: the last group found is tried first.
      let last: Group | undefined;
      let lastResource: object | undefined;
      let lastScope: object | undefined;
      for (const span of spans) {
        const shape = fastShape(span);
        if (shape === undefined) {
          (rest ??= []).push(span);
          continue;
        }
        if (shape.encoded !== undefined && last !== undefined && span.resource === lastResource && span.instrumentationScope === lastScope) {
          last.spans.push(span);
          continue;
        }
        let perScope = groups.get(span.resource);
        let fields = perScope?.get(span.instrumentationScope);
        if (shape.encoded === undefined || fields === undefined) {
          const parts = partsOf(upstream.serializeRequest([span]));
          if (parts === undefined) {
            (rest ??= []).push(span);
            continue;
          }
          shape.encoded ??= parts.span;
          if (fields === undefined) {
            fields = { resourceFields: parts.resourceFields, scopeFields: parts.scopeFields };
            if (perScope === undefined) groups.set(span.resource, (perScope = new Map()));
            perScope.set(span.instrumentationScope, fields);
          }
        }
        let byScope = (own ??= new Map()).get(span.resource);
        if (byScope === undefined) own.set(span.resource, (byScope = new Map()));
        let group = byScope.get(span.instrumentationScope);
        if (group === undefined) byScope.set(span.instrumentationScope, (group = { ...fields, spans: [], size: 0 }));
        group.spans.push(span);
        last = group;
        lastResource = span.resource;
        lastScope = span.instrumentationScope;
      }
      if (own === undefined) return upstream.serializeRequest(spans);
      const foreign = rest === undefined ? undefined : upstream.serializeRequest(rest);
      const mine = encodeGroups(own);
      if (foreign === undefined || foreign.length === 0) return mine;
      const out = new Uint8Array(foreign.length + mine.length);
      out.set(foreign, 0);
      out.set(mine, foreign.length);
      return out;
    },
  };
}

/** The span's shape, if the span is exactly what its shape says (nothing added to it since), else undefined. */
function fastShape(span: ReadableSpan): OwnSpanShape | undefined {
  const shape = shapeOf(span);
  if (shape === undefined) return undefined;
  const ctx = span.spanContext();
  const parent = span.parentSpanContext;
  if (span.name !== shape.name || span.status.code !== shape.statusCode || span.status.message !== undefined ||
    span.events.length !== 0 || span.links.length !== 0 || span.droppedAttributesCount !== 0 ||
    span.droppedEventsCount !== 0 || span.droppedLinksCount !== 0 || ctx.traceId.length !== 32 || ctx.spanId.length !== 16 ||
    (parent?.spanId !== undefined && parent.spanId !== '' && parent.spanId.length !== 16) ||
    (ctx.traceState !== undefined && ctx.traceState.serialize() !== '')) return undefined;
  // Every attribute as the shape has it, and no other: a processor may have changed one, or a span limit cut it.
  const attributes = span.attributes;
  const expected = shape.attributes;
  let n = 0;
  for (const key in attributes) {
    if (attributes[key] !== expected[key]) return undefined;
    n++;
  }
  return n === shape.attributeCount ? shape : undefined;
}

/** Body length of one span: everything but its own tag and length. */
function spanLength(span: ReadableSpan, shape: OwnSpanShape): number {
  const hasParent = span.parentSpanContext?.spanId ? 10 : 0;
  const kind = span.kind == null ? 0 : 2;
  // ids 18 + 10, times 9 + 9, three dropped counts 2 each, flags 2 + 4
  return 18 + 10 + hasParent + shape.encoded!.bytes.length + kind + 18 + 6 + 6;
}

function encodeGroups(own: Map<object, Map<object, Group>>): Uint8Array {
  // Sizes first (all exact), then one write.
  const resources: Array<{ groups: Group[]; size: number }> = [];
  let total = 0;
  for (const byScope of own.values()) {
    const groups = [...byScope.values()];
    let size = groups[0]!.resourceFields.length;
    for (const group of groups) {
      group.size = group.scopeFields.length;
      for (const span of group.spans) {
        const len = spanLength(span, shapeOf(span)!);
        group.size += 1 + varintSize(len) + len;
      }
      size += 1 + varintSize(group.size) + group.size;
    }
    resources.push({ groups, size });
    total += 1 + varintSize(size) + size;
  }
  const w = new Writer(total);
  for (const { groups, size } of resources) {
    w.byte(0x0a);
    w.varint(size);
    w.raw(groups[0]!.resourceFields);
    for (const group of groups) {
      w.byte(0x12);
      w.varint(group.size);
      w.raw(group.scopeFields);
      for (const span of group.spans) writeSpan(w, span, shapeOf(span)!);
    }
  }
  return w.buf;
}

/** In upstream's field order, so the bytes are the same as upstream's for the same span. */
function writeSpan(w: Writer, span: ReadableSpan, shape: OwnSpanShape): void {
  const ctx = span.spanContext();
  const parentId = span.parentSpanContext?.spanId;
  w.byte(0x12);
  w.varint(spanLength(span, shape));
  w.byte(0x0a); w.byte(16); w.hex(ctx.traceId);
  w.byte(0x12); w.byte(8); w.hex(ctx.spanId);
  if (parentId) { w.byte(0x22); w.byte(8); w.hex(parentId); }
  const { bytes, attributesAt, statusAt } = shape.encoded!;
  w.raw(bytes.subarray(0, attributesAt));
  if (span.kind != null) { w.byte(0x30); w.byte(span.kind + 1); }
  w.byte(0x39); w.hrTime(span.startTime);
  w.byte(0x41); w.hrTime(span.endTime);
  w.raw(bytes.subarray(attributesAt, statusAt));
  w.byte(0x50); w.byte(0);
  w.byte(0x60); w.byte(0);
  w.byte(0x70); w.byte(0);
  w.raw(bytes.subarray(statusAt));
  w.byte(0x85); w.byte(0x01);
  w.fixed32((ctx.traceFlags & 0xff) | HAS_IS_REMOTE | (span.parentSpanContext?.isRemote === true ? IS_REMOTE : 0));
}

/** From upstream's encoding of a one-span request: the resource's and scope's fields, and the span's own. */
function partsOf(request: Uint8Array | undefined):
  { resourceFields: Uint8Array; scopeFields: Uint8Array; span: NonNullable<OwnSpanShape['encoded']> } | undefined {
  if (request === undefined) return undefined;
  try {
    const rs = readField(request, 0);
    if (rs.number !== 1 || rs.end !== request.length) return undefined;
    let resourceFields = new Uint8Array(0);
    let scope: { start: number; body: number; end: number } | undefined;
    const trailing: Array<{ start: number; end: number }> = [];
    for (let at = rs.body; at < rs.end;) {
      const f = readField(request, at);
      if (f.number === 1) resourceFields = request.slice(f.start, f.end);
      else if (f.number === 2 && scope === undefined) scope = f;
      else trailing.push(f);
      at = f.end;
    }
    // A resource schema URL (field 3) would follow the scope spans; such a request is left to upstream.
    if (scope === undefined || trailing.length !== 0) return undefined;
    let scopeFields = new Uint8Array(0);
    let span: { body: number; end: number } | undefined;
    for (let at = scope.body; at < scope.end;) {
      const f = readField(request, at);
      if (f.number === 1) scopeFields = request.slice(f.start, f.end);
      else if (f.number === 2 && span === undefined) span = f;
      else return undefined; // a scope schema URL, likewise
      at = f.end;
    }
    if (span === undefined) return undefined;
    // Keep the span's name (5), attributes (9) and status (15), in that order (upstream's).
    const names: Uint8Array[] = [];
    const attributes: Uint8Array[] = [];
    const status: Uint8Array[] = [];
    for (let at = span.body; at < span.end;) {
      const f = readField(request, at);
      const into = f.number === 5 ? names : f.number === 9 ? attributes : f.number === 15 ? status : undefined;
      into?.push(request.subarray(f.start, f.end));
      at = f.end;
    }
    if (names.length !== 1 || status.length !== 1) return undefined;
    const kept = [names[0]!, ...attributes, status[0]!];
    const bytes = new Uint8Array(kept.reduce((n, k) => n + k.length, 0));
    let o = 0;
    for (const k of kept) { bytes.set(k, o); o += k.length; }
    const spanFields = { bytes, attributesAt: names[0]!.length, statusAt: bytes.length - status[0]!.length };
    return { resourceFields, scopeFields, span: spanFields };
  } catch {
    return undefined;
  }
}

function readVarint(buf: Uint8Array, at: number): { value: number; end: number } {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (at >= buf.length) throw new RangeError('truncated varint');
    const b = buf[at++]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return { value, end: at };
    shift += 7;
  }
}

/** One field: its number, where it starts (tag), where its body starts and where it ends. */
function readField(buf: Uint8Array, start: number): { number: number; start: number; body: number; end: number } {
  const tag = readVarint(buf, start);
  const wire = tag.value % 8;
  const number = Math.floor(tag.value / 8);
  switch (wire) {
    case 0: { const v = readVarint(buf, tag.end); return { number, start, body: tag.end, end: v.end }; }
    case 1: return { number, start, body: tag.end, end: tag.end + 8 };
    case 2: { const len = readVarint(buf, tag.end); return { number, start, body: len.end, end: len.end + len.value }; }
    case 5: return { number, start, body: tag.end, end: tag.end + 4 };
    default: throw new RangeError(`wire type ${wire}`);
  }
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) { n = Math.floor(n / 0x80); size++; }
  return size;
}

/** The last whole second hrTime() converted, split into its low and high 32 bits of nanoseconds. */
let secondsAt = NaN;
let secondsLow = 0;
let secondsHigh = 0;

class Writer {
  readonly buf: Buffer;
  private pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  byte(b: number): void {
    this.buf[this.pos++] = b;
  }
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.pos++] = n;
  }
  raw(bytes: Uint8Array): void {
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
  /**
   * An id, decoded natively. Ids have the expected length (fastShape) and are hex wherever they came from
   * (the API drops invalid contexts); were one not, Node stops at the first bad digit, and the rest is zeroed,
   * never left as whatever the buffer held.
   */
  hex(s: string): void {
    const want = s.length >> 1;
    const wrote = this.buf.write(s, this.pos, want, 'hex');
    if (wrote < want) this.buf.fill(0, this.pos + wrote, this.pos + want);
    this.pos += want;
  }
  fixed32(v: number): void {
    this.buf[this.pos++] = v & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = (v >>> 24) & 0xff;
  }
  /**
   * Nanoseconds since the epoch as fixed64, exact: the seconds are split so that no product leaves the safe
   * integers. A batch's spans fall within a few seconds, so the whole-second part is kept from the last span.
   */
  hrTime(t: HrTime): void {
    if (t[0] !== secondsAt) {
      const seconds = t[0];
      const lo16 = seconds & 0xffff;
      const fromLo = lo16 * 1e9;
      const fromHi = ((seconds - lo16) / 0x10000) * 1e9;
      const low = (fromLo % 0x100000000) + ((fromHi % 0x10000) * 0x10000);
      secondsLow = low % 0x100000000;
      secondsHigh = Math.floor(fromLo / 0x100000000) + Math.floor(fromHi / 0x10000) + Math.floor(low / 0x100000000);
      secondsAt = seconds;
    }
    // Nanoseconds may be negative in an HrTime made from a time before the clock's origin: borrow then.
    const low = secondsLow + t[1];
    this.fixed32(low >>> 0);
    this.fixed32((secondsHigh + Math.floor(low / 0x100000000)) >>> 0);
  }
}
