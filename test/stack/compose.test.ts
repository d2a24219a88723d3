// docker-compose.yml without a Docker engine: the file is loaded by compose-go (the loader behind
// `docker compose config`: Compose Specification schema, interpolation, consistency checks), then held to
// the stack's rules — pinned images from one place, health checks, every mounted file in the repo, no
// committed secrets — and the small programs and files it mounts are run or loaded for real.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TOOLS_BIN = process.env.POOLSCOPE_TOOLS_BIN ?? path.join(ROOT, '.cache/tools/bin');
const COMPOSE_FILE = path.join(ROOT, 'docker-compose.yml');
const read = (rel: string) => readFileSync(path.join(ROOT, rel), 'utf8');

/** Services without a Docker health check, and why: each must really have none (checked below). */
const NO_HEALTHCHECK: Record<string, string> = {
  'otel-collector': 'distroless image: no shell, wget or curl inside to run a check; its health_check extension ' +
    'serves :13133 for network probes, and Prometheus alerts on its own telemetry',
};

function composeConfig(): string {
  const bin = path.join(TOOLS_BIN, 'compose-config');
  if (!existsSync(bin)) {
    throw new Error(`compose-config not found at ${bin} (POOLSCOPE_TOOLS_BIN or .cache/tools/bin): ` +
      'build it with scripts/build-compose-validator.sh');
  }
  return bin;
}

/** KEY=VALUE lines of .env.example (comments and blanks skipped). */
function envExample(): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of read('.env.example').split('\n')) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  return vars;
}

