// Moved to src/server/telemetry-server.ts; this path stays for existing imports.
export * from './server/telemetry-server.js';
