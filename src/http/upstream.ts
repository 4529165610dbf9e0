/**
 * Upstream connection pools: one keep-alive `H1Pool` (HTTP/1.1, h1-client.ts) or one multiplexed
 * HTTP/2 session (h2c, prior knowledge; meshlet's own client, src/http/h2/client.ts, or node:http2
 * with MESHLET_H2_FRAMING=node) per endpoint. A request is sent with `send()` and
 * answered through a small callback interface, so the caller streams the response without an
 * intermediate Readable, pauses the upstream when downstream pushes back, and aborts it when the
 * client goes away.
 *
 * Pools of endpoints that left every snapshot are closed gracefully by `retain()`.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { installCheapAsyncBind } from './async-bind';
import { RELAY, type BodyRelay, type Relayed } from './body-relay';
import type * as tls from 'node:tls';
import { connect as tlsConnect } from 'node:tls';
import type { MeshTls } from '../security/tls';
import { H1Pool } from './h1-client';
import { connect as connectH2, H2ClientSession } from './h2/client';
import { requestFieldsOf } from './h2/headers';
import { defaultH2Framing, type H2Framing } from './h2/framing';
import { UpstreamConnectError, type Headers, type ResponseSink, type UpstreamCall, type UpstreamRequest, type UpstreamTarget } from './upstream-types';

export type { Headers, ResponseSink, UpstreamCall, UpstreamProtocol, UpstreamRequest, UpstreamTarget } from './upstream-types';
export { refusedUnseen, UpstreamConnectError, UpstreamOverflowError, type ConnectionLimits } from './upstream-types';

export interface UpstreamPoolOptions {
  /** Idle keep-alive time for HTTP/1.1 connections (default 60 s). */
  keepAliveMs?: number;
  connectTimeoutMs?: number;
  /** How long a retired pool may finish its in-flight requests (default 30 s). */
  drainMs?: number;
  /** Every outbound TLS handshake's result (metrics): ok, or the failure's code. */
  onHandshake?: (result: 'ok' | 'wrong_identity' | 'failed', code?: string) => void;
  /**
   * The HTTP/2 client upstream sessions run on: `meshlet` (our framing layer,
   * src/http/h2/client.ts) or `node` (node:http2, the fallback). Default: the
   * `MESHLET_H2_FRAMING` environment variable, else `meshlet`.
   */
  h2Framing?: H2Framing;
}

/** The mesh identity for outbound mTLS, and the session tickets kept for resumption (one per endpoint). */
class ClientTls {
  meshTls: MeshTls | undefined;
  private readonly sessions = new Map<string, Buffer>();
  constructor(readonly onHandshake: UpstreamPoolOptions['onHandshake']) {}

  /** Options for a new connection to `key` that must prove `identity`; undefined when we have no certificate. */
  options(key: string, identity: string): tls.ConnectionOptions | undefined {
    const m = this.meshTls;
    if (!m) return undefined;
    const session = this.sessions.get(key);
    return { ...m.clientOptions(identity), ...(session ? { session } : {}) };
  }
  keep(key: string, session: Buffer): void {
    if (this.sessions.size > 10_000) this.sessions.clear();
    this.sessions.set(key, session);
  }
  forget(key: string): void {
    this.sessions.delete(key);
  }
  /** Counts a TLS socket's handshake. */
  watch(socket: tls.TLSSocket): void {
    const cb = this.onHandshake;
    if (!cb) return;
    let done = false;
    socket.once('secureConnect', () => {
      done = true;
      cb('ok');
    });
    socket.once('error', (err: Error & { code?: string }) => {
      if (done) return;
      done = true;
      cb(err.code === 'PEER_WRONG_IDENTITY' ? 'wrong_identity' : 'failed', err.code);
    });
  }
}

/** The pool key of a target: its endpoint, and over mTLS the identity it must prove too. */
function poolKey(t: UpstreamTarget): string {
  return t.identity === undefined ? t.key : `${t.key}|${t.identity}`;
}

function endpointOf(poolKey: string): string {
  const i = poolKey.indexOf('|');
  return i < 0 ? poolKey : poolKey.slice(0, i);
}

// node:http2's session.request() binds an AsyncResource per request: make that cheap (async-bind.ts).
installCheapAsyncBind();