/** The environment compose would see, minus anything the developer's shell sets for these variables. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME };
  return env;
}

function loadCompose(envFile: string) {
  const r = spawnSync(composeConfig(), ['-f', COMPOSE_FILE, '--env-file', envFile], {
    cwd: ROOT, env: cleanEnv(), encoding: 'utf8', timeout: 60_000,
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string; args?: Record<string, string> };
  healthcheck?: { test?: string[]; disable?: boolean };
  volumes?: Array<{ type: string; source?: string; target: string; read_only?: boolean }>;
  secrets?: Array<{ source: string; target?: string }>;
  environment?: Record<string, string | null>;
  command?: string[];
  ports?: Array<{ host_ip?: string; published?: string; target: number }>;
  depends_on?: Record<string, { condition: string }>;
}
interface Project { services: Record<string, Service>; secrets?: Record<string, { environment?: string; file?: string }>; 'x-images': Record<string, string> }

describe('docker-compose.yml', () => {
  let tmp: string;
  let envFile: string;
  let project: Project;
  const secretValues = {
    GF_ADMIN_PASSWORD: `test-${randomBytes(9).toString('hex')}`,
    POSTGRES_PASSWORD: `test-${randomBytes(9).toString('hex')}`,
    POSTGRES_MONITOR_PASSWORD: `test-${randomBytes(9).toString('hex')}`,
  };

  beforeAll(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'poolscope-compose-'));
    // .env.example with the required passwords filled in, as a user's .env would be.
    envFile = path.join(tmp, 'test.env');
    const env = { ...envExample(), ...secretValues };
    writeFileSync(envFile, Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    const r = loadCompose(envFile);
    expect(r.code, `compose-config rejected docker-compose.yml:\n${r.stderr}`).toBe(0);
    project = JSON.parse(r.stdout) as Project;
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('is a valid Compose file (schema, interpolation, consistency), as `docker compose config` loads it', () => {
    expect(Object.keys(project.services).sort()).toEqual([
      'alertmanager-1', 'alertmanager-2', 'app', 'grafana', 'loadgen', 'otel-collector', 'postgres', 'prometheus', 'webhook-sink',
    ]);
    // Where the compose plugin exists, the real CLI must agree (there is none on the CI machines).
    const plugin = spawnSync('docker', ['compose', 'version'], { encoding: 'utf8' });
    if (plugin.status === 0) {
      const r = spawnSync('docker', ['compose', '-f', COMPOSE_FILE, '--env-file', envFile, 'config', '--quiet'], {
        cwd: ROOT, env: cleanEnv(), encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
    }
  });

  it('refuses to start without the Grafana admin, database and monitoring passwords (no committed default)', () => {
    const bare = path.join(tmp, 'bare.env');
    writeFileSync(bare, read('.env.example'));
    const r = loadCompose(bare);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/required variable GF_ADMIN_PASSWORD is missing a value/);
    expect(r.stderr).toMatch(/required variable POSTGRES_PASSWORD is missing a value/);
    expect(r.stderr).toMatch(/required variable POSTGRES_MONITOR_PASSWORD is missing a value/);
  });

  it('commits no password or secret literal', () => {
    const example = envExample();
    for (const [key, value] of Object.entries(example)) {
      if (/PASSWORD|SECRET|TOKEN|API_KEY/.test(key)) expect(value, `.env.example ${key} must be empty`).toBe('');
    }
    // In the raw file every secret-looking setting is a required `${VAR:?…}` reference, never a value.
    const raw = parseYaml(read('docker-compose.yml'), { merge: true }) as { services: Record<string, { environment?: Record<string, string> }> };
    for (const [name, svc] of Object.entries(raw.services)) {
      for (const [key, value] of Object.entries(svc.environment ?? {})) {
        if (/PASSWORD|SECRET|TOKEN|API_KEY/.test(key)) {
          expect(value, `${name}.${key}`).toMatch(/^\$\{[A-Z_]+:\?[^}]+\}$/);
        }
      }
    }
    // The passwords reach exactly the services that need them, and only from the environment.
    expect(project.services.grafana!.environment!.GF_SECURITY_ADMIN_PASSWORD).toBe(secretValues.GF_ADMIN_PASSWORD);
    expect(project.services.postgres!.environment!.POSTGRES_PASSWORD).toBe(secretValues.POSTGRES_PASSWORD);
    expect(project.services.app!.environment!.DATABASE_URL).toBe(
      `postgres://poolscope:${secretValues.POSTGRES_PASSWORD}@postgres:5432/poolscope`);
    const mentions = Object.entries(project.services)
      .filter(([, s]) => JSON.stringify(s).includes(secretValues.POSTGRES_PASSWORD)).map(([n]) => n).sort();
    expect(mentions).toEqual(['app', 'postgres']);
    const monitor = Object.entries(project.services)
      .filter(([, s]) => JSON.stringify(s).includes(secretValues.POSTGRES_MONITOR_PASSWORD)).map(([n]) => n).sort();
    expect(monitor).toEqual(['otel-collector', 'postgres']);
    // Receiver URLs (tokens, in real use) come from the environment through compose secrets.
    expect(project.secrets).toEqual({
      alertmanager_pager_url: expect.objectContaining({ environment: 'ALERTMANAGER_PAGER_URL' }),
      alertmanager_ticket_url: expect.objectContaining({ environment: 'ALERTMANAGER_TICKET_URL' }),
      alertmanager_chat_url: expect.objectContaining({ environment: 'ALERTMANAGER_CHAT_URL' }),
    });
  });

  it('pins every image to an explicit version, all in one place (x-images, mirrored by .env.example)', () => {
    const rawText = read('docker-compose.yml');
    const raw = parseYaml(rawText) as { 'x-images': Record<string, string> };
    const example = envExample();
    const pins = new Set<string>();
    for (const [name, ref] of Object.entries(raw['x-images'])) {
      const m = /^\$\{([A-Z_]+_IMAGE):-([^}]+)\}$/.exec(ref);
      expect(m, `x-images.${name} must be \${NAME_IMAGE:-image:tag}`).not.toBeNull();
      const [, envVar, image] = m!;
      expect(image, `x-images.${name}`).toMatch(/^[a-z0-9./-]+(:[A-Za-z0-9._-]*\d[A-Za-z0-9._-]*)?(@sha256:[0-9a-f]{64})?$/);
      expect(image, `x-images.${name}: tag or digest`).toMatch(/:|@sha256:/);
      expect(image, `x-images.${name}`).not.toMatch(/:(latest|stable|main|edge)$/);
      expect(example[envVar!], `.env.example ${envVar} mirrors x-images.${name}`).toBe(image);
      pins.add(image!);
    }
    expect(Object.keys(example).filter((k) => k.endsWith('_IMAGE')).sort()).toEqual(
      Object.values(raw['x-images']).map((r) => /^\$\{([A-Z_]+):-/.exec(r)![1]).sort());
    // Every `image:` in the file is an alias of a pin; nothing is spelled out at a service.
    const imageLines = rawText.split('\n').filter((l) => /^\s+image:/.test(l));
    for (const line of imageLines) expect(line.trim()).toMatch(/^image: \*[a-z]+-image$/);
    for (const [name, svc] of Object.entries(project.services)) {
      if (svc.build) {
        // Built images start from a pin too, passed as a build arg; the Dockerfile has no default of its own.
        const dockerfile = readFileSync(path.join(svc.build.context, svc.build.dockerfile), 'utf8');
        const from = /^FROM\s+\$\{(\w+)\}/m.exec(dockerfile);
        expect(from, `${name}: FROM \${ARG}`).not.toBeNull();
        expect(dockerfile).toMatch(new RegExp(`^ARG ${from![1]}$`, 'm'));
        expect(pins, `${name} build arg ${from![1]}`).toContain(svc.build.args?.[from![1]!]);
      } else {
        expect(pins, `${name} image`).toContain(svc.image);
      }
    }
  });

  it('gives every service a health check, except the documented ones', () => {
    for (const [name, svc] of Object.entries(project.services)) {
      if (NO_HEALTHCHECK[name]) {
        expect(svc.healthcheck, `${name} is listed as having no health check`).toBeUndefined();
        continue;
      }
      expect(svc.healthcheck, `${name} has no healthcheck (add one, or list it in NO_HEALTHCHECK with the reason)`).toBeDefined();
      expect(svc.healthcheck!.test?.length, `${name}: healthcheck.test`).toBeGreaterThan(1);
      expect(svc.healthcheck?.disable, name).not.toBe(true);
    }
    // Whoever waits on a service with a health check waits for it to be healthy.
    for (const [name, svc] of Object.entries(project.services)) {
      for (const [dep, { condition }] of Object.entries(svc.depends_on ?? {})) {
        expect(condition, `${name} → ${dep}`).toBe(NO_HEALTHCHECK[dep] ? 'service_started' : 'service_healthy');
      }
    }
  });

  it('mounts only files that exist in the repository, read-only', () => {
    for (const [name, svc] of Object.entries(project.services)) {
      for (const v of svc.volumes ?? []) {
        if (v.type !== 'bind') continue;
        expect(v.source!.startsWith(`${ROOT}${path.sep}`), `${name}: ${v.source} is inside the repo`).toBe(true);
        expect(existsSync(v.source!), `${name} mounts ${path.relative(ROOT, v.source!)}, which does not exist`).toBe(true);
        expect(v.read_only, `${name}: ${v.target} read-only`).toBe(true);
      }
      if (svc.build) {
        expect(existsSync(path.join(svc.build.context, svc.build.dockerfile)), `${name} Dockerfile`).toBe(true);
        // Everything the Dockerfile copies is in the context and allowed by its .dockerignore.
        const dockerfile = readFileSync(path.join(svc.build.context, svc.build.dockerfile), 'utf8');
        const ignore = readFileSync(path.join(svc.build.context, `${svc.build.dockerfile}.dockerignore`), 'utf8');
        for (const [, sources] of dockerfile.matchAll(/^COPY\s+(.+)\s+\S+$/gm)) {
          for (const src of sources!.split(/\s+/)) {
            expect(existsSync(path.join(svc.build.context, src)), `${name}: COPY ${src}`).toBe(true);
            expect(ignore, `${name}: ${src} allowed by the .dockerignore`).toMatch(new RegExp(`^!${src.replace('.', '\\.')}`, 'm'));
          }
        }
      }
    }
  });

  // Found by a new user's audit: the image copied src/ and demo/ but not scripts/bundle.mjs, which `npm run build`
  // runs since the bundle came in: the demo image never built.
  it('builds the demo image\'s dist from only what its Dockerfile copies', () => {
    const app = project.services.app!;
    const dockerfile = readFileSync(path.join(app.build!.context, app.build!.dockerfile), 'utf8');
    const work = mkdtempSync(path.join(os.tmpdir(), 'poolscope-image-'));
    try {
      for (const line of dockerfile.split('\n')) {
        const copy = /^COPY\s+(.+)\s+(\S+)$/.exec(line);
        if (copy !== null) {
          const sources = copy[1]!.split(/\s+/);
          for (const src of sources) {
            const dest = copy[2]!.endsWith('/') || sources.length > 1 ? path.join(work, copy[2]!, path.basename(src)) : path.join(work, copy[2]!);
            cpSync(path.join(app.build!.context, src), dest, { recursive: true });
          }
        } else if (/^RUN npm ci\b/.test(line)) {
          symlinkSync(path.join(ROOT, 'node_modules'), path.join(work, 'node_modules'), 'dir'); // what npm ci installs
        } else if (line.startsWith('RUN ')) {
          const r = spawnSync('sh', ['-c', line.slice(4)], { cwd: work, encoding: 'utf8', timeout: 120_000 });
          expect(r.status, `${line}\n${r.stdout}${r.stderr}`).toBe(0);
        }
      }
      expect(existsSync(path.join(work, 'dist', 'register.js'))).toBe(true);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 180_000);

  // Found by running the stack: the collector ran the base config alone, so the fleet's connection budget (two
  // alerts and the dashboard's budget panels) had no server-side data in the compose stack.
  it('runs the collector with the postgresql overlay and its feature gate, aimed at the server as the app writes it', () => {
    const collector = project.services['otel-collector']!;
    expect(collector.command).toEqual([
      '--config=/etc/otelcol-contrib/config.yaml', '--config=/etc/otelcol-contrib/postgresql.yaml',
      '--feature-gates=receiver.postgresql.useOTelSemconv',
    ]);
    expect(collector.volumes!.map((v) => [path.relative(ROOT, v.source!), v.target])).toEqual([
      ['collector/otelcol-config.yaml', '/etc/otelcol-contrib/config.yaml'],
      ['collector/otelcol-postgresql.yaml', '/etc/otelcol-contrib/postgresql.yaml'],
    ]);
    const app = new URL(project.services.app!.environment!.DATABASE_URL!);
    expect(collector.environment!.POSTGRESQL_ENDPOINT).toBe(`${app.hostname}:${app.port}`);
    const init = read('docker/postgres-init/02-monitor-role.sh');
    expect(init).toMatch(new RegExp(`CREATE ROLE ${collector.environment!.POSTGRESQL_MONITOR_USER} LOGIN PASSWORD :'password';`));
    expect(init).toMatch(new RegExp(`GRANT pg_monitor TO ${collector.environment!.POSTGRESQL_MONITOR_USER};`));
  });

  it('publishes host ports on 127.0.0.1 only', () => {
    for (const [name, svc] of Object.entries(project.services)) {
      for (const p of svc.ports ?? []) expect(p.host_ip, `${name}: ${p.published}→${p.target}`).toBe('127.0.0.1');
    }
  });

  it('runs the demo under --import with the OTLP and Prometheus exporters aimed at the stack', () => {
    const app = project.services.app!;
    expect(readFileSync(path.join(app.build!.context, app.build!.dockerfile), 'utf8')).toMatch(
      /RUN npm ci[^\n]*\n[\s\S]*RUN npm run build\n[\s\S]*CMD \["node", "--import", "\.\/dist\/register\.js", "demo\/app\.mjs"\]/);
    expect(app.environment).toMatchObject({
      DEMO_HOST: '0.0.0.0',
      OTEL_METRICS_EXPORTER: 'prometheus,otlp',
      OTEL_EXPORTER_PROMETHEUS_HOST: '0.0.0.0',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318',
      OTEL_METRIC_EXPORT_INTERVAL: '5000',
      OTEL_SERVICE_NAME: 'poolscope-demo',
    });
    // The service name is the job label on the OTLP path: the scrape job of the same name in prometheus.yml.
    expect(read('prometheus/prometheus.yml')).toMatch(/job_name: poolscope-demo\b/);
    expect(project.services.loadgen!.environment!.APP_URL).toBe('http://app:3000');
  });

  it('gives the collector every address its config reads from the environment', () => {
    const config = read('collector/otelcol-config.yaml');
    const names = [...config.matchAll(/\$\{env:([A-Z0-9_]+)(?::-[^}]*)?\}/g)].map((m) => m[1]!);
    expect(names.length).toBeGreaterThan(0);
    const env = project.services['otel-collector']!.environment!;
    for (const name of names.filter((n) => /ENDPOINT|HOST|PORT/.test(n))) {
      expect(env[name], `otel-collector env ${name}`).toBeTruthy();
      if (/HOST$/.test(name) || /_ENDPOINT$/.test(name) && !/^https?:/.test(env[name]!)) {
        expect(env[name], `${name} listens on all interfaces inside the container`).toMatch(/^0\.0\.0\.0\b/);
      }
    }
    expect(env.PROMETHEUS_OTLP_ENDPOINT).toBe('http://prometheus:9090/api/v1/otlp/v1/metrics');
    expect(project.services.prometheus!.command).toContain('--web.enable-otlp-receiver');
  });

  it('points Prometheus at this stack: a compose target file for every file_sd file prometheus.yml reads', () => {
    const promConfig = parseYaml(read('prometheus/prometheus.yml')) as {
      scrape_configs: Array<{ job_name: string; file_sd_configs?: Array<{ files: string[] }> }>;
      alerting: { alertmanagers: Array<{ file_sd_configs?: Array<{ files: string[] }> }> };
    };
    const referenced = new Set([
      ...promConfig.scrape_configs.flatMap((s) => s.file_sd_configs ?? []),
      ...promConfig.alerting.alertmanagers.flatMap((a) => a.file_sd_configs ?? []),
    ].flatMap((sd) => sd.files));
    const mounts = project.services.prometheus!.volumes!.filter((v) => v.type === 'bind');
    const targetsMount = mounts.find((v) => v.target === '/etc/prometheus/targets')!;
    expect(path.relative(ROOT, targetsMount.source!)).toBe(path.join('docker', 'prometheus', 'targets'));
    for (const file of referenced) {
      expect(file.startsWith('targets/'), file).toBe(true);
      expect(existsSync(path.join(targetsMount.source!, path.basename(file))), `docker/prometheus/${file}`).toBe(true);
    }
    const services = new Set(Object.keys(project.services));
    for (const file of readdirSync(targetsMount.source!)) {
      const groups = parseYaml(readFileSync(path.join(targetsMount.source!, file), 'utf8')) as Array<{ targets: string[] }>;
      for (const t of groups.flatMap((g) => g.targets)) {
        const host = t.split(':')[0]!;
        expect(host === 'localhost' || services.has(host), `${file}: ${t} is a service of this stack`).toBe(true);
      }
    }
  });

  it('clusters the two Alertmanager peers and mounts the receiver URL files the config reads', () => {
    const peers = ['alertmanager-1', 'alertmanager-2'];
    for (const [i, name] of peers.entries()) {
      const other = peers[1 - i]!;
      expect(project.services[name]!.command).toContain(`--cluster.peer=${other}:9094`);
    }
    const amConfig = read('alertmanager/alertmanager.yml');
    // Secret files the active receivers read (not the commented examples: see the next test).
    const urlFiles = [...amConfig.matchAll(/^\s*(?:-\s*)?url_file:\s*(\S+)/gm)].map((m) => m[1]!);
    expect(urlFiles.sort()).toEqual(['chat_url', 'pager_url', 'ticket_url'].map((f) => `/etc/alertmanager/secrets/${f}`));
    for (const name of peers) {
      const targets = (project.services[name]!.secrets ?? []).map((s) => s.target);
      for (const f of urlFiles) expect(targets, `${name} mounts ${f}`).toContain(f);
    }
    // The demo receivers reach the webhook sink; both peers are alert destinations.
    const example = envExample();
    expect(example.ALERTMANAGER_PAGER_URL).toMatch(/^http:\/\/webhook-sink:8080\//);
    expect(example.ALERTMANAGER_TICKET_URL).toMatch(/^http:\/\/webhook-sink:8080\//);
    expect(example.ALERTMANAGER_CHAT_URL).toMatch(/^http:\/\/webhook-sink:8080\//);
    expect(read('docker/prometheus/targets/alertmanager.yml')).toContain("['alertmanager-1:9093', 'alertmanager-2:9093']");
  });

  it('has a commented secret, mounted on both peers and fed from .env, for each secret file the Slack and e-mail examples read', () => {
    const amConfig = read('alertmanager/alertmanager.yml');
    const exampleFiles = [...amConfig.matchAll(/^\s*#\s*(?:-\s*)?\w+_file:\s*(\/etc\/alertmanager\/secrets\/\S+)/gm)].map((m) => m[1]!);
    expect(exampleFiles.sort()).toEqual(['/etc/alertmanager/secrets/slack_api_url', '/etc/alertmanager/secrets/smtp_password']);
    const raw = read('docker-compose.yml');
    const envExampleText = read('.env.example');
    for (const file of exampleFiles) {
      const name = path.basename(file);
      // Uncommented, the mount and the secret are what the active receivers' secrets look like.
      expect(raw, `x-alertmanager mounts ${file} (commented)`).toMatch(new RegExp(
        `^ {4}# - source: alertmanager_${name}\\n {4}# {3}target: ${file.replaceAll('/', '\\/')}$`, 'm'));
      const envVar = `ALERTMANAGER_${name.toUpperCase()}`;
      expect(raw, `secrets: alertmanager_${name} (commented)`).toMatch(new RegExp(
        `^ {2}# alertmanager_${name}:\\n {2}# {3}environment: ${envVar}$`, 'm'));
      expect(envExampleText, `.env.example names ${envVar}`).toMatch(new RegExp(`^# ${envVar}=$`, 'm'));
    }
  });
});

describe('programs and files the stack mounts', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  function start(script: string, env: Record<string, string>): ChildProcess {
    const child = spawn(process.execPath, [path.join(ROOT, script)], {
      env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    return child;
  }

  it('webhook sink: records each Alertmanager notification and lists them, newest first, by receiver', async () => {
    const sink = start('docker/webhook-sink.mjs', { PORT: '0', HOST: '127.0.0.1' });
    let output = '';
    sink.stdout!.on('data', (d) => { output += String(d); });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`sink did not start: ${output}`)), 10_000);
      sink.stdout!.on('data', () => {
        const m = /LISTENING (\d+)/.exec(output);
        if (m) { clearTimeout(timer); resolve(Number(m[1])); }
      });
    });
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const notification = (status: string) => ({
      version: '4', status, receiver: 'pager', groupKey: '{}:{alertname="PoolUtilizationCritical"}',
      alerts: [{ status, labels: { alertname: 'PoolUtilizationCritical', severity: 'critical', job: 'poolscope-demo', db_client_connection_pool_name: 'orders-db' } }],
    });
    for (const [receiver, status] of [['pager', 'firing'], ['chat', 'firing'], ['pager', 'resolved']] as const) {
      const res = await fetch(`${base}/${receiver}`, { method: 'POST', body: JSON.stringify(notification(status)), headers: { 'content-type': 'application/json' } });
      expect(res.status).toBe(200);
    }
    expect((await fetch(`${base}/pager`, { method: 'POST', body: 'not json' })).status).toBe(400);
    const pager = (await (await fetch(`${base}/notifications?receiver=pager`)).json()) as Array<{ receiver: string; payload: { status: string } }>;
    expect(pager.map((n) => n.payload.status)).toEqual(['resolved', 'firing']);
    const all = (await (await fetch(`${base}/notifications`)).json()) as unknown[];
    expect(all).toHaveLength(3);
    expect(output).toMatch(/pager firing 1 alert\(s\): PoolUtilizationCritical\[critical\] poolscope-demo\/orders-db firing/);
    sink.kill('SIGTERM');
    const [code] = await once(sink, 'exit');
    expect(code).toBe(0);
  });

  it('load generator: drives every demo endpoint through its phases, beats its heartbeat, and stops by itself', async () => {
    const hits: Record<string, number> = {};
    const server = http.createServer((req, res) => {
      const route = (req.url ?? '').replace(/\?.*$/, '').replace(/\/\d+$/, '/:id');
      hits[route] = (hits[route] ?? 0) + 1;
      res.writeHead(route === '/broken' ? 500 : 200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'poolscope-loadgen-'));
    try {
      const heartbeat = path.join(dir, 'heartbeat');
      // One short cycle: critical runs 4 × pool max workers, enough for every worker kind (i up to 12).
      const gen = start('docker/loadgen.mjs', {
        APP_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        LOADGEN_POOL_MAX: '4', LOADGEN_PHASES: 'healthy:1,critical:1', LOADGEN_CYCLES: '1', LOADGEN_HEARTBEAT: heartbeat,
      });
      let output = '';
      gen.stdout!.on('data', (d) => { output += String(d); });
      gen.stderr!.on('data', (d) => { output += String(d); });
      const [code] = await Promise.race([
        once(gen, 'exit'),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`loadgen did not stop: ${output}`)), 20_000)),
      ]);
      expect(code, output).toBe(0);
      expect(Object.keys(hits).sort()).toEqual(['/broken', '/orders/:id', '/reports/daily', '/work']);
      expect(output).toMatch(/phase healthy .* ok \d+/);
      expect(output).toMatch(/phase critical \(16 workers, 600 ms hold, 1s\)/);
      expect(Date.now() - statSync(heartbeat).mtimeMs).toBeLessThan(15_000);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('postgres init script creates and seeds the table the demo service reads', async () => {
    const client = new pg.Client({ connectionString: inject('databaseUrl') });
    await client.connect();
    const schema = `compose_init_${randomBytes(4).toString('hex')}`;
    try {
      // In a throwaway schema inside a transaction that is rolled back: nothing is left behind.
      await client.query('BEGIN');
      await client.query(`CREATE SCHEMA ${schema}`);
      await client.query(`SET LOCAL search_path TO ${schema}`);
      const dir = path.join(ROOT, 'docker/postgres-init');
      for (const file of readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()) {
        await client.query(readFileSync(path.join(dir, file), 'utf8'));
      }
      const { rows } = await client.query(`SELECT count(*)::int AS n FROM ${schema}.demo_orders`);
      expect(rows[0].n).toBe(10_000);
      // The demo's queries run against it.
      const order = await client.query('SELECT id, customer, total FROM demo_orders WHERE id = $1', [42]);
      expect(order.rows).toHaveLength(1);
      await client.query('SELECT count(*)::int AS orders, sum(total)::float AS revenue FROM demo_orders');
    } finally {
      await client.query('ROLLBACK').catch(() => {});
      await client.end();
    }
  });
});
