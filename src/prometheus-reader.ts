// Moved to src/export/prometheus/reader.ts; this path stays for existing imports.
export * from './export/prometheus/reader.js';
