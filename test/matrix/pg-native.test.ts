// pg's native bindings (pg-native on libpq): standalone and pooled native clients under the preload, as pg's own
// clients are. pg-native compiles libpq's addon at install (node-gyp and the libpq headers: .ci/run installs
// libpq-dev where it is missing); it is installed once into .cache/matrix/versions/pg-native.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { find, parseExposition, REGISTER, ROOT, runToExit, value, type Sample } from '../helpers.js';

const DATABASE_URL = inject('databaseUrl');
/** One install per Node ABI: the addon is built for the Node that runs the fixture. */
const DIR = path.join(ROOT, '.cache', 'matrix', 'versions', `pg-native-abi${process.versions.modules}`);
/**
 * node-gyp needs this Node's headers, and with no network it cannot fetch them: they come with the Node installed
 * by the system's package (/usr/include/node), not with the Node 22 and 24 fetched through npx.
 */
const NODE_PREFIX = path.dirname(path.dirname(process.execPath));
const HEADERS = (() => {
  try {
    const h = readFileSync(path.join(NODE_PREFIX, 'include', 'node', 'node_version.h'), 'utf8');
    const v = (name: string) => new RegExp(`define NODE_${name}_VERSION (\\d+)`).exec(h)?.[1];
    return `v${v('MAJOR')}.${v('MINOR')}.${v('PATCH')}` === process.version;
  } catch {
    return false;
  }
})();
/** pg at the repository's own pinned version, with the pg-native release this suite was written against. */
const PG_NATIVE_VERSION = '3.9.0';

function installed(): string {
  const pg = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', 'pg', 'package.json'), 'utf8')).version as string;
  const manifest = JSON.stringify({ name: 'poolscope-matrix-pg-native', private: true, dependencies: { pg, 'pg-native': PG_NATIVE_VERSION } }, null, 2);
  const stamp = path.join(DIR, '.installed');
  const addon = path.join(DIR, 'node_modules', 'libpq', 'build', 'Release', 'addon.node');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === manifest && existsSync(addon)) return DIR;
  mkdirSync(DIR, { recursive: true });
  writeFileSync(path.join(DIR, 'package.json'), manifest);
  const npm = (args: string[]) => execFileSync('npm', [...args, '--prefix', DIR, '--no-audit', '--no-fund', '--loglevel=error'], {
    stdio: ['ignore', 'ignore', 'pipe'], timeout: 240_000, env: { ...process.env, npm_config_nodedir: NODE_PREFIX },
  });
  npm(['install']);
  // npm 11 skips dependencies' install scripts unless the project allows them; the addon is built explicitly.
  if (!existsSync(addon)) npm(['rebuild', 'libpq']);
  writeFileSync(stamp, manifest);
  return DIR;
}

describe.skipIf(!HEADERS)(`pg.native${HEADERS ? '' : ` [skipped: no headers for Node ${process.version} under ${NODE_PREFIX}, and none can be fetched]`}`, () => {
  const url = new URL(DATABASE_URL);
  const poolName = `${url.hostname}:${url.port}${url.pathname}`;
  let r: { standalone: Sample[]; held: Sample[]; released: Sample[]; stderr: string };
  beforeAll(async () => {
    const dir = installed();
    const port = await freePort();
    const run = await runToExit(process.execPath, ['--import', REGISTER, path.join(ROOT, 'test', 'matrix', 'fixtures', 'pg-native.cjs')], {
      env: { ...process.env, DATABASE_URL, MATRIX_DIR: dir, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
        POOLSCOPE_IDLE_IN_TRANSACTION_THRESHOLD: '200' },
      killAfterMs: 60_000,
    });
    const line = run.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    // The script must exit by itself once its client and pool have ended.
    if (run.code !== 0 || line === undefined) throw new Error(`fixture exited ${run.code}:\n${run.stdout}\n${run.stderr}`);
    const raw = JSON.parse(line.slice('RESULT '.length));
    r = { standalone: parseExposition(raw.standalone), held: parseExposition(raw.held), released: parseExposition(raw.released), stderr: run.stderr };
  }, 300_000);

  const standaloneCounts = (s: Sample[]) => find(s, 'db_client_operation_duration_seconds_count')
    .filter((x) => x.labels.db_client_connection_pool_name === undefined)
    .map((x) => ({ error: x.labels.error_type ?? null, value: x.value }))
    .sort((a, b) => String(a.error).localeCompare(String(b.error)));

  it('times a standalone native client\'s queries, failures with their error type (bug: untimed until a pool of native clients existed)', () => {
    expect(standaloneCounts(r.standalone)).toEqual([{ error: '42P01', value: 1 }, { error: null, value: 2 }]);
  });

  it('reports a pool of native clients and times its queries', () => {
    const pool = { db_client_connection_pool_name: poolName };
    expect(value(r.held, 'db_client_connection_count', { ...pool, db_client_connection_state: 'used' })).toBe(1);
    expect(value(r.held, 'db_client_connection_max', pool)).toBe(2);
    expect(value(r.released, 'db_client_connection_count', { ...pool, db_client_connection_state: 'used' })).toBe(0);
    expect(value(r.released, 'db_client_connection_use_time_seconds_count', pool)).toBe(3);
    expect(find(r.released, 'db_client_operation_duration_seconds_count', pool).reduce((n, s) => n + s.value, 0)).toBe(5);
  });

  // Found while adding the line for pg versions without a transaction status: native clients have one (libpq's)
  // and were never flagged.
  it('flags a native connection left idle in an open transaction, and leaves nothing else on stderr', () => {
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^poolscope: pool "${poolName}": a checked-out connection has been idle in an open transaction for `));
  });
});
