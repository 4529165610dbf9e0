/**
 * An HTTP listener that serves HTTP/1.1 and h2c (prior knowledge) on one port, detected from
 * the connection preface, and refuses bad input before it reaches any handler:
 *
 * - HTTP/1.1 parse errors (request smuggling with conflicting Content-Length/Transfer-Encoding,
 *   invalid header names or values, bad framing) answer 400; headers over the limit 431; a client
 *   too slow to send its headers 408. The connection is closed.
 * - HTTP/2: header lists over the limit are refused by nghttp2; a client that resets most of the
 *   streams it opens before they are answered (the "rapid reset" attack, CVE-2023-44487) gets a
 *   GOAWAY(ENHANCE_YOUR_CALM) and is disconnected, as Envoy does with premature resets.
 *
 * - Overload (src/http/overload.ts): connections over the listener's cap close the oldest idle one
 *   or are refused; requests over the in-flight cap, or while memory is above the watermark, are
 *   answered 503 with the `OL` flag; request bodies idle too long or slower than the minimum
 *   upload rate are answered 408 (flag `SI`), for HTTP/1.1 and HTTP/2 alike (not gRPC streams).
 *
 * - mTLS (`mtls`, the sidecar's inbound listener): the first byte tells a TLS ClientHello (0x16)
 *   from plaintext on the same port. The PeerAuthentication mode in force decides: PERMISSIVE
 *   takes both, STRICT closes plaintext connections, DISABLE closes TLS ones. A TLS connection
 *   must present a client certificate that chains to the trust bundle and names one SPIFFE ID;
 *   the identity is computed once, at the handshake, and carried on the connection (peer.ts).
 *   ALPN picks h2 or http/1.1, and the same HTTP/1.1 and HTTP/2 servers take the TLS socket.
 *
 * Every refusal is logged with its reason (mTLS refusals at most once per 10 s per reason, with
 * the number left out) and counted.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Logger } from 'pino';
import { TLS_HANDSHAKE_BYTE, type PeerAuthMode } from '../security/peer-auth';
import { parseSpiffeId } from '../security/spiffe';
import { spiffeIdOf, type MeshTls } from '../security/tls';
import { setPeer, getPeer } from './peer';
import { sniffProtocol } from './detect';
import { H1Server, type H1Request, type H1Response } from './h1-server';
import { serveStream, type H2Request, type H2Response } from './h2-server';
import { defaultH2Framing, type H2Framing } from './h2/framing';
import { serveH2, type H2StreamListener } from './h2/session';
import { BODY_TIMEOUT_FLAG, OVERLOAD_FLAG, type OverloadManager } from './overload';

export type DownstreamRequest = H1Request | H2Request;
export type DownstreamResponse = H1Response | H2Response;
export type RequestHandler = (req: DownstreamRequest, res: DownstreamResponse, protocol: 'http1' | 'http2') => void;

export interface ListenerOptions {
  name: string;
  handler: RequestHandler;
  logger: Logger;
  /** Request header bytes allowed (default 64 KiB); more answers 431. */
  maxHeaderBytes?: number;
  /** A client must send its request headers within this time (default 10 s); else 408. */
  headersTimeoutMs?: number;
  /** Idle HTTP/1.1 keep-alive connections are closed after this (default 60 s). */
  keepAliveTimeoutMs?: number;
  /** HTTP/2: after this many streams, close a connection whose streams were mostly reset prematurely. */
  prematureResetMinStreams?: number;
  /** Sees every connection first; returning true means it took the connection (not HTTP). */
  takeover?: (socket: net.Socket) => boolean;
  /** Called for every refused request or connection, with a short reason code. */
  onRefused?: (reason: string) => void;
  /** Connection and request caps and the memory watermark, shared by the listeners. */
  overload?: OverloadManager;
  /** A request body (not gRPC) receiving nothing for this long is answered 408 (default 0: no limit). */
  bodyIdleTimeoutMs?: number;
  /** After `bodyIdleTimeoutMs`, a request body must average this many bytes/s, else 408 (0: no minimum). */
  minBodyBytesPerSec?: number;
  /** mTLS on this port: the PeerAuthentication mode in force (read per new connection) and where TLS events go. */
  mtls?: {
    mode(): PeerAuthMode;
    onEvent(event: TlsEvent, detail?: string): void;
  };
  /**
   * Terminate TLS (the gateway's HTTPS listeners): the options of `tls.createServer` (certificate
   * by SNICallback, ALPN h2/http1.1, versions, ciphers). The handshake must finish within
   * `headersTimeoutMs`; the protocol is still detected from the decrypted preface.
   */
  tls?: tls.TlsOptions;
  /** TLS handshakes, as they finish or fail (metrics). */
  onTls?: (outcome: 'ok' | 'error', detail?: string) => void;
  /** Connections open at once from one client address; more are closed at once (0 or absent: no limit). */
  maxConnectionsPerClient?: number;
  /**
   * Which HTTP/2 framing serves this listener's HTTP/2 connections: `meshlet` (src/http/h2/, our
   * own framing layer) or `node` (node:http2, the fallback). Default: the `MESHLET_H2_FRAMING`
   * environment variable, else `meshlet`.
   */
  h2Framing?: H2Framing;
}

