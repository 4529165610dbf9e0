/**
 * Helpers for the sidecar integration tests: the real compiled `meshlet sidecar` as a child process
 * (static `--config`, every port 0, addresses read from its 'sidecar started' log line), real
 * upstream servers (node:http, node:http2) on 127.0.0.1:0, and small clients (HTTP/1.1, h2c, raw
 * TCP). Everything started here is torn down in `t.teardown`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';

const ROOT = path.resolve(__dirname, '..', '..', '..');
export const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const HOST = '127.0.0.1';

/** Rejects after `ms` with a message naming what never happened; only a bound against hangs. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, guard]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------------------------- policies

const API = 'meshlet.dev/v1';
type Obj = Record<string, unknown>;

export const route = (name: string, hosts: string[], rules: Obj[]): Obj => ({ apiVersion: API, kind: 'Route', metadata: { name }, spec: { hosts, rules } });

export const service = (name: string, endpoints: { port: number; labels?: Record<string, string>; weight?: number }[], protocol?: 'http1' | 'http2' | 'auto'): Obj => ({
  apiVersion: API,
  kind: 'Service',
  metadata: { name },
  spec: { endpoints: endpoints.map((e) => ({ address: HOST, ...e })), ...(protocol ? { protocol } : {}) },
});

export const destinationPolicy = (name: string, spec: Obj): Obj => ({ apiVersion: API, kind: 'DestinationPolicy', metadata: { name }, spec: { service: name, ...spec } });

/** A port on 127.0.0.1 nothing listens on (bound, then closed). */
export async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, HOST, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// -------------------------------------------------------------------------------------- sidecar

export interface SidecarProc {
  child: ChildProcess;
  pid: number;
  /** The policy file it was started with. */
  configFile: string;
  outbound: number;
  inbound: number;
  admin: number;
  /** Every JSON log line so far. */
  logs: Record<string, unknown>[];
  stderr(): string;
  /** The child's resident set size in bytes (/proc/PID/status VmRSS). */
  rss(): number;
  /** Whether the process is still running. */
  alive(): boolean;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
}

export interface SidecarOptions {
  /** Extra CLI flags, e.g. ['--headers-timeout', '500']. */
  args?: string[];
  service?: string;
  /** The local app behind the inbound listener (--app-port). */
  appPort?: number;
  /** A command the sidecar runs under, e.g. ['prlimit', '--nofile=8000']. */
  wrap?: string[];
}

/**
 * `meshlet sidecar --config <tmpfile>` with `resources` written as YAML documents (JSON is YAML),
 * every listener on 127.0.0.1:0. Stopped (SIGTERM, then SIGKILL) in teardown.
 */
export async function startSidecar(t: Test, resources: Obj[], opts: SidecarOptions = {}): Promise<SidecarProc> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-sidecar-test-'));
  const config = path.join(dir, 'policies.yaml');
  writeFileSync(config, resources.map((r) => JSON.stringify(r, null, 2)).join('\n---\n') + '\n');
  const args = [
    MAIN,
    'sidecar',
    '--service',
    opts.service ?? 'tester',
    '--config',
    config,
    '--outbound',
    `${HOST}:0`,
    '--inbound',
    `${HOST}:0`,
    '--admin',
    `${HOST}:0`,
    ...(opts.appPort ? ['--app-port', String(opts.appPort)] : []),
    ...(opts.args ?? []),
  ];
  const [cmd, ...pre] = opts.wrap ?? [process.execPath];
  if (opts.wrap) pre.push(process.execPath);
  const child = spawn(cmd as string, [...pre, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MESHLET_LOG_LEVEL: 'info' } });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(kill);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const logs: Record<string, unknown>[] = [];
  const started = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(rec);
      if (rec.msg === 'sidecar started') resolve(rec);
    });
    void exited.then(() => reject(new Error(`sidecar exited (${child.exitCode}) before it started; stderr:\n${stderr}`)));
  });
  const line = await within(started, 15_000, `the 'sidecar started' log line; stderr:\n${stderr}`);
  const portOf = (v: unknown): number => {
    const s = String(v);
    return Number(s.slice(s.lastIndexOf(':') + 1));
  };
  const pid = child.pid!;
  return {
    child,
    pid,
    configFile: config,
    outbound: portOf(line.outbound),
    inbound: portOf(line.inbound),
    admin: portOf(line.admin),
    logs,
    stderr: () => stderr,
    rss() {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (!m) throw new Error(`no VmRSS for pid ${pid}`);
      return Number(m[1]) * 1024;
    },
    alive: () => child.exitCode === null && child.signalCode === null,
    exited,
  };
}

