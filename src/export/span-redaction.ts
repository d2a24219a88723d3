import type { Attributes, AttributeValue, Context } from '@opentelemetry/api';
import type { ReadableSpan, Span as SdkSpan, SpanProcessor, TimedEvent } from '@opentelemetry/sdk-trace-base';
import { operationName } from '../metrics/operation-name.js';
import { withoutPasswordLiterals } from '../metrics/sql-lexer.js';
import { carriesSecretKeyword, isWithheld, isWithheldPort } from '../pool-name.js';
import { redactedStatusMessage, redactRecordedDatabaseErrors } from './database-errors.js';

/**
 * Spans must not carry SQL text, user names or passwords unless the user opts in. Poolscope's own query
 * spans never do (tracing/pg-query-spans.ts) and pass untouched; this is the net for every other span the
 * provider sees — an application that adds instrumentation-pg or another database instrumentation of its
 * own to the global provider, whose spans carry the statement text (`db.query.text`), statement names,
 * bound values and error messages that echo SQL, and the user name (`db.user`, or as the database name
 * when none is configured). Redaction happens as each span ends, in front of the batching processor, so every
 * exporter (console, OTLP, and the OTLP exporter's own debug log of what it sends) only ever sees redacted
 * spans. Per span at its end, not per batch at export: a batch of 512 redacted at once blocked the event
 * loop for milliseconds, the worst-case benchmark's p99 with traces on was 16× the baseline's (BENCHMARKS.md).
 */

/** Attributes that hold statement text or what is derived from it (statement names): kept when SQL text is opted in. */
const SQL_ATTRIBUTES = ['db.query.text', 'db.statement', 'db.postgresql.plan', 'db.query.summary'];
/** Bound values: never exported, SQL text opted in or not. */
const VALUE_ATTRIBUTE_PREFIXES = ['db.query.parameter.'];
/** Never exported: bound values, the user name, and a connection string (upstream keeps its query, `password=` included). */
const ALWAYS_DROPPED = ['db.postgresql.values', 'db.user', 'db.connection_string'];
const NAMESPACE_ATTRIBUTES = ['db.namespace', 'db.name'];
const ADDRESS_ATTRIBUTES = ['server.address', 'net.peer.name'];
const PORT_ATTRIBUTES = ['server.port', 'net.peer.port'];
/**
 * URLs and query strings: every query value is the caller's (tokens, passwords, e-mail addresses), and upstream
 * HTTP instrumentation redacts only a few signature parameters, so `GET /login?password=…` reached the span as
 * typed (found by hostile-input review). The keys stay; each value becomes REDACTED.
 */
const URL_ATTRIBUTES = ['url.query', 'url.full', 'http.target', 'http.url'];

/** What each attribute key needs checked: one map lookup per key instead of a chain of array scans. */
const enum Kind { Always = 1, Sql, Namespace, Address, Port, Url }
const KINDS = new Map<string, Kind>([
  ...ALWAYS_DROPPED.map((k) => [k, Kind.Always] as const),
  ...SQL_ATTRIBUTES.map((k) => [k, Kind.Sql] as const),
  ...NAMESPACE_ATTRIBUTES.map((k) => [k, Kind.Namespace] as const),
  ...ADDRESS_ATTRIBUTES.map((k) => [k, Kind.Address] as const),
  ...PORT_ATTRIBUTES.map((k) => [k, Kind.Port] as const),
  ...URL_ATTRIBUTES.map((k) => [k, Kind.Url] as const),
]);
function kindOf(key: string): Kind | undefined {
  return KINDS.get(key) ?? (VALUE_ATTRIBUTE_PREFIXES.some((p) => key.startsWith(p)) ? Kind.Always : undefined);
}

/** `text` with every query value replaced by REDACTED (`whole`: `text` is the query string itself, without '?'). */
function withoutQueryValues(text: string, whole: boolean): string {
  const q = whole ? 0 : text.indexOf('?');
  if (q === -1 || (whole && text === '')) return text;
  const hash = text.indexOf('#', q);
  const query = text.slice(whole ? 0 : q + 1, hash === -1 ? undefined : hash);
  // A key without a value is kept only when it reads like a word: a bare token (`?eyJhbGciOi…`) is the secret.
  // Upstream's HTTP instrumentation hands a bare token over as `eyJhbGciOi…=` (it rebuilds the query with
  // URLSearchParams), so an empty value is judged the same way (found by review: the token was kept as a key).
  const redacted = query.split('&').map((pair) => {
    const eq = pair.indexOf('=');
    const key = eq === -1 ? pair : pair.slice(0, eq);
    if (eq !== -1 && eq < pair.length - 1) return `${key}=REDACTED`;
    return key === '' || /^[A-Za-z_-]{1,32}$/.test(key) ? pair : 'REDACTED';
  }).join('&');
  return `${whole ? '' : text.slice(0, q + 1)}${redacted}${hash === -1 ? '' : text.slice(hash)}`;
}

