import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DEFAULTS, LOG_LEVELS, MAX_POOL_SIZE, MAX_TIMER_MILLIS, OTLP_PROTOCOLS, describeEndpoint, normalizeConfig, type PoolscopeOptions,
} from '../src/config.js';

describe('normalizeConfig', () => {
  it('applies defaults when nothing is set', () => {
    const { config, warnings } = normalizeConfig({}, {});
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      disabled: false,
      logLevel: 'warn',
      metricsExporters: ['prometheus'],
      tracesExporter: undefined,
      host: 'localhost',
      port: 9464,
      exportIntervalMillis: 60_000,
      exportTimeoutMillis: 30_000,
      warningThreshold: 0.75,
      criticalThreshold: 0.9,
      logUtilizationThreshold: 0.8,
      poolBaseSize: undefined,
      disabledInstrumentations: [],
    });
    expect(config.otlpMetrics).toMatchObject({
      protocol: 'http/protobuf', endpoint: 'http://localhost:4318/v1/metrics', timeoutMillis: 29_000,
      compression: 'none', temporalityPreference: 'cumulative', userEnv: [],
    });
    expect(config.otlpTraces).toMatchObject({ protocol: 'http/protobuf', endpoint: 'http://localhost:4318/v1/traces', timeoutMillis: 10_000 });
  });

  it('prefers the explicit option, then the environment variable, then the default', () => {
    const env = { OTEL_EXPORTER_PROMETHEUS_PORT: '9500', OTEL_METRICS_EXPORTER: 'otlp', POOLSCOPE_HEALTH_WARNING_THRESHOLD: '0.6' };
    expect(normalizeConfig({ port: 9600 }, env).config.port).toBe(9600);
    expect(normalizeConfig({}, env).config.port).toBe(9500);
    expect(normalizeConfig({}, env).config.metricsExporters).toEqual(['otlp']);
    expect(normalizeConfig({ metricsExporters: ['prometheus', 'otlp'] }, env).config.metricsExporters).toEqual(['prometheus', 'otlp']);
    expect(normalizeConfig({}, env).config.warningThreshold).toBe(0.6);
    expect(normalizeConfig({}, {}).config.port).toBe(DEFAULTS.port);
  });

  it('accepts both exporters and none', () => {
    expect(normalizeConfig({}, { OTEL_METRICS_EXPORTER: 'prometheus, otlp' }).config.metricsExporters).toEqual(['prometheus', 'otlp']);
    expect(normalizeConfig({}, { OTEL_METRICS_EXPORTER: 'none' }).config.metricsExporters).toEqual([]);
    expect(normalizeConfig({}, { OTEL_TRACES_EXPORTER: 'otlp' }).config.tracesExporter).toBe('otlp');
    expect(normalizeConfig({}, { OTEL_TRACES_EXPORTER: 'none' }).config.tracesExporter).toBeUndefined();
    expect(normalizeConfig({}, { OTEL_SDK_DISABLED: 'true' }).config.disabled).toBe(true);
  });

  it.each([
    ['OTEL_EXPORTER_PROMETHEUS_PORT', 'abc', 'port', 9464],
    ['OTEL_EXPORTER_PROMETHEUS_PORT', '70000', 'port', 9464],
    ['POOLSCOPE_HEALTH_WARNING_THRESHOLD', '1.5', 'warningThreshold', 0.75],
    ['POOLSCOPE_HEALTH_WARNING_THRESHOLD', '1', 'warningThreshold', 0.75],
    ['POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', '-1', 'criticalThreshold', 0.9],
    ['OTEL_METRIC_EXPORT_INTERVAL', '10s', 'exportIntervalMillis', 60_000],
    ['OTEL_METRIC_EXPORT_INTERVAL', String(2 ** 31), 'exportIntervalMillis', 60_000],
    ['OTEL_METRIC_EXPORT_TIMEOUT', '1e12', 'exportTimeoutMillis', 30_000],
    ['POOLSCOPE_HEALTH_SAMPLE_INTERVAL', '99999999999', 'healthSampleIntervalMillis', 5_000],
    ['POOLSCOPE_POOL_BASE_SIZE', '-3', 'poolBaseSize', undefined],
    ['POOLSCOPE_POOL_BASE_SIZE', String(MAX_POOL_SIZE + 1), 'poolBaseSize', undefined],
    ['OTEL_SDK_DISABLED', 'yes please', 'disabled', false],
    ['OTEL_LOG_LEVEL', 'loud', 'logLevel', 'warn'],
    ['POOLSCOPE_ESM_LOADER_THREAD', 'yes', 'esmLoaderThread', 'auto'],
    ['POOLSCOPE_SERVER_START', 'lazy', 'serverStart', 'auto'],
    ['OTEL_EXPORTER_PROMETHEUS_HOST', 'evil host\n', 'host', 'localhost'],
  ] as const)('warns once about %s=%s, naming the variable and the fallback', (variable, raw, key, fallback) => {
    const { config, warnings } = normalizeConfig({}, { [variable]: raw });
    expect(config[key]).toBe(fallback);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(variable);
    expect(warnings[0]).toContain(`using ${JSON.stringify(fallback) ?? 'unset'}`);
  });

  it('keeps the known exporters and warns about an unknown name', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_METRICS_EXPORTER: 'otlp,zipkin' });
    expect(config.metricsExporters).toEqual(['otlp']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/OTEL_METRICS_EXPORTER 'zipkin' is not one of none, prometheus, otlp; using otlp\./);
  });

  it('names none, not an empty list, when no exporter is left', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_TRACES_EXPORTER: 'jaeger' });
    expect(config.tracesExporter).toBeUndefined();
    expect(warnings).toEqual([expect.stringMatching(/OTEL_TRACES_EXPORTER 'jaeger' is not one of none, otlp, console; using none\.$/)]);
  });

  it('lets none win over other exporters listed with it, and says so once', () => {
    for (const [variable, key] of [['OTEL_METRICS_EXPORTER', 'metricsExporters'], ['OTEL_TRACES_EXPORTER', 'tracesExporter']] as const) {
      const { config, warnings } = normalizeConfig({}, { [variable]: 'none,otlp' });
      expect(config[key] ?? []).toEqual([]);
      expect(warnings).toEqual([`poolscope: ${variable} combines 'none' with other exporters; using none.`]);
    }
  });

  it('says which one trace exporter it uses when several are listed', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_TRACES_EXPORTER: 'otlp, console' });
    expect(config.tracesExporter).toBe('otlp');
    expect(warnings).toEqual(['poolscope: OTEL_TRACES_EXPORTER names 2 exporters (otlp,console) where 1 is supported; using otlp.']);
  });

  it('names the option, not the variable, when an explicit option is bad', () => {
    const { warnings } = normalizeConfig({ port: -1 }, {});
    expect(warnings[0]).toMatch(/^poolscope: option port '-1' is not a port number/);
  });

  // Found by a README audit: a bad option went straight to the default (`port: Number(process.env.X)` is NaN).
  it('falls back from a bad option to the environment variable, then the default (bug: the variable was skipped)', () => {
    const port = normalizeConfig({ port: Number.NaN }, { OTEL_EXPORTER_PROMETHEUS_PORT: '9999' });
    expect(port.config.port).toBe(9999);
    expect(port.warnings).toEqual(["poolscope: option port 'NaN' is not a port number (0-65535); using 9999."]);
    const flag = normalizeConfig({ querySummary: 'yes' as unknown as boolean }, { POOLSCOPE_QUERY_SUMMARY: 'true' });
    expect(flag.config.querySummary).toBe(true);
    expect(flag.warnings).toEqual(["poolscope: option querySummary 'yes' is not 'true' or 'false'; using true."]);
  });

  // Found by an OTLP settings review: ',' (a template joining two empty values) turned every metric off silently.
  it('uses the default for an exporter list that names nothing, and says so (bug: metrics off without a word)', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_METRICS_EXPORTER: ' , ' });
    expect(config.metricsExporters).toEqual(['prometheus']);
    expect(warnings).toEqual(['poolscope: OTEL_METRICS_EXPORTER names nothing; using prometheus.']);
  });

  // `none` is an exporter word (found by a README audit: `pg,none` kept pg instrumented, "combines 'none' with other exporters").
  it('takes none in OTEL_NODE_DISABLED_INSTRUMENTATIONS for an unknown name, not for "disable nothing"', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_NODE_DISABLED_INSTRUMENTATIONS: 'pg,none' });
    expect(config.disabledInstrumentations).toEqual(['pg']);
    expect(warnings).toEqual(["poolscope: OTEL_NODE_DISABLED_INSTRUMENTATIONS 'none' is not one of pg, http, express, fastify; using pg."]);
  });

  // The specification: only 'true' is true for an OTEL_ boolean (other SDKs in the fleet read `1` as false).
  it('reads OTEL_SDK_DISABLED=1 as the specification does: false, with a warning (bug: it turned Poolscope off)', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_SDK_DISABLED: '1' });
    expect(config.disabled).toBe(false);
    expect(warnings).toEqual(["poolscope: OTEL_SDK_DISABLED '1' is not 'true' or 'false'; using false."]);
    expect(normalizeConfig({}, { POOLSCOPE_QUERY_SUMMARY: '1' }).config.querySummary).toBe(true);
  });
});

