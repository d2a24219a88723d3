// Kept for modules that import health from here; the health layer lives in ./health/.
export * from './health/health.js';
