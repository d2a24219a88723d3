/*
 * `db.query.summary` (semantic conventions: the operation and its targets, e.g. `SELECT orders customers`),
 * derived from SQL text without keeping any of its values: string literals, numbers, parameters and comments
 * are skipped, and only identifiers that follow FROM, JOIN, INTO, UPDATE or TABLE are kept. Opt-in, because
 * each distinct summary is a series: a guard caps how many one process reports.
 */
import { operationName } from './operation-name.js';
import { scanSql, SqlToken } from './sql-lexer.js';

/** Longest summary the conventions allow. */
const MAX_SUMMARY_LENGTH = 255;
/** Scan at most this much of a statement: a 10 MB statement costs the same as a short one. */
const SCAN_LIMIT = 4096;
/** Distinct summaries one process reports; later ones are recorded as {@link SUMMARY_OVERFLOW}. */
export const MAX_QUERY_SUMMARIES = 500;
export const SUMMARY_OVERFLOW = '_OTHER';
/** Statements remembered text → summary; cleared when full (texts with inlined literals are unbounded). */
const TEXT_CACHE_LIMIT = 2_000;
/**
 * The texts kept as keys are bounded in total as well as in number: kept whole without a bound, 2,000 distinct
 * bulk inserts with their values inlined held gigabytes, and an application sending distinct 10 MB statements
 * ran out of memory (found by a bounds review). A text longer than MAX_CACHED_TEXT is summarised again each
 * time (at most SCAN_LIMIT characters read, some 30 µs): rare, and sending it costs more. (Keyed by a prefix
 * instead, V8's sliced strings would keep each whole text alive; bounded at 1,024 characters, a 2 KB ORM
 * statement was re-summarised at every query: found by review.)
 */
const MAX_CACHED_TEXT = 65_536;
const CACHED_CHARS_LIMIT = 4_000_000;

const TARGET_KEYWORDS = new Set(['FROM', 'JOIN', 'INTO', 'UPDATE', 'TABLE']);
/** Words that may sit between a target keyword and its table: `IF NOT EXISTS t`, `ONLY t`, `LATERAL f(…)`. */
const TARGET_MODIFIERS = new Set(['ONLY', 'IF', 'NOT', 'EXISTS', 'LATERAL']);
/** First words of a parenthesised query; in any other parentheses FROM is an argument (`extract(year FROM ts)`). */
const QUERY_STARTS = new Set(['SELECT', 'WITH', 'VALUES', 'TABLE']);
/** Words before an UPDATE that is not a statement's: `FOR UPDATE`, `FOR NO KEY UPDATE`, `DO UPDATE`. */
const NOT_A_TABLE_UPDATE = new Set(['FOR', 'KEY', 'DO']);
const MAX_TARGETS = 4;
const IDENTIFIER = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*(?:\.[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)?$/;

/** The summary of one statement, or undefined when it has no recognisable operation. Pure. */
export function querySummary(sql: unknown): string | undefined {
  const operation = operationName(sql);
  if (operation === undefined || typeof sql !== 'string') return undefined;
  const targets: string[] = [];
  const tokens = tokenize(sql.slice(0, SCAN_LIMIT));
  // One entry per open parenthesis: whether a query's FROM can be in it (the statement's level always).
  const inQuery: boolean[] = [true];
  for (let i = 0; i < tokens.length - 1 && targets.length < MAX_TARGETS; i++) {
    const word = tokens[i]!.toUpperCase();
    // The first statement's tables only: the operation is the first statement's.
    if (word === ';' && inQuery.length === 1) break;
    if (word === '(') inQuery.push(QUERY_STARTS.has(tokens[i + 1]!.toUpperCase()));
    else if (word === ')' && inQuery.length > 1) inQuery.pop();
    if (!TARGET_KEYWORDS.has(word) || (word === 'FROM' && !inQuery[inQuery.length - 1])) continue;
    // A locking clause (`FOR [NO KEY] UPDATE SKIP LOCKED`) and an upsert's `DO UPDATE SET` name no table.
    if (word === 'UPDATE' && i > 0 && NOT_A_TABLE_UPDATE.has(tokens[i - 1]!.toUpperCase())) continue;
    let j = i + 1;
    while (j < tokens.length - 1 && TARGET_MODIFIERS.has(tokens[j]!.toUpperCase())) j++;
    const next = tokens[j]!;
    // `FROM unnest(…)`, `JOIN LATERAL f(…)`: a function, not a table (`INTO t (a, b)` is a column list).
    const call = (word === 'FROM' || word === 'JOIN') && tokens[j + 1] === '(';
    if (!call && IDENTIFIER.test(next) && !TARGET_KEYWORDS.has(next.toUpperCase()) &&
      !TARGET_MODIFIERS.has(next.toUpperCase()) && !targets.includes(next.toLowerCase())) {
      targets.push(next.toLowerCase());
    }
  }
  const summary = [operation, ...targets].join(' ');
  return summary.length > MAX_SUMMARY_LENGTH ? summary.slice(0, MAX_SUMMARY_LENGTH) : summary;
}

/** The words, parentheses and commas of `sql`, literals and comments skipped; a quoted identifier only when it reads like a plain one. */
function tokenize(sql: string): string[] {
  const tokens: string[] = [];
  scanSql(sql, (kind, start, end) => {
    if (kind === SqlToken.Word || kind === SqlToken.Punctuation) tokens.push(sql.slice(start, end));
    else if (kind === SqlToken.QuotedIdentifier) {
      // No literal can hide in a quoted identifier kept this way.
      const inner = sql.slice(start + 1, end - 1);
      tokens.push(IDENTIFIER.test(inner) ? inner : '?');
    }
  });
  return tokens;
}

/** Summaries with a text cache and the cardinality guard; one per recorder. */
export class QuerySummaries {
  private readonly byText = new Map<string, string | undefined>();
  private readonly seen = new Set<string>();
  private overflowed = false;
  /** Characters of the texts in `byText`. */
  private cachedChars = 0;

  constructor(private readonly onOverflow: () => void) {}

  summaryOf(sql: unknown): string | undefined {
    if (typeof sql !== 'string') return undefined;
    if (sql.length > MAX_CACHED_TEXT) return this.admitted(querySummary(sql));
    let summary = this.byText.get(sql);
    if (summary === undefined && !this.byText.has(sql)) {
      summary = this.admitted(querySummary(sql));
      if (this.byText.size >= TEXT_CACHE_LIMIT || this.cachedChars + sql.length > CACHED_CHARS_LIMIT) {
        this.byText.clear();
        this.cachedChars = 0;
      }
      this.byText.set(sql, summary);
      this.cachedChars += sql.length;
    }
    return summary;
  }

  /** Statement texts remembered now (for tests). */
  get cachedTexts(): number {
    return this.byText.size;
  }

  /** `summary` while fewer than MAX_QUERY_SUMMARIES distinct ones were reported, then SUMMARY_OVERFLOW. */
  private admitted(summary: string | undefined): string | undefined {
    if (summary === undefined || this.seen.has(summary)) return summary;
    if (this.seen.size >= MAX_QUERY_SUMMARIES) {
      if (!this.overflowed) this.onOverflow();
      this.overflowed = true;
      return SUMMARY_OVERFLOW;
    }
    this.seen.add(summary);
    return summary;
  }
}
