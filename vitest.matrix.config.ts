import { defineConfig } from 'vitest/config';

// The support-matrix suite (`npm run test:matrix`): one small app per pool library under
// `node --import dist/register.js`, saturated through the library's own API, and the pg / pg-pool versions
// we claim, each against a real PostgreSQL. test:all runs it once per Node version (20, 22, 24).
export default defineConfig({
  test: {
    include: ['test/matrix/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
