import type { TestProject } from 'vitest/node';
// @ts-expect-error plain ESM helper shared with the demo and the benchmarks
import { startPostgres } from '../scripts/postgres.mjs';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/** One real PostgreSQL server for the whole run, unless DATABASE_URL points at one already. */
export default async function setup(project: TestProject) {
  if (process.env.DATABASE_URL) {
    project.provide('databaseUrl', process.env.DATABASE_URL);
    return undefined;
  }
  const server = await startPostgres();
  project.provide('databaseUrl', server.url);
  return () => server.stop();
}
