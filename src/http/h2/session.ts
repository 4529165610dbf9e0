/**
 * meshlet's own HTTP/2 server connection (issue 20): one session per socket (h2c or TLS with
 * ALPN h2), built on the frame codec (frames.ts), HPACK (hpack.ts) and the header rules
 * (headers.ts), in place of node:http2's JavaScript session layer, whose per-request garbage
 * (~30 KB) and CPU (~60 µs) made HTTP/2 twice the cost of our HTTP/1.1 path. Behind a flag:
 * src/http/listener.ts hands a socket either to `http2.createServer` or to `serveH2`.
 *
 * `H2Session` reproduces the subset of node's `ServerHttp2Session` meshlet uses: `socket`,
 * `closed`, `destroyed`, `goaway()`, `close()`, `destroy()`, events 'stream', 'close', 'error',
 * 'goaway'; streams are `H2Stream`s (stream.ts). The protocol (RFC 9113):
 * - client preface, SETTINGS both ways with ACK (the peer's initial window, max frame size and
 *   header table size applied), PING answered, GOAWAY both ways (graceful: open streams finish),
 *   RST_STREAM both ways, HEADERS + CONTINUATION assembly (frames.ts);
 * - request checks (headers.ts) → RST_STREAM PROTOCOL_ERROR; a header list over
 *   maxHeaderListSize or maxHeaderListPairs → RST_STREAM ENHANCE_YOUR_CALM (what node does);
 *   stream ids odd and increasing; over maxConcurrentStreams → REFUSED_STREAM; a body longer or
 *   shorter than its content-length → PROTOCOL_ERROR;
 * - flow control both ways: a peer exceeding our windows gets FLOW_CONTROL_ERROR; our credit goes
 *   back as the application reads (stream.ts); our DATA waits for the peer's windows; a window
 *   over 2^31-1 is a FLOW_CONTROL_ERROR; DATA on a closed or half-closed stream → STREAM_CLOSED.
 * - writing (one socket write per turn of the event loop) and connection credit: output.ts.
 *
 * HAND-WRITTEN HOT-PATH CODE (the issue's measured hot path: every HTTP/2 request).
 */
import type { IncomingHttpHeaders } from 'node:http2';
import type * as net from 'node:net';
import type * as tls from 'node:tls';
import { DEFAULT_WINDOW, ErrorCode, FrameParser, H2ProtocolError, MAX_WINDOW, Setting, type FrameSink } from './frames';
import { H2Error, requestHead, trailerHead } from './headers';
import { HpackDecoder } from './hpack';
import { H2Output, linger } from './output';
import { H2Stream, type StreamHost } from './stream';
import { StreamTable } from './stream-table';

export { H2Stream } from './stream';
export { H2Error } from './headers';

/** What listener.ts passes to `http2.createServer`, and a little more. */
export interface H2ServerOptions {
  settings?: {
    maxHeaderListSize?: number;
    maxConcurrentStreams?: number;
    initialWindowSize?: number;
    enableConnectProtocol?: boolean;
  };
  /** Fields allowed in one header list (node's option, default 128); more: RST_STREAM ENHANCE_YOUR_CALM. */
  maxHeaderListPairs?: number;
  /** Accepted for node compatibility; ignored. */
  maxSessionMemory?: number;
  /** Our connection-level receive window (default max(1 MiB, 4 × initialWindowSize)). */
  connectionWindowSize?: number;
}

