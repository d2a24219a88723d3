/*
 * `db.query.summary` (semantic conventions: each operation and its targets in the order written, e.g.
 * `INSERT shipping_details SELECT orders`), derived from SQL text without keeping any of its values: string
 * literals, numbers, parameters and comments are skipped, and only identifiers that follow FROM, JOIN, INTO,
 * UPDATE or TABLE are kept. Opt-in, because each distinct summary is a series: a guard caps how many one
 * process reports.
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
const QUERY_STARTS = new Set(['SELECT', 'WITH', 'VALUES', 'TABLE', 'INSERT', 'UPDATE', 'DELETE', 'MERGE']);
/** Words that end a FROM list (`FROM a, b WHERE …`): a comma after them separates something else. */
const FROM_LIST_ENDS = new Set(['WHERE', 'GROUP', 'ORDER', 'HAVING', 'LIMIT', 'OFFSET', 'WINDOW', 'UNION', 'INTERSECT',
  'EXCEPT', 'FETCH', 'FOR', 'RETURNING', 'SET', 'VALUES', 'SELECT', 'INSERT', 'UPDATE', 'DELETE', ';']);
/** Statements that can sit inside another: `INSERT INTO t SELECT …`, `WITH d AS (DELETE …)`. */
const NESTED_OPERATIONS = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE']);
/**
 * What comes before a statement inside another (besides the table of `INSERT INTO t SELECT`): a parenthesis,
 * a set operation, `AS`, `EXPLAIN [ANALYZE] [VERBOSE]`. Not `GRANT SELECT`, `FOR UPDATE`, `ON DELETE`, a
 * trigger's `BEFORE INSERT OR UPDATE`.
 */
const AFTER_NESTED = new Set(['(', ')', 'UNION', 'INTERSECT', 'EXCEPT', 'ALL', 'DISTINCT', 'AS', 'EXPLAIN', 'ANALYZE', 'VERBOSE']);
const MAX_TARGETS = 4;
/** Operations and tables together: a chain of fifty UNIONs is not fifty parts. */
const MAX_PARTS = 8;
const IDENTIFIER = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*(?:\.[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)?$/;

/** The summary of one statement, or undefined when it has no recognisable operation. Pure. */
export function querySummary(sql: unknown): string | undefined {
  const operation = operationName(sql);
  if (operation === undefined || typeof sql !== 'string') return undefined;
  const { words, quoted } = tokenize(sql.slice(0, SCAN_LIMIT));
  const keyword = (i: number): string => (quoted[i] === true ? '' : words[i]!.toUpperCase());
  // The conventions' form: each operation, then the tables it names, in the order written
  // (`INSERT shipping_details SELECT orders`). Tables are deduplicated within their operation.
  const parts = [operation];
  let length = operation.length;
  let tables = new Set<string>();
  let targets = 0;
  let full = false;
  const add = (part: string): void => {
    // Cut between parts, never inside one (the conventions' rule for the 255 characters), and nothing after.
    full ||= length + 1 + part.length > MAX_SUMMARY_LENGTH;
    if (full) return;
    parts.push(part);
    length += 1 + part.length;
  };
  const first = words.findIndex((w, i) => quoted[i] === true || /^[A-Za-z_\u0080-\uffff]/.test(w));
  let lastTarget = -1;
  /** Parenthesis depth of the FROM list being read, if one is. */
  let fromList: number | undefined;
  // One entry per open parenthesis: whether a query's FROM can be in it (the statement's level always).
  const inQuery: boolean[] = [true];
  for (let i = 0; i < words.length - 1 && parts.length < MAX_PARTS && !full; i++) {
    const word = keyword(i);
    // The first statement's only: the operation is the first statement's.
    if (word === ';' && inQuery.length === 1) break;
    if (word === '(') inQuery.push(QUERY_STARTS.has(keyword(i + 1)));
    else if (word === ')' && inQuery.length > 1) inQuery.pop();
    if (fromList !== undefined && (inQuery.length < fromList || (inQuery.length === fromList && FROM_LIST_ENDS.has(word)))) fromList = undefined;
    // `FROM songs s, artists a`: each table of the list, as the conventions' `SELECT songs artists`.
    const listed = word === ',' && inQuery.length === fromList;
    // A statement inside this one: a subquery, a set operation's other side, `INSERT INTO t SELECT`.
    const operationHere = i === first || (NESTED_OPERATIONS.has(word) && (AFTER_NESTED.has(keyword(i - 1)) || i - 1 === lastTarget));
    if (operationHere && i !== first) {
      add(word);
      tables = new Set();
    }
    if (!listed && (!TARGET_KEYWORDS.has(word) || (word === 'FROM' && !inQuery[inQuery.length - 1]))) continue;
    if (word === 'FROM') fromList = inQuery.length;
    // UPDATE names a table only as an operation: not in `FOR UPDATE`, `DO UPDATE SET`, `ON UPDATE CASCADE`,
    // `GRANT UPDATE ON t`, a trigger's `BEFORE UPDATE ON t`.
    if (word === 'UPDATE' && !operationHere) continue;
    let j = i + 1;
    while (j < words.length - 1 && TARGET_MODIFIERS.has(keyword(j))) j++;
    const next = words[j]!;
    // `FROM unnest(…)`, `JOIN LATERAL f(…)`: a function, not a table (`INTO t (a, b)` is a column list).
    const call = (word === 'FROM' || word === 'JOIN' || listed) && words[j + 1] === '(';
    if (call || !IDENTIFIER.test(next) || (quoted[j] !== true && (TARGET_KEYWORDS.has(next.toUpperCase()) || TARGET_MODIFIERS.has(next.toUpperCase())))) continue;
    // PostgreSQL folds unquoted names to lower case; a quoted name is that exact table (`"Users"` is not `users`).
    const table = quoted[j] === true ? next : next.toLowerCase();
    lastTarget = j;
    if (tables.has(table) || targets >= MAX_TARGETS) continue;
    tables.add(table);
    targets++;
    add(table);
  }
  return parts.join(' ');
}

/**
 * The words, parentheses and commas of `sql`, literals and comments skipped; a quoted identifier only when it
 * reads like a plain one (no literal can hide in one kept this way), marked quoted: never a keyword.
 */
function tokenize(sql: string): { words: string[]; quoted: boolean[] } {
  const words: string[] = [];
  const quoted: boolean[] = [];
  scanSql(sql, (kind, start, end) => {
    if (kind === SqlToken.Word || kind === SqlToken.Punctuation) words.push(sql.slice(start, end));
    else if (kind === SqlToken.QuotedIdentifier) {
      const inner = sql.slice(start + 1, end - 1);
      quoted[words.length] = true;
      words.push(IDENTIFIER.test(inner) ? inner : '?');
    }
  });
  return { words, quoted };
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
