/**
 * The admin port: `/ready` (200 once the first snapshot is applied), `/live`, `/config_dump`
 * (the version in force and the compiled config), `/metrics` (Prometheus text, or OpenMetrics
 * when the scraper's Accept asks for it) and `/logging` (GET the level; POST `?level=` to change
 * it at runtime), `/explain?method=&url=&header=k:v` (what this sidecar does with a request),
 * `/decisions?id=` (what it did with recent requests, `meshlet explain --last`), `/stats` (sliding windows, responses by flag, breakers, ejections, rate-limit
 * decisions) and `/tap` (live requests as NDJSON while the caller stays connected; tap.ts).
 */
import * as http from 'node:http';
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import { controlPlaneSpiffeId, parseSpiffeId } from '../security/spiffe';
import type { MeshTls, MeshTlsMaterial } from '../security/tls';
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
  /** `meshlet explain --last`: what this sidecar did with recent requests (`/decisions?id=`). */
  decisions?(query: URLSearchParams): { status: number; body: unknown };
  /** `POST /cache/purge` `{ "key": K }` or `{ "prefix": P }`: remove cached responses (`meshlet cache purge`, via the control plane). */
  purgeCache?(sel: { key: string } | { prefix: string }): { purged: number } | Promise<{ purged: number }>;
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

/**
 * `POST /cache/purge`: accepted from any address the admin port listens on (the control plane
 * reaches every sidecar here, whichever replica took the API request). A purge only makes the next
 * requests go to the origin; it reveals nothing.
 */
function purge(req: http.IncomingMessage, res: http.ServerResponse, fn: NonNullable<AdminSource['purgeCache']>): void {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size > 64 * 1024) {
      res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('body too large\n');
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on('end', () => {
    if (res.headersSent) return;
    const sel = purgeSelector(Buffer.concat(chunks).toString('utf8'));
    if (typeof sel === 'string') {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'invalid', message: sel }) + '\n');
      return;
    }
    void Promise.resolve()
      .then(() => fn(sel))
      .then(
        (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(r) + '\n'),
        (err: Error) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'internal', message: err.message }) + '\n'),
      );
  });
}

/** `{ key }` or `{ prefix }` (exactly one, non-empty strings; `prefix: ""` is everything), or the reason it is not. */
function purgeSelector(text: string): { key: string } | { prefix: string } | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'the body must be JSON: {"key": "GET host/path"} or {"prefix": "GET host/"}';
  }
  const o = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  if (!o) return 'the body must be a JSON object with key or prefix';
  const extra = Object.keys(o).filter((k) => k !== 'key' && k !== 'prefix' && k !== 'service');
  if (extra.length) return `unknown field ${extra[0]}`;
  if ((o.key === undefined) === (o.prefix === undefined)) return 'set exactly one of key, prefix';
  if (o.key !== undefined) return typeof o.key === 'string' && o.key !== '' ? { key: o.key } : 'key must be a non-empty string';
  return typeof o.prefix === 'string' ? { prefix: o.prefix } : 'prefix must be a string';
}

/** What the status listener (`--status`, the pod address: 15020) serves; the rest is the loopback admin port's. */
export const STATUS_PATHS: ReadonlySet<string> = new Set(['/ready', '/live', '/metrics', '/stats']);

/**
 * On a status port's 404 for an admin path: the path is served there over mTLS to the control
 * plane (`mtls`), so the control plane asks again that way (control-plane/sidecar-admin.ts).
 */
export const ADMIN_MTLS_HEADER = 'x-meshlet-admin';

/** The sidecar's workload identity, for the status port's mTLS side. */
export interface StatusIdentity {
  /** The certificate in force (undefined until the control plane signed one). */
  current(): (MeshTlsMaterial & { spiffeId: string }) | undefined;
  /** Called on every new certificate or bundle. */
  onChange(fn: () => void): void;
}

/** What the status port serves the control plane over mTLS, besides STATUS_PATHS (never /quitquitquit or /logging). */
export const CONTROL_PLANE_PATHS: ReadonlySet<string> = new Set(['/config_dump', '/explain', '/decisions', '/tap', '/cache/purge']);

/** Set on a status-port TLS socket whose client proved the control plane's identity. */
const CONTROL_PLANE_PEER = Symbol('meshlet.controlPlanePeer');

/**
 * The admin port (every path; loopback by default) or, with `only`, the status listener that
 * serves just those paths to everyone (404 naming the admin port for the others).
 *
 * With `identity` the status listener also takes TLS on the same port (told by the first byte):
 * TLS 1.3 with the sidecar's workload certificate, a client certificate required, chaining to the
 * trust bundle and naming exactly the control plane's SPIFFE ID (`spiffe://TD/meshlet/control-plane`,
 * which no workload can hold); any other client is closed at the handshake. Such a connection is
 * served every read-only admin path and the cache purge (`meshlet proxy-config`, `explain`,
 * `explain --last`, `cache purge`, the dashboard's tap: CONTROL_PLANE_PATHS); `/quitquitquit` and
 * `/logging` are never served there.
 */
