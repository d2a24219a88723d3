import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../src/logger.js';
import { OutageLog } from '../src/export/outage-logging.js';
import { OUTAGE_ATTEMPT_MILLIS, OutageAwareSpanExporter } from '../src/export/otlp-traces.js';

/** A collector stand-in: answers each export with the next scripted result, and counts what reached it. */
function scriptedExporter(results: ExportResultCode[]) {
  const offered: number[] = [];
  const exporter: SpanExporter = {
    export(spans: ReadableSpan[], done: (r: ExportResult) => void) {
      offered.push(spans.length);
      done({ code: results.shift() ?? ExportResultCode.SUCCESS, error: new Error('connect ECONNREFUSED 127.0.0.1:4318') });
    },
    shutdown: () => Promise.resolve(),
  };
  return { exporter, offered };
}

const spans = (n: number) => Array.from({ length: n }, () => ({}) as ReadableSpan);

describe('span export while the collector is down', () => {
  afterEach(() => vi.restoreAllMocks());

  // Found by running node-postgres's own suite under the preload with traces on and no collector: each batch
  // was retried for the whole export timeout, one after the other (a script exited 40 s after its work).
  it('offers one batch per interval, drops the rest at once, and counts them in the recovery line (bug: every batch retried)', async () => {
    let now = 1_000;
    vi.spyOn(performance, 'now').mockImplementation(() => now);
    const lines: string[] = [];
    const logger = createLogger(60_000, { warn: (l: string) => lines.push(l), info: () => {}, debug: () => {}, error: () => {}, verbose: () => {} });
    const { exporter, offered } = scriptedExporter([ExportResultCode.FAILED, ExportResultCode.SUCCESS]);
    const outage = new OutageAwareSpanExporter(exporter, new OutageLog('http://127.0.0.1:4318/v1/traces', logger, 'span', 'spans are dropped'), logger);
    const results: ExportResultCode[] = [];
    const send = (n: number) => outage.export(spans(n), (r) => results.push(r.code));

    send(3); // fails: the outage starts
    send(2); // within the interval: dropped without reaching the exporter
    now += OUTAGE_ATTEMPT_MILLIS - 1;
    send(4); // still within it
    now += 1;
    send(1); // offered again, and it succeeds
    send(5); // healthy again: offered

    expect(offered).toEqual([3, 1, 5]);
    // The processor is never told of a failure: it would only report it again, raw.
    expect(results.every((c) => c === ExportResultCode.SUCCESS)).toBe(true);
    expect(lines).toEqual([
      'poolscope: OTLP span export to http://127.0.0.1:4318/v1/traces failed (connect ECONNREFUSED 127.0.0.1:4318); spans are dropped, one line when it recovers.',
      'poolscope: OTLP span export to http://127.0.0.1:4318/v1/traces recovered (9 spans were dropped while it was down).',
    ]);
  });
});