/** Opens an upstream HTTP/2 session on node:http2 or on our framing layer (the one place its objects are taken as node's). */
function connectHttp2(authority: string, options: http2.SecureClientSessionOptions, meshlet: boolean): http2.ClientHttp2Session {
  if (meshlet) return connectH2(authority, options as Parameters<typeof connectH2>[1]) as unknown as http2.ClientHttp2Session;
  return http2.connect(authority, options);
}

export class UpstreamPools {
  private readonly h1 = new Map<string, H1Pool>();
  private readonly h2 = new Map<string, H2Connection>();
  private readonly opts: Required<UpstreamPoolOptions>;
  private closed = false;
  private readonly tls: ClientTls;

  constructor(opts: UpstreamPoolOptions = {}) {
    const { onHandshake, ...rest } = opts;
    this.opts = { keepAliveMs: 60_000, connectTimeoutMs: 10_000, drainMs: 30_000, ...rest, h2Framing: rest.h2Framing ?? defaultH2Framing() } as Required<UpstreamPoolOptions>;
    this.tls = new ClientTls(onHandshake);
  }

  /**
   * This sidecar's identity for outbound mTLS. Rotations (`MeshTls.update`) reach new connections
   * at once; open connections keep the certificate they were made with.
   */
  setTls(meshTls: MeshTls | undefined): void {
    this.tls.meshTls = meshTls;
  }

  /** Whether this sidecar can dial mTLS (it has a certificate). */
  get hasTls(): boolean {
    return this.tls.meshTls !== undefined;
  }

  /** TLS options for a dedicated connection (an upgrade) to a target that must prove `target.identity`. */
  tlsOptions(target: UpstreamTarget): tls.ConnectionOptions | undefined {
    if (target.identity === undefined) return undefined;
    return this.tls.options(poolKey(target), target.identity) ?? noCertificate(target.identity);
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
      if (keep.has(endpointOf(k))) continue;
      this.h1.delete(k);
      this.tls.forget(k);
      p.close(this.opts.drainMs);
    }
    for (const [k, c] of this.h2) {
      if (keep.has(endpointOf(k))) continue;
      this.h2.delete(k);
      this.tls.forget(k);
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
    const key = poolKey(t);
    let p = this.h1.get(key);
    if (!p) {
      const identity = t.identity;
      const ct = this.tls;
      p = new H1Pool(t.address, t.port, {
        keepAliveMs: this.opts.keepAliveMs,
        connectTimeoutMs: this.opts.connectTimeoutMs,
        ...(identity !== undefined
          ? {
              tls: () => ct.options(key, identity) ?? noCertificate(identity),
              onTlsSession: (s: Buffer) => ct.keep(key, s),
              onTlsSocket: (s: tls.TLSSocket) => ct.watch(s),
            }
          : {}),
      });
      if (!this.closed) this.h1.set(key, p);
    }
    return p;
  }

  private h2For(t: UpstreamTarget): H2Connection {
    const key = poolKey(t);
    let c = this.h2.get(key);
    if (!c || c.unusable()) {
      const secure = t.identity !== undefined ? (this.tls.options(key, t.identity) ?? noCertificate(t.identity)) : undefined;
      c = new H2Connection(t, this.opts.connectTimeoutMs, secure, this.tls, key, this.opts.h2Framing === 'meshlet', () => {
        if (this.h2.get(key) === c) this.h2.delete(key);
      });
      if (!this.closed) this.h2.set(key, c);
    }
    return c;
  }
}

/** Options that fail the connection at once: the endpoint requires mTLS and we have no certificate (any more). */
function noCertificate(identity: string): tls.ConnectionOptions {
  return {
    checkServerIdentity: () => Object.assign(new Error(`no certificate of our own to prove who we are to ${identity}`), { code: 'PEER_UNVERIFIED' }),
    rejectUnauthorized: true,
  };
}

// -------------------------------------------------------------------------------------- HTTP/2

class H2Connection {
  private readonly session: http2.ClientHttp2Session;
  /** The same session when it runs on our framing layer (it takes a request head as a field list). */
  private readonly ours: H2ClientSession | undefined;
  private connected = false;
  /** The peer's SETTINGS arrived: it speaks HTTP/2. */
  private settled = false;
  private dead = false;
  private retired = false;

  private readonly scheme: 'http' | 'https';
  /** Why the TLS handshake failed, if it did. */
  private tlsError: Error | undefined;

