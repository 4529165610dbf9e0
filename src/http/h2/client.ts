/**
 * meshlet's own HTTP/2 client connection (issue 20): the upstream side of the framing layer
 * whose server side is session.ts. The sidecar's upstream HTTP/2 sessions (src/http/upstream.ts,
 * `H2Connection`) run on this by default (on node:http2's client with `MESHLET_H2_FRAMING=node`),
 * built on the same frame codec (frames.ts), HPACK (hpack.ts) and header rules
 * (headers.ts), to drop node's per-request JavaScript session cost on gRPC and h2c upstreams.
 *
 * `H2ClientSession` reproduces the subset of node's `ClientHttp2Session` upstream.ts uses:
 * `connect(authority, options)` with `createConnection`, `settings` (initialWindowSize,
 * enablePush, maxConcurrentStreams, maxHeaderListSize), `request(headers, { endStream })`,
 * `setLocalWindowSize`, `close()`, `destroy(err?, code?)`, `closed`, `destroyed`, `socket`,
 * `remoteSettings`, events 'connect', 'remoteSettings', 'goaway', 'error', 'close'; streams are
 * `H2ClientStream`s (client-stream.ts). Thrown and emitted errors carry node's codes
 * (ERR_HTTP2_INVALID_SESSION, ERR_HTTP2_GOAWAY_SESSION, ERR_HTTP2_STREAM_CANCEL,
 * ERR_HTTP2_STREAM_ERROR, ERR_HTTP2_SESSION_ERROR) so the callers' retry rules keep working.
 *
 * The protocol (RFC 9113):
 * - the preface and our SETTINGS when the socket connects (TLS: after the handshake, which must
 *   have chosen ALPN h2); requests made before wait (pending), as node's do; the server's first
 *   frame must be SETTINGS; its SETTINGS are applied (initial window, max frame size, header
 *   table size, max concurrent streams: requests beyond it wait, as nghttp2 holds them) and
 *   acknowledged; PING answered;
 * - responses checked (headers.ts `responseHead`, RFC 9113 8.3.2): a malformed head, DATA before
 *   the head, trailers without END_STREAM or with pseudo-headers, a body longer or shorter than
 *   its content-length → RST_STREAM PROTOCOL_ERROR and the stream fails as node's does; 1xx heads
 *   are 'headers' events, then the final head is 'response';
 * - flow control both ways: our DATA waits for the server's windows; the server's DATA beyond
 *   our windows is a FLOW_CONTROL_ERROR; credit returns as the application reads; frames on
 *   idle streams (ids we did not open, even ids: we refuse push) are a connection PROTOCOL_ERROR;
 * - GOAWAY from the server: streams above its last stream id, and requests not sent yet, fail
 *   with REFUSED_STREAM (rstCode 7: retryable, upstream-types.ts `refusedUnseen`); with NO_ERROR
 *   the others finish and the session closes after them, with an error code the session is
 *   destroyed (ERR_HTTP2_SESSION_ERROR) as node does; new requests then throw
 *   ERR_HTTP2_GOAWAY_SESSION.
 * - writing (one socket write per turn of the event loop) and connection credit: output.ts,
 *   shared with the server side.
 *
 * HAND-WRITTEN HOT-PATH CODE (every upstream HTTP/2 request under the flag).
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { H2ClientStream } from './client-stream';
import { CLIENT_PREFACE, DEFAULT_WINDOW, ErrorCode, FrameParser, H2ProtocolError, MAX_WINDOW, Setting, type FrameSink } from './frames';
import { H2Error, requestFields, responseHead, trailerHead } from './headers';
import { HpackDecoder } from './hpack';
import { H2Output, linger } from './output';
import { StreamTable } from './stream-table';

export { H2ClientStream } from './client-stream';

/** What upstream.ts passes to `http2.connect`, and a little more. */
export interface H2ClientOptions {
  settings?: {
    enablePush?: boolean;
    initialWindowSize?: number;
    maxConcurrentStreams?: number;
    maxHeaderListSize?: number;
  };
  /** Accepted for node compatibility; ignored. */
  maxSessionMemory?: number;
  /** Opens the socket (node's option); default: net.connect, or tls.connect with ALPN h2 for https. */
  createConnection?: (authority: URL, options: H2ClientOptions) => net.Socket | tls.TLSSocket;
  /** Our connection-level receive window (default: max(1 MiB, 4 × initialWindowSize)). */
  connectionWindowSize?: number;
  /** Fields allowed in one response header list (node's option, default 128); more: RST_STREAM ENHANCE_YOUR_CALM. */
  maxHeaderListPairs?: number;
}

