/**
 * The admin port: `/ready` (200 once the first snapshot is applied), `/live`, `/config_dump`
 * (the version in force and the compiled config), `/metrics` (Prometheus text, or OpenMetrics
 * when the scraper's Accept asks for it) and `/logging` (GET the level; POST `?level=` to change
 * it at runtime), `/explain?method=&url=&header=k:v` (what this sidecar does with a request), `/stats` (sliding windows, responses by flag, breakers, ejections, rate-limit
 * decisions) and `/tap` (live requests as NDJSON while the caller stays connected; tap.ts).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { CONTENT_TYPES, negotiate, type Format } from './metrics';
import { TapError, tapOptions, type TapFilter, type TapHub } from './tap';

/** How often an open `/tap` stream gets a `{"type":"status"}` line (dropped events; keeps proxies from timing it out). */
const TAP_STATUS_MS = 2000;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface AdminSource {
  ready(): boolean;
  configDump(): unknown;
  /** A promise when the exposition is gathered from elsewhere (a `--concurrency N` sidecar's workers). */
  metrics(format: Format): string | Promise<string>;
  /** Sliding-window request stats per route, for the control plane's `meshlet stat`. */
  stats?(): unknown;
  /** Live requests (`GET /tap`); absent where it cannot be served (a `--concurrency N` primary). */
  tap?: TapHub;
  /** The log level in force, and a way to change it at runtime (`POST /logging?level=debug`). */
  logLevel?(): string;
  setLogLevel?(level: string): void;
  /** `meshlet explain`: what this sidecar does with a request (sidecar/explain.ts). */
  explain?(query: URLSearchParams): { status: number; body: unknown };
  /** POST /quitquitquit from inside the pod: stop the sidecar (a classic-layout Job's app calls it when done). */
  quit?(): void;
}

export interface AdminServer {
  address(): { host: string; port: number };
  close(): Promise<void>;
}

/**
 * State-changing requests only from inside the pod: on Kubernetes the admin port listens on every
 * address (the kubelet probes it, Prometheus scrapes it), so anything in the cluster reaches it.
 * `kubectl port-forward` arrives on loopback and is accepted.
 */
function fromLoopback(req: http.IncomingMessage, res: http.ServerResponse, what: string): boolean {
  const from = req.socket.remoteAddress ?? '';
  if (from === '127.0.0.1' || from === '::1' || from === '::ffff:127.0.0.1') return true;
  res.writeHead(403, { 'content-type': 'text/plain' }).end(`${what} is only accepted from loopback\n`);
  return false;
}

/**
 * `GET /tap?direction=&destination=&source=&route=&rate=&headers=`: one JSON line per matching
 * request as it ends, a status line every TAP_STATUS_MS, until the caller goes away. A slow
 * reader loses events (counted as dropped), never makes the sidecar buffer them.
 */
