import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { ROOT, waitFor } from '../helpers.js';

const BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache', 'tools', 'bin');
const CONFIGS = ['otelcol-config.yaml', 'otelcol-agent.yaml', 'otelcol-gateway.yaml'];

function collector(): string {
  const file = path.join(BIN, 'poolscope-otelcol');
  if (!existsSync(file)) throw new Error(`${file} is missing: run scripts/build-tools.sh (or set POOLSCOPE_TOOLS_BIN)`);
  return file;
}

const children: ChildProcess[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGTERM');
    if (c.exitCode === null) await once(c, 'exit');
  }
  servers.splice(0).forEach((s) => s.close());
});

describe('OpenTelemetry Collector', () => {
  it('is built from the manifest with exactly the components the configs use', () => {
    const out = spawnSync(collector(), ['components'], { encoding: 'utf8' }).stdout;
    const names = (section: string) => [...(out.split(`${section}:`)[1] ?? '').split(/\n\S/)[0]!.matchAll(/- name: (\S+)/g)].map((m) => m[1]);
    // postgresql: the connection budget's server-side numbers (collector/otelcol-postgresql.yaml, test/stack/budget.test.ts).
    expect(names('receivers').sort()).toEqual(['otlp', 'postgresql']);
    expect(names('processors').sort()).toEqual(['batch', 'memory_limiter']);
    expect(names('exporters').sort()).toEqual(['debug', 'otlp_http']);
    expect(names('extensions')).toEqual(['health_check']);
    const manifest = readFileSync(path.join(ROOT, 'collector', 'builder-config.yaml'), 'utf8');
    expect(out).toContain(`version: ${/version:\s*(\S+)/.exec(manifest)![1]}`);
  });

  it.each(CONFIGS)('accepts the shipped %s (collector validate)', (config) => {
    const r = spawnSync(collector(), ['validate', '--config', path.join(ROOT, 'collector', config)], { encoding: 'utf8' });
    expect(r.stderr + r.stdout).not.toMatch(/error/i);
    expect(r.status).toBe(0);
  });

  it('rejects a config that names a component the build does not have', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'otelcol-'));
    try {
      const broken = readFileSync(path.join(ROOT, 'collector', 'otelcol-config.yaml'), 'utf8').replace('processors: [memory_limiter, batch]', 'processors: [memory_limiter, batch, attributes]');
      writeFileSync(path.join(dir, 'broken.yaml'), broken);
      expect(spawnSync(collector(), ['validate', '--config', path.join(dir, 'broken.yaml')]).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('carries a push from an agent through the gateway tier to Prometheus and the long-term store', async () => {
    const received: Record<string, number> = {};
    const sink = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        received[req.url!] = (received[req.url!] ?? 0) + 1;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
    });
    sink.listen(0, '127.0.0.1');
    await once(sink, 'listening');
    servers.push(sink);
    const sinkUrl = `http://127.0.0.1:${(sink.address() as { port: number }).port}`;
    const p = Object.fromEntries(await Promise.all(['gwHttp', 'gwGrpc', 'gwHealth', 'gwMetrics', 'agHttp', 'agGrpc', 'agHealth', 'agMetrics']
      .map(async (k) => [k, await freePort()] as const)));
    const run = (config: string, env: Record<string, string>) => {
      const child = spawn(collector(), ['--config', path.join(ROOT, 'collector', config)], { env: { ...process.env, ...env }, stdio: 'ignore' });
      children.push(child);
    };
    run('otelcol-gateway.yaml', {
      OTELCOL_HTTP_ENDPOINT: `127.0.0.1:${p.gwHttp}`, OTELCOL_GRPC_ENDPOINT: `127.0.0.1:${p.gwGrpc}`,
      OTELCOL_HEALTH_ENDPOINT: `127.0.0.1:${p.gwHealth}`, OTELCOL_METRICS_HOST: '127.0.0.1', OTELCOL_METRICS_PORT: String(p.gwMetrics),
      PROMETHEUS_OTLP_ENDPOINT: `${sinkUrl}/prometheus/api/v1/otlp/v1/metrics`, LONGTERM_OTLP_ENDPOINT: `${sinkUrl}/mimir/otlp/v1/metrics`,
    });
    run('otelcol-agent.yaml', {
      OTELCOL_HTTP_ENDPOINT: `127.0.0.1:${p.agHttp}`, OTELCOL_GRPC_ENDPOINT: `127.0.0.1:${p.agGrpc}`,
      OTELCOL_HEALTH_ENDPOINT: `127.0.0.1:${p.agHealth}`, OTELCOL_METRICS_HOST: '127.0.0.1', OTELCOL_METRICS_PORT: String(p.agMetrics),
      OTELCOL_GATEWAY_ENDPOINT: `http://127.0.0.1:${p.gwHttp}`,
    });
    for (const port of [p.gwHealth, p.agHealth]) {
      await waitFor(async () => ((await fetch(`http://127.0.0.1:${port}/`).catch(() => undefined))?.ok ? true : undefined), 20_000, 100);
    }
    const now = `${Date.now()}000000`;
    const push = await fetch(`http://127.0.0.1:${p.agHttp}/v1/metrics`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        resourceMetrics: [{
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'agent-test' } }] },
          scopeMetrics: [{ scope: { name: 'poolscope' }, metrics: [{ name: 'poolscope.pool.utilization', unit: '1', gauge: { dataPoints: [{ timeUnixNano: now, asDouble: 0.5 }] } }] }],
        }],
      }),
    });
    expect(push.status).toBe(200);
    await waitFor(() => (received['/prometheus/api/v1/otlp/v1/metrics'] && received['/mimir/otlp/v1/metrics'] ? true : undefined), 20_000, 100);
  });
});
