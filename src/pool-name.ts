import { parse as parseConnectionString } from 'pg-connection-string';

/** The subset of pg-pool options Poolscope reads. Never serialise the whole object: it holds the password. */
export interface PoolTargetOptions {
  connectionString?: string;
  host?: string;
  port?: number | string;
  database?: string;
  poolName?: string;
}

export interface PoolTarget {
  host: string;
  port: number;
  /** The database when one is configured; pg's own fallback (the user name) is deliberately not used. */
  database: string | undefined;
}

type Env = Record<string, string | undefined>;

/**
 * Where a pool connects, resolved the way `pg` resolves it: a connection string overrides the
 * individual options, which override the `PG*` environment variables. When no database is configured,
 * pg connects to the database named after the user; that name is left out here, so a user name can
 * never become a label.
 */
export function resolvePoolTarget(options: PoolTargetOptions | undefined, env: Env = process.env): PoolTarget {
  const opts = options ?? {};
  let parsed: { host?: string | null; port?: string | null; database?: string | null; user?: string } = {};
  if (typeof opts.connectionString === 'string' && opts.connectionString !== '') {
    try {
      parsed = parseConnectionString(opts.connectionString);
    } catch {
      parsed = {};
    }
  }
  const host = firstNonEmpty(parsed.host, opts.host, env.PGHOST) ?? 'localhost';
  const portText = firstNonEmpty(parsed.port, opts.port === undefined ? undefined : String(opts.port), env.PGPORT);
  const port = portText !== undefined && /^\d+$/.test(portText) ? Number(portText) : 5432;
  const database = firstNonEmpty(parsed.database, opts.database, env.PGDATABASE);
  return { host, port, database };
}

/** Default pool name: `host:port/database`, or `host:port` when no database is configured. */
export function defaultPoolName(target: PoolTarget): string {
  const host = target.host.includes(':') && !target.host.startsWith('/') ? `[${target.host}]` : target.host;
  return target.database === undefined ? `${host}:${target.port}` : `${host}:${target.port}/${target.database}`;
}

function firstNonEmpty(...values: Array<string | null | undefined>): string | undefined {
  for (const v of values) {
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

/**
 * Hands out unique pool names: the second live pool to the same target becomes `name#2`, and a name
 * is free again once its pool has ended, so churned pools reuse names instead of minting new series.
 */
export class PoolNameAllocator {
  private readonly taken = new Set<string>();

  acquire(base: string): string {
    if (!this.taken.has(base)) {
      this.taken.add(base);
      return base;
    }
    for (let i = 2; ; i++) {
      const candidate = `${base}#${i}`;
      if (!this.taken.has(candidate)) {
        this.taken.add(candidate);
        return candidate;
      }
    }
  }

  release(name: string): void {
    this.taken.delete(name);
  }
}
