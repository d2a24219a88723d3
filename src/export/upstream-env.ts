/**
 * The upstream OTLP exporters read their `OTEL_EXPORTER_OTLP_*` variables from `process.env` while they
 * are constructed, and echo a value they reject into `diag` verbatim (a URL with its password, a control
 * character). Poolscope has already validated those variables and warned once, with the fallback it uses;
 * the variables it rejected (and the endpoint variables, whose resolved value it passes as `url`) are
 * hidden from the constructor so that the user's valid variables, and only those, reach the exporter.
 */
export function withEnvHidden<T>(names: readonly string[], construct: () => T): T {
  const saved = new Map<string, string>();
  for (const name of new Set(names)) {
    const value = process.env[name];
    if (value === undefined) continue;
    saved.set(name, value);
    delete process.env[name];
  }
  try {
    return construct();
  } finally {
    // Construction is synchronous: nothing else runs before the variables are back.
    for (const [name, value] of saved) process.env[name] = value;
  }
}
