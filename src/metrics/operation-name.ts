/*
 * `db.operation.name` from SQL text without keeping any of the text: the first keyword, and only when
 * it is a PostgreSQL command, so identifiers, literals or a mistyped statement can never become a
 * metric label.
 */
import { commentEnd, lineEnd } from './sql-lexer.js';

const COMMANDS = Object.freeze([
  'ABORT', 'ALTER', 'ANALYZE', 'BEGIN', 'CALL', 'CHECKPOINT', 'CLOSE', 'CLUSTER', 'COMMENT', 'COMMIT',
  'COPY', 'CREATE', 'DEALLOCATE', 'DECLARE', 'DELETE', 'DISCARD', 'DO', 'DROP', 'END', 'EXECUTE',
  'EXPLAIN', 'FETCH', 'GRANT', 'IMPORT', 'INSERT', 'LISTEN', 'LOCK', 'MERGE', 'MOVE', 'NOTIFY', 'PREPARE',
  'REFRESH', 'REINDEX', 'RELEASE', 'RESET', 'REVOKE', 'ROLLBACK', 'SAVEPOINT', 'SECURITY', 'SELECT',
  'SET', 'SHOW', 'START', 'TABLE', 'TRUNCATE', 'UNLISTEN', 'UPDATE', 'VACUUM', 'VALUES', 'WITH',
]);

/*
 * The commands by length and first letter, so a statement's first word is matched in place: slicing and
 * upper-casing it and looking the copy up in a Set allocated a string and hashed it on every query, which
 * showed in the worst-case profile (String::ComputeAndSetRawHash, WriteToFlat).
 */
const BY_LENGTH_AND_LETTER: ReadonlyArray<ReadonlyArray<readonly string[]> | undefined> = (() => {
  const table: string[][][] = [];
  for (const word of COMMANDS) {
    const byLetter = (table[word.length] ??= []);
    (byLetter[word.charCodeAt(0) - 65] ??= []).push(word);
  }
  return table;
})();

/** Scans at most this many characters: a 10 MB statement costs the same as a short one. */
const SCAN_LIMIT = 4096;

export function operationName(sql: unknown): string | undefined {
  if (typeof sql !== 'string') return undefined;
  const end = Math.min(sql.length, SCAN_LIMIT);
  let i = 0;
  while (i < end) {
    const c = sql.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13) || c === 40 /* ( */) {
      i++;
    } else if (c === 45 /* - */ && sql.charCodeAt(i + 1) === 45) {
      i = lineEnd(sql, i + 2);
    } else if (c === 47 /* / */ && sql.charCodeAt(i + 1) === 42 /* * */) {
      // Block comments nest: `/* a /* b */ FROM x */ SELECT` is a SELECT (it was read as FROM).
      i = commentEnd(sql, i + 2);
    } else {
      break;
    }
  }
  let j = i;
  while (j < end && j - i < 16) {
    const c = sql.charCodeAt(j) | 0x20;
    if (c < 97 || c > 122) break;
    j++;
  }
  if (j === i) return undefined;
  const candidates = BY_LENGTH_AND_LETTER[j - i]?.[(sql.charCodeAt(i) & ~0x20) - 65];
  if (candidates === undefined) return undefined;
  for (const word of candidates) {
    let k = 1;
    // Letters only here: clearing bit 0x20 upper-cases them.
    while (k < word.length && (sql.charCodeAt(i + k) & ~0x20) === word.charCodeAt(k)) k++;
    if (k === word.length) return word;
  }
  return undefined;
}