export interface H2ClientRequestOptions {
  /** The request has no body: HEADERS with END_STREAM. */
  endStream?: boolean;
}

const MAX_STREAM_ID = 0x7fffffff;

/**
 * Opens an HTTP/2 connection to `authority` (`http://host:port` or `https://host:port`), as
 * node's `http2.connect`.
 */
export function connect(authority: string | URL, options: H2ClientOptions = {}, listener?: (session: H2ClientSession, socket: net.Socket) => void): H2ClientSession {
  const url = typeof authority === 'string' ? new URL(authority) : authority;
  const secure = url.protocol === 'https:';
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port !== '' ? Number(url.port) : secure ? 443 : 80;
  const socket =
    options.createConnection !== undefined
      ? options.createConnection(url, options)
      : secure
        ? tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined, ALPNProtocols: ['h2'] })
        : net.connect({ host, port });
  const s = new H2ClientSession(socket, options, secure ? 'https' : 'http', url.host);
  if (listener !== undefined) s.once('connect', listener);
  return s;
}

export class H2ClientSession extends H2Output<H2ClientStream> implements FrameSink {
  readonly type = 1;
  /** @internal The GOAWAY code received, or the code destroy() was given (streams destroyed with it). */
  sessionCode: number = ErrorCode.NO_ERROR;
  readonly localSettings: { enablePush: boolean; initialWindowSize: number; maxConcurrentStreams: number; maxHeaderListSize: number };

  /** Whether the connection (TLS: the handshake) is not up yet, the preface not sent (nothing is flushed). */
  override connecting = true;

  private readonly decoder = new HpackDecoder({ maxTableSize: 4096 });
  private readonly parser: FrameParser;
  private readonly streams = new StreamTable<H2ClientStream>();
  /** Requests not opened yet: before the connection is up, or over the server's max concurrent streams. */
  private pending: H2ClientStream[] = [];
  private nextId = 1;
  /** openPending is running (a stream closing meanwhile does not start another). */
  private opening = false;
  private readonly maxPairs: number;
  private settingsAcked = false;
  private isClosed = false;
  private isDestroyed = false;
  private goawaySent = false;