export function startAdmin(host: string, port: number, src: AdminSource, logger: Logger, only?: ReadonlySet<string>, identity?: StatusIdentity): Promise<AdminServer> {
  const listener = only ? 'status' : 'admin';
  const server = http.createServer((req, res) => {
    const [path, query] = (req.url ?? '/').split('?') as [string, string | undefined];
    if (only && !only.has(path) && !(CONTROL_PLANE_PATHS.has(path) && (req.socket as { [CONTROL_PLANE_PEER]?: boolean })[CONTROL_PLANE_PEER] === true)) {
      res
        .writeHead(404, { 'content-type': 'text/plain', ...(identity ? { [ADMIN_MTLS_HEADER]: 'mtls' } : {}) })
        .end(`not found: this is the status port (${[...only].join(' ')}); ${path} is served on the sidecar's loopback admin port${identity ? ', and here over mTLS to the control plane' : ' only'}\n`);
      return;
    }
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
    if (path === '/cache/purge' && src.purgeCache) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST', 'content-type': 'text/plain' }).end('use POST\n');
        return;
      }
      purge(req, res, src.purgeCache);
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
      case '/decisions': {
        const r = src.decisions
          ? src.decisions(new URLSearchParams(query ?? ''))
          : { status: 501, body: { code: 'not_kept', message: 'this sidecar keeps no recent decisions (--recent-requests 0, or --concurrency > 1)' } };
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
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /ready /live /config_dump /metrics /stats /tap /logging /explain /decisions /cache/purge\n');
  });
  const answer = (res: http.ServerResponse, type: string, body: string): void => {
    if (!res.destroyed) res.writeHead(200, { 'content-type': type }).end(body);
  };
  const failed = (res: http.ServerResponse, err: unknown): void => {
    logger.warn({ err }, 'admin request failed');
    if (!res.destroyed) res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
  };
  const front = only && identity ? statusFront(server, identity, logger) : server;
  return new Promise((resolve, reject) => {
    front.once('error', reject);
    front.listen(port, host, () => {
      front.off('error', reject);
      const a = front.address() as AddressInfo;
      logger.info({ listener, address: `${a.address}:${a.port}`, ...(front !== server ? { mtls: 'control plane' } : {}) }, 'listening');
      resolve({
        address: () => ({ host: a.address, port: a.port }),
        close: () =>
          new Promise<void>((done) => {
            front.close(() => done());
            if (front !== server) server.close();
            server.closeAllConnections();
          }),
      });
    });
  });
}

/**
 * The status port with its mTLS side: a TCP server that hands plaintext connections to the HTTP
 * server as they are, and TLS ones (first byte 0x16) to a TLS server with the sidecar's
 * certificate, which passes on only a verified control plane.
 */
function statusFront(server: http.Server, identity: StatusIdentity, logger: Logger): net.Server {
  let meshTls: MeshTls | undefined;
  let tlsServer: tls.Server | undefined;
  let allowed: string | undefined;
  let TlsModule: typeof import('../security/tls') | undefined;
  let tlsLib: typeof import('node:tls') | undefined;
  const install = (): void => {
    const m = identity.current();
    if (!m || !TlsModule || !tlsLib) return;
    const id = parseSpiffeId(m.spiffeId);
    if (!id.ok) return;
    allowed = controlPlaneSpiffeId(id.value.trustDomain).uri;
    const material = { keyPem: m.keyPem, chainPem: m.chainPem, bundlePem: m.bundlePem };
    if (meshTls) {
      meshTls.update(material);
      return;
    }
    meshTls = new TlsModule.MeshTls(material, { alpn: ['http/1.1'] });
    const srv = tlsLib.createServer({ ...meshTls.serverOptions(), handshakeTimeout: 10_000 });
    meshTls.bindServer(srv);
    const spiffeIdOf = TlsModule.spiffeIdOf;
    srv.on('secureConnection', (ts: tls.TLSSocket) => {
      ts.on('error', () => undefined);
      const peer = spiffeIdOf(ts.getPeerCertificate());
      if (peer === undefined || peer !== allowed) {
        logger.warn({ listener: 'status', peer: peer ?? null, remote: ts.remoteAddress }, 'status port: a TLS client that is not the control plane; closed');
        ts.destroy();
        return;
      }
      (ts as { [CONTROL_PLANE_PEER]?: boolean })[CONTROL_PLANE_PEER] = true;
      server.emit('connection', ts);
    });
    srv.on('tlsClientError', (err: Error & { code?: string }, ts: tls.TLSSocket) => {
      logger.debug({ listener: 'status', err: err.message, remote: ts?.remoteAddress }, 'status port: TLS handshake failed');
      ts?.destroy();
    });
    tlsServer = srv;
  };
  void Promise.all([import('../security/tls'), import('node:tls')]).then(([m, t]) => {
    TlsModule = m;
    tlsLib = t;
    install();
  });
  identity.onChange(install);
  return net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.once('readable', () => {
      const head = socket.read(1) as Buffer | null;
      if (head === null) return;
      socket.unshift(head);
      if (head[0] === 0x16) {
        if (!tlsServer) {
          socket.destroy();
          return;
        }
        tlsServer.emit('connection', socket);
        return;
      }
      server.emit('connection', socket);
    });
  });
}
