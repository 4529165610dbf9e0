/** The CLI's two kinds of failure: a usage mistake (exit 2, with the usage text) and a failed command (exit 1). */
export class UsageError extends Error {
  readonly code = 'MESHLET_USAGE';
}

export class CliError extends Error {
  readonly code = 'MESHLET_CLI';
}
