// The loader thread's hooks (registered by register.ts): import-in-the-middle's, as @opentelemetry/instrumentation
// ships them, with the flag by which each copy of import-in-the-middle warns that another was initialized first
// neither seen nor left by Poolscope's. Node has one loader thread, and every agent that hooks ES modules
// (Sentry, dd-trace) registers its own copy there: in either order the application printed "Warning: The
// 'import-in-the-middle' hook has already been initialized", a process warning of Poolscope's making.
import { initialize as initializeHook, load, resolve } from '@opentelemetry/instrumentation/hook.mjs';

export { load, resolve };

const FLAG = '__import_in_the_middle_initialized__';

export async function initialize(data) {
  const before = Object.getOwnPropertyDescriptor(globalThis, FLAG);
  delete globalThis[FLAG];
  try {
    await initializeHook(data);
  } finally {
    if (before === undefined) delete globalThis[FLAG];
    else Object.defineProperty(globalThis, FLAG, before);
  }
}
