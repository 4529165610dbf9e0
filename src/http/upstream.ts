/**
 * Upstream connection pools: one keep-alive `H1Pool` (HTTP/1.1, h1-client.ts) or one multiplexed
 * node:http2 session (h2c, prior knowledge) per endpoint. A request is sent with `send()` and
 * answered through a small callback interface, so the caller streams the response without an
 * intermediate Readable, pauses the upstream when downstream pushes back, and aborts it when the
 * client goes away.
 *
 * Pools of endpoints that left every snapshot are closed gracefully by `retain()`.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { installCheapAsyncBind } from './async-bind';
import { H1Pool } from './h1-client';
import { UpstreamConnectError, type Headers, type ResponseSink, type UpstreamCall, type UpstreamRequest, type UpstreamTarget } from './upstream-types';

export type { Headers, ResponseSink, UpstreamCall, UpstreamProtocol, UpstreamRequest, UpstreamTarget } from './upstream-types';
export { refusedUnseen, UpstreamConnectError, UpstreamOverflowError, type ConnectionLimits } from './upstream-types';

export interface UpstreamPoolOptions {
  /** Idle keep-alive time for HTTP/1.1 connections (default 60 s). */
  keepAliveMs?: number;
  connectTimeoutMs?: number;
  /** How long a retired pool may finish its in-flight requests (default 30 s). */
  drainMs?: number;
}

// node:http2's session.request() binds an AsyncResource per request: make that cheap (async-bind.ts).
installCheapAsyncBind();

export class UpstreamPools {
  private readonly h1 = new Map<string, H1Pool>();
  private readonly h2 = new Map<string, H2Connection>();
  private readonly opts: Required<UpstreamPoolOptions>;
  private closed = false;

  constructor(opts: UpstreamPoolOptions = {}) {
    this.opts = { keepAliveMs: 60_000, connectTimeoutMs: 10_000, drainMs: 30_000, ...opts };
  }

  send(target: UpstreamTarget, req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
    if (target.protocol === 'http2') return this.h2For(target).request(req, sink);
    const pool = this.h1For(target);
    pool.limits = target.limits;
    if (target.idleMs !== undefined) pool.setKeepAlive(target.idleMs);
    return pool.request(req, sink);
  }

  /** Open connections per protocol, for metrics. */
  counts(): { http1Pools: number; http2Sessions: number } {
    return { http1Pools: this.h1.size, http2Sessions: this.h2.size };
  }

  /** Retires the pools of endpoints not in `keep` (keys): they finish in-flight work, then close. */
  retain(keep: ReadonlySet<string>): void {
    for (const [k, p] of this.h1) {
      if (keep.has(k)) continue;
      this.h1.delete(k);
      p.close(this.opts.drainMs);
    }
    for (const [k, c] of this.h2) {
      if (keep.has(k)) continue;
      this.h2.delete(k);
      c.retire(this.opts.drainMs);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.h1.values()];
    this.h1.clear();
    for (const c of this.h2.values()) c.destroy();
    this.h2.clear();
    for (const p of pools) p.destroy();
  }

  private h1For(t: UpstreamTarget): H1Pool {
    let p = this.h1.get(t.key);
    if (!p) {
      p = new H1Pool(t.address, t.port, { keepAliveMs: this.opts.keepAliveMs, connectTimeoutMs: this.opts.connectTimeoutMs });
      if (!this.closed) this.h1.set(t.key, p);
    }
    return p;
  }

  private h2For(t: UpstreamTarget): H2Connection {
    let c = this.h2.get(t.key);
    if (!c || c.unusable()) {
      c = new H2Connection(t, this.opts.connectTimeoutMs, () => {
        if (this.h2.get(t.key) === c) this.h2.delete(t.key);
      });
      if (!this.closed) this.h2.set(t.key, c);
    }
    return c;
  }
}

// -------------------------------------------------------------------------------------- HTTP/2

class H2Connection {
  private readonly session: http2.ClientHttp2Session;
  private connected = false;
  /** The peer's SETTINGS arrived: it speaks HTTP/2. */
  private settled = false;
  private dead = false;
  private retired = false;

  constructor(t: UpstreamTarget, connectTimeoutMs: number, onGone: () => void) {
    const host = t.address.includes(':') ? `[${t.address}]` : t.address;
    this.session = http2.connect(`http://${host}:${t.port}`, {
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
      // No Nagle: small frames (a request's HEADERS, a WINDOW_UPDATE) must not wait for an ACK.
      createConnection: () => net.connect({ host: t.address, port: t.port, noDelay: true }),
    });
    const gone = (): void => {
      this.dead = true;
      onGone();
    };
    const timer = setTimeout(() => {
      if (!this.connected) this.session.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
    }, connectTimeoutMs);
    timer.unref();
    this.session.once('connect', () => {
      this.connected = true;
      clearTimeout(timer);
      // Many sidecars multiplex here; give the connection a larger window than 64 KiB too.
      try {
        this.session.setLocalWindowSize(8 * 1024 * 1024);
      } catch {
        // closed meanwhile
      }
    });
    this.session.once('remoteSettings', () => {
      this.settled = true;
    });
    this.session.on('error', gone);
    this.session.on('goaway', gone);
    this.session.on('close', () => {
      clearTimeout(timer);
      gone();
    });
  }

  unusable(): boolean {
    return this.dead || this.session.closed || this.session.destroyed;
  }

