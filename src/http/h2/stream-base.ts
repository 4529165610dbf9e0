/**
 * What the two stream classes of meshlet's own HTTP/2 layer share: the server's `H2Stream`
 * (stream.ts) and the client's `H2ClientStream` (client-stream.ts) extend `H2StreamBase`, a
 * Duplex with our side's DATA on its writable side and the peer's on its readable side.
 *
 * - sending within the windows: DATA leaves only within the peer's stream and connection
 *   windows (a write's callback waits for window, so `write()` returning false and `'drain'`
 *   reflect it); the last DATA frame of a write is held until the session flushes (output.ts),
 *   so that an `end()` right after it sets END_STREAM on that frame instead of an empty one;
 * - receiving: credit goes back to the peer as the application takes the bytes (when `push()`
 *   returns false the credit is held until `_read()`);
 * - the lifecycle of node's lib/internal/http2/core.js: `closeStream` ('aborted' when our side
 *   was not ending; RST_STREAM now, after the body, or not at all), the close when both sides
 *   ended, a reset by the peer, and `_destroy` (which codes make an `'error'`: any but NO_ERROR
 *   and CANCEL). Each side's `protocolClose` (node's onStreamClose) is its own.
 *
 * HAND-WRITTEN HOT-PATH CODE (one stream per HTTP/2 request, either end).
 */
import { Duplex } from 'node:stream';
import { ErrorCode, type FrameWriter } from './frames';
import { H2Error } from './headers';

/** What a stream needs of its session (H2Session, H2ClientSession; an interface: no import cycle). */
export interface StreamSession {
  readonly writer: FrameWriter;
  sendWindow: number;
  readonly sessionCode: number;
  readonly destroyed: boolean;
  scheduleFlush(): void;
  queueTail(s: H2StreamBase): void;
  afterWrite(cb: () => void): void;
  waitForWindow(s: H2StreamBase): void;
  stopWaiting(s: H2StreamBase): void;
  credit(s: H2StreamBase, n: number): void;
  streamClosed(s: H2StreamBase): void;
  maybeDestroy(): void;
}

const CODE_NAMES = Object.fromEntries(Object.entries(ErrorCode).map(([k, v]) => [v, `NGHTTP2_${k}`])) as Record<number, string>;

/** How `closeStream` treats RST_STREAM (node's kSubmitRstStream / kNoRstStream / kForceRstStream). */
const RST_SUBMIT = 0;
export const RST_NONE = 1;
const RST_FORCE = 2;

export type Callback = (err?: Error | null) => void;

export abstract class H2StreamBase extends Duplex {
  /** The stream id (the client's: 0 while pending). */
  id = 0;
  /** The RST_STREAM code the stream closed with (0 until then, and after a clean close). */
  rstCode = 0;
  aborted = false;
  /** @internal The session, until the stream is destroyed (node sets it undefined then too). */
  sess: StreamSession | undefined;
  /** @internal Bytes the peer lets us send on this stream. */
  sendWindow = 0;
  /** @internal Bytes the peer may still send us on this stream. */
  recvWindow = 0;
  /** @internal Credit taken by the application, not yet returned. */
  unacked = 0;
  /** Credit held back while the readable buffer is full (returned at `_read`). */
  protected held = 0;
  /** @internal The peer's END_STREAM came (or the stream was reset). */
  remoteEnded = false;
  /** @internal END_STREAM went out (or the stream was reset). */
  localEnded = false;
  /** @internal Still in the session's open streams (the client's: or its pending queue). */
  open = true;
  /** @internal `content-length` of the peer's body (-1: none or not checked) and body bytes received. */
  contentLength = -1;
  received = 0;
  /** The last DATA frame of a write, held until the flush. */
  protected tail: Buffer | null = null;
  /** @internal Queued in the session's list of streams with a held tail. */
  tailQueued = false;
  /** @internal Waiting for connection window. */
  blocked = false;
  /** What did not fit in the windows, and its write's callback. */
  protected pendingChunk: Buffer | null = null;
  protected pendingCb: Callback | null = null;
  /** `_final` was called. */
  protected finalSeen = false;
  /** `_read` was called. */
  protected didRead = false;
  /** EOF pushed. */
  protected eof = false;
  protected rstSent = false;
  /** @internal */
  isClosed = false;

  constructor(session: StreamSession) {
    super({ allowHalfOpen: true, autoDestroy: false, emitClose: true });
    this.sess = session;
  }

