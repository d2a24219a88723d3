// Moved to src/export/prometheus/exposition.ts; this path stays for existing imports.
export * from './export/prometheus/exposition.js';
