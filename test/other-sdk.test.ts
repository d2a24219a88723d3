// Poolscope beside an application's own OpenTelemetry SDK (NodeSDK with instrumentation-pg and -http, as many
// services already run), loaded before the preload (`--require`) or in the application's first line: the
// application's SDK receives what it receives without the preload, and Poolscope still counts every query.
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';
import { installUnder, REGISTER, ROOT, runToExit, standaloneAppDir } from './helpers.js';

const DATABASE_URL = inject('databaseUrl');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const SDK_FIRST = ['--require', path.join(FIXTURES, 'own-sdk.cjs')];
const PRELOAD = ['--import', REGISTER];
const IN_APP = { OWN_SDK_IN_APP: '1' };

interface Received { spans: Record<string, number>; metrics: Record<string, number>; earlyCallbacks: number }
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
    expect(baseline.earlyCallbacks).toBe(0);
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

    // A coexistence review found the instruments such an SDK's instrumentations made before it started (on
    // Poolscope's global) collected by every Poolscope scrape: runtime-node's event-loop utilization read 1.
    it('instruments made through the global before the application\'s SDK started are not Poolscope\'s to collect (their callbacks ran at every scrape)', async () => {
      const r = await run(PRELOAD, IN_APP);
      expect(r.own.earlyCallbacks).toBe(0);
      expect(r.poolscopeQueries).toBe(4);
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

/** A real @opentelemetry/api of another version than Poolscope's, installed once under .cache. */
async function otherApiCopy(): Promise<string> {
  const version = '1.8.0';
  const prefix = path.join(ROOT, '.cache', `api-${version}`);
  const dir = path.join(prefix, 'node_modules', '@opentelemetry', 'api');
  if (!existsSync(path.join(dir, 'package.json'))) await installUnder(prefix, [`@opentelemetry/api@${version}`]);
  const ours = (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', '@opentelemetry', 'api', 'package.json'), 'utf8')) as { version: string }).version;
  expect(ours).not.toBe(version); // else this copy would not be another version
  return dir;
}

describe('Poolscope run from outside the application\'s tree, with another @opentelemetry/api version than the application\'s', () => {
  it('every global the application\'s SDK registered was refused: Poolscope had claimed the API for its version', async () => {
    const app = standaloneAppDir(['own-api-copy.cjs'], ['pg', 'pg-pool', 'pg-protocol', 'pg-types', 'pg-connection-string', 'pgpass', 'pg-int8',
      'postgres-array', 'postgres-bytea', 'postgres-date', 'postgres-interval', 'xtend', 'split2', 'pg-cloudflare']
      .filter((p) => existsSync(path.join(ROOT, 'node_modules', p))));
    mkdirSync(path.join(app, 'node_modules', '@opentelemetry'), { recursive: true });
    symlinkSync(await otherApiCopy(), path.join(app, 'node_modules', '@opentelemetry', 'api'), 'dir');
    const port = await freePort();
    const r = await runToExit(process.execPath, [...PRELOAD, path.join(app, 'own-api-copy.cjs')], {
      cwd: app,
      env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
        POOLSCOPE_METRICS_URL: `http://127.0.0.1:${port}/metrics`, OTEL_TRACES_EXPORTER: 'console' },
      killAfterMs: 30_000,
    });
    const line = /^RESULT (.*)$/m.exec(r.stdout);
    expect(line, r.stderr).not.toBeNull();
    expect(JSON.parse(line![1]!)).toEqual({ registered: { version: '1.8.0', diag: true, metrics: true, trace: true }, poolscopeQueries: 2 });
    // Poolscope's own lines still reach stderr, without a diag logger of its own registered.
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^poolscope: traces are off: the application has its own copy of @opentelemetry\/api/)]);
  }, 180_000);
});

/** Runs a fixture without the preload and with it (after `before`, another agent's preload, say), same environment. */
async function withAndWithoutPreload(fixture: string, env: Record<string, string> = {}, before: string[] = []) {
  const options = { env: { ...process.env, DATABASE_URL, OTEL_EXPORTER_PROMETHEUS_PORT: '0', ...env }, killAfterMs: 30_000 };
  const script = path.join(FIXTURES, fixture);
  const baseline = await runToExit(process.execPath, [...before, script], options);
  const preloaded = await runToExit(process.execPath, [...before, ...PRELOAD, script], options);
  return { baseline, preloaded };
}

describe('an application\'s own diag logger', () => {
  it('setting it made the API print "Current logger will be overwritten" with a stack through both loggers', async () => {
    const { baseline, preloaded } = await withAndWithoutPreload('diag-logger-app.cjs');
    expect(baseline).toMatchObject({ code: 0, stdout: 'done\n', stderr: '' });
    expect(preloaded).toEqual(baseline);
  }, 60_000);
});

describe('an agent that wraps http.Server twice, once per module hook', () => {
  it.each([
    ['with shimmer (instrumentation-http, Sentry)', 'double-hook-agent.cjs'],
    ['with a shimmer marking by symbol (Elastic APM)', 'symbol-mark-agent.cjs'],
  ])('%s saw every request twice: Poolscope\'s emit wrapper between its two layers hid the first from the second', async (_kind, agent) => {
    const file = path.join(FIXTURES, agent);
    const { baseline, preloaded } = await withAndWithoutPreload('double-hook-app.cjs', { AGENT: file }, ['--require', file]);
    expect(baseline.stdout).toBe('requests seen by the agent: 1\n');
    expect(preloaded).toEqual(baseline);
  }, 60_000);
});

describe('an application that releases the tracing globals and registers its own', () => {
  it('was refused while Poolscope\'s traces ran, though it had released Poolscope\'s registration itself', async () => {
    const { baseline, preloaded } = await withAndWithoutPreload('tracing-after-disable.cjs', { OTEL_TRACES_EXPORTER: 'console' });
    expect(JSON.parse(baseline.stdout)).toEqual({ tracer: true, context: true, delegate: true, setter: ['setGlobalTracerProvider', 1] });
    expect(preloaded).toEqual(baseline);
  }, 60_000);
});

describe('an agent that copies the properties of what it wraps', () => {
  it('was skipped on every checkout: it copied the mark by which Poolscope steps past its own pg-pool wrapper (dd-trace lost its pg.pool.acquire spans)', async () => {
    const { baseline, preloaded } = await withAndWithoutPreload('copying-agent-app.cjs');
    expect(baseline.stdout).toBe('checkouts seen by the agent: 3\n');
    expect(preloaded).toEqual(baseline);
  }, 60_000);
});