describe('OTLP protocol and endpoints', () => {
  it('defaults to http/protobuf, as the OTLP specification does, and appends the signal path to the base URL', () => {
    const { config } = normalizeConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' });
    expect(config.otlpMetrics).toMatchObject({ protocol: 'http/protobuf', endpoint: 'http://collector:4318/v1/metrics' });
    expect(config.otlpTraces).toMatchObject({ protocol: 'http/protobuf', endpoint: 'http://collector:4318/v1/traces' });
    expect(normalizeConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://gw.example/otlp?tenant=a' }).config.otlpMetrics.endpoint)
      .toBe('https://gw.example/otlp/v1/metrics?tenant=a');
  });

  it('uses the signal-specific endpoint as is', () => {
    expect(normalizeConfig({}, {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://other:9999/custom',
    }).config.otlpMetrics.endpoint).toBe('http://other:9999/custom');
  });

  it('uses the endpoint as is for grpc, with port 4317 by default, and accepts host:port', () => {
    expect(normalizeConfig({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }).config.otlpMetrics.endpoint).toBe('http://localhost:4317');
    expect(normalizeConfig({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317' })
      .config.otlpTraces.endpoint).toBe('http://collector:4317');
    expect(normalizeConfig({ otlpProtocol: 'grpc', otlpEndpoint: 'collector:4317' }, {}).config.otlpMetrics.endpoint).toBe('collector:4317');
    // host:port is no URL for the http protocols.
    const http = normalizeConfig({ otlpEndpoint: 'collector:4317', metricsExporters: ['otlp'] }, {});
    expect(http.config.otlpMetrics.endpoint).toBe('http://localhost:4318/v1/metrics');
    expect(http.warnings).toEqual(["poolscope: option otlpEndpoint is not an http(s) URL; using http://localhost:4318/v1/metrics for metrics."]);
  });

  it('resolves the protocol per signal: option, then the signal variable, then the general one', () => {
    const env = { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' };
    expect(normalizeConfig({}, env).config.otlpMetrics.protocol).toBe('grpc');
    expect(normalizeConfig({}, env).config.otlpTraces.protocol).toBe('http/json');
    expect(normalizeConfig({ otlpProtocol: 'http/json', otlpTracesProtocol: 'http/protobuf' }, env).config)
      .toMatchObject({ otlpMetrics: { protocol: 'http/json' }, otlpTraces: { protocol: 'http/protobuf' } });
  });

  it('falls back along the chain for a bad protocol, and only warns for signals that use OTLP', () => {
    const env = { OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'kafka', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' };
    expect(normalizeConfig({}, env).warnings).toEqual([]);
    const { config, warnings } = normalizeConfig({ metricsExporters: ['otlp'] }, env);
    expect(config.otlpMetrics.protocol).toBe('http/json');
    expect(warnings).toEqual(["poolscope: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL 'kafka' is not one of http/protobuf, http/json, grpc; using \"http/json\" for metrics."]);
  });

  it('never echoes credentials or query strings of an endpoint, even in the fallback it names', () => {
    const { config, warnings } = normalizeConfig({ metricsExporters: ['otlp'] }, {
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'grpc://user:hunter2@collector',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://tenant:s3cret@gw.example:443/otlp?api_key=k3y',
    });
    expect(config.otlpMetrics.endpoint).toBe('https://tenant:s3cret@gw.example/otlp/v1/metrics?api_key=k3y');
    expect(warnings).toEqual(['poolscope: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is not an http(s) URL; using https://gw.example/otlp/v1/metrics for metrics.']);
    expect(describeEndpoint('http://u:p@[::1]:4318/v1/metrics?x=1#f')).toBe('http://[::1]:4318/v1/metrics');
    expect(describeEndpoint('collector:4317')).toBe('collector:4317');
  });

  // Found by a hostile-input review: a token pasted into the wrong OTLP variable was echoed, and a tenant key in an
  // endpoint's path was printed by the export-failure line.
  it('never echoes an OTLP variable\'s value, nor path segments that are not OTLP\'s own', () => {
    const { warnings } = normalizeConfig({ metricsExporters: ['otlp'] }, {
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: '0123456789abcdef0123456789abcdef', OTEL_EXPORTER_OTLP_COMPRESSION: 'sk_live_51Habc',
    });
    expect(warnings).toHaveLength(2);
    for (const w of warnings) expect(w).not.toMatch(/0123456789abcdef|sk_live/);
    expect(describeEndpoint('https://ingest.example/tok/PATHSECRET/v1/metrics')).toBe('https://ingest.example/.../.../v1/metrics');
    // Review: nor a token pasted into another variable.
    const other = normalizeConfig({}, { OTEL_LOG_LEVEL: 'sk_live_4eC39HqLyjWDarjtT1', POOLSCOPE_SERVER_START: 'ghp16CharToken1' });
    expect(other.warnings).toHaveLength(2);
    for (const w of other.warnings) expect(w).not.toMatch(/sk_live|ghp16/);
    expect(normalizeConfig({}, { OTEL_LOG_LEVEL: 'loud' }).warnings[0]).toContain("'loud'");
    expect(describeEndpoint('http://127.0.0.1:9090/api/v1/otlp/v1/metrics')).toBe('http://127.0.0.1:9090/api/v1/otlp/v1/metrics');
  });

  it('leaves a valid OTLP timeout, compression and temporality variable to the exporter, and hides invalid ones', () => {
    const { config, warnings } = normalizeConfig({ metricsExporters: ['otlp'] }, {
      OTEL_EXPORTER_OTLP_TIMEOUT: 'soon',
      OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: '45000',
      OTEL_EXPORTER_OTLP_COMPRESSION: 'gzip',
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'Delta',
    });
    expect(config.otlpMetrics).toMatchObject({ timeoutMillis: 45_000, compression: 'gzip', temporalityPreference: 'delta' });
    expect(config.otlpMetrics.userEnv.sort()).toEqual(
      ['OTEL_EXPORTER_OTLP_COMPRESSION', 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE', 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT']);
    // The shadowed general timeout changes nothing, so it is not warned about, but the exporter must not see it.
    expect(config.otlpMetrics.hiddenEnv).toContain('OTEL_EXPORTER_OTLP_TIMEOUT');
    expect(warnings).toEqual([]);
    // The reader's default timeout makes room for the user's longer request timeout.
    expect(config.exportTimeoutMillis).toBe(46_000);

    const bad = normalizeConfig({ metricsExporters: ['otlp'] }, {
      OTEL_EXPORTER_OTLP_TIMEOUT: String(2 ** 31), OTEL_EXPORTER_OTLP_COMPRESSION: 'zip',
      OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: 'sideways',
    });
    expect(bad.config.otlpMetrics).toMatchObject({ timeoutMillis: 29_000, compression: 'none', temporalityPreference: 'cumulative', userEnv: [] });
    expect(bad.config.otlpMetrics.hiddenEnv).toEqual(expect.arrayContaining([
      'OTEL_EXPORTER_OTLP_TIMEOUT', 'OTEL_EXPORTER_OTLP_COMPRESSION', 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE']));
    expect(bad.warnings).toEqual([
      "poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '2147483648' is not an integer from 1 to 59999 (ms), shorter than the metrics export interval; using 29000 for metrics.",
      "poolscope: OTEL_EXPORTER_OTLP_COMPRESSION 'zip' is not 'gzip' or 'none'; using \"none\" for metrics.",
      "poolscope: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE 'sideways' is not one of cumulative, delta, lowmemory; using \"cumulative\".",
    ]);
    // The exporter does not trim: ' delta' passed Poolscope's check and was refused there, echoing the raw value.
    const spaced = normalizeConfig({ metricsExporters: ['otlp'] }, { OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: ' delta' });
    expect(spaced.config.otlpMetrics.temporalityPreference).toBe('cumulative');
    expect(spaced.config.otlpMetrics.hiddenEnv).toContain('OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE');
    expect(spaced.warnings).toEqual([
      "poolscope: OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE 'delta' is not one of cumulative, delta, lowmemory; using \"cumulative\".",
    ]);
  });
});

describe('an OTLP request timeout not shorter than the export interval', () => {
  // A request that outlived an explicit, shorter export timeout answered an export already failed, and an ending
  // script waited for it: 30 s with OTEL_EXPORTER_OTLP_TIMEOUT=30000 and OTEL_METRIC_EXPORT_TIMEOUT=2000.
  it('is refused for metrics when not shorter than an explicit export timeout (bug: accepted, the exit waited for it)', () => {
    const { config, warnings } = normalizeConfig({}, {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_TIMEOUT: '2000', OTEL_EXPORTER_OTLP_TIMEOUT: '30000',
    });
    expect(config.exportTimeoutMillis).toBe(2000);
    expect(config.otlpMetrics).toMatchObject({ timeoutMillis: 1000, userEnv: [] });
    expect(warnings).toEqual([
      "poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '30000' is not an integer from 1 to 1999 (ms), shorter than the metrics export timeout; using 1000 for metrics.",
    ]);
  });

  // Each request outlived the next interval's start: against a collector that never answered one was always in
  // flight, and the process never exited (test/otlp-wire.test.ts).
  it('is refused for metrics, with the fallback the exporter really gets, and left to traces', () => {
    const { config, warnings } = normalizeConfig({}, {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_TRACES_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_EXPORTER_OTLP_TIMEOUT: '5000',
    });
    expect(config.otlpMetrics).toMatchObject({ timeoutMillis: 500, userEnv: [] });
    expect(config.otlpMetrics.hiddenEnv).toContain('OTEL_EXPORTER_OTLP_TIMEOUT');
    expect(config.otlpTraces).toMatchObject({ timeoutMillis: 5000, userEnv: ['OTEL_EXPORTER_OTLP_TIMEOUT'] });
    expect(warnings).toEqual([
      "poolscope: OTEL_EXPORTER_OTLP_TIMEOUT '5000' is not an integer from 1 to 999 (ms), shorter than the metrics export interval; using 500 for metrics.",
    ]);
  });

  // Review: an invalid metrics timeout fell back to a general one too long, and its warning named that value,
  // which a second warning then replaced.
  it('names the same fallback in every warning when the metrics timeout is invalid and the general one too long', () => {
    const { config, warnings } = normalizeConfig({}, {
      OTEL_METRICS_EXPORTER: 'otlp', OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: 'abc', OTEL_EXPORTER_OTLP_TIMEOUT: '5000',
    });
    expect(config.otlpMetrics.timeoutMillis).toBe(500);
    expect(warnings).toHaveLength(2);
    for (const w of warnings) expect(w).toMatch(/; using 500 for metrics\.$/);
  });
});

describe('the resource and OTLP headers (the SDK reads these; bad entries were dropped without a word)', () => {
  it('takes service.name from the option, then OTEL_SERVICE_NAME, then OTEL_RESOURCE_ATTRIBUTES, then the default', () => {
    const env = { OTEL_SERVICE_NAME: 'checkout', OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs,deployment.environment.name=prod' };
    expect(normalizeConfig({ serviceName: ' api ' }, env).config.serviceName).toBe('api');
    expect(normalizeConfig({}, env).config.serviceName).toBe('checkout');
    expect(normalizeConfig({}, { OTEL_RESOURCE_ATTRIBUTES: env.OTEL_RESOURCE_ATTRIBUTES }).config.serviceName).toBe('from-attrs');
    expect(normalizeConfig({}, {}).config.serviceName).toBe('unknown_service:node');
    expect(normalizeConfig({}, env).config.resourceAttributes).toEqual({ 'service.name': 'from-attrs', 'deployment.environment.name': 'prod' });
  });

  it('percent-decodes OTEL_RESOURCE_ATTRIBUTES and skips blank entries, as the specification says', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_RESOURCE_ATTRIBUTES: ' team = a%2Cb ,, k8s.pod.name=p%3D1,' });
    expect(config.resourceAttributes).toEqual({ team: 'a,b', 'k8s.pod.name': 'p=1' });
    expect(warnings).toEqual([]);
  });

  it.each([
    ['a=b,tok3n', 'entry 2 is not key=value'],
    ['a=b,c=hunter2=x', 'entry 2 is not key=value'],
    ['=pr1vate', 'entry 1 has an empty key'],
    ['a=%ZZhunter2', 'entry 1 is not valid percent-encoding'],
    [`a=${'x'.repeat(256)}`, 'entry 1 is longer than 255 characters'],
  ])('a bad OTEL_RESOURCE_ATTRIBUTES (%#) voids all of it, with one warning naming the entry but not its text', (raw, problem) => {
    const { config, warnings } = normalizeConfig({}, { OTEL_RESOURCE_ATTRIBUTES: raw });
    expect(config.resourceAttributes).toEqual({});
    expect(warnings).toEqual([`poolscope: OTEL_RESOURCE_ATTRIBUTES ${problem}${problem.endsWith('key=value') ? " (',' and '=' inside a key or value must be percent-encoded)" : ''}, so all of it is ignored, as the OpenTelemetry specification requires; using no resource attributes from it.`]);
    for (const secret of SECRETS) expect(warnings[0]).not.toContain(secret);
  });

  it('rejects a service name longer than 255 characters, falling back along the chain', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_SERVICE_NAME: 'x'.repeat(100_000), OTEL_RESOURCE_ATTRIBUTES: 'service.name=shop' });
    expect(config.serviceName).toBe('shop');
    expect(warnings).toEqual(['poolscope: OTEL_SERVICE_NAME is not a name of 1 to 255 characters; using service.name from OTEL_RESOURCE_ATTRIBUTES.']);
    expect(normalizeConfig({ serviceName: 'z'.repeat(300) }, { OTEL_SERVICE_NAME: 'shop' }).warnings)
      .toEqual(['poolscope: option serviceName is not a name of 1 to 255 characters; using OTEL_SERVICE_NAME.']);
    expect(normalizeConfig({ serviceName: 'y'.repeat(256) }, {}).warnings)
      .toEqual(['poolscope: option serviceName is not a name of 1 to 255 characters; using "unknown_service:node".']);
  });

  it('names the OTLP header entries the exporters would leave out, by position only, for the signals that push', () => {
    const env = {
      OTEL_EXPORTER_OTLP_HEADERS: 'authorization=Bearer%20ok,hunter2,x-key=,=tok3n, ,x-ok=1;meta',
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-tenant=%E0%A4%Apr1vate',
    };
    expect(normalizeConfig({ metricsExporters: ['prometheus'] }, env).warnings).toEqual([]);
    const { warnings } = normalizeConfig({ metricsExporters: ['otlp'], tracesExporter: 'otlp' }, env);
    expect(warnings).toEqual([
      'poolscope: OTEL_EXPORTER_OTLP_HEADERS entries 2, 3 and 4 are not name=value with a non-empty, percent-encoded value; using the other headers only.',
      'poolscope: OTEL_EXPORTER_OTLP_TRACES_HEADERS entry 1 is not name=value with a non-empty, percent-encoded value; using the other headers only.',
    ]);
    expect(normalizeConfig({ metricsExporters: ['otlp'] }, { OTEL_EXPORTER_OTLP_METRICS_HEADERS: 'a=1,b=2' }).warnings).toEqual([]);
    const many = normalizeConfig({ metricsExporters: ['otlp'] }, { OTEL_EXPORTER_OTLP_HEADERS: Array(10_000).fill('junk').join(',') }).warnings;
    expect(many).toEqual(['poolscope: OTEL_EXPORTER_OTLP_HEADERS entries 1, 2, 3, 4, 5 and 9995 more are not name=value with a non-empty, percent-encoded value; using the other headers only.']);
  });
});

describe('settings that depend on each other', () => {
  it('caps the default export timeout at the interval silently, and warns when an explicit one exceeds it', () => {
    expect(normalizeConfig({}, { OTEL_METRIC_EXPORT_INTERVAL: '1000' })).toMatchObject({ config: { exportTimeoutMillis: 1000 }, warnings: [] });
    const { config, warnings } = normalizeConfig({}, { OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_METRIC_EXPORT_TIMEOUT: '5000' });
    expect(config.exportTimeoutMillis).toBe(1000);
    expect(warnings).toEqual(['poolscope: OTEL_METRIC_EXPORT_TIMEOUT (5000) must not exceed the export interval (1000); using 1000.']);
  });

  it('names the fallback actually used for a bad export timeout (the interval, when shorter than the default)', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_METRIC_EXPORT_INTERVAL: '1000', OTEL_METRIC_EXPORT_TIMEOUT: 'abc' });
    expect(config.exportTimeoutMillis).toBe(1000);
    expect(warnings[0]).toMatch(/OTEL_METRIC_EXPORT_TIMEOUT 'abc' .*; using 1000\.$/);
  });

  it('moves an unset threshold to fit the one that is set, without a warning', () => {
    expect(normalizeConfig({ criticalThreshold: 0.6 }, {})).toMatchObject({
      config: { warningThreshold: 0.5, criticalThreshold: 0.6, logUtilizationThreshold: 0.6 }, warnings: [],
    });
    expect(normalizeConfig({ warningThreshold: 0.95 }, {})).toMatchObject({
      config: { warningThreshold: 0.95, criticalThreshold: 1, logUtilizationThreshold: 0.95 }, warnings: [],
    });
  });

  it('rejects a critical threshold at or below an explicit warning threshold, with a fallback above it', () => {
    const { config, warnings } = normalizeConfig({ warningThreshold: 0.8, criticalThreshold: 0.5 }, {});
    expect(config.criticalThreshold).toBe(0.9);
    expect(warnings).toEqual(['poolscope: option criticalThreshold (0.5) must be above the warning threshold (0.8); using 0.9.']);
    const high = normalizeConfig({}, { POOLSCOPE_HEALTH_WARNING_THRESHOLD: '0.95', POOLSCOPE_HEALTH_CRITICAL_THRESHOLD: '0.5' });
    expect(high.config.criticalThreshold).toBe(1);
    expect(high.warnings).toHaveLength(1);
  });

  it('names a fallback for a bad threshold that fits the other one', () => {
    const { config, warnings } = normalizeConfig({}, { POOLSCOPE_HEALTH_WARNING_THRESHOLD: 'lots', POOLSCOPE_HEALTH_CRITICAL_THRESHOLD: '0.6' });
    expect(config).toMatchObject({ warningThreshold: 0.5, criticalThreshold: 0.6 });
    expect(warnings).toEqual(["poolscope: POOLSCOPE_HEALTH_WARNING_THRESHOLD 'lots' is not a number above 0 and below 1; using 0.5."]);
  });
});

