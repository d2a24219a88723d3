// Which node processes are test runners or dev servers, whose HTTP servers do not make them the service.
import { describe, expect, it } from 'vitest';
import { toolProcessName } from '../src/process-role.js';

const named = (script: string, loaded: string[] = [], env: NodeJS.ProcessEnv = {}) => toolProcessName(['/usr/bin/node', script], loaded, env);

describe('a test runner or dev server', () => {
  it('is told by its package, wherever the package manager put it', () => {
    expect(named('/app/node_modules/vite/bin/vite.js')).toBe('vite');
    expect(named('/app/node_modules/.pnpm/vite@6.0.0/node_modules/vite/bin/vite.js')).toBe('vite');
    expect(named('/app/.yarn/cache/webpack-dev-server-npm-5.0.0-abc.zip/node_modules/webpack-dev-server/bin/webpack-dev-server.js')).toBe('webpack-dev-server');
    expect(named('/app/node_modules/@angular/cli/bin/ng.js')).toBe('@angular/cli');
    expect(named('C:\\app\\node_modules\\jest-worker\\build\\workers\\processChild.js', [], { JEST_WORKER_ID: '1' })).toBe('Jest');
    expect(named('/app/node_modules/tinypool/dist/entry/process.js', [], { VITEST: 'true' })).toBe('Vitest');
    expect(named('/app/node_modules/.bin/mocha')).toBe('mocha');
  });

  it('is a process running node:test files, by the runner loaded in it', () => {
    expect(named('/app/test/users.test.js', ['NativeModule internal/test_runner/harness'])).toBe('node:test');
  });

  it('is not a service, nor one started from a production CLI, nor a file of the application named like a tool', () => {
    expect(named('/app/server.js')).toBeUndefined();
    expect(named('/app/node_modules/next/dist/bin/next')).toBeUndefined();
    expect(named('/app/node_modules/@remix-run/serve/dist/cli.js')).toBeUndefined();
    expect(named('/app/vite/bin/vite.js')).toBeUndefined();
    expect(named('/app/node_modules/vite-plugin-x/node_modules/my-app/server.js')).toBeUndefined();
    expect(toolProcessName(['/usr/bin/node'], undefined)).toBeUndefined();
    // A service's own jobs on a general-purpose process pool, without a test runner's mark in the environment.
    expect(named('/app/node_modules/tinypool/dist/entry/process.js')).toBeUndefined();
    expect(named('/app/node_modules/jest-worker/build/workers/processChild.js')).toBeUndefined();
  });
});
