/**
 * The upstream OTLP exporters read their `OTEL_EXPORTER_OTLP_*` variables from `process.env` while they
 * are constructed, and echo a value they reject into `diag` verbatim (a URL with its password, a control
 * character). Poolscope has already validated those variables and warned once, with the fallback it uses;
 * the variables it rejected (and the endpoint variables, whose resolved value it passes as `url`) are
 * hidden from the constructor so that the user's valid variables, and only those, reach the exporter.
 */
export function withEnvHidden<T>(names: readonly string[], construct: () => T): T {
  return withEnv(Object.fromEntries(names.map((name) => [name, undefined])), construct);
}

/** Runs `construct` with variables set to the values given (undefined: unset), and puts them back after. */
export function withEnv<T>(values: Readonly<Record<string, string | undefined>>, construct: () => T): T {
  const saved = new Map<string, string | undefined>();
  for (const [name, value] of Object.entries(values)) {
    if (process.env[name] === value) continue;
    saved.set(name, process.env[name]);
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  try {
    return construct();
  } finally {
    // Construction is synchronous: nothing else runs before the variables are back.
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}
