/*
 * The words, literals and parentheses of SQL text as PostgreSQL reads them, for what Poolscope derives from
 * statement text (db.query.summary) and what it must take out of it (passwords, with SQL text opted in):
 * `''` inside strings, backslash escapes in `E'…'` strings, tagged dollar quotes (`$tag$…$tag$`) and nested
 * block comments; `--` comments end at either line end. Anything unterminated ends the scan. (A first lexer knew only `''`, `$$` and flat comments,
 * and a value inside `E'\''`, `$t$…$t$` or a nested comment came out as a table name.)
 */

export const enum SqlToken {
  /** A keyword or plain identifier (`[A-Za-z_][A-Za-z0-9_$.]*`). */
  Word,
  /** A string literal or dollar-quoted body, delimiters (and an `E` prefix) included. */
  String,
  /** A double-quoted identifier, quotes included. */
  QuotedIdentifier,
  /** `(`, `)`, `,` or `;`; other punctuation, numbers, parameters and comments are skipped. */
  Punctuation,
}

/**
 * `$tag$` or `$$` at a token's start: a dollar quote's delimiter (`$1` is a parameter, not a quote). A tag is
 * an identifier of any length, non-ASCII letters included (PostgreSQL takes bytes 0x80–0xFF as letters).
 */
const DOLLAR_TAG = /\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/y;

/** Calls `onToken` with each token's kind and its range in `sql`, in order, until it returns false. */
export function scanSql(sql: string, onToken: (kind: SqlToken, start: number, end: number) => boolean | void): void {
  let i = 0;
  let tag: string | undefined;
  while (i < sql.length) {
    const c = sql[i]!;
    const start = i;
    let kind: SqlToken | undefined;
    if (c === "'") {
      kind = SqlToken.String;
      i = stringEnd(sql, i + 1, false);
    } else if ((c === 'E' || c === 'e') && sql[i + 1] === "'" && !isWordChar(sql[i - 1])) {
      kind = SqlToken.String; // an escape string: backslashes escape
      i = stringEnd(sql, i + 2, true);
    } else if ((c === 'U' || c === 'u') && sql[i + 1] === '&' && (sql[i + 2] === "'" || sql[i + 2] === '"') && !isWordChar(sql[i - 1])) {
      // U&'…' and U&"…" (Unicode escapes): read as a whole, or the U was taken for a word (a table named `u`).
      if (sql[i + 2] === "'") {
        kind = SqlToken.String;
        i = stringEnd(sql, i + 3, false);
      } else {
        const close = sql.indexOf('"', i + 3);
        if (close === -1) return;
        kind = SqlToken.QuotedIdentifier;
        i = close + 1;
      }
    } else if (c === '"') {
      const close = sql.indexOf('"', i + 1);
      if (close === -1) return;
      kind = SqlToken.QuotedIdentifier;
      i = close + 1;
    } else if (c === '-' && sql[i + 1] === '-') {
      // To the end of the line, which PostgreSQL ends at a carriage return too: at `\n` only, a statement with
      // `\r` line ends was one comment from its first `--`, and a table after it was never seen.
      i = lineEnd(sql, i + 2);
    } else if (c === '/' && sql[i + 1] === '*') {
      i = commentEnd(sql, i + 2);
    } else if (c === '$' && (tag = dollarTagAt(sql, i)) !== undefined) {
      const close = sql.indexOf(tag, i + tag.length);
      kind = SqlToken.String;
      i = close === -1 ? sql.length : close + tag.length;
    } else if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      let j = i + 1;
      while (j < sql.length && isWordChar(sql[j])) j++;
      kind = SqlToken.Word;
      i = j;
    } else {
      if (c === '(' || c === ')' || c === ',' || c === ';') kind = SqlToken.Punctuation;
      i++;
    }
    if (kind !== undefined && onToken(kind, start, i) === false) return;
  }
}

/** PostgreSQL takes every non-ASCII character for a letter of an identifier (`café_table`). */
function isWordChar(c: string | undefined): boolean {
  return c !== undefined && /[A-Za-z0-9_$.\u0080-\uffff]/.test(c);
}

