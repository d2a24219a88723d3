import { writeSync } from 'node:fs';
import { format } from 'node:util';
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { apiGlobalHeld, sameApiAsApplication } from './api-globals.js';
import type { LogLevel } from './config.js';
import { sameArity } from './transparent.js';
import { monotonicNow } from './native-timers.js';

/**
 * Poolscope logs through OpenTelemetry `diag` so the host application decides where log lines go.
 * Every warning carries a key; a key is logged at most once per `intervalMs`, so a failing
 * collector or a pool stuck at 100 % cannot flood the application's logs.
 */
export interface PoolscopeLogger {
  warn(key: string, message: string): void;
  info(key: string, message: string): void;
  debug(message: string): void;
}

/**
 * An error's message as one short, printable piece of a log line. Errors reach Poolscope from application code
 * (a getter, a type parser, a metric callback): their text spanned lines (a forged "poolscope:" line), carried
 * escape sequences and ran to kilobytes, and reading it may throw (a hostile getter, a revoked Proxy).
 */
export function errorText(err: unknown, max = 200): string {
  let text: string;
  try {
    const message = typeof err === 'object' && err !== null && 'message' in err ? (err as { message: unknown }).message : err;
    text = String(message);
  } catch {
    text = 'an error whose message cannot be read';
  }
  text = text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\s]+/g, ' ').trim();
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** Where Poolscope's own lines go when they do not go through the API's diag (see logWithoutApiGlobals). */
let ownLines: DiagLogger | undefined;

/** Poolscope's own line writer: the API's diag, unless the application has another copy of the API. */
export const poolscopeDiag = (): DiagLogger => ownLines ?? diag;

export function createLogger(intervalMs = 60_000, base?: DiagLogger): PoolscopeLogger {
  const target = base ?? { warn: (m: string) => poolscopeDiag().warn(m), info: (m: string) => poolscopeDiag().info(m),
    debug: (m: string) => poolscopeDiag().debug(m) };
  const lastLogged = new Map<string, number>();

  const allowed = (key: string): boolean => {
    // Not Date.now(): an application's fake clock moved back kept warnings quiet, moved on repeated them sooner.
    const now = monotonicNow();
    const last = lastLogged.get(key);
    if (last !== undefined && now - last < intervalMs) return false;
    lastLogged.set(key, now);
    // Keys are a small fixed vocabulary plus pool names; cap anyway so churned pools cannot grow it.
    if (lastLogged.size > 1_000) lastLogged.delete(lastLogged.keys().next().value as string);
    return true;
  };

  return {
    warn(key, message) {
      if (allowed(key)) target.warn(message);
    },
    info(key, message) {
      if (allowed(key)) target.info(message);
    },
    debug(message) {
      target.debug(message);
    },
  };
}

const DIAG_LEVELS: Record<LogLevel, DiagLogLevel> = {
  none: DiagLogLevel.NONE, error: DiagLogLevel.ERROR, warn: DiagLogLevel.WARN, info: DiagLogLevel.INFO,
  debug: DiagLogLevel.DEBUG, verbose: DiagLogLevel.VERBOSE, all: DiagLogLevel.ALL,
};

/**
 * Every level on stderr, formatted as the console does. OpenTelemetry's DiagConsoleLogger writes info and
 * debug through console.info and console.debug, to stdout: at OTEL_LOG_LEVEL=debug, diagnostics landed in the
 * output of applications whose stdout is their data (a CLI's result, JSON lines).
 */
let stderrGone = false;
const toStderr = (message: string, ...args: unknown[]): void => {
  if (stderrGone) return;
  try {
    // Straight to the file descriptor, not through process.stderr or the console: a failed write there (EPIPE,
    // its reader gone; ENOSPC) spent the stream's one guard, so the application's next console line was an
    // uncaught exception, or ours was when a worker thread's stderr was piped into it (the loader thread).
    // Node keeps fds 0-2 open (on /dev/null if they were closed), and writes to stdio synchronously on POSIX,
    // so lines keep their order with the application's.
    writeSync(2, `${format(message, ...args)}\n`);
  } catch (err) {
    // Gone for good: nothing more is written. A pipe that is only full (EAGAIN) loses this line.
    if ((err as NodeJS.ErrnoException)?.code !== 'EAGAIN') stderrGone = true;
  }
};

/**
 * Warnings and errors of the OpenTelemetry SDK itself, as one line each, prefixed so that the application's
 * owner can tell where it came from, and rate-limited like Poolscope's own: the BatchSpanProcessor said
 * "Dropped N spans because maxQueueSize reached" at every export attempt while a collector was down, and an
 * exporter's error came with its stack trace over several lines (found by running knex's test suite under
 * the preload). Lines at info level and below pass as they are: whoever asked for them wants all of them.
 */