  request(req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
    const h: http2.OutgoingHttpHeaders = {
      ':method': req.method,
      ':path': req.path,
      ':authority': req.authority,
      ':scheme': 'http',
    };
    const raw = req.headers;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i] as string;
      const value = raw[i + 1] as string;
      const prev = h[name];
      if (prev === undefined) h[name] = value;
      else if (Array.isArray(prev)) prev.push(value);
      else h[name] = [String(prev), value];
    }
    const x = new H2Exchange(this, sink);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = this.session.request(h, { endStream: req.body === null });
    } catch (err) {
      x.fail(err as Error);
      return x;
    }
    x.stream = stream;
    (stream as StreamWithExchange)[EXCHANGE] = x;
    // Shared listeners (no closures per request): each finds its exchange on the stream.
    stream.on('response', onStreamResponse);
    stream.on('data', onStreamData);
    stream.on('trailers', onStreamTrailers);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    if (req.body) {
      (req.body as BodyWithStream)[UPSTREAM_STREAM] = stream;
      req.body.pipe(stream);
      req.body.on('error', onBodyError);
    }
    return x;
  }

  /** Connected, and the peer's SETTINGS did not arrive: it is not an HTTP/2 server. */
  connectedNotSettled(): boolean {
    return this.connected && !this.settled;
  }

  isConnected(): boolean {
    return this.connected;
  }

  retire(drainMs: number): void {
    if (this.retired) return;
    this.retired = true;
    this.session.close();
    const t = setTimeout(() => this.session.destroy(), drainMs);
    t.unref();
  }

  destroy(): void {
    this.session.destroy();
  }
}

const EXCHANGE = Symbol('meshlet.h2exchange');
const UPSTREAM_STREAM = Symbol('meshlet.h2upstream');
type StreamWithExchange = http2.ClientHttp2Stream & { [EXCHANGE]: H2Exchange };
type BodyWithStream = NodeJS.ReadableStream & { [UPSTREAM_STREAM]?: http2.ClientHttp2Stream };

/** One request on an HTTP/2 connection: its state, and the call handle returned to the caller. */
class H2Exchange implements UpstreamCall {
  stream: http2.ClientHttp2Stream | undefined = undefined;
  started = false;
  done = false;
  trailers: Headers | undefined = undefined;

  constructor(
    readonly conn: H2Connection,
    readonly sink: ResponseSink,
  ) {}

  fail(err: Error): void {
    if (this.done) return;
    this.done = true;
    // The HTTP/2 error code of a reset stream, for callers that pass it on (gRPC: CANCEL -> CANCELLED).
    // `connectionLost`: the stream ended because the whole connection did (not a reset of its own).
    const rst = this.stream?.rstCode;
    if (rst !== undefined && (err as { rstCode?: number }).rstCode === undefined) Object.assign(err, { rstCode: rst });
    if (this.conn.unusable()) Object.assign(err, { connectionLost: true });
    const connect = !this.conn.isConnected() && !this.started;
    const e = connect ? new UpstreamConnectError(err as Error & { code?: string }) : err;
    // The peer answered the connection preface with something else than HTTP/2 SETTINGS (a
    // plain HTTP/1.1 server): it does not speak h2c (`protocol: auto` falls back to HTTP/1.1).
    if (this.conn.connectedNotSettled() && !this.started) Object.assign(e, { h2PrefaceRefused: true });
    this.sink.onError(e, this.started);
  }

  abort(): void {
    if (this.done) return;
    this.done = true;
    const stream = this.stream;
    if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  resume(): void {
    this.stream?.resume();
  }
}

function onStreamResponse(this: StreamWithExchange, headers: http2.IncomingHttpHeaders): void {
  const status = Number(headers[':status']);
  if (status < 200) return;
  const x = this[EXCHANGE];
  x.started = true;
  x.sink.onResponse(status, headers as Headers);
}

function onStreamData(this: StreamWithExchange, chunk: Buffer): void {
  if (!this[EXCHANGE].sink.onData(chunk)) this.pause();
}

function onStreamTrailers(this: StreamWithExchange, t: http2.IncomingHttpHeaders): void {
  this[EXCHANGE].trailers = t as Headers;
}

function onStreamEnd(this: StreamWithExchange): void {
  const x = this[EXCHANGE];
  if (x.done) return;
  // A stream closed under us (the session destroyed, RST_STREAM) also ends its readable side:
  // node pushes EOF and only then destroys it, with rstCode set (CANCEL when the connection
  // went away, and no 'error' at all). Such a response is cut short and must not be passed on
  // as a clean end.
  const rst = this.rstCode;
  if (rst !== undefined && rst !== http2.constants.NGHTTP2_NO_ERROR) {
    x.fail(Object.assign(new Error(`upstream stream reset (code ${rst})`), { code: 'ECONNRESET' }));
    return;
  }
  if (!x.started) {
    x.fail(new Error('upstream stream ended without a response'));
    return;
  }
  x.done = true;
  x.sink.onEnd(x.trailers);
}

function onStreamError(this: StreamWithExchange, err: Error): void {
  this[EXCHANGE].fail(err);
}

function onStreamClose(this: StreamWithExchange): void {
  const x = this[EXCHANGE];
  if (!x.done) x.fail(Object.assign(new Error(`upstream stream closed (${this.rstCode ?? 'no code'})`), { code: 'ECONNRESET' }));
}

function onBodyError(this: BodyWithStream): void {
  this[UPSTREAM_STREAM]?.close(http2.constants.NGHTTP2_CANCEL);
}
