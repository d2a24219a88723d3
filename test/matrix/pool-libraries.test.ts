import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
// @ts-expect-error plain ESM helper
import { freePort } from '../../scripts/postgres.mjs';
import { find, killApps, ROOT, scrapeUrl, spawnApp, waitFor, type Sample, type SpawnedApp } from '../helpers.js';
import { engineExclusion } from './engines.js';
import { installedVersions } from './installed-versions.js';

const DATABASE_URL = inject('databaseUrl');
const OUT = path.join(ROOT, '.cache', 'matrix');
const NODE = process.versions.node;

interface Stack {
  name: string;
  /** Pinned packages whose `engines` decide whether the stack runs on this Node. */
  packages: string[];
  /**
   * Pools that are not pg-pool need an adapter in Poolscope (tarn, sequelize-pool, Slonik's own pool). Until it
   * is merged these tests are expected to fail; take the stack off this list when it lands.
   */
  awaitingAdapter?: true;
  /** Why the library cannot time out a queued acquire; its timeout phase is then skipped. */
  noQueueTimeout?: string;
  /**
   * Another version than the pinned one: these packages are installed (installedVersions) and the stack module
   * `module` (default: the name) runs from there, resolving them.
   */
  install?: Record<string, string>;
  module?: string;
}

const STACKS: Stack[] = [
  { name: 'knex', packages: ['knex', 'tarn'] },
  // The oldest knex supported: tarn 2 keeps its Pool in lib/, not dist/ (bug: knex 0.20 was never seen).
  { name: 'knex-0.20', packages: [], install: { knex: '0.20.15', pg: '8.23.1' }, module: 'knex' },
  { name: 'sequelize', packages: ['sequelize', 'sequelize-pool'] },
  // Connect timeouts of Slonik's pool are tested in test/adapters-slonik.test.ts.
  { name: 'slonik', packages: ['slonik'], noQueueTimeout: 'Slonik 49 queues acquires without a timeout (connectionTimeout bounds a new connection\'s connect only)' },
  { name: 'typeorm', packages: ['typeorm'] },
  { name: 'drizzle', packages: ['drizzle-orm'] },
  { name: 'kysely', packages: ['kysely'] },
  { name: 'pg-promise', packages: ['pg-promise'] },
  { name: 'prisma', packages: ['prisma', '@prisma/client', '@prisma/adapter-pg'] },
  { name: 'mikro-orm', packages: ['@mikro-orm/core', '@mikro-orm/postgresql'] },
];

// Saturation: MAX connections held in transactions, QUEUED more transactions waiting for one.
const MAX = 3;
const QUEUED = 2;
// Timeouts: a one-connection pool with a short acquire timeout; TIMED_OUT transactions give up waiting.
const SHORT_TIMEOUT_MS = 300;
const TIMED_OUT = 2;

const apps: SpawnedApp[] = [];
afterEach(async () => {
  await killApps(apps);
});

/** Generates the Prisma client offline (the CLI needs no engine binary for `generate`) into .cache/matrix. */
function generatePrismaClient(): string {
  const dir = path.join(OUT, 'prisma');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'schema.prisma'), [
    'generator client {', '  provider = "prisma-client-js"', '  output   = "./client"', '}',
    'datasource db {', '  provider = "postgresql"', '}',
    'model MatrixProbe {', '  id Int @id', '}', '',
  ].join('\n'));
  const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'prisma', 'build', 'index.js'), 'generate',
    '--schema', path.join(dir, 'schema.prisma')], {
    cwd: dir,
    encoding: 'utf8',
    // The CLI downloads its schema engine at start-up unless one is named; `generate` never runs it, and
    // install scripts (allowScripts) and binaries.prisma.sh are both out of reach here.
    env: { ...process.env, PRISMA_SCHEMA_ENGINE_BINARY: '/bin/false', PRISMA_HIDE_UPDATE_MESSAGE: '1', CHECKPOINT_DISABLE: '1' },
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`prisma generate failed: ${r.stdout}${r.stderr}`);
  return path.join(dir, 'client');
}

interface View { used: number; idle: number; pending: number; max: number }

function metricsView(samples: Sample[], pool: string): View | undefined {
  const one = (name: string, labels: Record<string, string> = {}) => {
    const found = find(samples, name, { db_client_connection_pool_name: pool, ...labels });
    if (found.length > 1) throw new Error(`${found.length} series of ${name} for ${pool}`);
    return found[0]?.value;
  };
  const max = one('db_client_connection_max');
  if (max === undefined) return undefined;
  return {
    used: one('db_client_connection_count', { db_client_connection_state: 'used' })!,
    idle: one('db_client_connection_count', { db_client_connection_state: 'idle' })!,
    pending: one('db_client_connection_pending_requests')!,
    max,
  };
}