export function sdkLineWriter(write: (line: string) => void, intervalMs = 60_000): (message: string, ...args: unknown[]) => void {
  const limiter = createLogger(intervalMs, { warn: write, error: write, info: write, debug: write, verbose: write });
  return (message, ...args) => {
    const text = String(message);
    if (text.startsWith('poolscope')) {
      write(args.length === 0 ? text : `${text} ${args.map(String).join(' ')}`);
      return;
    }
    const detail = args.map((a) => (a instanceof Error ? a.message : typeof a === 'object' && a !== null ? '' : String(a)))
      .filter((d) => d !== '').join(' ');
    const shown = withoutValues(text);
    const line = `poolscope: OpenTelemetry SDK: ${shown}${detail === '' ? '' : ` ${detail}`}`.replace(/\s+/g, ' ').slice(0, 300);
    // Keyed by the message with its numbers and ids taken out: "Dropped 33442 spans" and "Dropped 574 spans" are
    // one, and so is "…on ended Span {traceId: …}" for every span (Next.js made one line per request).
    limiter.warn(`sdk:${shown.replace(/[0-9a-f]{8,}/gi, '#').replace(/\d+/g, '#').slice(0, 80)}`, line);
  };
}

/**
 * SDK messages that carry an application's value in their text, each cut before it: a span recording a thrown
 * value that is not an Error logged the value's string form ("Failed to record an exception token=…", found by
 * running Fastify's suite under the preload with traces on), and a header's value may be a credential.
 */
const VALUE_BEARING: ReadonlyArray<[RegExp, string]> = [
  [/^(Failed to record an exception)[\s\S]*$/, '$1 (a thrown value that is not an Error; its value is not logged)'],
  [/^(Header "[^"]*" has invalid value) \([\s\S]*\)( and will be ignored)$/, '$1$2'],
  [/^((?:non-number|negative) value provided to (?:metric|counter|histogram) [^:]*):[\s\S]*$/, '$1'],
];

function withoutValues(text: string): string {
  for (const [pattern, replacement] of VALUE_BEARING) if (pattern.test(text)) return text.replace(pattern, replacement);
  return text;
}

const sdkToStderr = sdkLineWriter((line) => toStderr(line));
const stderrConsoleLogger: DiagLogger = { error: sdkToStderr, warn: sdkToStderr, info: toStderr, debug: toStderr, verbose: toStderr };

/**
 * Poolscope's own lines straight to stderr at `level`, with no diag logger registered: when the application has
 * its own copy of @opentelemetry/api (api-globals.ts), registering one would claim the API's globals for
 * Poolscope's copy and the application's SDK would be refused. The upstream SDK's own messages then go to
 * whatever diag logger the application sets.
 */
function logWithoutApiGlobals(level: LogLevel): void {
  const max = DIAG_LEVELS[level];
  const at = (min: DiagLogLevel, write: (message: string, ...args: unknown[]) => void) => (max >= min ? write : () => undefined);
  ownLines = { error: at(DiagLogLevel.ERROR, toStderr), warn: at(DiagLogLevel.WARN, toStderr), info: at(DiagLogLevel.INFO, toStderr),
    debug: at(DiagLogLevel.DEBUG, toStderr), verbose: at(DiagLogLevel.VERBOSE, toStderr) };
}

/**
 * Poolscope's lines at `level`, replacing whatever diag logger was there (the zero-code entry point): through
 * the API's diag, unless the application has its own copy of the API.
 */
export function installLogging(level: LogLevel): void {
  if (sameApiAsApplication()) installDiagLogger(level);
  else logWithoutApiGlobals(level);
}

/** Installs the console diag logger at `level`, replacing whatever was there. */
function installDiagLogger(level: LogLevel): void {
  const api = diag as DiagWithSetter;
  const setLogger = api[kOwnSetLogger] ?? api.setLogger;
  setLogger(stderrConsoleLogger, { logLevel: DIAG_LEVELS[level], suppressOverrideMessage: true });
  if (api[kOwnSetLogger] !== undefined) return;
  // The diag logger is the application's to set, and OpenTelemetry's setup guides open with
  // `diag.setLogger(new DiagConsoleLogger(), …)`: with Poolscope's installed, the API printed "Current logger
  // will be overwritten" with a stack trace through both loggers (a dozen lines). The application's call now
  // replaces Poolscope's without that; Poolscope's lines then go to the application's logger, as to any.
  Object.defineProperty(api, kOwnSetLogger, { value: setLogger, configurable: true });
  api.setLogger = sameArity((logger: DiagLogger, options?: DiagLogLevel | { logLevel?: DiagLogLevel }) => {
    api.setLogger = setLogger;
    const opts = typeof options === 'number' ? { logLevel: options } : { ...(options ?? {}) };
    return setLogger(logger, { ...opts, suppressOverrideMessage: true });
  }, setLogger) as typeof diag.setLogger;
}

/** The API's own `diag.setLogger`, kept by installDiagLogger while the application's first call is watched. */
const kOwnSetLogger = Symbol('poolscope.diag-set-logger');
type DiagWithSetter = typeof diag & { [kOwnSetLogger]?: typeof diag.setLogger };

/**
 * Programmatic use: without a diag logger every warning would go nowhere, so one is installed — but only
 * when the application has none, never over its own. The API keeps the registered logger on a global
 * keyed by its major version; its absence means nobody called diag.setLogger().
 */
export function ensureDiagLogger(level: LogLevel): void {
  if (ownLines === undefined && !apiGlobalHeld('diag')) installLogging(level);
}