// ------------------------------------------------------------------------------------------------------------
// Property: over random option and environment combinations, resolution never throws, every number stays
// in its documented range, the settings agree with each other, and every warning is one sanitised line
// that names a setting and the value actually used.
const SECRETS = ['hunter2', 'tok3n', 'pr1vate'];
const interesting = fc.constantFrom(
  '', ' ', '0', '1', '-1', '0.5', '0.95', '1.5', '100', '250', '1000', '5000', '30000', '60000', '2147483647', '2147483648',
  '99999999999', '1e3', 'NaN', 'Infinity', 'true', 'false', 'none', 'otlp', 'prometheus', 'otlp,prometheus', 'console',
  'grpc', 'http/json', 'http/protobuf', 'GRPC', 'gzip', 'zip', 'delta', 'Delta', 'lowmemory', 'sideways', 'debug', 'loud',
  'http://collector:4318', 'https://gw.example/otlp/', 'collector:4317', '[::1]:4317', 'not a url', 'ftp://x',
  'http://user:hunter2@collector:4318/?token=tok3n', 'https://x.example/v1/metrics?key=tok3n', 'grpc://a:pr1vate@h',
  'service.name=shop,team=a%2Cb', 'authorization=Bearer%20hunter2,tok3n', '=pr1vate', 'a=%ZZhunter2', 'a=b=tok3n',
  'x\npoolscope: forged', 'a\u0000b', '\u001b[31mred', 'x'.repeat(5000), '127.0.0.1', '::', 'local host', '-h',
);
const envValue = fc.oneof({ weight: 4, arbitrary: interesting }, { weight: 1, arbitrary: fc.string({ maxLength: 60 }) });
const VARIABLES = [
  'OTEL_SDK_DISABLED', 'OTEL_LOG_LEVEL', 'OTEL_SERVICE_NAME', 'OTEL_METRICS_EXPORTER', 'OTEL_TRACES_EXPORTER',
  'OTEL_EXPORTER_PROMETHEUS_HOST', 'OTEL_EXPORTER_PROMETHEUS_PORT', 'POOLSCOPE_HEALTH_ENDPOINTS',
  'OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL', 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
  'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TIMEOUT', 'OTEL_EXPORTER_OTLP_METRICS_TIMEOUT', 'OTEL_EXPORTER_OTLP_TRACES_TIMEOUT',
  'OTEL_EXPORTER_OTLP_COMPRESSION', 'OTEL_EXPORTER_OTLP_METRICS_COMPRESSION', 'OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE',
  'OTEL_METRIC_EXPORT_INTERVAL', 'OTEL_METRIC_EXPORT_TIMEOUT', 'POOLSCOPE_HEALTH_WARNING_THRESHOLD',
  'POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', 'POOLSCOPE_LOG_UTILIZATION_THRESHOLD', 'POOLSCOPE_HEALTH_SAMPLE_INTERVAL',
  'POOLSCOPE_HEALTH_HISTORY_SIZE', 'POOLSCOPE_POOL_BASE_SIZE', 'OTEL_NODE_DISABLED_INSTRUMENTATIONS',
  'POOLSCOPE_ESM_LOADER_THREAD', 'POOLSCOPE_SERVER_START', 'OTEL_RESOURCE_ATTRIBUTES', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_METRICS_HEADERS',
  'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
] as const;
const anyNumber = fc.oneof(
  fc.constantFrom(0, -1, 0.5, 0.75, 0.9, 0.95, 1, 1.5, 100, 1000, 30_000, 65_535, 65_536, 2 ** 31 - 1, 2 ** 31, 1e12, NaN, Infinity),
  fc.double(), fc.integer(),
);
const anyValue = fc.oneof(anyNumber, interesting, fc.boolean(), fc.constant(null), fc.constant(['otlp']), fc.constant({}));
const optionsArb = fc.record({
  disabled: anyValue, serviceName: anyValue, metricsExporters: fc.oneof(anyValue, fc.constant(['prometheus', 'otlp'])),
  tracesExporter: anyValue, host: anyValue, port: anyNumber, healthEndpoints: anyValue,
  otlpProtocol: anyValue, otlpEndpoint: anyValue, otlpTracesProtocol: anyValue, otlpTracesEndpoint: anyValue,
  exportIntervalMillis: anyNumber, exportTimeoutMillis: anyNumber, warningThreshold: anyNumber, criticalThreshold: anyNumber,
  logUtilizationThreshold: anyNumber, healthSampleIntervalMillis: anyNumber, healthHistorySize: anyNumber,
  poolBaseSize: anyNumber, disabledInstrumentations: anyValue,
}, { requiredKeys: [] });
const envArb = fc.dictionary(fc.constantFrom(...VARIABLES), envValue, { maxKeys: 12 });