export type H2StreamListener = (stream: H2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;


/**
 * Serves HTTP/2 on `socket` (a paused socket with the preface still unread is fine):
 * `onSession` hears the session before any stream, `onStream` every new stream (as node's
 * server 'session' and 'stream' events).
 */
export function serveH2(socket: net.Socket | tls.TLSSocket, opts: H2ServerOptions, onSession: (s: H2Session) => void, onStream: H2StreamListener): H2Session {
  const s = new H2Session(socket, opts, onStream);
  onSession(s);
  s.start();
  return s;
}

export class H2Session extends H2Output<H2Stream> implements FrameSink, StreamHost {
  readonly type = 0;
  /** @internal goaway code sent or received, or the code destroy() was given (streams destroyed with it). */
  sessionCode: number = ErrorCode.NO_ERROR;
  /** The highest stream id the client opened. */
  lastStreamId = 0;
  readonly localSettings: { maxHeaderListSize: number; maxConcurrentStreams: number; initialWindowSize: number; enableConnectProtocol: boolean };

  private readonly decoder = new HpackDecoder({ maxTableSize: 4096 });
  private readonly parser: FrameParser;
  private readonly streams = new StreamTable<H2Stream>();
  /** @internal Streams closed on the wire whose body the application has not read to the end (destroyed with the session). */
  readonly lingering = new Set<H2Stream>();
  private readonly maxPairs: number;
  private settingsAcked = false;
  private isClosed = false;
  private isDestroyed = false;
  private goawaySent = false;

  constructor(
    readonly socket: net.Socket | tls.TLSSocket,
    opts: H2ServerOptions,
    private readonly onStream: H2StreamListener,
  ) {
    super();
    const st = opts.settings ?? {};
    this.localSettings = {
      maxHeaderListSize: st.maxHeaderListSize ?? 65_535,
      maxConcurrentStreams: st.maxConcurrentStreams ?? 0xffffffff,
      initialWindowSize: st.initialWindowSize ?? DEFAULT_WINDOW,
      enableConnectProtocol: st.enableConnectProtocol === true,
    };
    this.maxPairs = Math.max(4, opts.maxHeaderListPairs ?? 128);
    this.connWindow = Math.min(MAX_WINDOW, opts.connectionWindowSize ?? Math.max(1 << 20, 4 * this.localSettings.initialWindowSize));
    this.parser = new FrameParser(this, { expectPreface: true, maxHeaderBlockSize: this.localSettings.maxHeaderListSize + 16_384 });
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

  get alpnProtocol(): string {
    const a = (this.socket as tls.TLSSocket).alpnProtocol;
    return typeof a === 'string' ? a : 'h2c';
  }

  /** Streams open now. */
  get openStreams(): number {
    return this.streams.size;
  }

  /** @internal Sends our SETTINGS and starts reading. */
  start(): void {
    const socket = this.socket;
    const ls = this.localSettings;
    const params: number[] = [Setting.MAX_CONCURRENT_STREAMS, ls.maxConcurrentStreams, Setting.INITIAL_WINDOW_SIZE, ls.initialWindowSize, Setting.MAX_HEADER_LIST_SIZE, ls.maxHeaderListSize];
    if (ls.enableConnectProtocol) params.push(Setting.ENABLE_CONNECT_PROTOCOL, 1);
    this.writer.settings(params);
    if (this.connWindow > DEFAULT_WINDOW) {
      this.writer.windowUpdate(0, this.connWindow - DEFAULT_WINDOW);
      this.recvWindow = this.connWindow;
    }
    socket.on('data', (chunk: Buffer) => this.parser.push(chunk));
    socket.on('close', () => this.onSocketClose());
    socket.on('error', (err: Error) => this.destroy(err));
    if (socket.destroyed) {
      process.nextTick(() => this.onSocketClose());
      return;
    }
    this.flush();
    socket.resume();
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
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // Trailers: must end the stream and carry no pseudo-header.
      if (existing.remoteEnded) return existing.close(ErrorCode.STREAM_CLOSED);
      const t = endStream && !selfDependent ? trailerHead(fields) : undefined;
      if (t === undefined) return existing.close(ErrorCode.PROTOCOL_ERROR);
      if (existing.contentLength >= 0 && existing.received !== existing.contentLength) return existing.close(ErrorCode.PROTOCOL_ERROR);
      existing.recvTrailers(t, fields);
      return;
    }
    if (id <= this.lastStreamId) return this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `HEADERS on closed stream ${id}`);
    if ((id & 1) === 0) return this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `client stream with an even id ${id}`);
    this.lastStreamId = id;
    if (this.isClosed) return this.rst(id, ErrorCode.REFUSED_STREAM);
    if (selfDependent) return this.rst(id, ErrorCode.PROTOCOL_ERROR);
    const ls = this.localSettings;
    if (this.decoder.lastListSize > ls.maxHeaderListSize || fields.length > 2 * this.maxPairs) return this.rst(id, ErrorCode.ENHANCE_YOUR_CALM);
    const head = requestHead(fields, ls.enableConnectProtocol);
    if (head.error !== undefined) return this.rst(id, ErrorCode.PROTOCOL_ERROR);
    if (this.streams.size >= ls.maxConcurrentStreams) return this.rst(id, ErrorCode.REFUSED_STREAM);
    const headers = head.headers;
    let cl = -1;
    const clh = headers['content-length'];
    if (clh !== undefined) {
      cl = /^\d{1,15}$/.test(clh) ? Number(clh) : -2;
      if (cl === -2 || (endStream && cl !== 0 && headers[':method'] !== 'HEAD')) return this.rst(id, ErrorCode.PROTOCOL_ERROR);
    }
    const recvWindow = this.settingsAcked ? ls.initialWindowSize : Math.max(ls.initialWindowSize, DEFAULT_WINDOW);
    const stream = new H2Stream(this, id, headers, endStream, recvWindow, this.remoteSettings.initialWindowSize);
    stream.contentLength = cl;
    this.streams.set(id, stream);
    if (endStream) stream.push(null);
    if (stream.headRequest) stream.end();
    const flags = endStream ? 0x5 : 0x4;
    this.onStream(stream, headers, flags, fields);
    if (this.listenerCount('stream') > 0) this.emit('stream', stream, headers, flags, fields);
  }

  /** @internal FrameSink */
  onData(id: number, data: Buffer, endStream: boolean, flow: number): void {
    if (flow > this.recvWindow) return this.onConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'DATA beyond the connection window');
    this.recvWindow -= flow;
    const s = this.streams.get(id);
    if (s === undefined) {
      this.connCredit(flow);
      if (id > this.lastStreamId) return this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `DATA on idle stream ${id}`);
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
    if (id > this.lastStreamId) this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${id}`);
  }

  /** @internal FrameSink */
  onSettings(ack: boolean, params: number[]): void {
    if (ack) {
      this.settingsAcked = true;
      return;
    }
    if (this.flooded() || !this.applySettings(params, this.streams)) return;
    if (this.listenerCount('remoteSettings') > 0) this.emit('remoteSettings', this.remoteSettings);
  }

  /** @internal FrameSink */
  onPing(ack: boolean, payload: Buffer): void {
    if (ack || this.flooded()) return;
    this.writer.ping(payload, true);
    this.scheduleFlush();
  }

  /** @internal FrameSink */
  onGoaway(lastStreamId: number, code: number, debug: Buffer): void {
    if (this.listenerCount('goaway') > 0) this.emit('goaway', code, lastStreamId, debug);
    if (code === ErrorCode.NO_ERROR) this.close();
    else this.destroy(new H2Error('ERR_HTTP2_SESSION_ERROR', `Session closed with error code ${code}`), ErrorCode.NO_ERROR);
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
      if (id > this.lastStreamId) this.onConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${id}`);
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
    else this.rst(id, code);
  }

  /** @internal FrameSink: GOAWAY with `code`, and the session ends. */
  onConnectionError(code: number, message: string): void {
    if (this.isDestroyed) return;
    this.parser.stop();
    this.destroy(new H2ProtocolError(code, message), code);
  }

  /** The peer does not read what we send: its PINGs and SETTINGS are refused (ENHANCE_YOUR_CALM). */
  private flooded(): boolean {
    if (!this.overFlood()) return false;
    this.onConnectionError(ErrorCode.ENHANCE_YOUR_CALM, 'control frames flood');
    return true;
  }

  // ---------------------------------------------------------------------------- lifecycle

  /** @internal A stream closed (both ends, or reset): it no longer counts as open. */
  streamClosed(s: H2Stream): void {
    if (!s.open) return;
    s.open = false;
    this.streams.delete(s.id);
    if (s.blocked) this.stopWaiting(s);
    if (this.isClosed && this.streams.size === 0) process.nextTick(maybeDestroySession, this);
  }

  /** @internal Destroys a closed session once no stream is left (node's kMaybeDestroy). */
  maybeDestroy(): void {
    if (this.isClosed && !this.isDestroyed && this.streams.size === 0) this.destroy();
  }

  /** Sends GOAWAY (default NO_ERROR, the last stream the client opened). */
  goaway(code: number = ErrorCode.NO_ERROR, lastStreamId: number = this.lastStreamId, opaqueData?: Buffer): void {
    if (this.isDestroyed) return;
    this.goawaySent = true;
    if (code !== ErrorCode.NO_ERROR) this.sessionCode = code;
    this.writer.goaway(lastStreamId, code, opaqueData);
    this.scheduleFlush();
  }

  /** Graceful close: GOAWAY, no new streams, the session ends when its streams have. */
  close(callback?: () => void): void {
    if (this.isClosed || this.isDestroyed) return;
    this.isClosed = true;
    if (callback !== undefined) this.once('close', callback);
    if (!this.goawaySent) this.goaway();
    this.maybeDestroy();
  }

  /**
   * Ends the session now: open streams are destroyed (with the session's error, if any), a GOAWAY
   * with `code` (default NO_ERROR, INTERNAL_ERROR with an error) goes out, the socket is ended.
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
    const streams = [...this.streams.values(), ...this.lingering];
    for (const s of streams) s.destroy(err);
    this.streams.clear();
    this.lingering.clear();
    const socket = this.socket;
    if (!socket.destroyed) {
      this.writer.goaway(this.lastStreamId, code);
      this.flush();
      socket.end();
      linger(socket);
    }
    this.releaseWaiters();
    process.nextTick(emitClose, this, err);
  }

  private onSocketClose(): void {
    if (this.isDestroyed) return;
    // As node's socketOnClose: every stream closes with CANCEL, then the session.
    for (const s of this.streams.values()) s.close(ErrorCode.CANCEL);
    this.isClosed = true;
    this.destroy();
  }
}

function maybeDestroySession(s: H2Session): void {
  s.maybeDestroy();
}

function emitClose(s: H2Session, err: Error | undefined): void {
  if (err !== undefined && s.listenerCount('error') > 0) s.emit('error', err);
  s.emit('close');
}