  /** As node's: true once the stream is closed (reset, or both sides ended), before 'close' (a getter on the prototype, below). */
  declare readonly closed: boolean;

  /** Bytes written but not yet sent for want of flow-control window. */
  get bufferSize(): number {
    return this.writableLength + (this.pendingChunk?.length ?? 0);
  }

  /** Resets the stream with `code` (RST_STREAM), as node's `close`: after our body when `code` is NO_ERROR and the body is ending. */
  close(code: number = ErrorCode.NO_ERROR, callback?: () => void): void {
    if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) throw new H2Error('ERR_OUT_OF_RANGE', `The value of "code" is out of range: ${code}`);
    if (this.isClosed) return;
    if (callback !== undefined) this.once('close', callback);
    this.closeStream(code, RST_SUBMIT);
  }

  // ------------------------------------------------------------------------------ sending

  /** Queues DATA frames for `buf` within the windows; returns what does not fit (null: all of it). */
  protected sendData(buf: Buffer): Buffer | null {
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

  /** @internal More window (WINDOW_UPDATE, SETTINGS), or the client's stream opened: sends what waited. */
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

  // ---------------------------------------------------------------------------- receiving

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

  /** @internal The peer's END_STREAM (on HEADERS, DATA or trailers). */
  recvEnd(): void {
    this.remoteEnded = true;
    this.pushEof();
    this.maybeClosed();
  }

  /** @internal The peer's trailers. */
  recvTrailers(headers: unknown, raw: string[]): void {
    this.emit('trailers', headers, 0x5, raw);
    if (!this.destroyed) this.recvEnd();
  }

  protected pushEof(): void {
    if (this.eof) return;
    this.eof = true;
    this.push(null);
  }

  /** @internal The peer reset the stream (the client's: or refused it by GOAWAY): closed with `code`, no RST_STREAM sent. */
  peerReset(code: number): void {
    this.remoteEnded = true;
    this.localEnded = true;
    this.rstSent = true;
    this.dropOutgoing();
    this.protocolClose(code);
  }

  // ---------------------------------------------------------------------------- lifecycle

  /** Both sides sent END_STREAM: the stream is closed (node's onStreamClose with NO_ERROR). */
  protected maybeClosed(): void {
    if (this.localEnded && this.remoteEnded && this.open) this.protocolClose(ErrorCode.NO_ERROR);
  }

  /** node's `closeStream`: marks the stream closed, 'aborted' if our side was not ending, RST_STREAM as `rst` says. */
  protected closeStream(code: number, rst: number): void {
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
    if (s === undefined || !this.open) return;
    if (this.id === 0) {
      // The client's pending stream: reset once it opens (resetWhenOpened).
      if (!s.destroyed) return this.resetWhenOpened(code);
    } else if (!s.destroyed) {
      s.writer.rstStream(this.id, code);
      s.scheduleFlush();
    }
    this.localEnded = true;
    this.remoteEnded = true;
    this.protocolClose(code);
  }

  /** A reset of a stream not opened yet (id 0: the client's pending streams). */
  protected resetWhenOpened(_code: number): void {}

  /** Drops DATA not sent yet (a reset stream), completing the write that waited for window. */
  protected dropOutgoing(): void {
    this.tail = null;
    const cb = this.pendingCb;
    this.pendingChunk = null;
    this.pendingCb = null;
    if (this.blocked) this.sess?.stopWaiting(this);
    if (cb !== null) cb();
  }

  /** node's `onStreamClose`: the stream left the session; destroyed now, or after its body was read. */
  protected abstract protocolClose(code: number): void;

  /** `_destroy` is letting go of the session `s`. */
  protected detach(_s: StreamSession): void {}

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this.sess;
    const sessionCode = s?.sessionCode ?? ErrorCode.NO_ERROR;
    let code = this.isClosed ? this.rstCode : sessionCode;
    if (err != null) code = sessionCode !== ErrorCode.NO_ERROR ? sessionCode : err.name === 'AbortError' ? ErrorCode.CANCEL : ErrorCode.INTERNAL_ERROR;
    if (!this.isClosed) this.closeStream(code, RST_FORCE);
    this.dropOutgoing();
    if (s !== undefined) {
      if (this.open) s.streamClosed(this);
      this.detach(s);
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
Object.defineProperty(H2StreamBase.prototype, 'closed', {
  get(this: H2StreamBase): boolean {
    return this.isClosed;
  },
});

export function destroyStream(this: H2StreamBase): void {
  this.destroy();
}
