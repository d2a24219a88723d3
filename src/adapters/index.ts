import type { PoolAdapter } from './adapter.js';
import { pgPoolAdapter } from './pg-pool.js';
import { sequelizePoolAdapter } from './sequelize-pool.js';
import { slonikAdapter } from './slonik.js';
import { tarnAdapter } from './tarn.js';

/** Every supported pool library. Order matters only for monitorPool(): the first adapter that matches wins. */
export const ADAPTERS: readonly PoolAdapter[] = [pgPoolAdapter, tarnAdapter, sequelizePoolAdapter, slonikAdapter];
