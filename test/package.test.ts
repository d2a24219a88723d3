import { build } from 'esbuild';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../src/index.js';
import { VERSION } from '../src/version.js';
import { ROOT, runToExit } from './helpers.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

describe('package', () => {
  it('keeps src/version.ts in step with package.json', () => {
    expect(VERSION).toBe(pkg.version);
  });

  it('exports "." and "./register" as built ESM with type declarations', () => {
    for (const entry of ['.', './register']) {
      const target = pkg.exports[entry];
      expect(existsSync(path.join(ROOT, target.default)), `${entry} → ${target.default}`).toBe(true);
      expect(existsSync(path.join(ROOT, target.types)), `${entry} → ${target.types}`).toBe(true);
    }
    expect(pkg.type).toBe('module');
  });

  it('declares pg and @opentelemetry/api as peer dependencies, not dependencies', () => {
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(['@opentelemetry/api', 'pg']);
    expect(pkg.dependencies['pg']).toBeUndefined();
    expect(pkg.dependencies['@opentelemetry/api']).toBeUndefined();
  });

  it('bundles neither @opentelemetry/api nor api-logs into dist (a bundled copy once lost an application of another API version its own metrics and trace context)', () => {
    const chunks = path.join(ROOT, 'dist', 'chunks');
    const files = [path.join(ROOT, 'dist', 'register.js'), path.join(ROOT, 'dist', 'index.js'),
      ...readdirSync(chunks).filter((f) => f.endsWith('.js')).map((f) => path.join(chunks, f))];
    const code = files.map((f) => readFileSync(f, 'utf8')).join('\n');
    // Texts only the API package's own global registry and diag have.
    expect(code).not.toContain('Attempted duplicate registration of API');
    expect(code).not.toContain('Cannot use diag as the logger');
    expect(code).toMatch(/from\s*"@opentelemetry\/api"/);
  });

  it('declares every package its built code loads (an undeclared @opentelemetry/api-logs once stopped applications from starting under pnpm without hoisting and Yarn Plug\'n\'Play)', async () => {
    const files: string[] = [];
    const walk = (dir: string): void => {
      for (const name of readdirSync(dir)) {
        const file = path.join(dir, name);
        if (statSync(file).isDirectory()) walk(file);
        else if (file.endsWith('.js')) files.push(file);
      }
    };
    walk(path.join(ROOT, 'dist'));
    // Static imports, import() and require() of literals, as esbuild resolves them...
    const result = await build({
      entryPoints: files, bundle: true, write: false, metafile: true, packages: 'external', platform: 'node',
      format: 'esm', outdir: path.join(ROOT, '.cache', 'dependency-scan'), logLevel: 'silent',
    });
    const specifiers = Object.values(result.metafile.inputs).flatMap((input) => input.imports)
      .filter((i) => i.external).map((i) => i.path);
    // ...and the packages loaded lazily by name through createRequire (exporters, tracing).
    for (const file of files) {
      for (const m of readFileSync(file, 'utf8').matchAll(/['"](@opentelemetry\/[\w.-]+|import-in-the-middle)['"]/g)) specifiers.push(m[1]!);
    }
    const packageOf = (s: string) => (s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!);
    // Named in dist but not loaded from Poolscope's own directory: the OTLP exporter's own dependencies, which
    // otlp-traces.ts resolves from the exporter's directory, and a meter name.
    const loadedElsewhere = ['@opentelemetry/otlp-exporter-base', '@opentelemetry/otlp-transformer', '@opentelemetry/instrumentation-pg'];
    const declared = new Set([...Object.keys(pkg.dependencies), ...Object.keys(pkg.peerDependencies), ...loadedElsewhere]);
    const undeclared = [...new Set(specifiers.map(packageOf))]
      .filter((name) => !name.startsWith('node:') && !builtinModules.includes(name) && !declared.has(name));
    expect(specifiers.length).toBeGreaterThan(10);
    expect(undeclared).toEqual([]);
  });

  it('ships no JavaScript that its entry points do not load (tsc\'s per-file output was once shipped: 140 dead files whose maps named sources not in the package)', () => {
    const dist = path.join(ROOT, 'dist');
    const shipped = (readdirSync(dist, { recursive: true }) as string[]).filter((f) => /\.js(\.map)?$/.test(f)).map((f) => path.join(dist, f));
    const loaded = new Set<string>();
    const visit = (file: string): void => {
      if (loaded.has(file)) return;
      loaded.add(file);
      if (existsSync(`${file}.map`)) {
        loaded.add(`${file}.map`);
        const map = JSON.parse(readFileSync(`${file}.map`, 'utf8')) as { sources: string[]; sourcesContent?: unknown[] };
        expect(map.sourcesContent?.length, `${file}.map embeds its sources`).toBe(map.sources.length);
      }
      for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*"(\.\.?\/[^"]+\.js)"/g)) visit(path.resolve(path.dirname(file), m[1]!));
    };
    visit(path.join(dist, 'register.js'));
    visit(path.join(dist, 'index.js'));
    expect(shipped.filter((f) => !loaded.has(f))).toEqual([]);
  });

  it('ships its license and the licenses of the code it bundles (the tarball had neither, and the bundle drops the notices in that code)', () => {
    expect(readFileSync(path.join(ROOT, 'LICENSE'), 'utf8')).toContain('Apache License');
    expect(pkg.license).toBe('Apache-2.0');
    const notices = readFileSync(path.join(ROOT, 'dist', 'THIRD-PARTY-LICENSES.txt'), 'utf8');
    const dist = path.join(ROOT, 'dist');
    const bundled = new Set<string>();
    for (const map of (readdirSync(dist, { recursive: true }) as string[]).filter((f) => f.endsWith('.js.map'))) {
      for (const source of (JSON.parse(readFileSync(path.join(dist, map), 'utf8')) as { sources: string[] }).sources) {
        const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(source);
        if (m !== null) bundled.add(m[1]!);
      }
    }
    expect(bundled.size).toBeGreaterThan(3);
    for (const name of bundled) expect(notices, name).toMatch(new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\S+ \\(`, 'm'));
    // Review: code a package vendors under its own license (shimmer in @opentelemetry/instrumentation) was left out.
    let vendored = 0;
    for (const name of bundled) {
      const dir = path.join(ROOT, 'node_modules', name, 'LICENSES');
      if (!existsSync(dir)) continue;
      for (const f of (readdirSync(dir, { recursive: true }) as string[]).filter((x) => /licen[cs]e/i.test(x))) {
        vendored++;
        expect(notices, `${name}/LICENSES/${f}`).toContain(readFileSync(path.join(dir, f), 'utf8').trim());
      }
    }
    expect(vendored).toBeGreaterThan(0);
  });

  it('leaves an application loaded with --require poolscope/register running, after one line saying to use --import (it died with ERR_REQUIRE_ASYNC_MODULE before its first line)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-require-'));
    mkdirSync(path.join(dir, 'node_modules'));
    symlinkSync(ROOT, path.join(dir, 'node_modules', 'poolscope'), 'dir');
    writeFileSync(path.join(dir, 'app.cjs'), "require('poolscope/register'); console.log('app ran');\n");
    for (const args of [['--require', 'poolscope/register', 'app.cjs'], ['app.cjs']]) {
      const r = await runToExit(process.execPath, args, { cwd: dir, env: { ...process.env, NODE_OPTIONS: '' } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('app ran\n');
      expect(r.stderr).toBe('poolscope: it is loaded with --import poolscope/register, not --require (or require()); ' +
        'Poolscope is not running in this process.\n');
    }
  });

  it('compiles in a strict TypeScript consumer with skipLibCheck off and exactOptionalPropertyTypes (options set to undefined were type errors there)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-ts-'));
    mkdirSync(path.join(dir, 'node_modules'));
    symlinkSync(ROOT, path.join(dir, 'node_modules', 'poolscope'), 'dir');
    for (const p of ['@types', '@opentelemetry', 'pg']) symlinkSync(path.join(ROOT, 'node_modules', p), path.join(dir, 'node_modules', p), 'dir');
    writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }');
    writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: {
      strict: true, skipLibCheck: false, exactOptionalPropertyTypes: true, module: 'nodenext', moduleResolution: 'nodenext',
      target: 'es2022', noEmit: true, types: ['node'] } }));
    writeFileSync(path.join(dir, 'app.ts'), [
      "import { startPoolscope, monitorPool, PoolscopeInstrumentation, type PoolscopeOptions } from 'poolscope';",
      "import 'poolscope/register';",
      'const traces: PoolscopeOptions[\'tracesExporter\'] = process.env.TRACES === \'1\' ? \'otlp\' : undefined;',
      'const ps = startPoolscope({ serviceName: undefined, port: undefined, tracesExporter: traces });',
      'monitorPool({}, { name: undefined, baseSize: undefined });',
      'new PoolscopeInstrumentation({ poolBaseSize: undefined });',
      'await ps.shutdown();',
    ].join('\n'));
    const r = await runToExit(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, env: process.env });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);
  }, 60_000);

  // Found by a review of the public API: a consumer whose own declarations inferred a type Poolscope returns
  // (normalizeConfig's result, the stuck rules on health, the registry, an observer's pool) failed with TS2742.
  it('names every type its public API hands out, so a consumer\'s declaration build can too (bug: TS2742 "cannot be named")', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'poolscope-dts-'));
    // As installed: the package's files, its dependencies beside it (not inside it, where a symlink to this
    // checkout would put them).
    const installed = path.join(dir, 'node_modules', 'poolscope');
    mkdirSync(installed, { recursive: true });
    cpSync(path.join(ROOT, 'package.json'), path.join(installed, 'package.json'));
    cpSync(path.join(ROOT, 'dist'), path.join(installed, 'dist'), { recursive: true });
    for (const p of ['@types', '@opentelemetry', 'pg']) symlinkSync(path.join(ROOT, 'node_modules', p), path.join(dir, 'node_modules', p), 'dir');
    writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }');
    writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: {
      strict: true, skipLibCheck: false, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022',
      declaration: true, emitDeclarationOnly: true, outDir: 'out', types: ['node'] } }));
    writeFileSync(path.join(dir, 'app.ts'), [
      "import * as p from 'poolscope';",
      'export const ps = p.startPoolscope();',
      'export const config = ps.config;',
      'export const otlp = { metrics: ps.config.otlpMetrics, traces: ps.config.otlpTraces };',
      'export const normalized = p.normalizeConfig({});',
      'export const poolHealth = ps.getPoolHealth();',
      'export const rules = poolHealth.stuckRules;',
      'export const reasons = poolHealth.pools.map((x) => x.stuckReason);',
      'export const serviceHealth = ps.getServiceHealth();',
      'export const handler = ps.healthHandler();',
      'export const scrape = ps.scrape();',
      'export const address = ps.serverAddress();',
      'export const instrumentation = new p.PoolscopeInstrumentation();',
      'export const parts = { registry: instrumentation.registry, producer: instrumentation.metricProducer, saw: instrumentation.sawQueries };',
      'export const global = { health: p.getPoolHealth(), running: p.getPoolscope(), monitor: p.monitorPool };',
      'export const names = { name: p.prometheusName, serialize: p.serializeResourceMetrics };',
      'export class Recorder implements p.PoolObserver {',
      '  seen: Array<{ pool: p.ObservedPool; target?: p.QueryTarget; reason?: p.CloseReason }> = [];',
      '  connectionClosed(pool: p.ObservedPool, reason: p.CloseReason) { this.seen.push({ pool, reason }); }',
      '  queryDone(pool: p.ObservedPool | undefined, target: p.QueryTarget) { if (pool) this.seen.push({ pool, target }); }',
      '}',
      'instrumentation.addRecorder(new Recorder());',
      'export const snapshots = instrumentation.registry.snapshots();',
    ].join('\n'));
    const r = await runToExit(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, env: process.env });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(existsSync(path.join(dir, 'out', 'app.d.ts'))).toBe(true);
  }, 60_000);

  it('shares one copy of its code between "." and "./register" (getPoolscope() from either is a Poolscope)', () => {
    const entry = (f: string) => readFileSync(path.join(ROOT, 'dist', f), 'utf8');
    const shared = (text: string) => new Set([...text.matchAll(/from\s*"\.\/chunks\/([^"]+)"/g)].map((m) => m[1]));
    const fromRegister = shared(entry('register.js'));
    expect([...shared(entry('index.js'))].some((c) => fromRegister.has(c))).toBe(true);
  });

  it('has a small, named public surface', () => {
    expect(Object.keys(api).sort()).toEqual([
      'Poolscope', 'PoolscopeInstrumentation', 'getPoolHealth', 'getPoolscope', 'monitorPool',
      'normalizeConfig', 'prometheusName', 'serializeResourceMetrics', 'startPoolscope',
    ]);
  });

  it('supports the Node versions CI tests', () => {
    expect(pkg.engines.node).toBe('>=20.6.0');
  });
});