  /** Why the TLS handshake failed (a wrong identity, a bad chain), if it did: what its streams fail with. */
  handshakeError(): Error | undefined {
    return this.tlsError;
  }

  constructor(t: UpstreamTarget, connectTimeoutMs: number, secure: tls.ConnectionOptions | undefined, ct: ClientTls, key: string, meshletFraming: boolean, onGone: () => void) {
    const host = t.address.includes(':') ? `[${t.address}]` : t.address;
    this.scheme = secure ? 'https' : 'http';
    this.session = connectHttp2(`${this.scheme}://${host}:${t.port}`, {
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
      // No Nagle: small frames (a request's HEADERS, a WINDOW_UPDATE) must not wait for an ACK.
      createConnection: () => {
        if (!secure) return net.connect({ host: t.address, port: t.port, noDelay: true });
        const s = tlsConnect({ host: t.address, port: t.port, ...secure, ALPNProtocols: ['h2'] });
        s.setNoDelay(true);
        ct.watch(s);
        // The handshake's own error (a wrong identity, a bad chain) is what its streams fail with.
        s.once('error', (err: Error) => {
          if (!this.connected) this.tlsError = err;
        });
        s.on('session', (b: Buffer) => ct.keep(key, b));
        return s;
      },
    }, meshletFraming);
    this.ours = this.session instanceof H2ClientSession ? this.session : undefined;
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
    const x = new H2Exchange(this, sink);
    const endStream = req.body === null;
    let stream: http2.ClientHttp2Stream;
    try {
      // Our framing takes the head as a field list built straight from the flat header list (no
      // header object to build, enumerate and flatten again); anything that list cannot carry
      // as the object would (requestFieldsOf says) goes through the object, as node:http2's does.
      const fields = this.ours !== undefined ? requestFieldsOf(req.method, req.path, req.authority, this.scheme, req.headers) : undefined;
      if (fields !== undefined) stream = this.ours!.requestWith(fields, endStream) as unknown as http2.ClientHttp2Stream;
      else stream = this.session.request(headerObject(req, this.scheme), { endStream });
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
    if (req.body) pipeBody(x, req.body as BodyWithStream, stream);
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

/**
 * The head as node:http2's `request` takes it. A null-prototype object, so that a field named
 * like an inherited property (`constructor`, `toString`, `__proto__`) is a field like any other.
 */
function headerObject(req: UpstreamRequest, scheme: string): http2.OutgoingHttpHeaders {
  const h = Object.create(null) as http2.OutgoingHttpHeaders;
  h[':method'] = req.method;
  h[':path'] = req.path;
  h[':authority'] = req.authority;
  h[':scheme'] = scheme;
  const raw = req.headers;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const prev = h[name];
    if (prev === undefined) h[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else h[name] = [String(prev), value];
  }
  return h;
}

const EXCHANGE = Symbol('meshlet.h2exchange');
const UPSTREAM_STREAM = Symbol('meshlet.h2upstream');
/** The stream has its `'drain'` listener (added at the first backpressure, not per call). */
const DRAIN_ON = Symbol('meshlet.h2drainOn');
type StreamWithExchange = http2.ClientHttp2Stream & { [EXCHANGE]: H2Exchange; [DRAIN_ON]?: true };
type BodyWithStream = Relayed & { [UPSTREAM_STREAM]?: http2.ClientHttp2Stream };

/**
 * The request body into its upstream stream: what `body.pipe(stream)` does (write, pause on
 * backpressure, resume on 'drain', end at the end), through shared listeners that find the stream
 * on the body, instead of the ten closures and once-wrappers `pipe()` makes per call. The body is
 * let go (`unpipeBody`) when the exchange ends, fails or is aborted, or the stream closes (pipe()
 * let go on the stream's 'close', 'finish' and 'error'). A client that resets its HTTP/2 request
 * mid-body (the body is then the request stream itself, stack/retry.ts) ends it with 'aborted'
 * and no 'error': both cancel the upstream stream.
 *
 * A body that already carries the replay body's shared listeners (the downstream HTTP/2 request
 * stream in direct mode, body-relay.ts) is fed through them (`BODY_PIPE` in its `[RELAY]` slot):
 * no `on()`/`off()` on it per call, each of which costs node's `'newListener'` /
 * `'removeListener'` events on an `Http2Stream`. The upstream stream's `'drain'` listener is added
 * only when a write first meets backpressure.
 */
function pipeBody(x: H2Exchange, body: BodyWithStream, stream: http2.ClientHttp2Stream): void {
  x.body = body;
  body[UPSTREAM_STREAM] = stream;
  if (body[RELAY] === null) body[RELAY] = BODY_PIPE;
  else {
    body.on('data', onBodyData);
    body.on('end', onBodyEnd);
    body.on('error', onBodyError);
    body.on('aborted', onBodyError);
  }
  // A body that ended before it came here ends the stream at once (as pipe() does).
  if (body.readableEnded) onBodyEnd.call(body);
  else body.resume();
}

function unpipeBody(x: H2Exchange): void {
  const body = x.body;
  if (body === undefined) return;
  x.body = undefined;
  if (body[UPSTREAM_STREAM] !== x.stream) return;
  body[UPSTREAM_STREAM] = undefined;
  if (body[RELAY] === BODY_PIPE) body[RELAY] = null;
  else {
    body.off('data', onBodyData);
    body.off('end', onBodyEnd);
  }
  // As unpipe() does: a body nobody reads any more is paused (flow control holds the client back).
  if (!body.readableEnded) body.pause();
}

function onBodyData(this: BodyWithStream, chunk: Buffer): void {
  const s = this[UPSTREAM_STREAM] as StreamWithExchange | undefined;
  if (s !== undefined && !s.write(chunk)) {
    this.pause();
    if (s[DRAIN_ON] === undefined) {
      s[DRAIN_ON] = true;
      s.on('drain', onStreamDrain);
    }
  }
}

function onBodyEnd(this: BodyWithStream): void {
  const s = this[UPSTREAM_STREAM];
  if (s === undefined) return;
  unpipeBody((s as StreamWithExchange)[EXCHANGE]);
  s.end();
}

/** The pipe's listeners, called by the shared listeners already on the body (body-relay.ts). */
const BODY_PIPE: BodyRelay = {
  data: (body, chunk) => onBodyData.call(body, chunk),
  end: (body) => onBodyEnd.call(body),
  fail: (body) => onBodyError.call(body),
};

function onStreamDrain(this: StreamWithExchange): void {
  const body = this[EXCHANGE].body;
  if (body !== undefined && body[UPSTREAM_STREAM] === this) body.resume();
}

/** One request on an HTTP/2 connection: its state, and the call handle returned to the caller. */
class H2Exchange implements UpstreamCall {
  stream: http2.ClientHttp2Stream | undefined = undefined;
  /** The request body while it is being sent into `stream` (pipeBody). */
  body: BodyWithStream | undefined = undefined;
  started = false;
  done = false;
  trailers: Headers | undefined = undefined;

  constructor(
    readonly conn: H2Connection,
    readonly sink: ResponseSink,
  ) {}

  fail(err: Error): void {
    unpipeBody(this);
    if (this.done) return;
    this.done = true;
    // The HTTP/2 error code of a reset stream, for callers that pass it on (gRPC: CANCEL -> CANCELLED).
    // `connectionLost`: the stream ended because the whole connection did (not a reset of its own).
    const rst = this.stream?.rstCode;
    if (rst !== undefined && (err as { rstCode?: number }).rstCode === undefined) Object.assign(err, { rstCode: rst });
    if (this.conn.unusable()) Object.assign(err, { connectionLost: true });
    const connect = !this.conn.isConnected() && !this.started;
    const e = connect ? new UpstreamConnectError((this.conn.handshakeError() ?? err) as Error & { code?: string }) : err;
    // The peer answered the connection preface with something else than HTTP/2 SETTINGS (a
    // plain HTTP/1.1 server): it does not speak h2c (`protocol: auto` falls back to HTTP/1.1).
    if (this.conn.connectedNotSettled() && !this.started) Object.assign(e, { h2PrefaceRefused: true });
    this.sink.onError(e, this.started);
  }

  abort(): void {
    unpipeBody(this);
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
  unpipeBody(x);
  if (!x.done) x.fail(Object.assign(new Error(`upstream stream closed (${this.rstCode ?? 'no code'})`), { code: 'ECONNRESET' }));
}

function onBodyError(this: BodyWithStream): void {
  this[UPSTREAM_STREAM]?.close(http2.constants.NGHTTP2_CANCEL);
}
