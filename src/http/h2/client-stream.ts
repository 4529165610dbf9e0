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
 * HAND-WRITTEN HOT-PATH CODE (one per upstream HTTP/2 request). Flow control, the held last DATA
 * frame, response body credit, closeStream / reset / _destroy: stream-base.ts, shared with the
 * server's stream.
 */
import type { IncomingHttpHeaders } from 'node:http2';
import { ErrorCode } from './frames';
import { destroyStream, H2StreamBase, RST_NONE, type Callback, type StreamSession } from './stream-base';

/**
 * What a stream needs of its session (`H2ClientSession` in client.ts): an interface here, so the
 * two modules do not import each other.
 */
export type ClientStreamHost = StreamSession;

const EMPTY = Buffer.alloc(0);

export class H2ClientStream extends H2StreamBase {
  /** The request's field list until the stream opens (then encoded and dropped). */
  /** @internal */
  fields: string[] | null;
  /** @internal The request's method is HEAD (no response body expected). */
  readonly headRequest: boolean;
  /** @internal HEADERS go out with END_STREAM (request option `endStream`). */
  endOnHeaders: boolean;

  /** @internal The final (non-1xx) response head came. */
  responded = false;
  /** close(code) while pending: the RST_STREAM code to send once the stream opens (-1: none). */
  private resetOnOpen = -1;

  constructor(session: ClientStreamHost, fields: string[], endStream: boolean, headRequest: boolean) {
    super(session);
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

  // ------------------------------------------------------------------------ response side

  /** @internal The response's final head. */
  recvResponse(headers: IncomingHttpHeaders, flags: number, raw: string[]): void {
    this.responded = true;
    this.emit('response', headers, flags, raw);
  }

  // --------------------------------------------------------------------------- lifecycle

  /** node's `onStreamClose`: the stream left the session; destroyed now, or after its body was read. */
  protected protocolClose(code: number): void {
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

  protected override resetWhenOpened(code: number): void {
    // As node, the request still opens and is reset right after its HEADERS (the server sees it
    // and its RST_STREAM); the response side ends now.
    this.resetOnOpen = code;
    this.pushEof();
  }

  protected override detach(): void {
    this.fields = null;
  }
}