/** How upstream's sanitized exception message (`PostgreSQL error of type … (code: …)`) begins. */
const SANITIZED_PREFIX = 'PostgreSQL error of type';

/** The tracer scope of Poolscope's own spans (tracing/start-tracing.ts), which are made without anything to redact. */
export const OWN_SCOPE = 'poolscope';

/** Wraps `processor` (the batching or simple processor in front of an exporter) so that every span it receives is redacted first. */
export function redactingProcessor(processor: SpanProcessor, traceSqlText: boolean): SpanProcessor {
  return {
    onStart: (span: SdkSpan, parentContext: Context) => {
      redactRecordedDatabaseErrors(span);
      processor.onStart(span, parentContext);
    },
    onEnd: (span: ReadableSpan) => processor.onEnd(redactSpan(span, traceSqlText)),
    shutdown: () => processor.shutdown(),
    forceFlush: () => processor.forceFlush(),
  };
}

/** The span as it may leave the process: the same object when nothing needs redacting, else a redacted view. */
export function redactSpan(span: ReadableSpan, traceSqlText: boolean): ReadableSpan {
  if (span.instrumentationScope.name === OWN_SCOPE) return span;
  const source = span.attributes;
  const isDb = source['db.system.name'] === 'postgresql' || source['db.system'] === 'postgresql';
  // Only the old conventions name the user (`db.user`, dropped below); wherever else it shows, it is scrubbed.
  const user = typeof source['db.user'] === 'string' && source['db.user'] !== '' ? source['db.user'] : undefined;
  let attributes: Attributes = source;
  let dropped: Set<string> | undefined;
  let droppedNamespace: string | undefined;
  let rewritten: Map<string, string> | undefined;
  for (const key in source) {
    const kind = kindOf(key);
    if (kind === undefined) continue;
    const value = source[key];
    if (kind === Kind.Url || (kind === Kind.Sql && traceSqlText)) {
      // SQL text opted in still goes without the passwords written into it.
      const redacted = typeof value !== 'string' ? value
        : kind === Kind.Url ? withoutQueryValues(value, key === 'url.query') : withoutPasswordLiterals(value);
      if (redacted !== value) (rewritten ??= new Map()).set(key, redacted as string);
      continue;
    }
    if (!dropAttribute(kind, value, isDb, user, traceSqlText)) continue;
    (dropped ??= new Set()).add(key);
    if (kind === Kind.Namespace && typeof value === 'string') droppedNamespace = value;
  }
  const changed = dropped !== undefined || rewritten !== undefined;
  if (changed) {
    // A new object without the dropped keys (deleting from a copy turned it into a slow dictionary).
    attributes = {};
    for (const key in source) if (dropped?.has(key) !== true) attributes[key] = rewritten?.get(key) ?? source[key];
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
    // Also with SQL text on: PostgreSQL's messages echo bound values (`invalid input syntax …: "…"`).
    if (isDb) message = sanitizedError(span.events) ?? 'PostgreSQL error';
    else message = redactedStatusMessage(span, message) ?? message;
    if (user !== undefined) message = scrub(message, user);
    if (message !== status.message) status = { ...status, message };
  }

  let events = span.events;
  if (isDb && events.length > 0) {
    events = redactedDbEvents(events, user, traceSqlText);
  } else if (user !== undefined && events.some((e) => mentions(e.attributes, user))) {
    events = events.map((e): TimedEvent => (mentions(e.attributes, user) ? { ...e, attributes: scrubAll(e.attributes!, user) } : e));
  }

  if (!changed && name === span.name && status === span.status && events === span.events) return span;
  return new RedactedSpan(span, name, attributes, status, events);
}

/**
 * The redacted span handed to the processor: the span's fields with name, attributes, status and events
 * replaced. A plain object, not `Object.create(span)`: making every ended span a prototype made V8 copy
 * its hidden class each time, the largest single cost of tracing in the worst-case benchmark.
 */
