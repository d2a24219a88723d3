// Poolscope beside an application's own OpenTelemetry SDK (NodeSDK with instrumentation-pg and -http, as many
// services already run), loaded before the preload (`--require`) or in the application's first line: the
// application's SDK receives what it receives without the preload, and Poolscope still counts every query.
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { REGISTER, ROOT, runToExit } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const SDK_FIRST = ['--require', path.join(FIXTURES, 'own-sdk.cjs')];
const PRELOAD = ['--import', REGISTER];
const IN_APP = { OWN_SDK_IN_APP: '1' };

interface Received { spans: Record<string, number>; metrics: Record<string, number> }
interface Run { code: number | null; stdout: string; stderr: string; own: Received; poolscopeQueries?: number }

/** Runs the application (own-sdk-app.cjs) with `args` before it; with the preload, Poolscope on a port of its own. */
async function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const port = await freePort();
  const preloaded = args.includes(REGISTER);
  const r = await runToExit(process.execPath, [...args, path.join(FIXTURES, 'own-sdk-app.cjs')], {
    env: {
      ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
      ...(preloaded ? { POOLSCOPE_METRICS_URL: `http://127.0.0.1:${port}/metrics` } : {}),
      ...env,
    },
    killAfterMs: 30_000,
  });
  const line = /^RESULT (.*)$/m.exec(r.stdout);
  if (line === null) throw new Error(`no result (exit ${r.code}): ${r.stderr}`);
  return { ...r, ...(JSON.parse(line[1]!) as { own: Received; poolscopeQueries?: number }) };
}

describe('an application\'s own OpenTelemetry SDK under the preload', () => {
  let baseline: Received;
  beforeAll(async () => {
    baseline = (await run(SDK_FIRST)).own;
    // What the application does: three requests, four queries, one connection, three orders.
    expect(baseline.spans).toEqual({ 'pg.connect': 1, 'pg-pool.connect': 4, 'pg.query:SELECT postgres': 4, GET: 3 });
    expect(baseline.metrics).toMatchObject({ 'db.client.operation.duration': 4, 'http.server.request.duration': 3, 'shop.orders': 3 });
    expect((await run(SDK_FIRST, IN_APP)).own).toEqual(baseline);
  }, 60_000);

  describe('loaded before Poolscope (--require)', () => {
    let preloaded: Run;
    beforeAll(async () => {
      preloaded = await run([...SDK_FIRST, ...PRELOAD]);
    }, 60_000);

    it('the application\'s instrumentation-pg recorded every query and connect twice (Poolscope\'s wrapper hid its first patch from its second)', () => {
      expect(preloaded.own.spans).toEqual(baseline.spans);
      expect(preloaded.own.metrics['db.client.operation.duration']).toBe(4);
      expect(preloaded.poolscopeQueries).toBe(4);
    });

    it('Poolscope\'s scrapes and health probes were traced and timed as the application\'s own requests', () => {
      expect(preloaded.own.spans.GET).toBe(3);
      expect(preloaded.own.metrics['http.server.request.duration']).toBe(3);
    });

    it('says nothing at the default log level: Poolscope keeps its own meter provider and leaves the global to that SDK (was: an error stack)', () => {
      expect(preloaded.own).toEqual(baseline);
      expect(preloaded.stderr).toBe('');
      expect(preloaded.code).toBe(0);
    });

    it('with OTEL_TRACES_EXPORTER set (read by both), Poolscope leaves tracing to that SDK: no second span of each request', async () => {
      const r = await run([...SDK_FIRST, ...PRELOAD], { OTEL_TRACES_EXPORTER: 'console', OTEL_LOG_LEVEL: 'info' });
      expect(r.own).toEqual(baseline);
      expect(r.poolscopeQueries).toBe(4);
      // Poolscope's console exporter would print its spans on stdout.
      expect(r.stdout).not.toMatch(/traceId/);
      expect(r.stderr).toContain('another OpenTelemetry SDK traces this process, so Poolscope\'s traces stay off');
    }, 60_000);
  });

  describe('started in the application\'s first line, after Poolscope', () => {
    it('the application\'s SDK received none of its own metrics: Poolscope held the global meter provider, and its registration was refused', async () => {
      const r = await run(PRELOAD, IN_APP);
      expect(r.own).toEqual(baseline);
      expect(r.poolscopeQueries).toBe(4);
      expect(r.stderr).toBe('');
    }, 60_000);

    it('tracing registered after Poolscope\'s traces started is refused with one line naming the fix, not an error stack for each global', async () => {
      const r = await run(PRELOAD, { ...IN_APP, OTEL_TRACES_EXPORTER: 'console' });
      // Its metrics still reach it (its HTTP instrumentation does not: Poolscope's traces loaded `http` first).
      expect(r.own.metrics).toMatchObject({ 'db.client.operation.duration': 4, 'shop.orders': 3 });
      expect(r.poolscopeQueries).toBe(4);
      expect(r.stderr.trim().split('\n')).toEqual([
        expect.stringMatching(/^poolscope: the application registered an OpenTelemetry SDK's tracing after Poolscope's traces started.*Start that SDK before Poolscope/),
      ]);
    }, 60_000);
  });
});

describe('another agent\'s ES-module hooks beside Poolscope\'s', () => {
  const agent = ['--import', path.join(FIXTURES, 'other-esm-agent.mjs')];
  const script = path.join(FIXTURES, 'short-script.mjs');
  const env = { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0' };

  // On Node 20 both hooks run in the loader thread; where Node has in-thread hooks Poolscope registers none there.
  it.each([['before', [...agent, ...PRELOAD]], ['after', [...PRELOAD, ...agent]]])(
    'an agent registered %s Poolscope made import-in-the-middle warn that its hook had already been initialized',
    async (_order, args) => {
      const r = await runToExit(process.execPath, [...args, script], { env, killAfterMs: 30_000 });
      expect(r.stdout).toContain('answer=42');
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }, 60_000);
});