function serveTap(req: http.IncomingMessage, res: http.ServerResponse, query: string | undefined, hub: TapHub | undefined): void {
  if (!hub) {
    res.writeHead(501, { 'content-type': 'text/plain' }).end('tap is not available on this sidecar (--concurrency > 1)\n');
    return;
  }
  const q = new URLSearchParams(query ?? '');
  const filter: TapFilter = {};
  const direction = q.get('direction');
  if (direction !== null && direction !== 'inbound' && direction !== 'outbound') {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('direction must be inbound or outbound\n');
    return;
  }
  if (direction) filter.direction = direction;
  for (const k of ['destination', 'source', 'route'] as const) {
    const v = q.get(k);
    if (v) filter[k] = v;
  }
  let handle: ReturnType<TapHub['watch']>;
  let backlog = 0;
  try {
    const opts = tapOptions(q.get('rate'), q.get('headers'));
    handle = hub.watch(filter, opts, (e) => {
      // Gone (its 'close' not handled yet): nothing to write to. Backpressure: drop rather than queue in the sidecar.
      if (res.destroyed || res.writableEnded) return;
      if (res.writableNeedDrain) {
        backlog++;
        return;
      }
      res.write(JSON.stringify(e) + '\n');
    });
  } catch (err) {
    if (!(err instanceof TapError)) throw err;
    res.writeHead(err.code === 'too_many_watchers' ? 503 : 400, { 'content-type': 'text/plain' }).end(err.message + '\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  res.write(JSON.stringify({ type: 'status', watching: true, dropped: 0 }) + '\n');
  const timer = setInterval(() => {
    const dropped = handle.takeDropped() + backlog;
    backlog = 0;
    if (!res.destroyed && !res.writableNeedDrain) res.write(JSON.stringify({ type: 'status', watching: true, dropped }) + '\n');
  }, TAP_STATUS_MS);
  timer.unref();
  const stop = (): void => {
    clearInterval(timer);
    handle.stop();
  };
  req.on('close', stop);
  res.on('close', stop);
}

export function startAdmin(host: string, port: number, src: AdminSource, logger: Logger): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const [path, query] = (req.url ?? '/').split('?') as [string, string | undefined];
    if (path === '/quitquitquit' && src.quit) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST', 'content-type': 'text/plain' }).end('use POST\n');
        return;
      }
      if (!fromLoopback(req, res, 'quitquitquit')) return;
      res.writeHead(200, { 'content-type': 'text/plain' }).end('quitting\n');
      logger.info('quit requested through the admin port');
      src.quit();
      return;
    }
    if (path === '/logging' && src.setLogLevel && src.logLevel) {
      if (req.method === 'POST' || req.method === 'PUT') {
        if (!fromLoopback(req, res, 'changing the log level')) return;
        const level = new URLSearchParams(query ?? '').get('level');
        if (!level || !LOG_LEVELS.includes(level)) {
          res.writeHead(400, { 'content-type': 'text/plain' }).end(`level must be one of ${LOG_LEVELS.join(', ')}: POST /logging?level=debug\n`);
          return;
        }
        src.setLogLevel(level);
        logger.info({ level }, 'log level changed');
      }
      if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'POST' || req.method === 'PUT') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ level: src.logLevel() }) + '\n');
        return;
      }
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    switch (path) {
      case '/ready': {
        const ok = src.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'no policy snapshot applied yet\n');
        return;
      }
      case '/live':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n');
        return;
      case '/config_dump':
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(src.configDump(), null, 2) + '\n');
        return;
      case '/stats': {
        const body = src.stats ? src.stats() : { routes: [] };
        if (body instanceof Promise) void body.then((b) => answer(res, 'application/json', JSON.stringify(b) + '\n'), (err) => failed(res, err));
        else answer(res, 'application/json', JSON.stringify(body) + '\n');
        return;
      }
      case '/explain': {
        if (!src.explain) break;
        const r = src.explain(new URLSearchParams(query ?? ''));
        if (!res.destroyed) res.writeHead(r.status, { 'content-type': 'application/json' }).end(JSON.stringify(r.body) + '\n');
        return;
      }
      case '/tap':
        serveTap(req, res, query, src.tap);
        return;
      case '/metrics': {
        const format = negotiate(req.headers.accept);
        const body = src.metrics(format);
        if (typeof body === 'string') answer(res, CONTENT_TYPES[format], body);
        else void body.then((b) => answer(res, CONTENT_TYPES[format], b), (err) => failed(res, err));
        return;
      }
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /ready /live /config_dump /metrics /stats /tap /logging /explain\n');
  });
  const answer = (res: http.ServerResponse, type: string, body: string): void => {
    if (!res.destroyed) res.writeHead(200, { 'content-type': type }).end(body);
  };
  const failed = (res: http.ServerResponse, err: unknown): void => {
    logger.warn({ err }, 'admin request failed');
    if (!res.destroyed) res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
  };
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      logger.info({ listener: 'admin', address: `${a.address}:${a.port}` }, 'listening');
      resolve({
        address: () => ({ host: a.address, port: a.port }),
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
