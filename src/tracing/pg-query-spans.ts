import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, type Attributes, type Context, type Tracer } from '@opentelemetry/api';
import type { PgClientLike } from '../adapters/pg-target.js';
import { queryTargetOf } from '../adapters/pg-target.js';
import type { QuerySpans } from '../adapters/pg-client.js';
import { markOwnSpan, type OwnSpanShape } from '../export/own-span-encoding.js';
import { errorType, isSqlState } from '../metrics/error-type.js';
import { operationName } from '../metrics/operation-name.js';
import { SUMMARY_OVERFLOW, type QuerySummaries } from '../metrics/query-summary.js';
import { withoutPasswordLiterals } from '../metrics/sql-lexer.js';
import type { QueryTarget } from '../pools/observer.js';
import * as sc from '../semconv.js';
import { epochHrTime } from './span-clock.js';

/** Most shapes kept per target; a target sees ~50 operation names and a handful of error types. */
const SHAPES_PER_TARGET = 500;

/**
 * Spans for pg queries, made by Poolscope's own `Client#query` wrapper (adapters/pg-client.ts) instead of
 * `@opentelemetry/instrumentation-pg`. That one put a second wrapper around every query, built its
 * attributes from the statement text and the connection's user, and left both to be removed again before
 * export (span-redaction.ts): about a third of the cost of a traced query in the worst-case benchmark
 * (BENCHMARKS.md). Here no SQL text, user name or bound value is ever put on a span unless the user opts
 * in to SQL text, so there is nothing to redact.
 *
 * A span is made when its query completes, with the start time taken as the query started and the parent
 * context captured then: a query whose completion the wrapper does not see (a submittable) never leaves an
 * open span behind, and the name and attributes, error included, are one cached object.
 * Names and attributes follow the database client span conventions: `{db.query.summary}` when the summary is
 * on, else `{db.operation.name} {db.namespace}` (else `server.address:server.port`), kind CLIENT.
 */
export class PgQuerySpans implements QuerySpans {
  private readonly shapes = new WeakMap<QueryTarget, Map<string, OwnSpanShape>>();

  /** `summaries`: when `db.query.summary` is on (its own cache and cap: the metrics recorder's is rebuilt with its meter). */
  constructor(private readonly tracer: Tracer, private readonly sqlText: boolean, private readonly summaries?: QuerySummaries) {}

  parent(): Context {
    return context.active();
  }

  end(parent: Context, client: PgClientLike, text: unknown, start: number, end: number, err: unknown): void {
    try {
      this.record(parent, client, text, start, end, err);
    } catch {
      // A span is never worth an exception in the application's query callback.
    }
  }

  private record(parent: Context, client: PgClientLike, text: unknown, start: number, end: number, err: unknown): void {
    const failed = err !== undefined && err !== null;
    const shape = this.shape(queryTargetOf(client), operationName(text), failed ? errorType(err) : undefined, this.summaries?.summaryOf(text));
    const span = this.tracer.startSpan(shape.name, { kind: SpanKind.CLIENT, attributes: shape.attributes, startTime: epochHrTime(start) }, parent);
    if (this.sqlText && typeof text === 'string') span.setAttribute(sc.ATTR_DB_QUERY_TEXT, withoutPasswordLiterals(text));
    // Never the database's message, also with SQL text on: PostgreSQL's messages echo bound values.
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR });
    // Before end(): a processor may export from there. With SQL text on the span is not its shape, and the
    // exporter sees that.
    markOwnSpan(span, shape);
    span.end(epochHrTime(end));
  }

  /**
   * Runs a callback in the context its call was made in (`parent`), when that is not the current one. pg
   * calls back from its socket's events, whose context is that of whoever opened the connection, and a queued
   * acquire completes in the releasing caller's: a query made there would take that caller's span as its
   * parent. (instrumentation-pg bound only callers that had a span, so a caller without one inherited the
   * opener's or the releaser's.) Comparing the contexts first keeps the common case a plain call.
   */
  call(parent: Context, fn: (...a: unknown[]) => unknown, thisArg: unknown, args: ArrayLike<unknown>): unknown {
    if (context.active() === parent) return fn.apply(thisArg, args as unknown[]);
    return context.with(parent, fn as (...a: unknown[]) => unknown, thisArg, ...(args as unknown[]));
  }

  detached(connect: (...a: unknown[]) => unknown, client: object, args: ArrayLike<unknown>): unknown {
    const caller = context.active();
    if (caller === ROOT_CONTEXT) return connect.apply(client, args as unknown[]);
    const a = Array.from(args);
    const cb = a[0];
    if (typeof cb === 'function') {
      const spans = this;
      a[0] = function (this: unknown) {
        // eslint-disable-next-line prefer-rest-params
        return spans.call(caller, cb as (...x: unknown[]) => unknown, this, arguments);
      };
    }
    return context.with(ROOT_CONTEXT, connect, client, ...a);
  }

  private shape(target: QueryTarget, operation: string | undefined, error: string | undefined, summary: string | undefined): OwnSpanShape {
    let byKey = this.shapes.get(target);
    if (byKey === undefined) this.shapes.set(target, byKey = new Map());
    let key = error === undefined ? (operation ?? '') : `${operation ?? ''}\u0000${error}`;
    if (summary !== undefined) key += `\u0001${summary}`;
    let shape = byKey.get(key);
    if (shape === undefined) {
      if (byKey.size >= SHAPES_PER_TARGET) byKey.clear();
      shape = makeShape(target, operation, error, summary);
      byKey.set(key, shape);
    }
    return shape;
  }
}

/**
 * Name, attributes and status of one kind of span, made once per client target, operation and error type.
 * A failed query's status has no description: never the database's message (it echoes values).
 */
function makeShape(target: QueryTarget, operation: string | undefined, error: string | undefined, summary: string | undefined): OwnSpanShape {
  const where = target.namespace ?? (target.address === undefined ? undefined : `${target.address}:${target.port}`);
  // The conventions name a span by its summary when there is one; past the cap, `_OTHER` names nothing.
  const name = summary !== undefined && summary !== SUMMARY_OVERFLOW ? summary
    : operation !== undefined && where !== undefined ? `${operation} ${where}` : operation ?? where ?? sc.DB_SYSTEM_POSTGRESQL;
  const attributes: Attributes = { [sc.ATTR_DB_SYSTEM_NAME]: sc.DB_SYSTEM_POSTGRESQL };
  if (summary !== undefined) attributes[sc.ATTR_DB_QUERY_SUMMARY] = summary;
  if (target.namespace !== undefined) attributes[sc.ATTR_DB_NAMESPACE] = target.namespace;
  if (target.address !== undefined) attributes[sc.ATTR_SERVER_ADDRESS] = target.address;
  if (target.port !== undefined) attributes[sc.ATTR_SERVER_PORT] = target.port;
  if (operation !== undefined) attributes[sc.ATTR_DB_OPERATION_NAME] = operation;
  if (error !== undefined) {
    attributes[sc.ATTR_ERROR_TYPE] = error;
    if (isSqlState(error)) attributes[sc.ATTR_DB_RESPONSE_STATUS_CODE] = error;
  }
  // An error status without a description: all Poolscope may say of the error is error.type, which the
  // conventions advise against repeating there (it said "PostgreSQL error, SQLSTATE …" until a review).
  return {
    name, attributes: Object.freeze(attributes), attributeCount: Object.keys(attributes).length,
    statusCode: error === undefined ? SpanStatusCode.UNSET : SpanStatusCode.ERROR,
  };
}
