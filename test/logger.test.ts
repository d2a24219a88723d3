import { describe, expect, it } from 'vitest';
import { sdkLineWriter } from '../src/logger.js';

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
});
