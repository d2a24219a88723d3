// The HTTP server duration metric and its route sources live in src/http/; src/sdk.ts imports from here.
export {
  HttpServerMetricsInstrumentation,
  HTTP_ROUTE_MODULES,
  type HttpServerMetricsConfig,
} from './http/server-duration.js';
export { HTTP_ROUTE_OVERFLOW, MAX_HTTP_ROUTES } from './http/route.js';