export { H2_FRAMINGS, defaultH2Framing, type H2Framing } from './h2/framing';

/**
 * What happened to a connection on an mTLS port: its security once admitted (`tls`: handshake
 * done and identity verified; `plaintext`), or why it was closed.
 */
export type TlsEvent = 'tls' | 'plaintext' | 'plaintext_refused' | 'tls_refused' | 'no_certificate' | 'handshake_failed' | 'no_spiffe_id';


export interface Listener {
  readonly server: net.Server;
  address(): { host: string; port: number };
  /** Connections open now. */
  connections(): number;
  /**
   * Serves mTLS with this identity from now on (the first call creates the TLS server; the
   * identity's later rotations reach it by `MeshTls.update`: new handshakes use the new
   * certificate, open connections keep theirs).
   */
  setTls(meshTls: MeshTls): void;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes everything. */
  close(graceMs?: number): Promise<void>;
}

export function startListener(host: string, port: number, opts: ListenerOptions): Promise<Listener> {
  const log = opts.logger;
  const maxHeaderBytes = opts.maxHeaderBytes ?? 64 * 1024;
  const headersTimeoutMs = opts.headersTimeoutMs ?? 10_000;
  const framing = opts.h2Framing ?? defaultH2Framing();
  const refused = (reason: string, detail: Record<string, unknown>): void => {
    log.warn({ listener: opts.name, reason, ...detail }, 'request refused');
    opts.onRefused?.(reason);
  };

  const ov = opts.overload;
  const bodyIdleMs = opts.bodyIdleTimeoutMs ?? 0;
  const minRate = opts.minBodyBytesPerSec ?? 0;
  /** An HTTP/2 request counted in flight is done (one shared listener, no closure per stream). */
  const streamDone = (): void => {
    if (ov) ov.active--;
  };
  const onBodyTimeout = (kind: 'idle' | 'slow'): void => ov?.record(opts.name, kind === 'idle' ? 'body_timeout' : 'body_too_slow');
  const handler: RequestHandler = !ov
    ? opts.handler
    : (req, res, protocol) => {
        // An HTTP/1.1 request is counted in flight already (by the H1 server); a stream is counted here.
        const why = ov.shedReason(protocol === 'http1' ? 1 : 0);
        if (why !== undefined) {
          ov.record(opts.name, 'request_shed', { reason: why });
          const text = `overloaded: ${why}\n`;
          res.writeHead(503, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(text)), 'x-meshlet-flags': OVERLOAD_FLAG, ...(protocol === 'http1' && ov.overloaded ? { connection: 'close' } : {}) });
          res.end(text);
          return;
        }
        if (protocol === 'http2') {
          ov.active++;
          (req as H2Request).stream.on('close', streamDone);
        }
        opts.handler(req, res, protocol);
      };
  const h2Handler = bodyIdleMs > 0 ? (req: H2Request, res: H2Response): void => (trackH2Body(req, res), handler(req, res, 'http2')) : (req: H2Request, res: H2Response): void => handler(req, res, 'http2');

  const h1 = new H1Server({
    maxHeaderBytes,
    headersTimeoutMs,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 60_000,
    onRequest: (req, res) => handler(req, res, 'http1'),
    onRefused: (reason, detail) => refused(reason, detail),
    bodyIdleTimeoutMs: bodyIdleMs,
    minBodyBytesPerSec: minRate,
    onBodyTimeout,
    inflight: ov,
  });

  // HTTP/2 request bodies in progress (not gRPC), checked on one timer like the HTTP/1.1 ones.
  // The request counts its body bytes as they arrive (h2-server.ts); a 'data' listener here would
  // start the flow before the proxy reads it. The bodies are a list through the entries themselves
  // (unlinked when done), not a Set: a Set's table, replaced as deletions pile up, links to its
  // successor, and once one is old the chain keeps every later one and its requests alive into the
  // old generation (src/http/h2/stream-table.ts has the measurements).
  interface H2Body {
    req: H2Request;
    res: H2Response;
    start: number;
    last: number;
    /** The request's byte count at the last check. */
    seen: number;
    prev: H2Body | null;
    next: H2Body | null;
    listed: boolean;
  }
  let bodiesHead: H2Body | null = null;
  let bodiesTail: H2Body | null = null;
  const unlistBody = (b: H2Body): void => {
    if (!b.listed) return;
    if (b.prev === null) bodiesHead = b.next;
    else b.prev.next = b.next;
    if (b.next === null) bodiesTail = b.prev;
    else b.next.prev = b.prev;
    b.prev = b.next = null;
    b.listed = false;
  };
  let h2Now = Date.now();
  let h2Timer: NodeJS.Timeout | undefined;
  function trackH2Body(req: H2Request, res: H2Response): void {
    const stream = req.stream;
    // A WebSocket (extended CONNECT) stream is a tunnel, not a body: its own idle timeout applies.
    if (stream.endAfterHeaders || req.headers[':method'] === 'CONNECT' || String(req.headers['content-type'] ?? '').startsWith('application/grpc')) return;
    const b: H2Body = { req, res, start: h2Now, last: h2Now, seen: 0, prev: bodiesTail, next: null, listed: true };
    if (bodiesTail === null) bodiesHead = b;
    else bodiesTail.next = b;
    bodiesTail = b;
    stream.once('close', () => unlistBody(b));
    if (!h2Timer) {
      h2Timer = setInterval(checkH2Bodies, Math.min(1000, Math.max(50, bodyIdleMs / 4)));
      h2Timer.unref();
    }
  }
  function checkH2Bodies(): void {
    const now = Date.now();
    const elapsed = now - h2Now;
    h2Now = now;
    let next: H2Body | null;
    // `next` is read before a body is dealt with (unlisting it clears its links); one unlisted
    // meanwhile (its stream closed by what this one did) ends the walk: the next tick goes on.
    for (let b = bodiesHead; b !== null && b.listed; b = next) {
      next = b.next;
      const stream = b.req.stream;
      if (stream.destroyed || stream.readableEnded || b.res.writableEnded) {
        unlistBody(b);
        continue;
      }
      // Slow is judged only while bytes arrive (a trickle); a body that has stopped is idle, and
      // only the idle timeout cuts it (else a short body that stops would read as 'slow').
      const progressed = b.req.bodyBytes !== b.seen;
      if (progressed) {
        b.seen = b.req.bodyBytes;
        b.last = now;
      }
      let reason: string | undefined;
      if (stream.readableLength > 0 || stream.readableFlowing !== true) {
        // The proxy holds the body back (not reading yet, or its reader is slow), not the client.
        b.last = now;
        b.start += elapsed;
      } else if (now - b.last > bodyIdleMs) {
        onBodyTimeout('idle');
        reason = `request body idle for more than ${bodyIdleMs} ms`;
      } else if (progressed && minRate > 0 && now > b.start + bodyIdleMs + (b.req.bodyBytes * 1000) / minRate) {
        onBodyTimeout('slow');
        reason = `request body slower than ${minRate} bytes/s`;
      }
      if (reason === undefined) continue;
      unlistBody(b);
      refused(reason, { status: 408, remote: stream.session?.socket?.remoteAddress });
      if (!b.res.headersSent) {
        const text = `${reason}\n`;
        b.res.writeHead(408, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(text)), 'x-meshlet-flags': BODY_TIMEOUT_FLAG });
        b.res.end(text);
      }
      // The body is cut, not complete: abort it (the proxy cancels the upstream request, as for an
      // HTTP/1.1 body cut short), then end the stream with NO_ERROR after the complete response
      // (RFC 9113 8.1); later writes by the proxy are dropped.
      stream.emit('aborted');
      stream.close(http2.constants.NGHTTP2_NO_ERROR);
    }
  }

  // The core API: no 'request' listener, so node builds no compat request/response per stream.
  const h2Options = {
    maxHeaderListPairs: 512,
    maxSessionMemory: 64,
    // enableConnectProtocol: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441), so clients may open
    // WebSockets as extended CONNECT streams on their HTTP/2 connection.
    settings: { maxHeaderListSize: maxHeaderBytes, maxConcurrentStreams: 1000, initialWindowSize: 1024 * 1024, enableConnectProtocol: true },
  };
  const onH2Stream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]): void => serveStream(stream, headers, rawHeaders, h2Handler);
  const minStreams = opts.prematureResetMinStreams ?? 100;
  const sessions = new Set<http2.ServerHttp2Session>();
  /** Per session: streams opened, reset prematurely, open now (none open: idle, overload may close it). */
  interface SessionCounts {
    session: http2.ServerHttp2Session;
    streams: number;
    premature: number;
    open: number;
  }
  // One shared 'close' listener for every stream (no closure per stream): it finds its session's
  // counts on the stream.
  const COUNTS = Symbol('meshlet.sessionCounts');
  type CountedStream = http2.ServerHttp2Stream & { [COUNTS]: SessionCounts };
  function onStreamClose(this: CountedStream): void {
    const c = this[COUNTS];
    c.open--;
    // Reset by the client before we answered: premature (Envoy's premature_reset heuristic).
    if (this.rstCode === http2.constants.NGHTTP2_CANCEL && !this.headersSent) c.premature++;
    const session = c.session;
    if (c.streams >= minStreams && c.premature * 2 >= c.streams && !session.destroyed) {
      refused('rapid reset: most streams reset by the client before a response', {
        streams: c.streams,
        premature: c.premature,
        remote: session.socket?.remoteAddress,
      });
      session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      session.destroy();
    }
  }
  const onH2Session = (session: http2.ServerHttp2Session): void => {
    sessions.add(session);
    const counts: SessionCounts = { session, streams: 0, premature: 0, open: 0 };
    const socket = session.socket as net.Socket | undefined;
    const peer = getPeer(socket);
    if (peer) setPeer(session, peer);
    const raw = (socket && rawOf.get(socket as tls.TLSSocket)) ?? socket;
    if (raw && sockets.has(raw)) sockets.set(raw, () => counts.open === 0 && !session.closed);
    session.on('close', () => sessions.delete(session));
    session.on('stream', (stream) => {
      counts.streams++;
      counts.open++;
      (stream as CountedStream)[COUNTS] = counts;
      stream.on('close', onStreamClose);
    });
    session.on('error', (err) => log.debug({ err, listener: opts.name }, 'http2 session error'));
  };
  /**
   * An HTTP/2 connection (preface seen, or ALPN h2) goes to our own framing layer (src/http/h2/),
   * which reproduces the parts of node's session and stream the stack uses (this is the one place
   * its objects are taken as node's), or to node:http2, whose server is built only in that case.
   * Either way onH2Session registers the session's one 'error' log.
   */
  const serveHttp2 = ((): ((socket: net.Socket | tls.TLSSocket) => void) => {
    if (framing === 'meshlet') {
      const onSession = (session: unknown): void => onH2Session(session as http2.ServerHttp2Session);
      const onStream = onH2Stream as unknown as H2StreamListener;
      return (socket) => {
        serveH2(socket, h2Options, onSession, onStream);
      };
    }
    const h2 = http2.createServer(h2Options);
    h2.on('stream', onH2Stream);
    h2.on('session', onH2Session);
    h2.on('sessionError', (err) => log.debug({ err, listener: opts.name }, 'http2 session error'));
    return (socket) => h2.emit('connection', socket);
  })();

  /**
   * Open connections, oldest first, each with "is it idle now?": closing an idle one loses no
   * request (not a byte sent yet, keep-alive between requests, HTTP/2 with no stream open).
   */
  const sockets = new Map<net.Socket, () => boolean>();
  const idleYet = (): boolean => true;
  const busy = (): boolean => false;
  /** Closes the oldest idle connection (looking at the 1,024 oldest); false if none is idle. */
  const closeOldestIdle = (): boolean => {
    let n = 0;
    for (const [s, idle] of sockets) {
      if (++n > 1024) break;
      if (!idle()) continue;
      sockets.delete(s);
      s.destroy();
      return true;
    }
    return false;
  };
  const unregisterPressure = ov?.onPressure(() => {
    let closed = 0;
    for (const [s, idle] of sockets) {
      if (!idle()) continue;
      sockets.delete(s);
      s.destroy();
      closed++;
    }
    if (closed > 0) ov.record(opts.name, 'idle_closed', { closed, why: 'memory above the watermark' });
  });
  // ------------------------------------------------------------------------------------ mTLS
  const mt = opts.mtls;
  let tlsServer: tls.Server | undefined;
  /** A TLS socket's underlying TCP socket (the one the overload accounting knows). */
  const rawOf = new WeakMap<tls.TLSSocket, net.Socket>();
  const quiet = new Map<string, { until: number; suppressed: number }>();
  const refuseTls = (socket: net.Socket, event: TlsEvent, reason: string, detail?: string): void => {
    mt?.onEvent(event, detail);
    const now = Date.now();
    const q = quiet.get(event);
    if (q && now < q.until) q.suppressed++;
    else {
      log.warn({ listener: opts.name, reason, ...(detail ? { detail } : {}), remote: socket.remoteAddress, ...(q?.suppressed ? { suppressed: q.suppressed } : {}) }, 'connection refused (mTLS)');
      quiet.set(event, { until: now + 10_000, suppressed: 0 });
    }
    socket.destroy();
  };
  let boundTls: MeshTls | undefined;
  const startTls = (meshTls: MeshTls): void => {
    if (tlsServer) return;
    boundTls = meshTls;
    const srv = tls.createServer({ ...meshTls.serverOptions(), handshakeTimeout: headersTimeoutMs });
    meshTls.bindServer(srv);
    srv.on('secureConnection', (ts: tls.TLSSocket) => {
      ts.on('error', () => undefined);
      const raw = (ts as unknown as { _parent?: net.Socket })._parent;
      if (raw) rawOf.set(ts, raw);
      // Verified already (rejectUnauthorized): the chain leads to a root of the bundle. The identity, once.
      const uri = spiffeIdOf(ts.getPeerCertificate());
      const id = uri === undefined ? undefined : parseSpiffeId(uri);
      if (!id?.ok) {
        refuseTls(ts, 'no_spiffe_id', "the client certificate names no SPIFFE ID", ts.getPeerCertificate()?.subjectaltname ?? 'no subjectAltName');
        return;
      }
      setPeer(ts, id.value);
      mt?.onEvent('tls');
      if (ts.alpnProtocol === 'h2') {
        serveHttp2(ts);
        return;
      }
      const c = h1.serve(ts, Buffer.alloc(0));
      if (raw && sockets.has(raw)) sockets.set(raw, () => c.isIdle());
    });
    srv.on('tlsClientError', (err: Error & { code?: string }, ts: tls.TLSSocket) => {
      refuseTls(ts, 'handshake_failed', 'TLS handshake failed', `${err.code ?? 'ERR'}: ${err.message}`);
    });
    tlsServer = srv;
  };

  const onSocket = (socket: net.Socket): void => {
    if (socket.destroyed) return;
    socket.on('error', () => undefined);
    if (ov) {
      if (ov.overloaded) {
        ov.record(opts.name, 'connection_refused', { why: 'memory above the watermark', remote: socket.remoteAddress });
        socket.destroy();
        return;
      }
      if (sockets.size >= ov.maxConnections) {
        if (closeOldestIdle()) ov.record(opts.name, 'idle_closed', { why: `${ov.maxConnections} connections open` });
        else {
          ov.record(opts.name, 'connection_refused', { why: `${ov.maxConnections} connections open, none idle`, remote: socket.remoteAddress });
          socket.destroy();
          return;
        }
      }
    }
    sockets.set(socket, idleYet);
    socket.on('close', () => sockets.delete(socket));
    if (opts.takeover?.(socket)) {
      if (sockets.has(socket)) sockets.set(socket, busy);
      return;
    }
    sniffProtocol(socket, headersTimeoutMs, (r) => {
      if (r.kind === 'closed') return;
      if (r.kind === 'timeout') {
        if (r.head.length === 0) {
          socket.destroy();
          return;
        }
        // Partial preface: let the HTTP/1.1 parser judge (and time out) what there is.
      }
      if (mt) {
        const isTls = r.head[0] === TLS_HANDSHAKE_BYTE;
        const mode = mt.mode();
        if (isTls) {
          if (mode === 'DISABLE') return refuseTls(socket, 'tls_refused', 'a TLS connection, but mTLS is DISABLEd for this service (PeerAuthentication)');
          if (!tlsServer) return refuseTls(socket, 'no_certificate', 'a TLS connection, but this sidecar has no certificate yet');
          socket.pause();
          socket.unshift(r.head);
          tlsServer.emit('connection', socket);
          return;
        }
        if (mode === 'STRICT') return refuseTls(socket, 'plaintext_refused', 'plaintext refused: this service is STRICT (PeerAuthentication); callers need mTLS');
        mt.onEvent('plaintext');
      }
      // Paused, the bytes read so far stay buffered until the server that takes the socket reads
      // them: a flowing socket would emit them at once, to no 'data' listener, and lose them (the
      // HTTP/2 session only picks up buffered bytes on the next tick: "bad client magic").
      if (r.kind === 'http1') {
        const c = h1.serve(socket, r.head);
        if (sockets.has(socket)) sockets.set(socket, () => c.isIdle());
        return;
      }
      socket.pause();
      socket.unshift(r.head);
      serveHttp2(socket);
    });
  };
  const server: net.Server = opts.tls
    ? tls.createServer({ ...opts.tls, handshakeTimeout: headersTimeoutMs, noDelay: true }, onSocket)
    : net.createServer({ noDelay: true }, onSocket);
  if (opts.tls) {
    server.on('secureConnection', () => opts.onTls?.('ok'));
    server.on('tlsClientError', (err: Error & { code?: string }) => {
      opts.onTls?.('error', err.code);
      log.debug({ err, listener: opts.name }, 'TLS handshake failed');
    });
  }
  const perClient = opts.maxConnectionsPerClient ?? 0;
  if (perClient > 0) {
    // Counted on the TCP connection (before any TLS handshake), so a client cannot hold more.
    const byAddress = new Map<string, number>();
    server.prependListener('connection', (raw: net.Socket) => {
      const addr = raw.remoteAddress ?? '';
      const n = (byAddress.get(addr) ?? 0) + 1;
      if (n > perClient) {
        refused('client connection limit', { remote: addr, limit: perClient });
        raw.destroy();
        return;
      }
      byAddress.set(addr, n);
      raw.once('close', () => {
        const m = (byAddress.get(addr) ?? 1) - 1;
        if (m <= 0) byAddress.delete(addr);
        else byAddress.set(addr, m);
      });
    });
  }

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.on('error', (err) => log.error({ err, listener: opts.name }, 'listener error'));
      const a = server.address() as net.AddressInfo;
      log.info({ listener: opts.name, address: `${a.address}:${a.port}` }, 'listening');
      resolve({
        server,
        address: () => ({ host: a.address, port: a.port }),
        connections: () => sockets.size,
        setTls: startTls,
        close: (graceMs = 5000) =>
          new Promise<void>((done) => {
            server.close(() => undefined);
            h1.close();
            if (tlsServer) boundTls?.unbindServer(tlsServer);
            unregisterPressure?.();
            if (h2Timer) clearInterval(h2Timer);
            // HTTP/2 sessions: a GOAWAY lets clients move on; in-flight streams finish.
            for (const sess of sessions) if (!sess.closed) sess.close();
            const force = setTimeout(() => {
              for (const s of sockets.keys()) s.destroy();
            }, graceMs);
            force.unref();
            const poll = setInterval(() => {
              h1.shutdown();
              if (sockets.size === 0) {
                clearInterval(poll);
                clearTimeout(force);
                done();
              }
            }, 20);
            poll.unref();
          }),
      });
    });
  });
}
