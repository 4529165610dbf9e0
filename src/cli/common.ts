/** Shared plumbing for the `meshlet` sub-commands: flags, addresses, the API client, exit codes. */
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { CliError, UsageError } from './errors';

export { CliError, UsageError } from './errors';

/** An entry of the command table (main.ts): the module is loaded only when the command runs. */
export interface CommandEntry {
  name: string;
  summary: string;
  /** Talks to the control plane, so takes the global flags (--server, --context). */
  client?: boolean;
  load(): Command;
}

let commandTable: readonly CommandEntry[] = [];
/** main.ts registers its table here, so that commands reading it (completion) need not import main. */
export function setCommandTable(t: readonly CommandEntry[]): void {
  commandTable = t;
}
export function commands(): readonly CommandEntry[] {
  return commandTable;
}

export interface Command {
  name: string;
  usage: string;
  /** The exit code of a failure (default 1; `diff` uses 2, as 1 means "different"). */
  errorExitCode?: number;
  run(argv: string[]): Promise<number>;
}

/** parseArgs with `--help` handled and unknown flags reported as usage errors (with the nearest known flag). */
export function flags<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
  } catch (e) {
    const msg = (e as Error).message;
    const unknown = /Unknown option '(-{1,2}[^'=]+)/.exec(msg)?.[1];
    if (unknown) {
      const known = Object.entries(options).flatMap(([k, o]) => [`--${k}`, ...(o.short ? [`-${o.short}`] : [])]);
      const near = nearest(unknown, known.filter((k) => k.startsWith('--')));
      throw new UsageError(`unknown flag ${unknown}${near ? `; did you mean ${near}?` : ''}`);
    }
    throw new UsageError(msg.split('. To specify a positional')[0] as string);
  }
}

/** The closest of `candidates` to `word` (Damerau-Levenshtein), when close enough to be a typo. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  const limit = Math.max(2, Math.floor(word.replace(/^-+/, '').length / 3));
  if (best !== undefined && (bestD <= limit || best.startsWith(word) || (word.length > 3 && best.includes(word.replace(/^-+/, ''))))) return best;
  return undefined;
}

function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min((d[i - 1]![j] as number) + 1, (d[i]![j - 1] as number) + 1, (d[i - 1]![j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, (d[i - 2]![j - 2] as number) + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length] as number;
}

/** Validates `-o`: one of `allowed` (`jsonpath=` forms when 'jsonpath' is allowed), else a usage error. */
export function outputFormat<A extends string>(value: string | undefined, allowed: readonly A[]): A | `jsonpath=${string}` | undefined {
  if (value === undefined) return undefined;
  if (value.startsWith('jsonpath=') && allowed.includes('jsonpath' as A)) return value as `jsonpath=${string}`;
  if (allowed.includes(value as A)) return value as A;
  throw new UsageError(`-o must be one of ${allowed.map((a) => (a === 'jsonpath' ? 'jsonpath=EXPR' : a)).join(', ')}; got ${JSON.stringify(value)}`);
}

/** A kubectl-style age: 45s, 12m, 3h, 5d. */
export function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '-';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '-';
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** Global flags: accepted before or after the command (`meshlet --server X get routes`). */
export const globals: { server?: string; context?: string; certificateAuthority?: string } = {};

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

/**
 * The control plane the client commands talk to: --server, then --context's server, then
 * MESHLET_SERVER, then the current context of the config file, then the default.
 */
export function serverUrl(flag: string | undefined): string {
  const s = flag ?? globals.server ?? resolveContext().server ?? 'http://127.0.0.1:15080';
  const url = /^https?:\/\//.test(s) ? s : `http://${s}`;
  try {
    new URL(url);
  } catch {
    throw new UsageError(`--server: not a URL: ${JSON.stringify(s)}`);
  }
  return url.replace(/\/+$/, '');
}

/**
 * Where the connection settings come from, for `serverUrl` and `api`: `--context NAME` picks a
 * context of the config file; otherwise MESHLET_SERVER wins over the file's current context.
 * MESHLET_TOKEN (or the context's `token`) is sent as a bearer token.
 */
export function resolveContext(): { server?: string; token?: string; context?: string; certificateAuthority?: string } {
  // Loaded on use: the long-running commands never read the config file.
  const { loadConfig, configPath } = require('./config-file') as typeof import('./config-file');
  const cfg = loadConfig();
  const name = globals.context;
  if (name !== undefined) {
    const c = cfg.contexts.find((x) => x.name === name);
    if (!c) throw new UsageError(`--context: no context ${JSON.stringify(name)} in ${configPath()}${cfg.contexts.length ? ` (have: ${cfg.contexts.map((x) => x.name).join(', ')})` : ''}`);
    return { server: c.server, token: process.env.MESHLET_TOKEN || c.token, context: c.name, certificateAuthority: c.certificateAuthority };
  }
  if (process.env.MESHLET_SERVER) return { server: process.env.MESHLET_SERVER, token: process.env.MESHLET_TOKEN || undefined };
  const cur = cfg.contexts.find((x) => x.name === cfg.currentContext);
  return { server: cur?.server, token: process.env.MESHLET_TOKEN || cur?.token, context: cur?.name, certificateAuthority: cur?.certificateAuthority };
}

