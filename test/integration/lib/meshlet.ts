/**
 * Starting the real `meshlet` processes the way users start them (the compiled CLI in dist/),
 * on port 0, and reading the addresses they report from their JSON log lines.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface Proc {
  child: ChildProcess;
  /** Every JSON log line so far. */
  lines: Record<string, unknown>[];
  /** Resolves with the first log line matching. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function tmpDir(prefix = 'meshlet-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function start(args: string[], env: Record<string, string> = {}, opts: { pushTls?: boolean; strictSidecars?: boolean } = {}): Proc {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` (npm test does it first)`);
  // The API is TLS by default; tests talk plain HTTP to it unless they ask for TLS (--api-hostname,
  // --api-tls-cert): the TLS path has its own tests (api-tls.test.ts).
  if (args[0] === 'control-plane' && !args.some((x) => x === '--insecure-plaintext' || x === '--api-hostname' || x === '--api-tls-cert')) args = [...args, '--insecure-plaintext'];
  // So is the push port: plaintext on both ends unless the test asks for TLS (push-tls.test.ts).
  const pushFlags = ['--insecure-push-plaintext', '--push-hostname', '--push-tls-cert', '--ca-file', '--ca-hash', '--config'];
  if (!opts.pushTls && ['control-plane', 'sidecar', 'gateway'].includes(args[0] as string) && !args.some((x) => pushFlags.includes(x))) args = [...args, '--insecure-push-plaintext'];
  // Sidecars without a credential are refused by default; most tests run credential-less sidecars
  // (identity has its own tests, which pass --sidecar-auth strict or ask for it).
  if (args[0] === 'control-plane' && !args.some((x) => x === '--sidecar-auth' || x === '--no-identity') && !opts.strictSidecars) args = [...args, '--sidecar-auth', 'permissive'];
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const log = followJsonLog(child, exited, `meshlet ${args[0]}`);
  // A control plane writes its admin token to DATA_DIR/admin.token: remember it for its API URL.
  const dataDir = args[args.indexOf('--data-dir') + 1];
  if (args[0] === 'control-plane' && args.includes('--data-dir') && dataDir && !args.includes('--no-api-auth'))
    log.waitFor((x) => x.msg === 'control plane started', 120_000).then(
      (l) => rememberToken(l, dataDir),
      () => undefined,
    );
  return {
    child,
    lines: log.lines,
    waitFor: (pred, timeoutMs = 15_000) => log.waitFor(pred, timeoutMs),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export type LogLine = Record<string, unknown>;

/**
 * A child's JSON log lines as they arrive on stdout, and a wait for the first one matching
 * (seen already or still to come); rejects on timeout or when the process exits first, with
 * everything it printed.
 */
