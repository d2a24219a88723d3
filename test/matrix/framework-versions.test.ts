// HTTP frameworks at the oldest versions claimed, installed at test time (the pinned ones are in
// test/http-routes.test.ts): the route each request is recorded under.
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { REGISTER, ROOT, runToExit } from '../helpers.js';
import { installedVersions } from './installed-versions.js';

describe('Fastify versions', () => {
  // Fastify before 4.10 has no request.routeOptions (found by a review of the supported versions: no route at all).
  it.each(['4.0.0', '4.9.2', '4.10.0'])('%s: requests are recorded under their prefixed route, and a 404 under none', async (version) => {
    const dir = installedVersions(`fastify-${version}`, { fastify: version });
    const app = path.join(dir, 'fastify-route.cjs');
    copyFileSync(path.join(ROOT, 'test', 'matrix', 'fixtures', 'fastify-route.cjs'), app);
    const port = await freePort();
    const r = await runToExit(process.execPath, ['--import', REGISTER, app], {
      env: {
        ...process.env, OTEL_EXPORTER_PROMETHEUS_HOST: '127.0.0.1', OTEL_EXPORTER_PROMETHEUS_PORT: String(port),
        POOLSCOPE_METRICS_URL: `http://127.0.0.1:${port}/metrics`,
      },
      killAfterMs: 30_000,
    });
    const line = /^RESULT (.*)$/m.exec(r.stdout);
    expect(line, r.stderr).not.toBeNull();
    expect(JSON.parse(line![1]!)).toEqual({ version, routes: { '/api/orders/:id': 2, '(none)': 1 } });
    expect(r.stderr).toBe('');
  }, 120_000);
});