class RedactedSpan implements ReadableSpan {
  readonly kind: ReadableSpan['kind'];
  readonly parentSpanContext: ReadableSpan['parentSpanContext'];
  readonly startTime: ReadableSpan['startTime'];
  readonly endTime: ReadableSpan['endTime'];
  readonly links: ReadableSpan['links'];
  readonly duration: ReadableSpan['duration'];
  readonly ended: boolean;
  readonly resource: ReadableSpan['resource'];
  readonly instrumentationScope: ReadableSpan['instrumentationScope'];
  readonly droppedAttributesCount: number;
  readonly droppedEventsCount: number;
  readonly droppedLinksCount: number;
  private readonly context: ReturnType<ReadableSpan['spanContext']>;

  constructor(span: ReadableSpan, readonly name: string, readonly attributes: Attributes,
    readonly status: ReadableSpan['status'], readonly events: TimedEvent[]) {
    this.kind = span.kind;
    this.context = span.spanContext();
    this.parentSpanContext = span.parentSpanContext;
    this.startTime = span.startTime;
    this.endTime = span.endTime;
    this.links = span.links;
    this.duration = span.duration;
    this.ended = span.ended;
    this.resource = span.resource;
    this.instrumentationScope = span.instrumentationScope;
    this.droppedAttributesCount = span.droppedAttributesCount;
    this.droppedEventsCount = span.droppedEventsCount;
    this.droppedLinksCount = span.droppedLinksCount;
  }

  spanContext(): ReturnType<ReadableSpan['spanContext']> {
    return this.context;
  }
}

function dropAttribute(kind: Kind, value: AttributeValue | undefined, isDb: boolean, user: string | undefined, traceSqlText: boolean): boolean {
  switch (kind) {
    case Kind.Always: return true;
    case Kind.Sql: return !traceSqlText;
    // pg connects to the database named after the user when none is configured: that is a user name.
    case Kind.Namespace:
    case Kind.Address: return isDb && (value === user || isWithheld(value) || carriesSecretKeyword(value));
    case Kind.Port: return isDb && isWithheldPort(value);
    case Kind.Url: return false; // rewritten, not dropped (redactSpan)
  }
}

/**
 * A database span's events under the span's own rules: statement and value attributes dropped, and an
 * exception's message and stack trace reduced to the sanitized text, since PostgreSQL's messages echo bound
 * values (an application that records the error on a span of its own recorded `invalid input syntax … "…"`).
 * The same array when nothing changes.
 */
function redactedDbEvents(events: TimedEvent[], user: string | undefined, traceSqlText: boolean): TimedEvent[] {
  let out: TimedEvent[] | undefined;
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    const redacted = redactedDbEvent(e, events, user, traceSqlText);
    if (redacted !== e) (out ??= events.slice())[i] = redacted;
  }
  return out ?? events;
}

function redactedDbEvent(e: TimedEvent, events: TimedEvent[], user: string | undefined, traceSqlText: boolean): TimedEvent {
  const source = e.attributes;
  if (source === undefined) return e;
  let attributes: Attributes | undefined;
  for (const key in source) {
    const value = source[key];
    let replacement: AttributeValue | undefined = value;
    const kind = kindOf(key);
    if (kind !== undefined && dropAttribute(kind, value, true, user, traceSqlText)) replacement = undefined;
    else if (key === 'exception.message' && typeof value === 'string' && !value.startsWith(SANITIZED_PREFIX)) {
      replacement = sanitizedError(events) ?? 'PostgreSQL error';
    } else if (key === 'exception.stacktrace' && typeof value === 'string') {
      // The first lines repeat the message; the frames say where, and nothing about the data.
      const frames = value.split('\n').filter((line) => /^\s+at /.test(line));
      const type = typeof source['exception.type'] === 'string' ? source['exception.type'] : 'Error';
      replacement = [`${type}: ${sanitizedError(events) ?? 'PostgreSQL error'}`, ...frames].join('\n');
    } else if (user !== undefined && typeof value === 'string' && value.includes(user)) {
      replacement = scrub(value, user);
    }
    if (replacement === value) continue;
    attributes ??= { ...source };
    if (replacement === undefined) delete attributes[key];
    else attributes[key] = replacement;
  }
  return attributes === undefined ? e : { ...e, attributes };
}

/** Upstream records a sanitized exception (`PostgreSQL error of type … (code: …)`); reuse its text. */
function sanitizedError(events: TimedEvent[]): string | undefined {
  for (const e of events) {
    const message = e.name === 'exception' ? e.attributes?.['exception.message'] : undefined;
    if (typeof message === 'string' && message.startsWith(SANITIZED_PREFIX)) return message;
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