export function followJsonLog(
  child: ChildProcess,
  exited: Promise<number | null>,
  label: string,
): { lines: LogLine[]; output(): string; waitFor(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> } {
  const lines: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let text = '';
  child.stderr?.on('data', (c: Buffer) => (text += c.toString()));
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    text += line + '\n';
    let rec: LogLine;
    try {
      rec = JSON.parse(line);
    } catch {
      return;
    }
    lines.push(rec);
    for (const w of [...waiters])
      if (w.pred(rec)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(rec);
      }
  });
  return {
    lines,
    output: () => text,
    waitFor(pred, timeoutMs) {
      const hit = lines.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for a log line of ${label}; output:\n${text}`)), timeoutMs);
        waiters.push({
          pred,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`${label} exited (${code}) before the awaited log line; output:\n${text}`));
        });
      });
    },
  };
}

export function portOf(hostPort: unknown): number {
  const s = String(hostPort);
  return Number(s.slice(s.lastIndexOf(':') + 1));
}

export interface ControlPlaneProc extends Proc {
  api: string;
  apiPort: number;
  pushPort: number;
  /** The admin API token it wrote to DATA_DIR/admin.token. */
  token: string;
}

/**
 * The admin token of each control plane these helpers started, by API URL: `cli({server})` and
 * `apiFetch` send it, so tests talk to an authenticated API as an admin user would.
 */
const TOKENS = new Map<string, string>();

/**
 * After `meshlet control-plane` logged 'control plane started' (`started`): reads the admin token
 * it wrote (DATA_DIR/admin.token), and remembers it for its API URL.
 */
export function rememberToken(started: Record<string, unknown>, dataDir: string): string {
  const token = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  TOKENS.set(String(started.api), token);
  return token;
}

/** The admin token of the control plane serving `url` (started by these helpers), if any. */
export function tokenFor(url: string): string | undefined {
  for (const [api, token] of TOKENS) if (url === api || url.startsWith(api + '/')) return token;
  return undefined;
}

/** `fetch`, with the admin token of the control plane `url` points at (see `tokenFor`). */
export function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const token = tokenFor(url);
  const headers = new Headers(init.headers);
  if (token && !headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
  return fetch(url, { ...init, headers });
}

/**
 * undici's `request`, with the admin token of the control plane `url` points at (see `tokenFor`).
 * A connection per call (`reset`): tests run CLI commands with spawnSync between calls, which
 * blocks this process's event loop past the server's keep-alive timeout, so a pooled connection
 * the server has closed meanwhile would be written to before its FIN is read ("other side closed").
 */
export async function apiRequest(url: string, opts: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
  const { request } = await import('undici');
  const token = tokenFor(url);
  return request(url, { ...opts, reset: true, method: (opts.method ?? 'GET') as 'GET', headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...opts.headers } });
}

/** `meshlet control-plane` on free ports (or the given ones, for a restart on the same ports). */
export async function startControlPlane(dataDir: string, ports: { api?: number; push?: number } = {}): Promise<ControlPlaneProc> {
  const p = start(['control-plane', '--data-dir', dataDir, '--api', `127.0.0.1:${ports.api ?? 0}`, '--push', `127.0.0.1:${ports.push ?? 0}`, '--grace', '60000']);
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  return Object.assign(p, { api, apiPort: portOf(api), pushPort: portOf(l.push), token: tokenFor(api) ?? rememberToken(l, dataDir) });
}

export interface SidecarProc extends Proc {
  outbound: number;
  inbound: number;
  admin: number;
}

export async function startSidecar(args: string[]): Promise<SidecarProc> {
  const p = start(['sidecar', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...args]);
  const l = await p.waitFor((x) => x.msg === 'sidecar started');
  return Object.assign(p, { outbound: portOf(l.outbound), inbound: portOf(l.inbound), admin: portOf(l.admin) });
}

/** Runs a client sub-command to completion (apply, get, status...). */
export function cli(args: string[], opts: { server?: string; input?: string; token?: string } = {}): { code: number | null; stdout: string; stderr: string } {
  const token = opts.token ?? (opts.server ? tokenFor(opts.server) : undefined);
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    input: opts.input,
    env: { ...process.env, ...(opts.server ? { MESHLET_SERVER: opts.server } : {}), ...(token ? { MESHLET_TOKEN: token } : {}) },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * `cli` without blocking the test's event loop: a slow command (describe asks every sidecar for
 * stats) under spawnSync lets the control plane close the test's idle keep-alive connections.
 */
export function cliAsync(args: string[], opts: { server?: string; input?: string; token?: string } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const token = opts.token ?? (opts.server ? tokenFor(opts.server) : undefined);
  const c = spawn(process.execPath, [MAIN, ...args], {
    env: { ...process.env, ...(opts.server ? { MESHLET_SERVER: opts.server } : {}), ...(token ? { MESHLET_TOKEN: token } : {}) },
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: 30_000,
  });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  c.stdin.end(opts.input ?? '');
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 25 ms until it returns a value, or fails after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(25);
  }
}
