import type { Attributes, AttributeValue, Span } from '@opentelemetry/api';
import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter, TimedEvent } from '@opentelemetry/sdk-trace-base';
import { operationName } from '../metrics/operation-name.js';
import { carriesSecretKeyword, isWithheld, isWithheldPort } from '../pool-name.js';

/**
 * Spans must not carry SQL text, user names or passwords unless the user opts in: upstream
 * instrumentation-pg puts the statement text (`db.query.text`), statement names, bound values and error
 * messages that echo SQL on its spans, and names spans after the database, which is the user name when
 * none is configured. Redaction happens in front of the exporter, so every exporter (console, OTLP, and
 * the OTLP exporter's own debug log of what it sends) only ever sees redacted spans.
 */

/** Attributes that hold statement text or what is derived from it (names, bound values). */
const SQL_ATTRIBUTES = ['db.query.text', 'db.statement', 'db.postgresql.values', 'db.postgresql.plan', 'db.query.summary'];
const SQL_ATTRIBUTE_PREFIXES = ['db.query.parameter.'];
/** Never exported: the user name, and a connection string (upstream keeps its query, `password=` included). */
const ALWAYS_DROPPED = ['db.user', 'db.connection_string'];
const NAMESPACE_ATTRIBUTES = ['db.namespace', 'db.name'];
const ADDRESS_ATTRIBUTES = ['server.address', 'net.peer.name'];
const PORT_ATTRIBUTES = ['server.port', 'net.peer.port'];

interface QueryInfo {
  user: string | undefined;
}

/** Per span: the connection's user, known only to instrumentation-pg's request hook. */
const queryInfo = new WeakMap<object, QueryInfo>();

/**
 * instrumentation-pg `requestHook`: remembers the connection's user name for the span, so the
 * exporter side can tell pg's user-named default database (and a user name anywhere else) from data.
 */
export function pgSpanRequestHook(span: Span, info: { connection?: { user?: unknown } }): void {
  const user = info?.connection?.user;
  queryInfo.set(span, { user: typeof user === 'string' && user !== '' ? user : undefined });
}

/** Wraps `exporter` so that every span it receives is redacted first. */
export function redactingExporter(exporter: SpanExporter, traceSqlText: boolean): SpanExporter {
  return {
    export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
      exporter.export(spans.map((span) => redactSpan(span, traceSqlText)), resultCallback);
    },
    shutdown: () => exporter.shutdown(),
    forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
  };
}

/** The span as it may leave the process: the same object when nothing needs redacting, else a redacted view. */
export function redactSpan(span: ReadableSpan, traceSqlText: boolean): ReadableSpan {
  const source = span.attributes;
  const isDb = source['db.system.name'] === 'postgresql' || source['db.system'] === 'postgresql';
  const user = queryInfo.get(span)?.user;
  const attributes: Attributes = {};
  let changed = false;
  let droppedNamespace: string | undefined;
  for (const [key, value] of Object.entries(source)) {
    if (dropAttribute(key, value, isDb, user, traceSqlText)) {
      changed = true;
      if (NAMESPACE_ATTRIBUTES.includes(key) && typeof value === 'string') droppedNamespace = value;
      continue;
    }
    attributes[key] = value;
  }

  let name = span.name;
  if (isDb && name.startsWith('pg.query')) {
    const namespace = attributes['db.namespace'] ?? attributes['db.name'];
    const suffix = typeof namespace === 'string' && namespace !== '' ? ` ${namespace}` : '';
    if (!traceSqlText) {
      // Upstream uses the statement's name (often derived from its text) or its first word: only a
      // known PostgreSQL command word is kept, as in db.operation.name.
      const operation = operationName(source['db.query.text'] ?? source['db.statement']);
      name = `pg.query${operation === undefined ? '' : `:${operation}`}${suffix}`;
    } else if (droppedNamespace !== undefined && name.endsWith(` ${droppedNamespace}`)) {
      name = name.slice(0, -droppedNamespace.length - 1);
    }
  }
  if (user !== undefined && name.includes(user)) name = scrub(name, user);

  let status = span.status;
  if (status.message !== undefined && status.message !== '') {
    let message = status.message;
    if (isDb && !traceSqlText) message = sanitizedError(span.events) ?? 'PostgreSQL error';
    if (user !== undefined) message = scrub(message, user);
    if (message !== status.message) status = { ...status, message };
  }

  let events = span.events;
  if (user !== undefined && events.some((e) => mentions(e.attributes, user))) {
    events = events.map((e): TimedEvent => (mentions(e.attributes, user) ? { ...e, attributes: scrubAll(e.attributes!, user) } : e));
  }

  if (!changed && name === span.name && status === span.status && events === span.events) return span;
  // A view that inherits everything else (span context, times, resource, scope) from the span.
  const view = Object.create(span) as ReadableSpan;
  Object.defineProperties(view, {
    name: { value: name, enumerable: true },
    attributes: { value: attributes, enumerable: true },
    status: { value: status, enumerable: true },
    events: { value: events, enumerable: true },
  });
  return view;
}

function dropAttribute(key: string, value: AttributeValue | undefined, isDb: boolean, user: string | undefined, traceSqlText: boolean): boolean {
  if (ALWAYS_DROPPED.includes(key)) return true;
  if (!traceSqlText && (SQL_ATTRIBUTES.includes(key) || SQL_ATTRIBUTE_PREFIXES.some((p) => key.startsWith(p)))) return true;
  if (!isDb) return false;
  if (NAMESPACE_ATTRIBUTES.includes(key)) {
    // pg connects to the database named after the user when none is configured: that is a user name.
    return value === user || isWithheld(value) || carriesSecretKeyword(value);
  }
  if (ADDRESS_ATTRIBUTES.includes(key)) return value === user || isWithheld(value) || carriesSecretKeyword(value);
  if (PORT_ATTRIBUTES.includes(key)) return isWithheldPort(value);
  return false;
}

/** Upstream records a sanitized exception (`PostgreSQL error of type … (code: …)`); reuse its text. */
function sanitizedError(events: TimedEvent[]): string | undefined {
  for (const e of events) {
    const message = e.name === 'exception' ? e.attributes?.['exception.message'] : undefined;
    if (typeof message === 'string' && message.startsWith('PostgreSQL error of type')) return message;
  }
  return undefined;
}

function mentions(attributes: Attributes | undefined, user: string): boolean {
  if (attributes === undefined) return false;
  return Object.values(attributes).some((v) => typeof v === 'string' && v.includes(user));
}

function scrubAll(attributes: Attributes, user: string): Attributes {
  const out: Attributes = {};
  for (const [k, v] of Object.entries(attributes)) out[k] = typeof v === 'string' ? scrub(v, user) : v;
  return out;
}

function scrub(text: string, user: string): string {
  // A one- or two-letter user name would also match inside words: only its quoted form is replaced then.
  const needle = user.length >= 3 ? user : `"${user}"`;
  return text.split(needle).join(user.length >= 3 ? '<user>' : '"<user>"');
}