/** The resolved field each numeric setting's warning names a fallback for. */
const NUMERIC_FIELDS: Record<string, string> = {
  OTEL_EXPORTER_PROMETHEUS_PORT: 'port', port: 'port',
  OTEL_METRIC_EXPORT_INTERVAL: 'exportIntervalMillis', exportIntervalMillis: 'exportIntervalMillis',
  OTEL_METRIC_EXPORT_TIMEOUT: 'exportTimeoutMillis', exportTimeoutMillis: 'exportTimeoutMillis',
  POOLSCOPE_HEALTH_WARNING_THRESHOLD: 'warningThreshold', warningThreshold: 'warningThreshold',
  POOLSCOPE_HEALTH_CRITICAL_THRESHOLD: 'criticalThreshold', criticalThreshold: 'criticalThreshold',
  POOLSCOPE_LOG_UTILIZATION_THRESHOLD: 'logUtilizationThreshold', logUtilizationThreshold: 'logUtilizationThreshold',
  POOLSCOPE_HEALTH_SAMPLE_INTERVAL: 'healthSampleIntervalMillis', healthSampleIntervalMillis: 'healthSampleIntervalMillis',
  POOLSCOPE_HEALTH_HISTORY_SIZE: 'healthHistorySize', healthHistorySize: 'healthHistorySize',
};

