import { describe, expect, it } from 'vitest';
import { DEFAULTS, normalizeConfig } from '../src/config.js';

describe('normalizeConfig', () => {
  it('applies defaults when nothing is set', () => {
    const { config, warnings } = normalizeConfig({}, {});
    expect(warnings).toEqual([]);
    expect(config).toMatchObject({
      disabled: false,
      metricsExporters: ['prometheus'],
      tracesExporter: undefined,
      host: 'localhost',
      port: 9464,
      otlpEndpoint: 'http://localhost:4318/v1/metrics',
      exportIntervalMillis: 60_000,
      warningThreshold: 0.75,
      criticalThreshold: 0.9,
      logUtilizationThreshold: 0.8,
      poolBaseSize: undefined,
      disabledInstrumentations: [],
    });
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

  it('derives the OTLP metrics URL from OTEL_EXPORTER_OTLP_ENDPOINT unless the signal-specific one is set', () => {
    expect(normalizeConfig({}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).config.otlpEndpoint)
      .toBe('http://collector:4318/v1/metrics');
    expect(normalizeConfig({}, {
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://other:9999/custom',
    }).config.otlpEndpoint).toBe('http://other:9999/custom');
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
    ['POOLSCOPE_HEALTH_CRITICAL_THRESHOLD', '-1', 'criticalThreshold', 0.9],
    ['OTEL_METRIC_EXPORT_INTERVAL', '10s', 'exportIntervalMillis', 60_000],
    ['POOLSCOPE_POOL_BASE_SIZE', '-3', 'poolBaseSize', undefined],
    ['OTEL_SDK_DISABLED', 'yes please', 'disabled', false],
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
    expect(warnings[0]).toMatch(/OTEL_METRICS_EXPORTER 'zipkin' is not one of none, prometheus, otlp; using \["otlp"\]/);
  });

  it('rejects a critical threshold at or below the warning threshold', () => {
    const { config, warnings } = normalizeConfig({ warningThreshold: 0.8, criticalThreshold: 0.5 }, {});
    expect(config.criticalThreshold).toBe(0.9);
    expect(warnings[0]).toMatch(/critical threshold \(0.5\) must be above the warning threshold \(0.8\)/);
  });

  it('rejects a non-http OTLP endpoint without echoing it', () => {
    const { config, warnings } = normalizeConfig({}, { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'grpc://user:hunter2@collector' });
    expect(config.otlpEndpoint).toBe('http://localhost:4318/v1/metrics');
    expect(warnings[0]).toContain('OTEL_EXPORTER_OTLP_METRICS_ENDPOINT');
    expect(warnings[0]).not.toContain('hunter2');
  });

  it('names the option, not the variable, when an explicit option is bad', () => {
    const { warnings } = normalizeConfig({ port: -1 }, {});
    expect(warnings[0]).toMatch(/^poolscope: option port '-1' is not a port number/);
  });
});