function dollarTagAt(sql: string, i: number): string | undefined {
  DOLLAR_TAG.lastIndex = i;
  return DOLLAR_TAG.exec(sql)?.[0];
}

/** Index after the line end that ends a `--` comment whose body starts at `i`. */
export function lineEnd(sql: string, i: number): number {
  while (i < sql.length && sql[i] !== '\n' && sql[i] !== '\r') i++;
  return Math.min(i + 1, sql.length);
}

/**
 * Index after the string literal whose body starts at `i`: `''` is a quote, and so is `\'` in an escape string.
 * In a plain string, a quote after an odd run of backslashes ends it only where standard_conforming_strings is
 * on (the default); where a server or session has it off, the backslash escapes the quote and the string goes
 * on. Which one the connection has is not known here: the rest of the statement is taken as part of the
 * literal, so that neither reading puts literal text where a name is read (a summary) or leaves a password
 * out of a redaction.
 */
function stringEnd(sql: string, i: number, escapes: boolean): number {
  let backslashes = 0;
  while (i < sql.length) {
    const c = sql[i];
    if (escapes && c === '\\') { i += 2; continue; }
    if (c === "'" && backslashes % 2 === 1) return sql.length;
    if (c === "'" && sql[i + 1] === "'") i += 2;
    else if (c === "'") return i + 1;
    else i++;
    backslashes = c === '\\' ? backslashes + 1 : 0;
  }
  return sql.length;
}

/** Index after the block comment whose body starts at `i`; PostgreSQL's block comments nest. */
export function commentEnd(sql: string, i: number): number {
  let depth = 1;
  while (i < sql.length) {
    if (sql[i] === '/' && sql[i + 1] === '*') { depth++; i += 2; }
    else if (sql[i] === '*' && sql[i + 1] === '/') { depth--; i += 2; if (depth === 0) return i; }
    else i++;
  }
  return sql.length;
}

/** The keyword, or a setting or option named so (`SET my.password = …`, `"password" '…'`). */
const PASSWORD_WORD = /(?:^|\.)password$/i;
/** Literals that hold a secret: a connection string or URL with a password in it. */
const SECRET_BODY = /password\s*=|\/\/[^\s'/@]*:[^\s'@]*@/i;

/**
 * `sql` with each string literal that holds a password replaced by `'REDACTED'`: the literal after a word or
 * quoted name `password` (`CREATE ROLE … PASSWORD '…'`, `ALTER USER … ENCRYPTED PASSWORD '…'`, a foreign server's
 * `OPTIONS (password '…')` or `("password" '…')`, `SET my.password = '…'`), the literal after one naming such a
 * setting (`set_config('app.password', '…', false)`), and connection strings or URLs with a password
 * (`CREATE SUBSCRIPTION … CONNECTION '… password=…'`, `dblink_connect('postgres://u:p@h/db')`). A comma after
 * the name ends it (`SELECT password, 'x'` keeps its literal). For SQL text opted in to spans, where a statement
 * is otherwise exported as the application wrote it.
 */
export function withoutPasswordLiterals(sql: string): string {
  if (!/password|\/\//i.test(sql)) return sql;
  let out = '';
  let copied = 0;
  // The next literal is a password: after a name `password`, or after a literal naming one and a comma.
  let armed = false;
  let afterNamingLiteral = false;
  scanSql(sql, (kind, start, end) => {
    const text = sql.slice(start, end);
    if (kind === SqlToken.Punctuation) {
      armed = text === ',' && afterNamingLiteral;
      afterNamingLiteral = false;
      return;
    }
    if (kind !== SqlToken.String) {
      armed = PASSWORD_WORD.test(kind === SqlToken.QuotedIdentifier ? text.slice(1, -1) : text);
      afterNamingLiteral = false;
      return;
    }
    if (armed || SECRET_BODY.test(text)) {
      out += `${sql.slice(copied, start)}'REDACTED'`;
      copied = end;
    }
    armed = false;
    afterNamingLiteral = PASSWORD_WORD.test(text.slice(1, -1));
  });
  return copied === 0 ? sql : out + sql.slice(copied);
}
