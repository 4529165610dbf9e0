/**
 * A client-side HTTP/2 stream of meshlet's own HTTP/2 layer (src/http/h2/client.ts): a Duplex
 * whose writable side is the request body and whose readable side is the response body, with
 * the subset of node's `ClientHttp2Stream` that src/http/upstream.ts uses: events `'response'`
 * (final head), `'headers'` (1xx heads), `'trailers'`, `'aborted'`, `'error'`, `'close'`,
 * `'drain'`; `rstCode`, `closed`, `pending`, `close(code)`; `write` / `end` / `pause` / `resume`
 * as a Duplex. The lifecycle follows node's lib/internal/http2/core.js as the server stream
 * (stream.ts) does: `closeStream` ('aborted' when the request was not ending), `onStreamClose`
 * (destroyed at once on a reset, after the response body is read on a clean close), `_destroy`
 * (which codes make an `'error'`: any but NO_ERROR and CANCEL).
 *
 * A stream is pending (`pending`, id 0) until the session opens it: before the connection is up,
 * or while the server's SETTINGS_MAX_CONCURRENT_STREAMS are all in use (nghttp2 holds such
 * HEADERS back the same way). Its HEADERS are HPACK-encoded when it opens, in the order streams
 * open.
 *
 * HAND-WRITTEN HOT-PATH CODE (one per upstream HTTP/2 request). Flow control as stream.ts: DATA
 * leaves within the server's stream and connection windows (a write's callback waits for window,
 * so `write()` returning false and `'drain'` reflect it); the last DATA frame of a write is held
 * until the session flushes, so that `end()` right after it sets END_STREAM on that frame.
 * Response body credit goes back as the application takes the bytes.
 */
import type { IncomingHttpHeaders } from 'node:http2';
import { Duplex } from 'node:stream';
import { ErrorCode, type FrameWriter } from './frames';
import { H2Error } from './headers';

/**
 * What a stream needs of its session (`H2ClientSession` in client.ts): an interface here, so the
 * two modules do not import each other.
 */
export interface ClientStreamHost {
  readonly writer: FrameWriter;
  sendWindow: number;
  readonly sessionCode: number;
  readonly destroyed: boolean;
  afterWrite(cb: () => void): void;
  credit(s: H2ClientStream, n: number): void;
  maybeDestroy(): void;
  queueTail(s: H2ClientStream): void;
  scheduleFlush(): void;
  stopWaiting(s: H2ClientStream): void;
  streamClosed(s: H2ClientStream): void;
  waitForWindow(s: H2ClientStream): void;
}

const EMPTY = Buffer.alloc(0);
const CODE_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, `NGHTTP2_${k}`])) as Record<number, string>;

/** How `closeStream` treats RST_STREAM (node's kSubmitRstStream / kNoRstStream / kForceRstStream). */
const RST_SUBMIT = 0;
const RST_NONE = 1;
const RST_FORCE = 2;

type Callback = (err?: Error | null) => void;

export class H2ClientStream extends Duplex {
  /** The stream id (0 while pending). */
  id = 0;
  /** The RST_STREAM code the stream closed with (0 until then, and after a clean close). */
  rstCode = 0;
  aborted = false;
  /** The request's field list until the stream opens (then encoded and dropped). */
  /** @internal */
  fields: string[] | null;
  /** @internal The request's method is HEAD (no response body expected). */
  readonly headRequest: boolean;
  /** @internal HEADERS go out with END_STREAM (request option `endStream`). */
  endOnHeaders: boolean;

  /** @internal The session, until the stream is destroyed. */
  sess: ClientStreamHost | undefined;
  /** @internal Bytes the server lets us send on this stream. */
  sendWindow = 0;
  /** @internal Bytes the server may still send on this stream. */
  recvWindow = 0;
  /** @internal Credit taken by the application, not yet returned. */
  unacked = 0;
  private held = 0;
  /** @internal The server's END_STREAM came (or the stream was reset). */
  remoteEnded = false;
  /** @internal END_STREAM went out (or the stream was reset). */
  localEnded = false;
  /** @internal In the session's open streams or its pending queue. */
  open = true;
  /** @internal The final (non-1xx) response head came. */
  responded = false;
  /** @internal The response's content-length (-1: none or not checked) and body bytes received. */
  contentLength = -1;
  received = 0;
  private tail: Buffer | null = null;
  /** @internal Queued in the session's list of streams with a held tail. */
  tailQueued = false;
  /** @internal Waiting for connection window. */
  blocked = false;
  private pendingChunk: Buffer | null = null;
  private pendingCb: Callback | null = null;
  private finalSeen = false;
  private eof = false;
  private rstSent = false;
  /** close(code) while pending: the RST_STREAM code to send once the stream opens (-1: none). */
  private resetOnOpen = -1;
  /** @internal */
  isClosed = false;

  constructor(session: ClientStreamHost, fields: string[], endStream: boolean, headRequest: boolean) {
    super({ allowHalfOpen: true, autoDestroy: false, emitClose: true });
    this.sess = session;
    this.fields = fields;
    this.endOnHeaders = endStream;
    this.headRequest = headRequest;
  }

  get session(): ClientStreamHost | undefined {
    return this.sess;
  }

