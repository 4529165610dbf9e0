/** Shared plumbing for the `meshlet` sub-commands: flags, addresses, the API client, exit codes. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  readonly code = 'MESHLET_USAGE';
}

export interface Command {
  name: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

/** parseArgs with `--help` handled and unknown flags reported as usage errors. */
export function flags<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function hostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s.trim());
  if (m) {
    const port = Number(m[3]);
    if (port <= 65535) return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
  }
  if (/^\d{1,5}$/.test(s.trim()) && Number(s) <= 65535) return { host: '127.0.0.1', port: Number(s) };
  throw new UsageError(`${what}: expected HOST:PORT or PORT, got ${JSON.stringify(s)}`);
}

export function port(s: string | undefined, what: string, dflt: number): number {
  if (s === undefined) return dflt;
  if (!/^\d{1,5}$/.test(s) || Number(s) > 65535) throw new UsageError(`${what}: expected a port number (0-65535), got ${JSON.stringify(s)}`);
  return Number(s);
}

export function labels(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!s) return out;
  for (const part of s.split(',')) {
    if (!part.trim()) continue;
    const i = part.indexOf('=');
    if (i <= 0) throw new UsageError(`--labels: expected k=v[,k=v...], got ${JSON.stringify(part)}`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

/** The control plane the client commands talk to: --server, then MESHLET_SERVER, then the default. */
export function serverUrl(flag: string | undefined): string {
  const s = flag ?? process.env.MESHLET_SERVER ?? 'http://127.0.0.1:15080';
  const url = /^https?:\/\//.test(s) ? s : `http://${s}`;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--server: not a URL: ${JSON.stringify(s)}`);
  }
  return url.replace(/\/+$/, '');
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

export async function api(server: string, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  // Loaded on use: the long-running commands (sidecar) never pay for an HTTP client they do not use.
  const { request } = await import('undici');
  let res;
  try {
    res = await request(server + path, {
      method: method as 'GET',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: 15_000,
      bodyTimeout: 15_000,
    });
  } catch (e) {
    const code = (e as { code?: string }).code ?? (e as Error).message;
    throw new CliError(`cannot reach the control plane at ${server} (${code}); start one with \`meshlet control-plane\` or \`npm start\`, or point --server / MESHLET_SERVER at it`);
  }
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.statusCode, body: parsed };
}

/** A failure to report to the user in one line (exit 1), as opposed to a usage error (exit 2). */
export class CliError extends Error {
  readonly code = 'MESHLET_CLI';
}

/** Renders an API error body: its message and every field error on a line of its own. */
export function describeApiError(r: ApiResponse): string {
  const b = r.body as { message?: string; errors?: { path: string; message: string }[] } | string | undefined;
  if (b && typeof b === 'object') {
    const lines = [b.message ?? `HTTP ${r.status}`];
    for (const e of b.errors ?? []) lines.push(`  ${e.path ? e.path + ': ' : ''}${e.message}`);
    return lines.join('\n');
  }
  return `HTTP ${r.status}${b ? ': ' + String(b).slice(0, 500) : ''}`;
}

export function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** A minimal fixed-width table for terminal output. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   ')).join('\n');
}
