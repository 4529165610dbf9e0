/**
 * The one place a policy regular expression is judged. Every regex field of every kind (path,
 * header and query-parameter matches) goes through `validateRegex`, so the engine that will run
 * it can be changed here alone.
 */

/** An error message when `pattern` is not a regular expression the data plane can run, else undefined. */
export function validateRegex(pattern: string): string | undefined {
  try {
    new RegExp(pattern);
  } catch (e) {
    return `invalid regular expression: ${(e as Error).message.replace(/^Invalid regular expression: /, '')}`;
  }
  return undefined;
}
