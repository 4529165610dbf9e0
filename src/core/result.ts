/** A validation problem, located by a field path such as `spec.rules[0].matches[1].path.regex`. */
export interface FieldError {
  path: string;
  message: string;
  /** A stable code, for the failures that have one (e.g. `TLS_KEY_MISMATCH`). */
  code?: string;
}

export type Result<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] };

export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

export function fail<T = never>(errors: FieldError[]): Result<T> {
  return { ok: false, errors };
}

/** One line per error, `path: message`: the form the API, the CLI and NACKs all print. */
export function formatErrors(errors: readonly FieldError[]): string {
  return errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message) + (e.code ? ` [${e.code}]` : '')).join('\n');
}