/** The bearer token header for the control plane (`token` given: that one, e.g. `meshlet up`'s own). */
export function authHeader(token = resolveContext().token): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/**
 * For an https control plane: an undici dispatcher that trusts the roots in --certificate-authority
 * (else the context's `certificate-authority`), else the system's. The name is always checked.
 */
export function tlsDispatcher(server: string): import('undici').Dispatcher | undefined {
  if (!server.startsWith('https:')) return undefined;
  const ca = caFile();
  if (!ca) return undefined;
  const { Agent } = require('undici') as typeof import('undici');
  return new Agent({ connect: { ca: ca.pem } });
}

/** A failed connection, said plainly: TLS verification failures name the CA in use. */
export function connectError(server: string, e: unknown): CliError {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = err.cause?.code ?? err.code ?? err.message ?? String(e);
  const tlsCodes = ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_SIGNATURE_FAILURE', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED'];
  if (tlsCodes.includes(code)) {
    const file = globals.certificateAuthority ?? resolveContext().certificateAuthority;
    const why = code === 'ERR_TLS_CERT_ALTNAME_INVALID' ? `its certificate does not name this host (${err.cause?.message ?? code})` : code === 'CERT_HAS_EXPIRED' ? 'its certificate has expired' : `its certificate is not signed by ${file ? `a CA in ${file}` : 'a CA this system trusts'} (${code})`;
    return new CliError(
      `refusing the control plane at ${server}: ${why}; give the CA that issued it with --certificate-authority FILE or the context's certificate-authority (a control plane using the mesh CA writes DATA_DIR/api-ca.pem)`,
    );
  }
  return new CliError(`cannot reach the control plane at ${server} (${code}); start one with \`meshlet control-plane\` or \`npm start\`, or point --server / MESHLET_SERVER at it`);
}

export interface ApiResponse {
  status: number;
  body: unknown;
}

export async function api(server: string, method: string, path: string, body?: unknown, opts: { token?: string } = {}): Promise<ApiResponse> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string> = { ...authHeader(opts.token) };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  let res: { status: number; text: string };
  try {
    res = await send(server, method, path, headers, payload);
  } catch (e) {
    throw connectError(server, e);
  }
  let parsed: unknown = res.text;
  try {
    parsed = res.text ? JSON.parse(res.text) : undefined;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed };
}

/** No answer (or no byte of one) for this long: the call fails (as a connection failure). */
const API_TIMEOUT_MS = 15_000;

/**
 * One control-plane call over node:http / node:https, through a keep-alive agent per process:
 * a command's calls in turn reuse one connection, its parallel ones (check, describe) get up to 8.
 * Not undici: loading it took ~120 ms of every client command's ~250 ms start
 * (`node -r <require timer> dist/src/cli/main.js version`, 2026-12-06).
 */
function send(server: string, method: string, path: string, headers: Record<string, string>, payload: string | undefined): Promise<{ status: number; text: string }> {
  const url = new URL(server + path);
  const tls = url.protocol === 'https:';
  const agent = agentFor(server, tls);
  return new Promise((resolve, reject) => {
    const mod = (tls ? require('node:https') : require('node:http')) as typeof import('node:http');
    const req = mod.request(url, { method, headers, agent, timeout: API_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${API_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(payload);
  });
}

let agent: { key: string; agent: import('node:http').Agent } | undefined;

/** The process's keep-alive agent for `server`: https with --certificate-authority's roots (else the context's, else the system's). */
function agentFor(server: string, tls: boolean): import('node:http').Agent {
  if (agent?.key === server) return agent.agent;
  agent?.agent.destroy();
  let made: import('node:http').Agent;
  if (tls) {
    const ca = caFile();
    const https = require('node:https') as typeof import('node:https');
    made = new https.Agent({ keepAlive: true, maxSockets: 8, ...(ca === undefined ? {} : { ca: ca.pem }) });
  } else {
    const http = require('node:http') as typeof import('node:http');
    made = new http.Agent({ keepAlive: true, maxSockets: 8 });
  }
  agent = { key: server, agent: made };
  return made;
}

/** The PEM of --certificate-authority (else the context's `certificate-authority`), if one is given. */
function caFile(): { file: string; pem: string } | undefined {
  const file = globals.certificateAuthority ?? resolveContext().certificateAuthority;
  if (!file) return undefined;
  const { readFileSync } = require('node:fs') as typeof import('node:fs');
  try {
    return { file, pem: readFileSync(file, 'utf8') };
  } catch (e) {
    throw new CliError(`cannot read the certificate authority ${file}: ${(e as Error).message}`);
  }
}

/** A failure to report to the user in one line (exit 1), as opposed to a usage error (exit 2). */

/** Renders an API error body: its message and every field error on a line of its own. */
export function describeApiError(r: ApiResponse): string {
  const b = r.body as { message?: string; errors?: { path: string; message: string; code?: string }[] } | string | undefined;
  if (b && typeof b === 'object') {
    const lines = [b.message ?? `HTTP ${r.status}`];
    for (const e of b.errors ?? []) lines.push(`  ${e.path ? e.path + ': ' : ''}${e.message}${e.code ? ` [${e.code}]` : ''}`);
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
