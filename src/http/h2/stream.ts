/**
 * A server-side HTTP/2 stream of meshlet's own HTTP/2 layer (src/http/h2/session.ts): a Duplex
 * whose readable side is the request body and whose writable side is the response body, with
 * the subset of node's `ServerHttp2Stream` meshlet uses (`respond`, `additionalHeaders`,
 * `sendTrailers` after `'wantTrailers'`, `close(code)`, `rstCode`, `headersSent`,
 * `endAfterHeaders`, `headRequest`, `closed`, events `'aborted'`, `'wantTrailers'`, `'trailers'`,
 * `'close'`, `'error'`, `'drain'`), so that src/http/h2-server.ts and everything above it take it
 * as they take node's stream. The lifecycle follows node's lib/internal/http2/core.js
 * (`closeStream`, `onStreamClose`, `_destroy`): when `'aborted'` is emitted, which codes make an
 * `'error'`, when the stream is destroyed.
 *
 * HAND-WRITTEN HOT-PATH CODE (one per request). Flow control: DATA leaves only within the
 * peer's stream and connection windows (a write's callback waits for the window, so `write()`
 * returning false and `'drain'` reflect it); the last DATA frame of a write is held until the
 * session flushes, so that `end()` right after it sets END_STREAM on that frame instead of
 * sending an empty one. Request body credit goes back to the peer as the application takes the
 * bytes: when `push()` returns false the credit is held until `_read()`.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerStreamResponseOptions } from 'node:http2';
import { Duplex } from 'node:stream';
import type * as net from 'node:net';
import { ErrorCode, type FrameWriter } from './frames';
import { H2Error, infoFields, responseFields, responseStatus, trailerFields } from './headers';
import type { HpackEncoder } from './hpack';

/** What a stream needs of its session (H2Session in session.ts implements it; no import cycle). */
export interface StreamHost {
  readonly socket: net.Socket;
  readonly encoder: HpackEncoder;
  readonly writer: FrameWriter;
  sendWindow: number;
  readonly sessionCode: number;
  readonly destroyed: boolean;
  readonly lingering: Set<H2Stream>;
  scheduleFlush(): void;
  queueTail(s: H2Stream): void;
  afterWrite(cb: () => void): void;
  waitForWindow(s: H2Stream): void;
  stopWaiting(s: H2Stream): void;
  credit(s: H2Stream, n: number): void;
  streamClosed(s: H2Stream): void;
  maybeDestroy(): void;
}

const EMPTY = Buffer.alloc(0);
const CODE_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, `NGHTTP2_${k === 'NO_ERROR' ? 'NO_ERROR' : k}`])) as Record<number, string>;

/** How `closeStream` treats RST_STREAM (node's kSubmitRstStream / kNoRstStream / kForceRstStream). */
const RST_SUBMIT = 0;
const RST_NONE = 1;
const RST_FORCE = 2;

type Callback = (err?: Error | null) => void;

export class H2Stream extends Duplex {
  readonly id: number;
  readonly headRequest: boolean;
  readonly endAfterHeaders: boolean;
  /** The request's header object and raw list (as the 'stream' event gave them). */
  readonly requestHeaders: IncomingHttpHeaders;
  headersSent = false;
  sentHeaders: OutgoingHttpHeaders | undefined;
  sentInfoHeaders: OutgoingHttpHeaders[] | undefined;
  sentTrailers: OutgoingHttpHeaders | undefined;
  /** The RST_STREAM code the stream closed with (0 until then, and after a clean close). */
  rstCode = 0;
  aborted = false;
  readonly pending = false;

  /** @internal The session, until the stream is destroyed (node sets it undefined then too). */
  sess: StreamHost | undefined;
  /** @internal Bytes the peer lets us send on this stream. */
  sendWindow: number;
  /** @internal Bytes the peer may still send us on this stream, credit not yet returned, credit held back. */
  recvWindow: number;
  unacked = 0;
  private held = 0;
  /** @internal The peer's END_STREAM came (or the stream was reset). */
  remoteEnded: boolean;
  /** @internal END_STREAM went out (or the stream was reset). */
  localEnded = false;
  /** @internal Still in the session's open streams. */
  open = true;
  /** @internal `content-length` of the request (-1: none) and body bytes received. */
  contentLength = -1;
  received = 0;
  private tail: Buffer | null = null;
  /** @internal Queued in the session's list of streams with a held tail. */
  tailQueued = false;
  /** @internal Waiting for connection window. */
  blocked = false;
  private pendingChunk: Buffer | null = null;
  private pendingCb: Callback | null = null;
  private askTrailers = false;
  private trailersReady = false;
  private finalSeen = false;
  private didRead = false;
  private eof = false;
  private rstSent = false;

