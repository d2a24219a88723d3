// The HTTP server duration metric and its route sources live in src/http/; src/sdk.ts imports from here.
export {
  HttpServerMetricsInstrumentation,
  HTTP_ROUTE_MODULES,
  HTTP_ROUTE_OVERFLOW,
  MAX_HTTP_ROUTES,
  type HttpServerMetricsConfig,
} from './http/server-duration.js';
