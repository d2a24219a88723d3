import { createRequire } from 'node:module';
import { lazyAttachOnConnect } from './pg-pool.js';
import { patchClientClass } from './pg-client.js';
import type { AdapterContext } from './shared.js';
import { processState } from '../process-state.js';

const require = createRequire(import.meta.url);

const PG_POOL = /[\\/]node_modules[\\/]pg-pool[\\/]index\.js$/;
const PG_CLIENT = /[\\/]node_modules[\\/]pg[\\/]lib[\\/]client\.js$/;
const UNREACHABLE = [
  { file: /[\\/]node_modules[\\/]tarn[\\/]dist[\\/]Pool\.js$/, library: 'tarn (knex)' },
  { file: /[\\/]node_modules[\\/]sequelize-pool[\\/]lib[\\/]Pool\.js$/, library: 'sequelize-pool (Sequelize)' },
];

/**
 * How loaded modules came to be missed by the module hooks: loaded before Poolscope started (a programmatic
 * start after `import pg`, or a restart after shutdown()), or loaded where the hooks cannot see (see
 * {@link adoptUnhookedModules}).
 */
export type MissedBy = 'earlier-start' | 'unseen-loader';

const SAID: Record<MissedBy, { pg: string; pools: (libraries: string) => string }> = {
  'earlier-start': {
    pg: 'poolscope: pg was loaded before Poolscope started; its queries are measured and its pools are attached on ' +
      'their next connect() (start with --import to see them from construction).',
    pools: (libraries) => `poolscope: ${libraries} was loaded before Poolscope started; its existing pools are not ` +
      'monitored. Start with --import, or pass each pool to monitorPool(pool).',
  },
  'unseen-loader': {
    pg: 'poolscope: pg was loaded where Poolscope\'s module hooks could not see it (Node compiled it with its ' +
      'ES-module loader: a loader that hands Node CommonJS sources, such as Yarn Plug\'n\'Play\'s on Node 22, or ' +
      '--experimental-default-type=module); from now on its queries are measured and its pools are attached on ' +
      'their next connect().',
    pools: (libraries) => `poolscope: ${libraries} was loaded where Poolscope's module hooks could not see it; its ` +
      'pools are not monitored: pass each pool to monitorPool(pool).',
  },
};

/** Libraries said to be unreachable, per cause: the modules are looked for again at a restart or a later sample. */
const missedSaid = new Set<string>();

/**
 * pg's Client and pg-pool's Pool found in Node's module cache are patched where they are, on their prototypes:
 * queries are measured and pools are attached on their next connect(). tarn's and sequelize-pool's pools
 * cannot be found that way; that is said once, with what to do.
 */
export function attachLoadedModules(ctx: AdapterContext, missedBy: MissedBy = 'earlier-start'): void {
  let found = false;
  const missed = new Set<string>();
  for (const [file, mod] of Object.entries(require.cache)) {
    if (mod === undefined) continue;
    if (PG_CLIENT.test(file)) {
      patchClientClass(mod.exports);
      found = true;
    } else if (PG_POOL.test(file)) {
      lazyAttachOnConnect(mod.exports);
      found = true;
    } else {
      for (const u of UNREACHABLE) {
        if (u.file.test(file) && !isHooked(mod.exports) && !missedSaid.has(`${missedBy} ${u.library}`)) missed.add(u.library);
      }
    }
  }
  // Said once per process: a restart after shutdown() finds the same modules again.
  if (found && !processState.lateStartWarned) {
    processState.lateStartWarned = true;
    ctx.log.warn('late:pg', SAID[missedBy].pg);
  }
  if (missed.size > 0) {
    for (const library of missed) missedSaid.add(`${missedBy} ${library}`);
    ctx.log.warn('late:pools', SAID[missedBy].pools([...missed].join(' and ')));
  }
}

/**
 * pg loaded although the module hooks never saw it load. Node compiles a CommonJS file with its ES-module
 * loader's own `require` where a loader hands it the file's source (Yarn Plug'n'Play's on Node 22.22+) or under
 * --experimental-default-type=module (Node 20 and 22): neither the require hook nor a loader hook sees those
 * files, and pg was never patched (every query and pool unseen, and the warning blamed a bundle). Node still
 * caches them as CommonJS modules, where {@link attachLoadedModules} finds them. Checked at each health sample
 * until pg is patched.
 */
export function adoptUnhookedModules(ctx: AdapterContext): void {
  if (processState.pgLoaded) return;
  // Only when Node's module cache changed, and only for pg itself: the scan cost 2 ms a sample in an application
  // of 5,000 modules that never loads pg, and knex or Sequelize on MySQL were told their pools went unseen.
  const files = Object.keys(require.cache);
  if (files.length === cacheSizeScanned) return;
  cacheSizeScanned = files.length;
  if (files.some((file) => PG_CLIENT.test(file) || PG_POOL.test(file))) attachLoadedModules(ctx, 'unseen-loader');
}

let cacheSizeScanned = -1;

/** The module exports whose Pool class our hook replaced: its base class carries the subclass mark. */
function isHooked(exports: unknown): boolean {
  const Pool = (exports as { Pool?: object } | null)?.Pool;
  const marked = (c: object | null | undefined) => c !== null && c !== undefined &&
    Object.getOwnPropertySymbols(c).some((s) => s.description?.startsWith('poolscope.') === true);
  return Pool !== undefined && (marked(Pool) || marked(Object.getPrototypeOf(Pool) as object | null));
}
