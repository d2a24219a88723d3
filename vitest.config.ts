import { defineConfig } from 'vitest/config';

// The package suite (`npm test`): unit tests and integration tests against a real PostgreSQL.
export default defineConfig({
  test: {
    include: ['test/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Each file in its own process: instrumentation patches module prototypes process-wide.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