  constructor(
    readonly socket: net.Socket | tls.TLSSocket,
    opts: H2ClientOptions,
    private readonly scheme: 'http' | 'https',
    private readonly authority: string,
  ) {
    super();
    const st = opts.settings ?? {};
    this.localSettings = {
      enablePush: false,
      initialWindowSize: Math.min(MAX_WINDOW, st.initialWindowSize ?? DEFAULT_WINDOW),
      maxConcurrentStreams: st.maxConcurrentStreams ?? 100,
      maxHeaderListSize: st.maxHeaderListSize ?? 65_535,
    };
    this.maxPairs = Math.max(4, opts.maxHeaderListPairs ?? 128);
    this.connWindow = Math.min(MAX_WINDOW, opts.connectionWindowSize ?? Math.max(1 << 20, 4 * this.localSettings.initialWindowSize));
    this.parser = new FrameParser(this, { expectSettings: true, maxHeaderBlockSize: this.localSettings.maxHeaderListSize + 16_384 });
    socket.on('data', (chunk: Buffer) => this.parser.push(chunk));
    socket.on('close', () => this.onSocketClose());
    socket.on('error', (err: Error) => this.destroy(err));
    const secure = socket instanceof tls.TLSSocket;
    if (socket.destroyed) process.nextTick(() => this.onSocketClose());
    else if (socket.connecting || (secure && (socket as tls.TLSSocket & { secureConnecting?: boolean }).secureConnecting === true)) {
      socket.once(secure ? 'secureConnect' : 'connect', () => this.onConnect());
    } else process.nextTick(() => this.onConnect());
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get destroyed(): boolean {
    return this.isDestroyed;
  }

  get encrypted(): boolean {
    return (this.socket as tls.TLSSocket).encrypted === true;
  }

  get alpnProtocol(): string | undefined {
    if (this.connecting) return undefined;
    const a = (this.socket as tls.TLSSocket).alpnProtocol;
    return typeof a === 'string' ? a : 'h2c';
  }

  /** Streams open now (pending ones not counted). */
  get openStreams(): number {
    return this.streams.size;
  }

  /** Requests waiting to be opened. */
  get pendingStreams(): number {
    return this.pending.length;
  }

  private onConnect(): void {
    if (this.isDestroyed) return;
    const socket = this.socket as tls.TLSSocket;
    if (socket.encrypted === true && socket.alpnProtocol !== 'h2') {
      this.destroy(new H2Error('ERR_HTTP2_ERROR', `the server did not choose h2 by ALPN (${String(socket.alpnProtocol)})`));
      return;
    }
    this.connecting = false;
    const ls = this.localSettings;
    const w = this.writer;
    // The preface, our SETTINGS and the requests that waited leave in one write.
    socket.cork();
    socket.write(CLIENT_PREFACE);
    w.settings([Setting.ENABLE_PUSH, 0, Setting.MAX_CONCURRENT_STREAMS, ls.maxConcurrentStreams, Setting.INITIAL_WINDOW_SIZE, ls.initialWindowSize, Setting.MAX_HEADER_LIST_SIZE, ls.maxHeaderListSize]);
    if (this.connWindow > DEFAULT_WINDOW) {
      w.windowUpdate(0, this.connWindow - DEFAULT_WINDOW);
      this.recvWindow = this.connWindow;
    }
    this.emit('connect', this, this.socket);
    this.openPending();
    // close() while connecting: its GOAWAY goes after the requests made before it.
    if (this.isClosed && !this.goawaySent && !this.isDestroyed) {
      this.goawaySent = true;
      w.goaway(0, ErrorCode.NO_ERROR);
    }
    this.flush();
    socket.uncork();
  }

  // ------------------------------------------------------------------------------ requests

  /** Sends a request (node's `ClientHttp2Session.request`): the stream is pending until the session opens it. */
  request(headers: OutgoingHttpHeaders, options?: H2ClientRequestOptions): H2ClientStream {
    if (this.isDestroyed) throw new H2Error('ERR_HTTP2_INVALID_SESSION', 'The session has been destroyed');
    if (this.isClosed) throw new H2Error('ERR_HTTP2_GOAWAY_SESSION', 'New streams cannot be created after receiving a GOAWAY');
    let h = headers;
    if (h[':method'] === undefined || h[':authority'] === undefined || h[':scheme'] === undefined || h[':path'] === undefined) h = this.withDefaults(h);
    return this.start(requestFields(h), options?.endStream === true, h[':method'] === 'HEAD');
  }

  /**
   * `request` with the head as a checked field list, `:method` first (`requestFieldsOf` in
   * headers.ts builds it from a proxy's flat header list: src/http/upstream.ts).
   */
  requestWith(fields: string[], endStream: boolean): H2ClientStream {
    if (this.isDestroyed) throw new H2Error('ERR_HTTP2_INVALID_SESSION', 'The session has been destroyed');
    if (this.isClosed) throw new H2Error('ERR_HTTP2_GOAWAY_SESSION', 'New streams cannot be created after receiving a GOAWAY');
    return this.start(fields, endStream, fields[1] === 'HEAD');
  }

  private start(fields: string[], endStream: boolean, head: boolean): H2ClientStream {
    const s = new H2ClientStream(this, fields, endStream, head);
    if (endStream) s.end();
    if (!this.connecting && this.pending.length === 0 && this.streams.size < this.remoteSettings.maxConcurrentStreams) this.openStream(s);
    else this.pending.push(s);
    return s;
  }

  /** node's defaults: GET, our authority and scheme, path "/" (a CONNECT gets none but its authority). */
  private withDefaults(headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
    const h: OutgoingHttpHeaders = Object.assign(Object.create(null) as OutgoingHttpHeaders, headers);
    if (h[':method'] === undefined) h[':method'] = 'GET';
    if (h[':method'] === 'CONNECT' && h[':protocol'] === undefined) {
      if (h[':authority'] === undefined) throw new H2Error('ERR_HTTP2_CONNECT_AUTHORITY', ':authority header is required for CONNECT requests');
      if (h[':scheme'] !== undefined || h[':path'] !== undefined) throw new H2Error('ERR_HTTP2_CONNECT_PATH', 'The :path header is forbidden for CONNECT requests');
      return h;
    }
    if (h[':authority'] === undefined) h[':authority'] = this.authority;
    if (h[':scheme'] === undefined) h[':scheme'] = this.scheme;
    if (h[':path'] === undefined) h[':path'] = '/';
    return h;
  }

  private openStream(s: H2ClientStream): void {
    const id = this.nextId;
    if (id > MAX_STREAM_ID) {
      // Stream ids ran out: the request was not sent (retryable), and the session takes no more.
      this.isClosed = true;
      s.peerReset(ErrorCode.REFUSED_STREAM);
      return;
    }
    this.nextId = id + 2;
    const block = this.encoder.encode(s.fields!);
    this.streams.set(id, s);
    const end = s.opened(id, this.remoteSettings.initialWindowSize, this.localSettings.initialWindowSize);
    this.writer.headers(id, block, end);
    this.scheduleFlush();
    s.afterOpen();
  }

  /** Opens the pending requests the server's concurrency limit allows. */
  private openPending(): void {
    if (this.opening) return;
    this.opening = true;
    const q = this.pending;
    while (q.length > 0 && this.streams.size < this.remoteSettings.maxConcurrentStreams && !this.isDestroyed && this.pending === q) this.openStream(q.shift()!);
    this.opening = false;
  }

  /** Our connection receive window (node's `setLocalWindowSize`): larger sends the difference as WINDOW_UPDATE. */
  setLocalWindowSize(size: number): void {
    if (this.isDestroyed) throw new H2Error('ERR_HTTP2_INVALID_SESSION', 'The session has been destroyed');
    if (!Number.isInteger(size) || size < 0 || size > MAX_WINDOW) throw new H2Error('ERR_OUT_OF_RANGE', `The value of "windowSize" is out of range: ${size}`);
    const delta = size - this.connWindow;
    this.connWindow = size;
    // Connecting: the window goes out with our SETTINGS when the connection is up.
    if (delta <= 0 || this.connecting) return;
    this.recvWindow += delta;
    this.writer.windowUpdate(0, delta);
    this.scheduleFlush();
  }

  /** A stream id the server may not use yet: ours not opened, or even (we refuse push). */
  private idle(id: number): boolean {
    return (id & 1) === 0 || id >= this.nextId;
  }

  // ------------------------------------------------------------------------------ frames in

  /** @internal FrameSink */
  onHeaders(id: number, block: Buffer, endStream: boolean, selfDependent: boolean): void {
    let fields: string[];
    try {
      fields = this.decoder.decode(block);
    } catch (err) {
      return this.onConnectionError(ErrorCode.COMPRESSION_ERROR, (err as Error).message);
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.idle(id)) return this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS on idle stream ${id}`);
      return this.rst(id, ErrorCode.STREAM_CLOSED);
    }
    if (s.remoteEnded) return s.close(ErrorCode.STREAM_CLOSED);
    if (selfDependent) return s.close(ErrorCode.PROTOCOL_ERROR);
    if (this.decoder.lastListSize > this.localSettings.maxHeaderListSize || fields.length > 2 * this.maxPairs) return s.close(ErrorCode.ENHANCE_YOUR_CALM);
    if (s.responded) {
      // Trailers: must end the stream and carry no pseudo-header.
      const t = endStream ? trailerHead(fields) : undefined;
      if (t === undefined) return s.close(ErrorCode.PROTOCOL_ERROR);
      if (s.contentLength >= 0 && s.received !== s.contentLength) return s.close(ErrorCode.PROTOCOL_ERROR);
      s.recvTrailers(t, fields);
      return;
    }
    const head = responseHead(fields);
    if (head.error !== undefined) return s.close(ErrorCode.PROTOCOL_ERROR);
    const status = head.status;
    const flags = endStream ? 0x5 : 0x4;
    if (status < 200) {
      // An informational head: more heads follow, it cannot end the stream.
      if (endStream) return s.close(ErrorCode.PROTOCOL_ERROR);
      s.emit('headers', head.headers, flags, fields);
      return;
    }
    const clh = head.headers['content-length'];
    if (clh !== undefined && !s.headRequest && status !== 304 && status !== 204) {
      const cl = /^\d{1,15}$/.test(clh) ? Number(clh) : -2;
      if (cl === -2 || (endStream && cl !== 0)) return s.close(ErrorCode.PROTOCOL_ERROR);
      s.contentLength = cl;
    }
    s.recvResponse(head.headers, flags, fields);
    if (endStream && !s.destroyed) s.recvEnd();
  }

  /** @internal FrameSink */
  onData(id: number, data: Buffer, endStream: boolean, flow: number): void {
    if (flow > this.recvWindow) return this.onConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    this.recvWindow -= flow;
    const s = this.streams.get(id);
    if (s === undefined) {
      this.connCredit(flow);
      if (this.idle(id)) return this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
      return this.rst(id, ErrorCode.STREAM_CLOSED);
    }
    if (s.remoteEnded) {
      this.connCredit(flow);
      return s.close(ErrorCode.STREAM_CLOSED);
    }
    if (flow > s.recvWindow) {
      this.connCredit(flow);
      return s.close(ErrorCode.FLOW_CONTROL_ERROR);
    }
    if (!s.responded) {
      this.connCredit(flow);
      return s.close(ErrorCode.PROTOCOL_ERROR);
    }
    s.recvWindow -= flow;
    if (s.contentLength >= 0) {
      s.received += data.length;
      if (s.received > s.contentLength || (endStream && s.received !== s.contentLength)) {
        this.connCredit(flow);
        return s.close(ErrorCode.PROTOCOL_ERROR);
      }
    }
    s.recvData(data, flow);
    if (endStream && !s.destroyed) s.recvEnd();
  }

  /** @internal FrameSink */
  onRstStream(id: number, code: number): void {
    const s = this.streams.get(id);
    if (s !== undefined) return s.peerReset(code);
    if (this.idle(id)) this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
  }

  /** @internal FrameSink */
  onSettings(ack: boolean, params: number[]): void {
    if (ack) {
      this.settingsAcked = true;
      return;
    }
    if (this.flooded() || !this.applySettings(params, this.streams)) return;
    if (this.pending.length > 0 && !this.connecting) this.openPending();
    if (this.listenerCount('remoteSettings') > 0) this.emit('remoteSettings', this.remoteSettings);
  }

  /** Whether our SETTINGS were acknowledged. */
  get localSettingsAcked(): boolean {
    return this.settingsAcked;
  }

  /** @internal FrameSink */
  onPing(ack: boolean, payload: Buffer): void {
    if (ack || this.flooded()) return;
    this.writer.ping(payload, true);
    this.scheduleFlush();
  }

  /** @internal FrameSink */
  onGoaway(lastStreamId: number, code: number, debug: Buffer): void {
    if (this.isDestroyed) return;
    this.isClosed = true;
    if (code !== ErrorCode.NO_ERROR) this.sessionCode = code;
    // Not seen by the server: retryable (REFUSED_STREAM), whatever the method.
    const refused = this.pending;
    this.pending = [];
    for (const s of this.streams.values()) if (s.id > lastStreamId) refused.push(s);
    for (const s of refused) s.peerReset(ErrorCode.REFUSED_STREAM);
    if (this.listenerCount('goaway') > 0) this.emit('goaway', code, lastStreamId, debug);
    if (code === ErrorCode.NO_ERROR) {
      this.goawaySent = true; // no GOAWAY of ours: the server is going away already
      this.maybeDestroy();
    } else this.destroy(new H2Error('ERR_HTTP2_SESSION_ERROR', `Session closed with error code ${code}`), ErrorCode.NO_ERROR);
  }

  /** @internal FrameSink */
  onWindowUpdate(id: number, inc: number): void {
    if (id === 0) {
      this.sendWindow += inc;
      if (this.sendWindow > MAX_WINDOW) return this.onConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'connection window over 2^31-1');
      if (this.windowWaiters.length > 0) this.resumeWaiters();
      return;
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (this.idle(id)) this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
      return;
    }
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return s.close(ErrorCode.FLOW_CONTROL_ERROR);
    s.resumeSend();
  }

  /** @internal FrameSink */
  onStreamError(id: number, code: number): void {
    const s = this.streams.get(id);
    if (s !== undefined) s.close(code);
    else if (!this.idle(id)) this.rst(id, code);
  }

  /** @internal FrameSink: GOAWAY with `code`, and the session ends. */
  onConnectionError(code: number, message: string): void {
    if (this.isDestroyed) return;
    this.parser.stop();
    this.destroy(new H2ProtocolError(code, message), code);
  }

  /** The server does not read what we send: its PINGs and SETTINGS are refused (ENHANCE_YOUR_CALM). */
  private flooded(): boolean {
    if (!this.overFlood()) return false;
    this.onConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'control frames flood');
    return true;
  }

  // ---------------------------------------------------------------------------- lifecycle

  /** @internal A stream closed (both ends, or reset): it no longer counts as open. */
  streamClosed(s: H2ClientStream): void {
    if (!s.open) return;
    s.open = false;
    if (s.id === 0) {
      const i = this.pending.indexOf(s);
      if (i >= 0) this.pending.splice(i, 1);
    } else this.streams.delete(s.id);
    if (s.blocked) this.stopWaiting(s);
    if (this.pending.length > 0 && !this.connecting) this.openPending();
    if (this.isClosed && this.streams.size === 0 && this.pending.length === 0) process.nextTick(maybeDestroySession, this);
  }

  /** @internal Destroys a closed session once no stream is left (node's kMaybeDestroy). */
  maybeDestroy(): void {
    if (this.isClosed && !this.isDestroyed && this.streams.size === 0 && this.pending.length === 0) this.destroy();
  }

  /** Graceful close: GOAWAY, no new requests, the session ends when its streams (pending ones too) have. */
  close(callback?: () => void): void {
    if (this.isClosed || this.isDestroyed) return;
    this.isClosed = true;
    if (callback !== undefined) this.once('close', callback);
    if (!this.goawaySent && !this.connecting) {
      this.goawaySent = true;
      this.writer.goaway(0, ErrorCode.NO_ERROR);
      this.scheduleFlush();
    }
    // Pending requests still go out (node sends them once connected), within the server's limit.
    this.maybeDestroy();
  }

  /**
   * Ends the session now: pending requests fail with ERR_HTTP2_STREAM_CANCEL, open streams are
   * destroyed (with the session's error, if any), a GOAWAY with `code` (default NO_ERROR,
   * INTERNAL_ERROR with an error) goes out, the socket is ended.
   */
  destroy(error?: Error | number, code?: number): void {
    if (this.isDestroyed) return;
    let err: Error | undefined;
    if (typeof error === 'number') {
      code = error;
      err = code !== ErrorCode.NO_ERROR ? new H2Error('ERR_HTTP2_SESSION_ERROR', `Session closed with error code ${code}`) : undefined;
    } else err = error;
    if (code === undefined) code = err !== undefined ? ErrorCode.INTERNAL_ERROR : ErrorCode.NO_ERROR;
    this.isDestroyed = true;
    this.isClosed = true;
    if (this.sessionCode === ErrorCode.NO_ERROR) this.sessionCode = code;
    this.parser.stop();
    const pending = this.pending;
    this.pending = [];
    if (pending.length > 0) {
      const cancel = Object.assign(new H2Error('ERR_HTTP2_STREAM_CANCEL', err !== undefined ? `The pending stream has been canceled (caused by: ${err.message})` : 'The pending stream has been canceled'), { cause: err });
      for (const s of pending) s.destroy(cancel);
    }
    const streams = this.streams.values();
    for (const s of streams) s.destroy(err);
    this.streams.clear();
    const socket = this.socket;
    if (!socket.destroyed) {
      if (!this.connecting) {
        this.writer.goaway(0, code);
        this.flush();
        socket.end();
        linger(socket);
      } else socket.destroy();
    }
    this.releaseWaiters();
    process.nextTick(emitClose, this, err);
  }

  private onSocketClose(): void {
    if (this.isDestroyed) return;
    // As node's socketOnClose: every stream closes with CANCEL, then the session.
    const err = this.connecting ? new H2Error('ERR_SOCKET_CLOSED', 'Socket is closed') : undefined;
    for (const s of this.streams.values()) s.close(ErrorCode.CANCEL);
    if (err === undefined) for (const s of [...this.pending]) s.close(ErrorCode.CANCEL);
    this.isClosed = true;
    this.destroy(err);
  }
}

function maybeDestroySession(s: H2ClientSession): void {
  s.maybeDestroy();
}

function emitClose(s: H2ClientSession, err: Error | undefined): void {
  if (err !== undefined && s.listenerCount('error') > 0) s.emit('error', err);
  s.emit('close');
}

