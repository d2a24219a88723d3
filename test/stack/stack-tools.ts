// What the stack tests share: the built tools and the shipped collector config's environment.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers.js';

const BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache', 'tools', 'bin');

/** A binary built by scripts/build-tools.sh (or found under POOLSCOPE_TOOLS_BIN). */
export function tool(name: string): string {
  const file = path.join(BIN, name);
  if (!existsSync(file)) throw new Error(`${file} is missing: run scripts/build-tools.sh (or set POOLSCOPE_TOOLS_BIN)`);
  return file;
}

/** The variables collector/otelcol-config.yaml reads: its listeners on 127.0.0.1 and Prometheus's OTLP receiver. */
export function collectorEnv(ports: Readonly<Record<string, number>>, promUrl: string): Record<string, string> {
  return {
    OTELCOL_HTTP_ENDPOINT: `127.0.0.1:${ports.otelHttp!}`,
    OTELCOL_GRPC_ENDPOINT: `127.0.0.1:${ports.otelGrpc!}`,
    OTELCOL_HEALTH_ENDPOINT: `127.0.0.1:${ports.otelHealth!}`,
    OTELCOL_METRICS_HOST: '127.0.0.1',
    OTELCOL_METRICS_PORT: String(ports.otelMetrics!),
    PROMETHEUS_OTLP_ENDPOINT: `${promUrl}/api/v1/otlp/v1/metrics`,
  };
}
