import { MeterProvider, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { PrometheusPullReader } from '../src/export/prometheus/reader.js';
import { noteCardinalityOverflow } from '../src/metrics/cardinality-overflow.js';
import { errorText, sdkLineWriter } from '../src/logger.js';
import { capturedLog } from './helpers.js';

describe('the diag logger installed by the preload', () => {
  const writer = () => {
    const lines: string[] = [];
    return { lines, write: sdkLineWriter((line) => lines.push(line)) };
  };

  it('passes Poolscope\'s own lines as they are', () => {
    const { lines, write } = writer();
    write('poolscope: pool "a" is at 80% utilization (8/10 connections in use, 0 waiting).');
    write('poolscope: pool "a" is at 80% utilization (8/10 connections in use, 0 waiting).');
    expect(lines).toEqual([
      'poolscope: pool "a" is at 80% utilization (8/10 connections in use, 0 waiting).',
      'poolscope: pool "a" is at 80% utilization (8/10 connections in use, 0 waiting).',
    ]);
  });

  // Found by running knex's test suite under the preload, traces on, collector down: the BatchSpanProcessor's
  // line came at every export attempt, unprefixed, and an exporter's error over several lines with its stack.
  it('prefixes the SDK\'s warnings, keeps each on one bounded line, and says a repeated one once a minute (bug: unprefixed, every attempt)', () => {
    const { lines, write } = writer();
    write('Dropped 33442 spans because maxQueueSize reached');
    write('Dropped 574 spans because maxQueueSize reached');
    const err = new Error('connect ECONNREFUSED 127.0.0.1:1');
    err.stack = `Error: connect ECONNREFUSED 127.0.0.1:1\n    at TCPConnectWrap.afterConnect [as oncomplete] (node:net:1555:16)`;
    write('OTLPExportDelegate Export failed', err, { code: 'ECONNREFUSED' });
    write(`{"stack":"Error\\n at x","message":"${'m'.repeat(1000)}"}`);
    expect(lines).toEqual([
      'poolscope: OpenTelemetry SDK: Dropped 33442 spans because maxQueueSize reached',
      'poolscope: OpenTelemetry SDK: OTLPExportDelegate Export failed connect ECONNREFUSED 127.0.0.1:1',
      expect.stringMatching(/^poolscope: OpenTelemetry SDK: \{"stack":"Error\\n at x","message":"m+$/),
    ]);
    for (const line of lines) {
      expect(line).not.toContain('\n');
      expect(line.length).toBeLessThanOrEqual(300);
    }
  });

  // Found by running Next.js under the preload with traces on: it sets an attribute on every request's span after
  // the span ended, and the SDK's line carried each span's ids, so every request made a line of its own.
  it('says a repeated SDK line once a minute whatever span it names (bug: one line per request)', () => {
    const { lines, write } = writer();
    write('Can not execute the operation on ended Span {traceId: 4bf92f3577b34da6a3ce929d0e0e4736, spanId: 00f067aa0ba902b7}');
    write('Can not execute the operation on ended Span {traceId: ab3e1c5fbed94e0d8c1bd0e5a6b7c8d9, spanId: fedcba9876543210}');
    expect(lines).toHaveLength(1);
  });

  // Found by running Fastify's suite under the preload with traces on: a handler throwing a value that is not
  // an Error made the span SDK log "Failed to record an exception <the value>", and the value was the
  // application's (`{ toString() { return 'token=abc0' } }` logged token=abc0).
  it('leaves the application\'s values out of SDK lines that carry them (bug: a thrown value was logged)', () => {
    const { lines, write } = writer();
    write('Failed to record an exception token=abc0');
    write('Header "authorization" has invalid value (Bearer s3cret) and will be ignored');
    write('negative value provided to counter app.requests: -12345');
    // Said once a minute whatever the value: it is no longer part of the line.
    write('Failed to record an exception [object Object]');
    expect(lines).toEqual([
      'poolscope: OpenTelemetry SDK: Failed to record an exception (a thrown value that is not an Error; its value is not logged)',
      'poolscope: OpenTelemetry SDK: Header "authorization" has invalid value and will be ignored',
      'poolscope: OpenTelemetry SDK: negative value provided to counter app.requests',
    ]);
  });
});

// Found by a hostile-input review: an error raised by application code (a metric callback, a getter) was put
// into Poolscope's line as it was: a newline forged a second "poolscope:" line, escape sequences and kilobytes
// of text came along.
describe('errors from application code in Poolscope\'s lines', () => {
  const hostile = new Error(`dup key\npoolscope: forged \x1b[31m${'Q'.repeat(1000)}`);

  it('are one printable line of bounded length, and reading them never throws', () => {
    expect(errorText(hostile)).toMatch(/^dup key poolscope: forged \[31mQ+…$/);
    expect(errorText(hostile)).toHaveLength(201);
    expect(errorText('plain text')).toBe('plain text');
    expect(errorText({ get message(): string { throw new Error('no'); } })).toBe('an error whose message cannot be read');
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    expect(errorText(proxy)).toBe('an error whose message cannot be read');
    expect(errorText(Object.create(null))).toBe('an error whose message cannot be read');
  });

  it('reach the log of a scrape whose metric callback threw as one such line', async () => {
    const { lines, logger } = capturedLog();
    const reader = new PrometheusPullReader(logger);
    const provider = new MeterProvider({ readers: [reader] });
    provider.getMeter('app').createObservableGauge('app.gauge').addCallback(() => { throw hostile; });
    await reader.scrape();
    await provider.shutdown();
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toMatch(/[\n\x1b]/);
    expect(lines[0]!.length).toBeLessThanOrEqual(300);
    expect(lines[0]).toMatch(/^poolscope: 1 error\(s\) during metric collection: dup key poolscope: forged/);
  });
});

// Found by a hostile-input review: thousands of distinct error types (or pool names) merged into the SDK's
// otel_metric_overflow series without a word.
describe('a metric past its cardinality limit', () => {
  it('is said once, naming the metric', () => {
    const { lines, logger } = capturedLog();
    const note = noteCardinalityOverflow(logger);
    const metrics = (overflowing: boolean) => ({
      resource: {},
      scopeMetrics: [{ scope: { name: 'poolscope' }, metrics: [{
        descriptor: { name: 'poolscope.pool.errors' },
        dataPoints: [{ attributes: { 'error.type': 'a' } }, ...(overflowing ? [{ attributes: { 'otel.metric.overflow': true } }] : [])],
      }] }],
    }) as unknown as ResourceMetrics;
    note(metrics(false));
    expect(lines).toEqual([]);
    note(metrics(true));
    note(metrics(true));
    expect(lines).toEqual([expect.stringMatching(/^poolscope: poolscope\.pool\.errors has reached its limit of 2000 series; /)]);
  });

  it('is said from a real scrape whose counter went past 2000 attribute sets', async () => {
    const { lines, logger } = capturedLog();
    const reader = new PrometheusPullReader(logger, noteCardinalityOverflow(logger));
    const provider = new MeterProvider({ readers: [reader] });
    const counter = provider.getMeter('app').createCounter('app.errors');
    for (let i = 0; i < 2100; i++) counter.add(1, { 'error.type': `E${i}` });
    expect(await reader.scrape()).toContain('otel_metric_overflow="true"');
    await provider.shutdown();
    expect(lines).toEqual([expect.stringMatching(/^poolscope: app\.errors has reached its limit/)]);
  });
});
