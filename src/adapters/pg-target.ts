import { InstrumentationNodeModuleFile } from '@opentelemetry/instrumentation';
import {
  carriesSecretKeyword, defaultPoolName, isWithheld, isWithheldPort, REDACTED_HOST, resolvePoolTarget, usePgDefaults,
  withholdUserDatabase, type PoolTarget,
} from '../pool-name.js';
import type { QueryTarget } from '../pools/observer.js';
import {
  defineHidden, subclassOnConstruct,
} from './shared.js';

/** A pg.Client, as pools that are not pg-pool hand them out. */
export interface PgClientLike {
  host?: unknown;
  port?: unknown;
  database?: unknown;
  user?: unknown;
  query: unknown;
  connectionParameters?: object;
}

export function isPgClient(resource: unknown): resource is PgClientLike {
  const r = resource as PgClientLike | null;
  return r !== null && typeof r === 'object' && typeof r.query === 'function' && typeof r.connectionParameters === 'object';
}

/** On a client's ConnectionParameters: its target resolved from the configuration it was built from. */
const kTarget = Symbol.for('poolscope.connection-target');
const kParamsSubclass = Symbol.for('poolscope.connection-parameters-subclass');

/**
 * pg fills in the user name when no database was configured, and a client alone cannot tell which it was.
 * So the configuration every client is built from is resolved once, when its ConnectionParameters are
 * made (pool-name.ts resolves exactly as pg does, and withholds what a mis-read string would leak), and
 * kept on them. Pools that only ever see their clients (tarn, sequelize-pool) and lone clients are then
 * named and labelled from the configuration, not from a guess.
 */
export function connectionParametersModule(): InstrumentationNodeModuleFile {
  return new InstrumentationNodeModuleFile('pg/lib/connection-parameters.js', ['>=8.0.3 <9'],
    (exports: unknown) => patchConnectionParameters(exports), (exports: unknown) => exports);
}

/** pg's defaults object, which an application may set (`pg.defaults.host = …`): targets fall back to it as pg does. */
export function defaultsModule(): InstrumentationNodeModuleFile {
  return new InstrumentationNodeModuleFile('pg/lib/defaults.js', ['>=8.0.3 <9'],
    (exports: unknown) => { usePgDefaults(exports); return exports; }, (exports: unknown) => exports);
}

function patchConnectionParameters(ConnectionParameters: unknown): unknown {
  return subclassOnConstruct(ConnectionParameters, kParamsSubclass, (params, config: unknown) => {
    try {
      const options = typeof config === 'string' ? { connectionString: config } : (config ?? {}) as object;
      const target = resolvePoolTarget(options as never);
      defineHidden(params, kTarget, target);
      if (target.database === undefined && target.redacted !== true) withholdUserDatabase((params as { database?: unknown }).database);
    } catch {
      // no target: the client falls back to what it reports itself
    }
  }, (args) => args[0]);
}

/** The client's target from its configuration, else from what it reports (never a user-name database). */
export function targetOfClientConfig(client: PgClientLike): PoolTarget {
  const resolved = (client.connectionParameters as Record<symbol, PoolTarget | undefined> | undefined)?.[kTarget];
  if (resolved !== undefined) return resolved;
  const hostText = typeof client.host === 'string' && client.host !== '' ? client.host : 'localhost';
  const port = Number.isInteger(Number(client.port)) ? Number(client.port) : 5432;
  const database = typeof client.database === 'string' && client.database !== '' && client.database !== client.user &&
    !isWithheld(client.database) ? client.database : undefined;
  // A client whose parameters were made before Poolscope (started late, or a copy of pg it did not see) has
  // no resolved target, and its mis-read values were never withheld: a keyword/value string read as a URL
  // puts `… password=…` into the database name. Recognised by its keywords, such a target is withheld whole.
  const redacted = isWithheld(hostText) || isWithheldPort(port) || carriesSecretKeyword(hostText) ||
    carriesSecretKeyword(client.database);
  return { host: redacted ? REDACTED_HOST : hostText, port: redacted ? 5432 : port, database: redacted ? undefined : database, redacted };
}

/** Name and namespace for a pool known only by one of its connections. */
export function targetOfClient(client: PgClientLike): {
  baseName: string; namespace: string | undefined; server: { address: string; port: number } | undefined;
} {
  const target = targetOfClientConfig(client);
  return {
    baseName: defaultPoolName(target),
    namespace: target.database,
    server: target.redacted === true ? undefined : { address: target.host, port: target.port },
  };
}

const queryTargets = new WeakMap<object, QueryTarget>();

/** Query attributes' target for a client, resolved once per client. */
export function queryTargetOf(client: PgClientLike): QueryTarget {
  let t = queryTargets.get(client as object);
  if (t === undefined) {
    const target = targetOfClientConfig(client);
    t = target.redacted === true ? {} : { address: target.host, port: target.port, namespace: target.database };
    queryTargets.set(client as object, t);
  }
  return t;
}
