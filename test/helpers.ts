import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { createLogger } from '../src/logger.js';
import { PoolscopeInstrumentation, type PoolscopeInstrumentationConfig } from '../src/instrumentation.js';
import { PoolRegistry } from '../src/pools/registry.js';
import { PrometheusPullReader } from '../src/export/prometheus/reader.js';
import { dropEndedPoolSeries } from '../src/metrics/pool-metrics.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The preload under test; POOLSCOPE_DIST=/path/to/dist runs the tests against another build (to see them fail on it). */
export const REGISTER = path.join(process.env.POOLSCOPE_DIST ?? path.join(ROOT, 'dist'), 'register.js');

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition into samples. */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return samples;
}

/** The one sample with this name whose labels include `labels`; throws if there is not exactly one. */
export function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = find(samples, name, labels);
  if (found.length !== 1) {
    throw new Error(`expected one ${name}${JSON.stringify(labels)}, found ${found.length}`);
  }
  return found[0]!.value;
}

export function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** An in-process Poolscope instrumentation with a pull reader, for tests that build pools themselves. */
export function inProcess(config: PoolscopeInstrumentationConfig = {}) {
  const registry = new PoolRegistry();
  const instrumentation = new PoolscopeInstrumentation(config, registry);
  const producers = instrumentation.metricProducer === undefined ? [] : [instrumentation.metricProducer];
  const reader = new PrometheusPullReader(createLogger(), dropEndedPoolSeries(registry), producers);
  const meterProvider = new MeterProvider({ readers: [reader] });
  instrumentation.setMeterProvider(meterProvider);
  return {
    registry,
    instrumentation,
    scrapeText: () => reader.scrape(),
    scrape: async () => parseExposition(await reader.scrape()),
    close: async () => {
      instrumentation.disable();
      await meterProvider.shutdown();
    },
  };
}

export interface SpawnedApp {
  child: ChildProcess;
  port: number;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs `node --import dist/register.js <fixture>` and waits for its `LISTENING <port>` line. A fixture given
 * by absolute path runs from its own directory (see standaloneAppDir).
 */
export async function spawnApp(fixture: string, env: Record<string, string>, args: string[] = ['--import', REGISTER]): Promise<SpawnedApp> {
  const absolute = path.isAbsolute(fixture);
  const child = spawn(process.execPath, [...args, absolute ? fixture : path.join(ROOT, 'test', 'fixtures', fixture)], {
    cwd: absolute ? path.dirname(fixture) : undefined,
    env: { ...process.env, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { err += d; });
  const exit = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`app did not start: ${err}`)), 20_000);
    const check = () => {
      const m = /LISTENING (\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    };
    child.stdout!.on('data', check);
    void exit.then(() => { clearTimeout(timer); reject(new Error(`app exited before listening: ${err}`)); });
  });
  return { child, port, stderr: () => err, stdout: () => out, exit };
}

/**
 * Runs a process until it exits by itself (killed after `killAfterMs`, if given) and collects its output: for
 * scripts that end, where spawnApp waits for a server to listen.
 */
export async function runToExit(command: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string; killAfterMs?: number }):
  Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => { stdout += d; });
  child.stderr!.on('data', (d) => { stderr += d; });
  const killer = options.killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.killAfterMs);
  const [code] = await once(child, 'exit');
  clearTimeout(killer);
  return { code: code as number | null, stdout, stderr };
}

/** When each telemetry server was last scraped by scrapeUrl(), by origin. */
const lastScrape = new Map<string, number>();
/**
 * Above 10 scrapes in a second the telemetry server answers from its flood cache (src/server/shared-scrape.ts),
 * which may predate what a test just did. A test polling with waitFor()'s 50 ms step reached that on a fast
 * machine and then asserted on a stale body; scrapes through here are spaced so they never count as a flood.
 */
const SCRAPE_SPACING_MS = 110;

export async function scrapeUrl(url: string): Promise<Sample[]> {
  const origin = new URL(url).origin;
  const wait = (lastScrape.get(origin) ?? -Infinity) + SCRAPE_SPACING_MS - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  lastScrape.set(origin, performance.now());
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`scrape ${url}: HTTP ${res.status}`);
  return parseExposition(await res.text());
}

export function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      try {
        const v = await fn();
        if (v !== undefined && v !== false) return resolve(v);
      } catch (e) {
        if (Date.now() > deadline) return reject(e);
      }
      if (Date.now() > deadline) return reject(new Error('waitFor timed out'));
      setTimeout(tick, stepMs);
    };
    void tick();
  });
}

/**
 * Every panel query of the shipped Grafana dashboards, with the template variables filled in as a user's
 * selection would: `job` with the given regex, pool/route/instance with `.+`, the interval variables with
 * fixed windows. For the stack tests that prove each panel has data in the real Prometheus.
 */
