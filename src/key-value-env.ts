/*
 * The two `key=value,key=value` variables OpenTelemetry defines, read the way the SDK reads them, so that
 * Poolscope can say what the SDK would have dropped without a word: `OTEL_RESOURCE_ATTRIBUTES` (the SDK's
 * env detector discards all of it on one bad entry, as the specification asks, and says so only at debug
 * level) and `OTEL_EXPORTER_OTLP_*HEADERS` (the exporters leave a bad entry out of every push, silently).
 * Problems are reported by entry position and rule, never by content: these variables carry tokens.
 */

/** What the OpenTelemetry env detector accepts for one key or value, in characters after decoding. */
export const MAX_RESOURCE_ATTRIBUTE_LENGTH = 255;

export type ResourceAttributesResult =
  | { attributes: Record<string, string>; problem?: undefined }
  | { attributes?: undefined; problem: string };

function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * `OTEL_RESOURCE_ATTRIBUTES` by the specification's rules (as `@opentelemetry/resources`' env detector
 * applies them): blank entries skipped; each other entry exactly one `=`, a non-empty key, percent-decodable,
 * key and value at most 255 characters. Any bad entry voids the whole variable.
 */
export function parseResourceAttributes(raw: string): ResourceAttributesResult {
  const attributes: Record<string, string> = {};
  const entries = raw.split(',');
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (entry.trim() === '') continue;
    const at = `entry ${i + 1}`;
    const parts = entry.split('=');
    if (parts.length !== 2) return { problem: `${at} is not key=value (',' and '=' inside a key or value must be percent-encoded)` };
    const rawKey = parts[0]!.trim();
    if (rawKey === '') return { problem: `${at} has an empty key` };
    const key = decode(rawKey);
    const value = decode(parts[1]!.trim());
    if (key === undefined || value === undefined) return { problem: `${at} is not valid percent-encoding` };
    if (key.length > MAX_RESOURCE_ATTRIBUTE_LENGTH || value.length > MAX_RESOURCE_ATTRIBUTE_LENGTH) {
      return { problem: `${at} is longer than ${MAX_RESOURCE_ATTRIBUTE_LENGTH} characters` };
    }
    attributes[key] = value;
  }
  return { attributes };
}

/**
 * The 1-based positions of the entries in an `OTEL_EXPORTER_OTLP_*HEADERS` value that the exporters leave
 * out (as `@opentelemetry/core`'s `parseKeyPairsIntoRecord` reads it): no `=` after a non-empty name, an
 * empty value, or broken percent-encoding. Blank entries are not counted: they carry nothing.
 */
export function droppedHeaderEntries(raw: string): number[] {
  const dropped: number[] = [];
  const entries = raw.split(',');
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    if (entry.trim() === '') continue;
    // `;` starts baggage-style metadata, which the exporters ignore.
    const pair = entry.split(';')[0]!;
    const eq = pair.indexOf('=');
    const name = eq > 0 ? pair.slice(0, eq).trim() : '';
    const value = eq > 0 ? pair.slice(eq + 1).trim() : '';
    if (name === '' || value === '' || decode(name) === undefined || decode(value) === undefined) dropped.push(i + 1);
  }
  return dropped;
}

/** `entry 1`, `entries 1 and 3`, `entries 1, 2, 5, 7, 8 and 12 more`: bounded, whatever the variable holds. */
export function describePositions(positions: readonly number[]): string {
  if (positions.length === 1) return `entry ${positions[0]}`;
  const shown = positions.slice(0, 5);
  const last = positions.length > 5 ? `${positions.length - 5} more` : String(shown.pop());
  return `entries ${shown.join(', ')} and ${last}`;
}