async function startStack(stack: Stack, prismaClientDir: string | undefined) {
  const metricsPort = await freePort();
  let stackFile = path.join(ROOT, 'test', 'matrix', 'fixtures', 'stacks', `${stack.module ?? stack.name}.mjs`);
  if (stack.install !== undefined) {
    const dir = installedVersions(stack.name, stack.install);
    copyFileSync(stackFile, stackFile = path.join(dir, 'stack.mjs'));
  }
  const app = await spawnApp('../matrix/fixtures/app.mjs', {
    DATABASE_URL,
    MATRIX_STACK_FILE: stackFile,
    OTEL_EXPORTER_PROMETHEUS_PORT: String(metricsPort),
    ...(prismaClientDir ? { PRISMA_CLIENT_DIR: prismaClientDir } : {}),
  });
  apps.push(app);
  const appUrl = `http://127.0.0.1:${app.port}`;
  const telemetry = `http://127.0.0.1:${metricsPort}`;
  const call = async (method: 'GET' | 'POST', route: string) => {
    const res = await fetch(`${appUrl}${route}`, { method });
    if (res.status !== 200) throw new Error(`${method} ${route}: HTTP ${res.status} ${await res.text()}\n${app.stderr()}`);
    return res.json() as Promise<any>;
  };
  /** The library's counters, /metrics and /health/database read between two identical counter readings. */
  const consistentView = async (pool: string) => {
    for (let attempt = 0; ; attempt++) {
      const before = await call('GET', '/counters') as View;
      const metrics = metricsView(await scrapeUrl(`${telemetry}/metrics`), pool);
      const health = (await (await fetch(`${telemetry}/health/database`)).json()) as { pools: Array<View & { name: string }> };
      const after = await call('GET', '/counters') as View;
      if (JSON.stringify(before) === JSON.stringify(after) || attempt === 5) {
        const h = health.pools.find((p) => p.name === pool);
        return { library: after, metrics, health: h && { used: h.used, idle: h.idle, pending: h.pending, max: h.max }, raw: health };
      }
    }
  };
  return { app, call, telemetry, consistentView };
}

