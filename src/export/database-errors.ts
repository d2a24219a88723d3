/*
 * Database errors recorded on spans that are not database spans: instrumentation-express records the error a
 * handler passes to `next()` on its span, and applications record a caught error on a span of their own. An
 * error from PostgreSQL echoes bound values and names roles and databases (`invalid input syntax for type
 * integer: "…"`, `role "…" does not exist`), and knex prefixes it with the statement text. By the time a span
 * ends its events hold only strings, and an ORM's wrapper (Sequelize's, TypeORM's, Drizzle's) no longer shows
 * where its message came from; so the error object is judged where it is recorded, in `Span#recordException`
 * of the tracing SDK behind Poolscope's provider (found by a review: the messages reached the collector from
 * Express spans while the README promised they never leave).
 */
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';

/** PostgreSQL's SQLSTATE codes: five digits or upper-case letters, and every code PostgreSQL defines has a digit. */
const SQLSTATE = /^(?=.*\d)[0-9A-Z]{5}$/;
/** Where libraries keep the error they wrap: `cause` (standard, Slonik, Drizzle), Sequelize's `original`/`parent`, TypeORM's `driverError`, Objection's `nativeError`. */
const WRAPPED = ['cause', 'original', 'parent', 'driverError', 'nativeError', 'originalError', 'previous'] as const;
/** Spans of Poolscope's own provider (redactingProcessor): an application's own provider built from the same SDK class records what it is given. */
const ownSpans = new WeakSet<object>();
const MAX_DEPTH = 5;
/** A stack frame line (`    at f (file:1:2)`, `    at file:1:2`, `    at new X (<anonymous>)`): nothing of the message. */
const FRAME = /^\s+at \S.*(?::\d+:\d+\)?|\((?:native|<anonymous>)\))$/;

type ErrorLike = Record<string, unknown>;

/**
 * What may be said of `err` when it came from the database (its SQLSTATE), or undefined when it did not: a
 * PostgreSQL server error (pg's `DatabaseError`, and libraries that copy its fields: a SQLSTATE, a severity and
 * the server's routine or source file), Drizzle's query error (its message is the statement and its
 * parameters), Prisma's client errors, or an error wrapping one. Nothing looser: an application's own error
 * with a `query` or a `code` keeps its message (a review found a GraphQL client's error rewritten).
 */
export function databaseErrorSummary(err: unknown): string | undefined {
  try {
    return summaryOf(err, 0);
  } catch {
    return undefined; // a getter that throws: not ours to judge, and never an exception into the application
  }
}

function summaryOf(err: unknown, depth: number): string | undefined {
  if (err === null || typeof err !== 'object' || depth > MAX_DEPTH) return undefined;
  const e = err as ErrorLike;
  const code = typeof e.code === 'string' && SQLSTATE.test(e.code) ? e.code : undefined;
  if (code !== undefined && typeof e.severity === 'string' && (typeof e.routine === 'string' || typeof e.file === 'string')) {
    return `PostgreSQL error, SQLSTATE ${code}`;
  }
  for (const key of WRAPPED) {
    const inner = summaryOf(e[key], depth + 1);
    if (inner !== undefined) return inner;
  }
  const constructorName = (e.constructor as { name?: unknown } | undefined)?.name;
  if (constructorName === 'DrizzleQueryError' || (typeof e.name === 'string' && e.name.startsWith('PrismaClient'))) return 'Database error';
  return undefined;
}

/** Raw message → what replaced it, per span: a status set from the same error (`err.message`) is replaced at export. */
const replaced = new WeakMap<object, Map<string, string>>();
const kPatched = Symbol.for('poolscope.record-exception-redacted');

/**
 * Makes `recordException` of the class `span` belongs to record database errors (see above) with their
 * summary in place of their message, and frames only as their stack, on spans of Poolscope's provider (each
 * passes here as it starts). The class is patched once: the SDK makes every span of a provider from one class.
 */
export function redactRecordedDatabaseErrors(span: object): void {
  ownSpans.add(span);
  const proto = Object.getPrototypeOf(span) as Record<PropertyKey, unknown> | null;
  if (proto === null || proto[kPatched] === true || typeof proto.recordException !== 'function') return;
  const original = proto.recordException as (this: object, exception: unknown, time?: unknown) => void;
  Object.defineProperty(proto, kPatched, { value: true });
  proto.recordException = function recordException(this: object, exception: unknown, time?: unknown): void {
    const summary = ownSpans.has(this) ? databaseErrorSummary(exception) : undefined;
    if (summary === undefined) return original.call(this, exception, time);
    const e = exception as ErrorLike;
    const message = typeof e.message === 'string' ? e.message : '';
    if (message !== '') {
      let messages = replaced.get(this);
      if (messages === undefined) replaced.set(this, messages = new Map());
      messages.set(message, summary);
    }
    const name = typeof e.name === 'string' && e.name !== '' ? e.name : 'Error';
    const frames = typeof e.stack === 'string' ? e.stack.split('\n').filter((line) => FRAME.test(line)) : [];
    return original.call(this, {
      code: typeof e.code === 'string' || typeof e.code === 'number' ? e.code : undefined,
      name, message: summary, stack: [`${name}: ${summary}`, ...frames].join('\n'),
    }, time);
  };
}

/** The status message `span` may carry, when it repeats a database error recorded on it; else undefined. */
export function redactedStatusMessage(span: ReadableSpan, message: string): string | undefined {
  const messages = replaced.get(span);
  if (messages === undefined) return undefined;
  for (const [raw, summary] of messages) if (message.includes(raw)) return summary;
  return undefined;
}
