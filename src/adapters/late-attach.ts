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
 * Modules loaded before Poolscope started (programmatic start after `import pg`, or a restart after
 * shutdown()) never pass through the module hooks. pg's Client and pg-pool's Pool are patched where they
 * are, on their prototypes: queries are measured and pools are attached on their next connect(). tarn's
 * and sequelize-pool's pools cannot be found that way; that is said once, with what to do.
 */
export function attachLoadedModules(ctx: AdapterContext): void {
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
      for (const u of UNREACHABLE) if (u.file.test(file) && !isHooked(mod.exports)) missed.add(u.library);
    }
  }
  // Said once per process: a restart after shutdown() finds the same modules again.
  if (found && !processState.lateStartWarned) {
    processState.lateStartWarned = true;
    ctx.log.warn('late:pg', 'poolscope: pg was loaded before Poolscope started; its queries are measured and its ' +
      'pools are attached on their next connect() (start with --import to see them from construction).');
  }
  if (missed.size > 0) {
    ctx.log.warn('late:pools', `poolscope: ${[...missed].join(' and ')} was loaded before Poolscope started; its ` +
      'existing pools are not monitored. Start with --import, or pass each pool to monitorPool(pool).');
  }
}

/** The module exports whose Pool class our hook replaced carry the subclass mark. */
function isHooked(exports: unknown): boolean {
  const Pool = (exports as { Pool?: object } | null)?.Pool;
  return Pool !== undefined && Object.getOwnPropertySymbols(Pool).some((s) => s.description?.startsWith('poolscope.') === true);
}