/** Samples `sample()` every `everyMs` until `stop()`; returns the peak seen. */
export function peakSampler(sample: () => number, everyMs = 10): { stop(): number } {
  let peak = sample();
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, sample());
    } catch {
      // the process went away; the test will say so
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      try {
        peak = Math.max(peak, sample());
      } catch {
        // as above
      }
      return peak;
    },
  };
}

// ------------------------------------------------------------------------------------ upstreams

export interface Upstream {
  server: http.Server;
  port: number;
  /** Requests that reached this upstream. */
  hits: number;
}

/** An HTTP/1.1 server on 127.0.0.1:0, closed (with its connections) in teardown. */
export async function h1Upstream(t: Test, handler: http.RequestListener): Promise<Upstream> {
  const up: Upstream = { server: undefined as unknown as http.Server, port: 0, hits: 0 };
  const server = http.createServer((req, res) => {
    up.hits++;
    handler(req, res);
  });
  up.server = server;
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(0, HOST, r));
  up.port = (server.address() as net.AddressInfo).port;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  );
  return up;
}

/** Answers 200 with a JSON body naming `name` and echoing what it saw. */
export function echo(name: string): http.RequestListener {
  return (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      const body = JSON.stringify({ name, method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: n });
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': name });
      res.end(body);
    });
  };
}

export interface H2Upstream {
  server: http2.Http2Server;
  port: number;
  hits: number;
}

/** An h2c server (prior knowledge) on 127.0.0.1:0; its sessions are destroyed in teardown. */
export async function h2Upstream(t: Test, onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void): Promise<H2Upstream> {
  const up: H2Upstream = { server: http2.createServer(), port: 0, hits: 0 };
  const sessions = new Set<http2.ServerHttp2Session>();
  up.server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
    s.on('error', () => undefined);
  });
  up.server.on('stream', (stream, headers) => {
    up.hits++;
    stream.on('error', () => undefined);
    onStream(stream, headers);
  });
  await new Promise<void>((r) => up.server.listen(0, HOST, r));
  up.port = (up.server.address() as net.AddressInfo).port;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        up.server.close(() => r());
        for (const s of sessions) s.destroy();
      }),
  );
  return up;
}

// -------------------------------------------------------------------------------------- clients

export interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json(): any;
}

export interface RequestOptions {
  port: number;
  method?: string;
  path?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  agent?: http.Agent | false;
}

/** One HTTP/1.1 request, the whole response buffered (fine for small bodies). */
export function request(o: RequestOptions): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port: o.port, method: o.method ?? 'GET', path: o.path ?? '/', headers: o.headers, agent: o.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** A keep-alive agent for many requests, destroyed in teardown. */
export function agent(t: Test, maxSockets = 16): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets });
  t.teardown(() => a.destroy());
  return a;
}

/** Runs `n` tasks with at most `concurrency` at a time. */
export async function pool<T>(n: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out;
}

/** An h2c client session (prior knowledge) to 127.0.0.1:port, destroyed in teardown. */
export function h2Client(t: Test, port: number): http2.ClientHttp2Session {
  const s = http2.connect(`http://${HOST}:${port}`);
  s.on('error', () => undefined);
  t.teardown(() => {
    if (!s.destroyed) s.destroy();
  });
  return s;
}

export interface H2Res {
  headers: http2.IncomingHttpHeaders;
  status: number;
  body: Buffer;
  trailers: http2.IncomingHttpHeaders | undefined;
}

/** One request on an h2 session, the whole response buffered. */
export function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Res> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let resHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (resHeaders = h));
    stream.on('trailers', (h) => (trailers = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', reject);
    stream.on('end', () => resolve({ headers: resHeaders, status: Number(resHeaders[':status']), body: Buffer.concat(chunks), trailers }));
    if (body !== undefined) stream.end(body);
  });
}

/**
 * Writes `bytes` on a raw TCP connection and collects everything the server sends until it closes
 * the connection (or `maxMs` passes, which is reported as `timedOut`, never asserted on).
 */
export function rawExchange(port: number, bytes: string | Buffer, opts: { maxMs?: number; endAfterWrite?: boolean } = {}): Promise<{ text: string; timedOut: boolean; status: number }> {
  return new Promise((resolve) => {
    const sock = net.connect(port, HOST);
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (timedOut: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ text, timedOut, status: m ? Number(m[1]) : 0 });
    };
    const timer = setTimeout(() => done(true), opts.maxMs ?? 10_000);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
    sock.on('connect', () => {
      sock.write(bytes);
      if (opts.endAfterWrite) sock.end();
    });
  });
}
