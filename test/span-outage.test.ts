import net from 'node:net';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../src/logger.js';
import { OutageLog } from '../src/export/outage-logging.js';
import { OUTAGE_ATTEMPT_MILLIS, OutageAwareSpanExporter } from '../src/export/otlp-traces.js';
// @ts-expect-error plain ESM helper
import { freePort } from '../scripts/postgres.mjs';

/** A collector stand-in: answers each export with the next scripted result, and counts what reached it. */
function scriptedExporter(results: ExportResultCode[]) {
  const offered: number[] = [];
  const exporter: SpanExporter = {
    export(spans: ReadableSpan[], done: (r: ExportResult) => void) {
      offered.push(spans.length);
      done({ code: results.shift() ?? ExportResultCode.SUCCESS, error: new Error('socket hang up') });
    },
    shutdown: () => Promise.resolve(),
  };
  return { exporter, offered };
}

/** A port that accepts TCP connections (what the exporter probes), closed with `close()`. */
async function acceptingPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

const spans = (n: number) => Array.from({ length: n }, () => ({}) as ReadableSpan);

function outageExporter(port: number, results: ExportResultCode[], now?: () => number) {
  const lines: string[] = [];
  const logger = createLogger(60_000, { warn: (l: string) => lines.push(l), info: () => {}, debug: () => {}, error: () => {}, verbose: () => {} });
  const { exporter, offered } = scriptedExporter(results);
  const outage = new OutageAwareSpanExporter(exporter, new OutageLog(`http://127.0.0.1:${port}/v1/traces`, logger, 'span', 'spans are dropped'), logger, now);
  const results2: ExportResultCode[] = [];
  const send = (n: number) => new Promise<void>((resolve) => outage.export(spans(n), (r) => { results2.push(r.code); resolve(); }));
  return { send, offered, lines, results: results2 };
}

describe('span export while the collector is down', () => {
  afterEach(() => vi.restoreAllMocks());

  // Found by running node-postgres's own suite under the preload with traces on and no collector: each batch
  // was retried for the whole export timeout, one after the other (a script exited 40 s after its work).
  it('offers one batch per interval, drops the rest at once, and counts them in the recovery line (bug: every batch retried)', async () => {
    let now = 1_000;
    const collector = await acceptingPort();
    const { send, offered, lines, results } = outageExporter(collector.port, [ExportResultCode.FAILED, ExportResultCode.SUCCESS], () => now);

    await send(3); // fails: the outage starts
    await send(2); // within the interval: dropped without reaching the exporter
    now += OUTAGE_ATTEMPT_MILLIS - 1;
    await send(4); // still within it
    now += 1;
    await send(1); // offered again, and it succeeds
    await send(5); // healthy again: offered
    await collector.close();

    expect(offered).toEqual([3, 1, 5]);
    // The processor is never told of a failure: it would only report it again, raw.
    expect(results.every((c) => c === ExportResultCode.SUCCESS)).toBe(true);
    expect(lines).toEqual([
      `poolscope: OTLP span export to http://127.0.0.1:${collector.port}/v1/traces failed (socket hang up); spans are dropped, one line when it recovers.`,
      `poolscope: OTLP span export to http://127.0.0.1:${collector.port}/v1/traces recovered (9 spans were dropped while it was down).`,
    ]);
  });

  // Found by running Express's own suite under the preload with traces to a collector that was down: the first
  // batch went to the upstream exporter, whose retries (referenced timers, up to the 10 s export timeout) kept
  // every test process alive 6-9 s after its work.
  it('does not hand a batch to the exporter while the collector refuses connections (bug: the first batch retried for 10 s)', async () => {
    const dead = await freePort();
    const { send, offered, lines, results } = outageExporter(dead, []);
    await send(3);
    expect(offered).toEqual([]);
    expect(results).toEqual([ExportResultCode.SUCCESS]);
    expect(lines).toEqual([
      `poolscope: OTLP span export to http://127.0.0.1:${dead}/v1/traces failed (connect ECONNREFUSED); spans are dropped, one line when it recovers.`,
    ]);
  });

  it('once the collector took a batch, the next goes straight to the exporter', async () => {
    const collector = await acceptingPort();
    const { send, offered } = outageExporter(collector.port, [ExportResultCode.SUCCESS]);
    await send(1);
    await collector.close();
    // The last export reached it: no probe, the exporter is asked (and finds it down itself).
    await send(2);
    expect(offered).toEqual([1, 2]);
  });
});
