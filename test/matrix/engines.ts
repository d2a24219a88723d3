import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers.js';

type Version = [number, number, number];

function parse(v: string): Version {
  const m = /^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(v.trim());
  if (!m) throw new Error(`engines: cannot read version "${v}"`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

const cmp = (a: Version, b: Version) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2];

/** One comparator of an npm range (the forms package.json `engines` use); throws on any other form. */
function satisfiesOne(v: Version, comparator: string): boolean {
  const m = /^(>=|<=|>|<|\^|~|=)?\s*(.+)$/.exec(comparator)!;
  const op = m[1] ?? '=';
  const target = parse(m[2]!);
  switch (op) {
    case '>=': return cmp(v, target) >= 0;
    case '>': return cmp(v, target) > 0;
    case '<=': return cmp(v, target) <= 0;
    case '<': return cmp(v, target) < 0;
    case '^': return v[0] === target[0] && cmp(v, target) >= 0;
    case '~': return v[0] === target[0] && v[1] === target[1] && cmp(v, target) >= 0;
    default: return cmp(v, target) === 0;
  }
}

/** `a || b c` ranges: any alternative whose comparators all hold. */
export function satisfies(version: string, range: string): boolean {
  const v = parse(version);
  return range.split('||').some((alt) =>
    alt.trim().replace(/(>=|<=|>|<|\^|~|=)\s+/g, '$1').split(/\s+/).filter(Boolean).every((c) => satisfiesOne(v, c)));
}

/**
 * Why a pinned package cannot run on this Node (its package.json `engines.node` excludes it), or undefined.
 * Read from node_modules at run time, so the matrix follows the lockfile rather than a list kept by hand.
 */
export function engineExclusion(packages: string[], nodeVersion = process.versions.node): string | undefined {
  for (const name of packages) {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as {
      version: string; engines?: { node?: string };
    };
    const range = pkg.engines?.node;
    if (range !== undefined && !satisfies(nodeVersion, range)) return `${name} ${pkg.version} requires Node ${range}`;
  }
  return undefined;
}