  constructor(session: StreamHost, id: number, headers: IncomingHttpHeaders, endStream: boolean, recvWindow: number, sendWindow: number) {
    super({ allowHalfOpen: true, autoDestroy: false, emitClose: true });
    this.sess = session;
    this.id = id;
    this.requestHeaders = headers;
    this.endAfterHeaders = endStream;
    this.remoteEnded = endStream;
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
    this.headRequest = headers[':method'] === 'HEAD';
  }

  get session(): StreamHost | undefined {
    return this.sess;
  }

  /** As node's: true once the stream is closed (reset, or both sides ended), before 'close' (a getter on the prototype, below). */
  declare readonly closed: boolean;
  /** @internal */
  isClosed = false;

  /** Bytes written but not yet sent for want of flow-control window. */
  get bufferSize(): number {
    return this.writableLength + (this.pendingChunk?.length ?? 0);
  }

  // ------------------------------------------------------------------------ response side

  respond(headers: OutgoingHttpHeaders = {}, options?: ServerStreamResponseOptions): void {
    if (this.destroyed || this.isClosed) throw new H2Error('ERR_HTTP2_INVALID_STREAM', 'The stream has been destroyed');
    if (this.headersSent) throw new H2Error('ERR_HTTP2_HEADERS_SENT', 'Response has already been initiated.');
    const status = responseStatus(headers);
    this.sendHead(responseFields(headers, status), status, headers, options);
  }

  /**
   * `respond` with the field list already built as `responseFields` builds it (`:status` first,
   * checked, a Date): src/http/headers.ts `forwardResponseFields`, the forwarded heads.
   */
  respondFields(fields: string[], status: number, options?: ServerStreamResponseOptions): void {
    if (this.destroyed || this.isClosed) throw new H2Error('ERR_HTTP2_INVALID_STREAM', 'The stream has been destroyed');
    if (this.headersSent) throw new H2Error('ERR_HTTP2_HEADERS_SENT', 'Response has already been initiated.');
    this.sendHead(fields, status, undefined, options);
  }

  private sendHead(fields: string[], status: number, headers: OutgoingHttpHeaders | undefined, options: ServerStreamResponseOptions | undefined): void {
    const s = this.sess!;
    const block = s.encoder.encode(fields);
    this.headersSent = true;
    this.sentHeaders = headers;
    const trailers = options?.waitForTrailers === true;
    const end = options?.endStream === true || status === 204 || status === 205 || status === 304 || this.headRequest || (this.finalSeen && !trailers);
    if (end) {
      this.localEnded = true;
      s.writer.headers(this.id, block, true);
      s.scheduleFlush();
      if (!this.writableEnded) this.end();
      this.maybeClosed();
      return;
    }
    s.writer.headers(this.id, block, false);
    s.scheduleFlush();
    if (trailers) this.askTrailers = true;
    if (this.finalSeen) this.finishWritable();
  }

  additionalHeaders(headers: OutgoingHttpHeaders): void {
    if (this.destroyed || this.isClosed) throw new H2Error('ERR_HTTP2_INVALID_STREAM', 'The stream has been destroyed');
    if (this.headersSent) throw new H2Error('ERR_HTTP2_HEADERS_AFTER_RESPOND', 'Cannot specify additional headers after response initiated');
    const fields = infoFields(headers);
    const s = this.sess!;
    s.writer.headers(this.id, s.encoder.encode(fields), false);
    s.scheduleFlush();
    (this.sentInfoHeaders ??= []).push(headers);
  }

  sendTrailers(headers: OutgoingHttpHeaders): void {
    // Already sent first: node's stream is still open then (it closes once nghttp2 wrote the frame).
    if (this.sentTrailers !== undefined) throw new H2Error('ERR_HTTP2_TRAILERS_ALREADY_SENT', 'Trailing headers have already been sent');
    if (this.destroyed || this.isClosed) throw new H2Error('ERR_HTTP2_INVALID_STREAM', 'The stream has been destroyed');
    if (!this.trailersReady) throw new H2Error('ERR_HTTP2_TRAILERS_NOT_READY', "Trailing headers cannot be sent until after the wantTrailers event is emitted");
    const fields = trailerFields(headers);
    const s = this.sess!;
    this.sentTrailers = headers;
    this.emitTail(false);
    // An empty trailer block goes out as an empty DATA frame with END_STREAM, as node sends it.
    if (fields.length === 0) s.writer.data(this.id, EMPTY, true);
    else s.writer.headers(this.id, s.encoder.encode(fields), true);
    this.localEnded = true;
    s.scheduleFlush();
    this.maybeClosed();
  }

