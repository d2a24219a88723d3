import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { ROOT, waitFor } from '../helpers.js';

/** `npm run demo` (after the build): its own embedded PostgreSQL, the service under --import, the load phases. */
async function runDemo(env: Record<string, string>) {
  const appPort = await freePort();
  const metricsPort = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'demo', 'run.mjs')], {
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
});
