import { defaultPoolName } from '../pool-name.js';

/** A connected pg.Client, as pools that are not pg-pool hand them out. */
export interface PgClientLike {
  host?: unknown;
  port?: unknown;
  database?: unknown;
  user?: unknown;
  query: unknown;
  connectionParameters?: unknown;
}

export function isPgClient(resource: unknown): resource is PgClientLike {
  const r = resource as PgClientLike | null;
  return r !== null && typeof r === 'object' && typeof r.query === 'function' && typeof r.connectionParameters === 'object';
}

/**
 * Name and namespace for a pool known only by one of its connections. pg fills in the user name when no
 * database was configured, so a database equal to the user is left out: a user name must never become a
 * label. (Pools whose configuration is visible resolve it from there instead: see pool-name.ts.)
 */
export function targetOfClient(client: PgClientLike): { baseName: string; namespace: string | undefined } {
  const host = typeof client.host === 'string' && client.host !== '' ? client.host : 'localhost';
  const port = Number.isInteger(Number(client.port)) ? Number(client.port) : 5432;
  const database = typeof client.database === 'string' && client.database !== '' && client.database !== client.user
    ? client.database : undefined;
  return { baseName: defaultPoolName({ host, port, database }), namespace: database };
}