  /** Resets the stream with `code` (RST_STREAM), as node's `close`: after the body when `code` is NO_ERROR and the body is ending. */
  close(code: number = ErrorCode.NO_ERROR, callback?: () => void): void {
    if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) throw new H2Error('ERR_OUT_OF_RANGE', `The value of "code" is out of range: ${code}`);
    if (this.isClosed) return;
    if (callback !== undefined) this.once('close', callback);
    this.closeStream(code, RST_SUBMIT);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    if (this.isClosed || this.sess === undefined) return cb();
    if (!this.headersSent) this.respond();
    if (this.localEnded) return cb();
    const rest = this.sendData(chunk);
    if (rest !== null) {
      this.pendingChunk = rest;
      this.pendingCb = cb;
      return;
    }
    this.sess.afterWrite(cb);
  }

  override _final(cb: Callback): void {
    this.finalSeen = true;
    // Not answered yet: respond() ends the stream with its HEADERS. Reset or ended: nothing to send.
    if (this.localEnded || this.isClosed || !this.headersSent || this.sess === undefined) return cb();
    this.finishWritable();
    cb();
  }

  /** The writable side is done: trailers asked for ('wantTrailers'), or END_STREAM on the last DATA frame. */
  private finishWritable(): void {
    const s = this.sess!;
    if (this.askTrailers) {
      this.emitTail(false);
      s.scheduleFlush();
      this.trailersReady = true;
      this.emit('wantTrailers');
      return;
    }
    const tail = this.tail;
    this.tail = null;
    s.writer.data(this.id, tail ?? EMPTY, true);
    this.localEnded = true;
    s.scheduleFlush();
    this.maybeClosed();
  }

  /** Queues DATA frames for `buf` within the windows; returns what does not fit (null: all of it). */
  private sendData(buf: Buffer): Buffer | null {
    const s = this.sess!;
    const w = s.writer;
    while (buf.length > 0) {
      const n = Math.min(buf.length, this.sendWindow, s.sendWindow, w.maxFrameSize);
      if (n <= 0) {
        if (this.sendWindow > 0) s.waitForWindow(this);
        if (!this.tailQueued && this.tail !== null) s.queueTail(this);
        return buf;
      }
      if (this.tail !== null) w.data(this.id, this.tail, false);
      this.tail = n === buf.length ? buf : buf.subarray(0, n);
      this.sendWindow -= n;
      s.sendWindow -= n;
      buf = buf.subarray(n);
    }
    if (!this.tailQueued && this.tail !== null) s.queueTail(this);
    return null;
  }

  /** @internal Writes the held last DATA frame (the session's flush, or before any later frame). */
  emitTail(endStream: boolean): void {
    const t = this.tail;
    if (t === null) return;
    this.tail = null;
    this.sess?.writer.data(this.id, t, endStream);
  }

  /** @internal More window (WINDOW_UPDATE, SETTINGS): sends what waited for it. */
  resumeSend(): void {
    const chunk = this.pendingChunk;
    if (chunk === null || this.sess === undefined) return;
    const rest = this.sendData(chunk);
    if (rest !== null) {
      this.pendingChunk = rest;
      return;
    }
    const cb = this.pendingCb!;
    this.pendingChunk = null;
    this.pendingCb = null;
    this.sess.afterWrite(cb);
  }

  // ------------------------------------------------------------------------- request side

  override _read(): void {
    this.didRead = true;
    const n = this.held;
    if (n > 0 && this.sess !== undefined) {
      this.held = 0;
      this.sess.credit(this, n);
    }
  }

  /** @internal A DATA frame's bytes (windows checked by the session); `flow` counts the padding too. */
  recvData(data: Buffer, flow: number): void {
    const s = this.sess!;
    if (data.length > 0 && !this.eof) {
      if (this.push(data)) s.credit(this, flow);
      else {
        this.held += data.length;
        if (flow > data.length) s.credit(this, flow - data.length);
      }
    } else s.credit(this, flow);
  }

  /** @internal The peer's END_STREAM (on DATA or trailers). */
  recvEnd(): void {
    this.remoteEnded = true;
    this.pushEof();
    this.maybeClosed();
  }

  /** @internal The request's trailers. */
  recvTrailers(headers: IncomingHttpHeaders, raw: string[]): void {
    this.emit('trailers', headers, 0x5, raw);
    if (!this.destroyed) this.recvEnd();
  }

  private pushEof(): void {
    if (this.eof) return;
    this.eof = true;
    this.push(null);
  }

  /** @internal The peer reset the stream. */
  peerReset(code: number): void {
    this.remoteEnded = true;
    this.localEnded = true;
    this.rstSent = true;
    this.dropOutgoing();
    this.protocolClose(code);
  }

  // --------------------------------------------------------------------------- lifecycle

  /** Both sides sent END_STREAM: the stream is closed (node's onStreamClose with NO_ERROR). */
  private maybeClosed(): void {
    if (this.localEnded && this.remoteEnded && this.open) this.protocolClose(ErrorCode.NO_ERROR);
  }

  /** node's `closeStream`: marks the stream closed, 'aborted' if the response was not ending, RST_STREAM as `rst` says. */
  private closeStream(code: number, rst: number): void {
    this.isClosed = true;
    this.rstCode = code;
    const ending = this.writableEnded;
    if (!ending) {
      if (!this.aborted) {
        this.aborted = true;
        this.emit('aborted');
      }
      this.end();
    }
    if (rst === RST_NONE) return;
    if (!ending || this.writableFinished || code !== ErrorCode.NO_ERROR || rst === RST_FORCE) this.sendRst(code);
    else this.once('finish', () => this.sendRst(code));
  }

  private sendRst(code: number): void {
    if (this.rstSent) return;
    this.rstSent = true;
    this.dropOutgoing();
    const s = this.sess;
    if (s !== undefined && this.open) {
      if (!s.destroyed) {
        s.writer.rstStream(this.id, code);
        s.scheduleFlush();
      }
      this.localEnded = true;
      this.remoteEnded = true;
      this.protocolClose(code);
    }
  }

  /** Drops DATA not sent yet (a reset stream), completing the write that waited for window. */
  private dropOutgoing(): void {
    this.tail = null;
    const cb = this.pendingCb;
    this.pendingChunk = null;
    this.pendingCb = null;
    if (this.blocked) this.sess?.stopWaiting(this);
    if (cb !== null) cb();
  }

  /** node's `onStreamClose`: the stream left the session; destroyed now, or after its body was read. */
  private protocolClose(code: number): void {
    this.sess?.streamClosed(this);
    if (this.destroyed) return;
    this.rstCode = code;
    if (!this.isClosed) this.closeStream(code, RST_NONE);
    if (!this.readable || code !== ErrorCode.NO_ERROR) {
      this.destroy();
      return;
    }
    // Its body not read to the end yet: destroyed at 'end', or with the session (node keeps such
    // a stream in the session's list until it is destroyed).
    this.sess?.lingering.add(this);
    this.once('end', destroyStream);
    this.pushEof();
    if (!this.didRead && this.readableFlowing === null) this.resume();
    else this.read(0);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this.sess;
    const sessionCode = s?.sessionCode ?? ErrorCode.NO_ERROR;
    let code = this.isClosed ? this.rstCode : sessionCode;
    if (err != null) code = sessionCode !== ErrorCode.NO_ERROR ? sessionCode : err.name === 'AbortError' ? ErrorCode.CANCEL : ErrorCode.INTERNAL_ERROR;
    if (!this.isClosed) this.closeStream(code, RST_FORCE);
    this.dropOutgoing();
    if (s !== undefined) {
      if (this.open) s.streamClosed(this);
      s.lingering.delete(this);
      this.sess = undefined;
      s.maybeDestroy();
    }
    if (err == null && code !== ErrorCode.NO_ERROR && code !== ErrorCode.CANCEL) {
      err = new H2Error('ERR_HTTP2_STREAM_ERROR', `Stream closed with error code ${CODE_NAMES[code] ?? code}`);
    }
    cb(err);
  }
}

// Duplex has a `closed` of its own (the stream destroyed); node's Http2Stream overrides it the same way.
Object.defineProperty(H2Stream.prototype, 'closed', {
  get(this: H2Stream): boolean {
    return this.isClosed;
  },
});

function destroyStream(this: H2Stream): void {
  this.destroy();
}
