// What the stack tests share: the built tools, the shipped collector config's environment, their processes.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, waitFor } from '../helpers.js';

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

/** The stack's processes of one test file, each logging to `<dir>/<name>.log`. */
export class StackProcesses {
  private readonly procs: Array<{ name: string; child: ChildProcess }> = [];

  constructor(private readonly dir: string) {}

  start(name: string, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    const log = createWriteStream(path.join(this.dir, `${name}.log`));
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    this.procs.push({ name, child });
    return child;
  }

  /** The end of a process's log (all of it with `tail` Infinity), or '' before it wrote one. */
  logOf(name: string, tail = 3000): string {
    try {
      return readFileSync(path.join(this.dir, `${name}.log`), 'utf8').slice(-tail);
    } catch {
      return '';
    }
  }

  /** Resolves once `url` answers 2xx; fails at once, with its log, if the process exited. */
  async ready(name: string, url: string, timeoutMs = 60_000): Promise<void> {
    await waitFor(async () => {
      const proc = this.procs.find((p) => p.name === name)!;
      if (proc.child.exitCode !== null) throw new Error(`${name} exited: ${this.logOf(name)}`);
      return (await fetch(url).catch(() => undefined))?.ok ? true : undefined;
    }, timeoutMs, 200).catch((err) => {
      throw new Error(`${name} not ready at ${url}: ${(err as Error).message}\n${this.logOf(name)}`);
    });
  }

  /** SIGTERM to each, last started first, SIGKILL to one still running 5 s later. */
  async stopAll(): Promise<void> {
    for (const { child } of this.procs.splice(0).reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      child.kill('SIGTERM');
      await Promise.race([once(child, 'exit'), new Promise((r) => setTimeout(r, 5_000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}