describe('pool libraries under node --import dist/register.js', () => {
  let prismaClientDir: string | undefined;
  const pool = new URL(DATABASE_URL);
  // The contract's default pool name: host:port/database from the library's connection config.
  const poolName = `${pool.hostname}:${pool.port}${pool.pathname}`;

  beforeAll(() => {
    mkdirSync(OUT, { recursive: true });
    const prisma = STACKS.find((s) => s.name === 'prisma')!;
    if (engineExclusion(prisma.packages) === undefined) prismaClientDir = generatePrismaClient();
  });

  for (const stack of STACKS) {
    const excluded = engineExclusion(stack.packages);
    const title = `${stack.name}: saturated through its own API, /metrics and /health/database agree with its counters; ` +
      'timeouts counted once; series gone after close' + (stack.awaitingAdapter ? ' [awaits its pool adapter]' : '');
    if (excluded !== undefined) {
      it.skip(`${stack.name}: skipped on Node ${NODE} (${excluded})`, () => {});
      continue;
    }
    it(title, async () => {
      const { app, call, telemetry, consistentView } = await startStack(stack, prismaClientDir);

      // Saturate: MAX transactions hold every connection, QUEUED more wait for one.
      await call('POST', `/open?max=${MAX}&timeout=60000`);
      await call('POST', `/hold?n=${MAX}`);
      await call('POST', `/queue?n=${QUEUED}`);
      await waitFor(async () => ((await call('GET', '/counters')).pending === QUEUED ? true : undefined), 10_000);
      const saturated = await consistentView(poolName);
      expect(saturated.library).toEqual({ used: MAX, idle: 0, pending: QUEUED, max: MAX });
      expect(saturated.metrics, `pools seen: ${JSON.stringify(saturated.raw.pools.map((p) => p.name))}`).toEqual(saturated.library);
      expect(saturated.health).toEqual(saturated.library);
      expect(saturated.raw.pools.find((p) => p.name === poolName)).toMatchObject({ utilization: 1, status: 'critical' });

      // Release: every transaction completes and the pool goes back to idle.
      const released = await call('POST', '/release');
      expect(released).toEqual({ ok: MAX + QUEUED, timeouts: 0, errors: [] });
      await waitFor(async () => {
        const c = await call('GET', '/counters');
        return c.used === 0 && c.pending === 0 ? true : undefined;
      }, 10_000);
      const idle = await consistentView(poolName);
      expect(idle.library).toMatchObject({ used: 0, pending: 0, max: MAX });
      expect(idle.library.idle).toBeGreaterThan(0);
      expect(idle.metrics).toEqual(idle.library);
      expect(idle.health).toEqual(idle.library);

      // Every SELECT 1 ran on this pool (the libraries add BEGIN/COMMIT and their own start-up queries).
      const afterSaturation = await scrapeUrl(`${telemetry}/metrics`);
      const operations = find(afterSaturation, 'db_client_operation_duration_seconds_count', { db_client_connection_pool_name: poolName })
        .reduce((sum, s) => sum + s.value, 0);
      expect(operations).toBeGreaterThanOrEqual(MAX + QUEUED);

      // Close through the library: the pool's series and its health entry are gone.
      await call('POST', '/close');
      const closed = await consistentViewAfterClose(telemetry, poolName);
      expect(closed.series).toEqual([]);
      expect(closed.healthNames).not.toContain(poolName);

      let timeoutRow: { library: number; metrics: number } | string = `n/a: ${stack.noQueueTimeout}`;
      if (stack.noQueueTimeout === undefined) {
        // Timeouts: a one-connection pool, held, and TIMED_OUT acquires that give up after SHORT_TIMEOUT_MS.
        await call('POST', `/open?max=1&timeout=${SHORT_TIMEOUT_MS}`);
        await call('POST', '/hold?n=1');
        await call('POST', `/queue?n=${TIMED_OUT}`);
        await waitFor(async () => ((await call('GET', '/settled')).timeouts === TIMED_OUT ? true : undefined), 15_000);
        const timeoutSamples = await scrapeUrl(`${telemetry}/metrics`);
        const timeouts = find(timeoutSamples, 'db_client_connection_timeouts_total', { db_client_connection_pool_name: poolName });
        const outcome = await call('POST', '/release');
        expect(outcome).toEqual({ ok: 1, timeouts: TIMED_OUT, errors: [] });
        expect(timeouts.map((s) => s.value)).toEqual([TIMED_OUT]);
        await call('POST', '/close');
        timeoutRow = { library: outcome.timeouts, metrics: timeouts[0]!.value };
      }
      // Nothing from the libraries or the runtime; Poolscope's own saturation and stuck (timeouts) warnings are expected.
      expect(app.stderr().split('\n').filter((l) => l !== '' && !/^poolscope: pool ".*" is (at 100% utilization|stuck \(acquire_timeouts\))/.test(l))).toEqual([]);

      const row = {
        node: NODE, stack: stack.name, pool: poolName,
        saturated: { metrics: saturated.metrics, health: saturated.health, library: saturated.library },
        idle: idle.metrics, operations, timeouts: timeoutRow,
      };
      appendFileSync(path.join(OUT, 'saturation.jsonl'), `${JSON.stringify(row)}\n`);
      console.log(`matrix node ${NODE} ${stack.name}: saturated used ${row.saturated.metrics!.used}/${row.saturated.metrics!.max} ` +
        `idle ${row.saturated.metrics!.idle} pending ${row.saturated.metrics!.pending} (library ${JSON.stringify(row.saturated.library)}, ` +
        `health ${JSON.stringify(row.saturated.health)}); idle after release ${row.idle!.idle}; operations ${operations}; ` +
        `timeouts ${typeof row.timeouts === 'string' ? row.timeouts : `${row.timeouts.metrics}/${row.timeouts.library}`}`);
    });
  }
});

/** After close: any connection series still carrying the pool's name, and the pools /health/database lists. */
async function consistentViewAfterClose(telemetry: string, pool: string) {
  const samples = await scrapeUrl(`${telemetry}/metrics`);
  const series = samples.filter((s) => s.labels.db_client_connection_pool_name === pool && s.name.startsWith('db_client_connection_')
    && !s.name.startsWith('db_client_connection_timeouts') && !/_(bucket|count|sum)$/.test(s.name)).map((s) => s.name);
  const health = (await (await fetch(`${telemetry}/health/database`)).json()) as { pools: Array<{ name: string }> };
  return { series, healthNames: health.pools.map((p) => p.name) };
}
