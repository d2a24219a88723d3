import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers.js';

const CACHE = path.join(ROOT, '.cache', 'matrix', 'versions');

/**
 * A directory under .cache/matrix/versions/<name> with exactly `install` (package → version) installed from the
 * npm registry, made once and reused by later runs while the list is the same.
 */
export function installedVersions(name: string, install: Record<string, string>): string {
  const dir = path.join(CACHE, name);
  const manifest = { name: `poolscope-matrix-${name}`, private: true, dependencies: install };
  const wanted = JSON.stringify(manifest, null, 2);
  const stamp = path.join(dir, '.installed');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === wanted) return dir;
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), wanted);
  // --prefix keeps npm out of the repository's own package.json; a top-level pin is what a dependency's caret
  // range resolves to, so the dependency uses it too (npm dedupes). Peer ranges are not enforced: knex 0.20
  // names pg 7 as its peer and runs on pg 8, which Poolscope needs.
  execFileSync('npm', ['install', '--prefix', dir, '--no-audit', '--no-fund', '--ignore-scripts', '--legacy-peer-deps', '--loglevel=error'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  writeFileSync(stamp, wanted);
  return dir;
}
