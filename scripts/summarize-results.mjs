// Adds up the vitest JSON reports of one test:all run and prints one closing line, after naming every failed
// test with the start of its message: CI keeps only the tail of the log, and a count alone says nothing.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2] ?? '.cache/results';
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
for (const f of files) {
  const r = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
  const label = f.replace('.json', '');
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + (r.numTodoTests ?? 0);
  for (const file of r.testResults ?? []) {
    for (const t of file.assertionResults ?? []) {
      if (t.status !== 'failed') continue;
      const message = (t.failureMessages ?? []).join('\n').split('\n').slice(0, 6).join('\n    ');
      failures.push(`[${label}] ${path.relative(process.cwd(), file.name)} > ${t.fullName}\n    ${message}`);
    }
    if (file.status === 'failed' && (file.assertionResults ?? []).length === 0) {
      failures.push(`[${label}] ${path.relative(process.cwd(), file.name)}: ${String(file.message ?? '').slice(0, 400)}`);
    }
  }
  console.log(`${label}: ${r.numPassedTests} passed, ${r.numFailedTests} failed`);
}
if (failures.length > 0) console.log(`\nfailed:\n${failures.join('\n')}\n`);
if (files.length === 0 || passed === 0) {
  console.log('no test results found');
  process.exitCode = 1;
}
console.log(`total: ${passed} passed, ${failed} failed, ${skipped} skipped`);
