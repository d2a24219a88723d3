import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as api from '../src/index.js';
import { VERSION } from '../src/version.js';
import { ROOT } from './helpers.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

describe('package', () => {
  it('keeps src/version.ts in step with package.json', () => {
    expect(VERSION).toBe(pkg.version);
  });

  it('exports "." and "./register" as built ESM with type declarations', () => {
    for (const entry of ['.', './register']) {
      const target = pkg.exports[entry];
      expect(existsSync(path.join(ROOT, target.default)), `${entry} → ${target.default}`).toBe(true);
      expect(existsSync(path.join(ROOT, target.types)), `${entry} → ${target.types}`).toBe(true);
    }
    expect(pkg.type).toBe('module');
  });

  it('declares pg and @opentelemetry/api as peer dependencies, not dependencies', () => {
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(['@opentelemetry/api', 'pg']);
    expect(pkg.dependencies['pg']).toBeUndefined();
    expect(pkg.dependencies['@opentelemetry/api']).toBeUndefined();
  });

  it('has a small, named public surface', () => {
    expect(Object.keys(api).sort()).toEqual([
      'Poolscope', 'PoolscopeInstrumentation', 'createHealthHandler', 'getPoolHealth', 'getPoolscope', 'monitorPool',
      'normalizeConfig', 'prometheusName', 'serializeResourceMetrics', 'startPoolscope', 'statusFor',
    ]);
  });

  it('supports the Node versions CI tests', () => {
    expect(pkg.engines.node).toBe('>=20.6.0');
  });
});
