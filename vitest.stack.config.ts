import { defineConfig } from 'vitest/config';

// The telemetry-stack suite (`npm run test:stack`): configs checked by the real collector, Prometheus,
// Alertmanager and dashboard tools, and the end-to-end alert path.
export default defineConfig({
  test: {
    include: ['test/stack/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    // The end-to-end test drives real processes for minutes; it must not share the two cores.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
  },
});
