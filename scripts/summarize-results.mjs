// Adds up the vitest JSON reports of one test:all run and prints one closing line.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] ?? '.cache/results';
let passed = 0;
let failed = 0;
let skipped = 0;
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
for (const f of files) {
  const r = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
  console.log(`${f.replace('.json', '')}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
}
if (files.length === 0 || passed === 0) {
  console.log('no test results found');
  process.exitCode = 1;
}
console.log(`total: ${passed} passed, ${failed} failed, ${skipped} skipped`);