export function dashboardPanelQueries(jobRegex: string): Array<{ where: string; expr: string }> {
  const dir = path.join(ROOT, 'grafana', 'dashboards');
  const out: Array<{ where: string; expr: string }> = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const dashboard = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
    const panels = (dashboard.panels ?? []).flatMap((p: { panels?: unknown[] }) => [p, ...(p.panels ?? [])]);
    for (const panel of panels) {
      for (const target of panel.targets ?? []) {
        if (typeof target.expr !== 'string' || target.expr === '') continue;
        out.push({
          where: `${file} / ${panel.title}`,
          expr: target.expr
            .replaceAll('$__rate_interval', '1m')
            .replaceAll('$__interval', '15s')
            .replaceAll('$__range', '10m')
            .replace(/\$\{?job(?::\w+)?\}?/g, jobRegex)
            .replace(/\$\{?pool(?::\w+)?\}?/g, '.+')
            .replace(/\$\{?route(?::\w+)?\}?/g, '.+')
            .replace(/\$\{?instance(?::\w+)?\}?/g, '.+'),
        });
      }
    }
  }
  return out;
}

/**
 * A stand-in OTLP/HTTP receiver that decodes OTLP/JSON (the real collector is exercised by the stack's
 * end-to-end test); the server goes into `servers` for the caller to close.
 */
export async function otlpReceiver(servers: Server[]): Promise<{ bodies: any[]; url: string }> {
  const bodies: any[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let data = '';
    req.on('data', (d) => { data += d; });
    req.on('end', () => {
      bodies.push({ path: req.url, body: JSON.parse(data) });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  const port = (server.address() as { port: number }).port;
  return { bodies, url: `http://127.0.0.1:${port}` };
}

/**
 * A directory outside the repository holding copies of the given fixtures and only the named packages in its
 * node_modules, as a service's would. Fixtures run from the repository see its node_modules, where Slonik (a
 * dev dependency) starts the ES-module loader thread on runtimes without in-thread hooks (src/register.ts).
 */
export function standaloneAppDir(fixtures: string[], packages: string[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-app-'));
  for (const p of packages) {
    mkdirSync(path.dirname(path.join(dir, 'node_modules', p)), { recursive: true });
    symlinkSync(path.join(ROOT, 'node_modules', p), path.join(dir, 'node_modules', p), 'dir');
  }
  for (const f of fixtures) copyFileSync(path.join(ROOT, 'test', 'fixtures', f), path.join(dir, f));
  return dir;
}

/** Installs packages (`name@version`) from the registry under `prefix`, as a test's scratch copy: no scripts, no lock. */
export async function installUnder(prefix: string, specs: string[]): Promise<void> {
  await promisify(execFile)('npm', ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--prefer-offline',
    '--no-audit', '--no-fund', '--ignore-scripts', ...specs], { timeout: 120_000 });
}

/**
 * Express 4 and Fastify 4 are installed here as npm aliases (express-4, fastify-4); hooks match modules
 * by package name, as an application would install them, so the tests load them from a scratch prefix
 * where they are `express` and `fastify`, at the aliases' versions. Returns the module's directory.
 */
export async function legacyModule(name: 'express' | 'fastify'): Promise<string> {
  const prefix = path.join(ROOT, '.cache', 'routes-legacy');
  const version = (pkg: string) => JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')).version as string;
  const want = { express: version(path.join(ROOT, 'node_modules', 'express-4')), fastify: version(path.join(ROOT, 'node_modules', 'fastify-4')) };
  const have = (n: 'express' | 'fastify') => {
    const dir = path.join(prefix, 'node_modules', n);
    return existsSync(path.join(dir, 'package.json')) && version(dir) === want[n];
  };
  if (!have('express') || !have('fastify')) await installUnder(prefix, [`express@${want.express}`, `fastify@${want.fastify}`]);
  if (!have(name)) throw new Error(`${name}@${want[name]} could not be installed under ${prefix}`);
  return path.join(prefix, 'node_modules', name);
}

/** A Poolscope logger whose warnings and infos are kept, in order, instead of going to diag. */
export function capturedLog(): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  const keep = (m: string) => { lines.push(m); };
  const sink = { warn: keep, info: keep, error: () => undefined, debug: () => undefined, verbose: () => undefined };
  return { lines, logger: createLogger(60_000, sink) };
}

/** Kills what is still running of `apps` (and empties it): for afterEach. */
/**
 * Ends every app still running: with SIGKILL, or with `signal` first (SIGKILL 5 s later). A launcher that starts
 * the service as its child forwards SIGTERM; killed with SIGKILL, it left that child running after the suite.
 */
export async function killApps(apps: SpawnedApp[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  for (const app of apps.splice(0)) {
    if (app.child.exitCode === null && app.child.signalCode === null) {
      app.child.kill(signal);
      const fallback = signal === 'SIGKILL' ? undefined : setTimeout(() => app.child.kill('SIGKILL'), 5_000);
      await app.exit;
      clearTimeout(fallback);
    }
  }
}