  /** Not opened yet (no stream id). */
  get pending(): boolean {
    return this.id === 0;
  }

  /** As node's: true once the stream is closed (reset, or both sides ended), before 'close' (a getter on the prototype, below). */
  declare readonly closed: boolean;

  /** Bytes written but not yet sent for want of flow-control window. */
  get bufferSize(): number {
    return this.writableLength + (this.pendingChunk?.length ?? 0);
  }

  /** Resets the stream with `code` (RST_STREAM), as node's `close`: after the request body when `code` is NO_ERROR and the body is ending. */
  close(code: number = ErrorCode.NO_ERROR, callback?: () => void): void {
    if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) throw new H2Error('ERR_OUT_OF_RANGE', `The value of "code" is out of range: ${code}`);
    if (this.isClosed) return;
    if (callback !== undefined) this.once('close', callback);
    this.closeStream(code, RST_SUBMIT);
  }

  // ------------------------------------------------------------------------- request side

  /** @internal The session opened the stream (its HEADERS are queued): whether they carry END_STREAM. */
  opened(id: number, sendWindow: number, recvWindow: number): boolean {
    this.id = id;
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
    this.fields = null;
    const end = this.endOnHeaders || (this.finalSeen && this.pendingChunk === null);
    if (end) this.localEnded = true;
    return end;
  }

  /** @internal After the HEADERS: the body that waited for the stream to open, or the reset asked for meanwhile. */
  afterOpen(): void {
    const code = this.resetOnOpen;
    if (code >= 0) {
      const s = this.sess!;
      s.writer.rstStream(this.id, code);
      this.localEnded = true;
      this.remoteEnded = true;
      this.protocolClose(code);
      return;
    }
    if (this.pendingChunk !== null) this.resumeSend();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    if (this.isClosed || this.sess === undefined || this.localEnded) return cb();
    if (this.id === 0) {
      this.pendingChunk = chunk;
      this.pendingCb = cb;
      return;
    }
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
    // Pending: the HEADERS carry END_STREAM when the stream opens. Reset or ended: nothing to send.
    if (this.localEnded || this.isClosed || this.id === 0 || this.sess === undefined) return cb();
    const s = this.sess;
    const tail = this.tail;
    this.tail = null;
    s.writer.data(this.id, tail ?? EMPTY, true);
    this.localEnded = true;
    s.scheduleFlush();
    this.maybeClosed();
    cb();
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

  /** @internal Writes the held last DATA frame (the session's flush). */
  emitTail(): void {
    const t = this.tail;
    if (t === null) return;
    this.tail = null;
    this.sess?.writer.data(this.id, t, false);
  }

  /** @internal More window (WINDOW_UPDATE, SETTINGS), or the stream opened: sends what waited. */
  resumeSend(): void {
    const chunk = this.pendingChunk;
    if (chunk === null || this.sess === undefined || this.id === 0) return;
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

  // ------------------------------------------------------------------------ response side

  override _read(): void {
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

  /** @internal The server's END_STREAM (on HEADERS, DATA or trailers). */
  recvEnd(): void {
    this.remoteEnded = true;
    this.pushEof();
    this.maybeClosed();
  }

  /** @internal The response's final head. */
  recvResponse(headers: IncomingHttpHeaders, flags: number, raw: string[]): void {
    this.responded = true;
    this.emit('response', headers, flags, raw);
  }

  /** @internal The response's trailers. */
  recvTrailers(headers: IncomingHttpHeaders, raw: string[]): void {
    this.emit('trailers', headers, 0x5, raw);
    if (!this.destroyed) this.recvEnd();
  }

  private pushEof(): void {
    if (this.eof) return;
    this.eof = true;
    this.push(null);
  }

  /** @internal The server reset the stream, or refused it (GOAWAY below its id): closed with `code`, no RST_STREAM sent. */
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

  /** node's `closeStream`: marks the stream closed, 'aborted' if the request was not ending, RST_STREAM as `rst` says. */
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
    if (s !== undefined && this.open && this.id === 0 && !s.destroyed) {
      // Pending: as node, the request still opens and is reset right after its HEADERS (the
      // server sees it and its RST_STREAM); the response side ends now.
      this.resetOnOpen = code;
      this.pushEof();
      return;
    }
    if (s !== undefined && this.open) {
      if (!s.destroyed && this.id !== 0) {
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
    this.once('end', destroyStream);
    this.pushEof();
    this.read(0);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this.sess;
    const sessionCode = s?.sessionCode ?? ErrorCode.NO_ERROR;
    let code = this.isClosed ? this.rstCode : sessionCode;
    if (err != null) code = sessionCode !== ErrorCode.NO_ERROR ? sessionCode : err.name === 'AbortError' ? ErrorCode.CANCEL : ErrorCode.INTERNAL_ERROR;
    if (!this.isClosed) this.closeStream(code, RST_FORCE);
    this.dropOutgoing();
    this.fields = null;
    if (s !== undefined) {
      if (this.open) s.streamClosed(this);
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
Object.defineProperty(H2ClientStream.prototype, 'closed', {
  get(this: H2ClientStream): boolean {
    return this.isClosed;
  },
});

function destroyStream(this: H2ClientStream): void {
  this.destroy();
}