describe('normalizeConfig over random options and environments (property)', () => {
  it('never throws, stays in range, keeps settings consistent and warns in sanitised lines naming setting and fallback', () => {
    fc.assert(fc.property(optionsArb, envArb, (options, env) => {
      const { config: c, warnings } = normalizeConfig(options as PoolscopeOptions, env);
      const inRange = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi;
      expect(inRange(c.port, 0, 65_535)).toBe(true);
      expect(inRange(c.exportIntervalMillis, 1, MAX_TIMER_MILLIS)).toBe(true);
      expect(inRange(c.exportTimeoutMillis, 1, c.exportIntervalMillis)).toBe(true);
      expect(inRange(c.otlpMetrics.timeoutMillis, 1, MAX_TIMER_MILLIS)).toBe(true);
      expect(inRange(c.otlpTraces.timeoutMillis, 1, MAX_TIMER_MILLIS)).toBe(true);
      expect(inRange(c.healthSampleIntervalMillis, 100, MAX_TIMER_MILLIS)).toBe(true);
      expect(inRange(c.healthHistorySize, 1, 1000)).toBe(true);
      if (c.poolBaseSize !== undefined) expect(inRange(c.poolBaseSize, 0, MAX_POOL_SIZE)).toBe(true);
      expect(c.warningThreshold > 0 && c.warningThreshold < c.criticalThreshold && c.criticalThreshold <= 1).toBe(true);
      expect(c.logUtilizationThreshold > 0 && c.logUtilizationThreshold <= 1).toBe(true);
      if (options.logUtilizationThreshold === undefined && env.POOLSCOPE_LOG_UTILIZATION_THRESHOLD === undefined) {
        expect(c.logUtilizationThreshold).toBeGreaterThanOrEqual(c.warningThreshold);
        expect(c.logUtilizationThreshold).toBeLessThanOrEqual(c.criticalThreshold);
      }
      // A request timeout Poolscope chooses never outlasts the reader's timeout.
      if (c.otlpMetrics.userEnv.every((n) => !n.endsWith('_TIMEOUT'))) expect(c.otlpMetrics.timeoutMillis).toBeLessThanOrEqual(c.exportTimeoutMillis);
      expect(LOG_LEVELS).toContain(c.logLevel);
      expect(c.host).toMatch(/^[A-Za-z0-9._:%-]{1,253}$/);
      expect(c.serviceName.length).toBeGreaterThan(0);
      expect(c.serviceName.length).toBeLessThanOrEqual(255);
      for (const [k, v] of Object.entries(c.resourceAttributes)) expect(Math.max(k.length, v.length)).toBeLessThanOrEqual(255);
      for (const otlp of [c.otlpMetrics, c.otlpTraces]) {
        expect(OTLP_PROTOCOLS).toContain(otlp.protocol);
        if (otlp.protocol === 'grpc' && !otlp.endpoint.includes('://')) expect(otlp.endpoint).toMatch(/:\d+$/);
        else expect(new URL(otlp.endpoint).protocol).toMatch(/^https?:$/);
        for (const name of otlp.userEnv) {
          expect(env[name]).toBeDefined();
          expect(otlp.hiddenEnv).not.toContain(name);
        }
      }
      for (const w of warnings) {
        expect(w).toMatch(/^poolscope: (option [a-zA-Z]+|[A-Z][A-Z_]+) .*; using .+\.$/);
        expect(w).not.toMatch(/[\x00-\x1f\x7f]/);
        expect(w.length).toBeLessThan(300);
        expect(w).not.toMatch(/@/);
        for (const secret of SECRETS) expect(w).not.toContain(secret);
        // The fallback named is the value used.
        const m = /^poolscope: (?:option )?(\S+) .*; using (-?[\d.]+)\.$/.exec(w);
        const field = m && NUMERIC_FIELDS[m[1]!];
        if (field) expect((c as unknown as Record<string, number>)[field]).toBe(Number(m[2]));
      }
      // One warning per setting at most.
      const named = warnings.map((w) => /^poolscope: (?:option )?(\S+)/.exec(w)![1]);
      expect(new Set(named).size).toBe(named.length);
    }), { numRuns: 3000 });
  });
});
