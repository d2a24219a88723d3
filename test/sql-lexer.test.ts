// What is taken out of SQL text opted in to spans: the passwords written into it.
import { describe, expect, it } from 'vitest';
import { withoutPasswordLiterals } from '../src/metrics/sql-lexer.js';

describe('withoutPasswordLiterals', () => {
  // Found by a review of traces: with POOLSCOPE_TRACE_SQL_TEXT=true, `ALTER ROLE … PASSWORD '…'` went out as typed.
  it.each([
    ["CREATE ROLE app LOGIN PASSWORD 'pw1'", "CREATE ROLE app LOGIN PASSWORD 'REDACTED'"],
    ["ALTER USER app WITH ENCRYPTED PASSWORD 'it''s pw2' VALID UNTIL 'infinity'", "ALTER USER app WITH ENCRYPTED PASSWORD 'REDACTED' VALID UNTIL 'infinity'"],
    ["alter role app password E'pw\\'3'", "alter role app password 'REDACTED'"],
    ['ALTER ROLE app PASSWORD $q$pw4$q$', "ALTER ROLE app PASSWORD 'REDACTED'"],
    ["CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'remote', password 'pw5')", "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'remote', password 'REDACTED')"],
    ["CREATE SUBSCRIPTION s CONNECTION 'host=h dbname=d password=pw6' PUBLICATION p", "CREATE SUBSCRIPTION s CONNECTION 'REDACTED' PUBLICATION p"],
    ["SELECT dblink_connect('postgresql://u:pw7@h/db')", "SELECT dblink_connect('REDACTED')"],
    ["SET my.password = 'pw8'", "SET my.password = 'REDACTED'"],
    // Review: quoted names, set_config, and a URL whose password holds a slash.
    ["CREATE SERVER s FOREIGN DATA WRAPPER x OPTIONS (user 'u', \"password\" 'pw9')", "CREATE SERVER s FOREIGN DATA WRAPPER x OPTIONS (user 'u', \"password\" 'REDACTED')"],
    ["SET \"my.password\" = 'pw10'", "SET \"my.password\" = 'REDACTED'"],
    ["SELECT set_config('app.password', 'pw11', false)", "SELECT set_config('app.password', 'REDACTED', false)"],
    ["SELECT dblink_connect('postgresql://u:hun/ter12@h/db')", "SELECT dblink_connect('REDACTED')"],
    // Found by a lexer review: with standard_conforming_strings off, `\'` inside a plain string is a quote, and
    // the password after it went out as typed.
    ["ALTER ROLE app PASSWORD 'a\\' || 'pw13'", "ALTER ROLE app PASSWORD 'REDACTED'"],
    ["SELECT 'x\\', dblink_connect('host=h password=pw14')", "SELECT 'REDACTED'"],
    ["-- note\rALTER ROLE app PASSWORD 'pw15'", "-- note\rALTER ROLE app PASSWORD 'REDACTED'"],
  ])('replaces the password in %s', (sql, expected) => {
    expect(withoutPasswordLiterals(sql)).toBe(expected);
  });

  it.each([
    "SELECT 'password' AS word, 'https://example.com/x' AS url",
    "-- ALTER ROLE x PASSWORD 'not run'\nSELECT 1",
    'SELECT password FROM accounts WHERE id = $1',
    "SELECT * FROM t WHERE note = 'no secret here'",
    // Review: a column named password beside a literal.
    "SELECT password, 'not a secret' FROM accounts",
    "SELECT 'https://example.com/a:b@c' AS url",
  ])('leaves %s as it is', (sql) => {
    expect(withoutPasswordLiterals(sql)).toBe(sql);
  });
});
