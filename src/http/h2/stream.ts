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
 * HAND-WRITTEN HOT-PATH CODE (one per request). Flow control, the held last DATA frame, request
 * body credit, closeStream / reset / _destroy: stream-base.ts, shared with the client's stream.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerStreamResponseOptions } from 'node:http2';
import type * as net from 'node:net';
import { ErrorCode } from './frames';
import { H2Error, infoFields, responseFields, responseStatus, trailerFields } from './headers';
import type { HpackEncoder } from './hpack';
import { destroyStream, H2StreamBase, RST_NONE, type Callback, type StreamSession } from './stream-base';

/** What a stream needs of its session (H2Session in session.ts implements it; no import cycle). */
export interface StreamHost extends StreamSession {
  readonly socket: net.Socket;
  readonly encoder: HpackEncoder;
  readonly lingering: Set<H2Stream>;
}

const EMPTY = Buffer.alloc(0);

export class H2Stream extends H2StreamBase {
  declare readonly id: number;
  readonly headRequest: boolean;
  readonly endAfterHeaders: boolean;
  /** The request's header object and raw list (as the 'stream' event gave them). */
  readonly requestHeaders: IncomingHttpHeaders;
  headersSent = false;
  sentHeaders: OutgoingHttpHeaders | undefined;
  sentInfoHeaders: OutgoingHttpHeaders[] | undefined;
  sentTrailers: OutgoingHttpHeaders | undefined;
  readonly pending = false;

  /** @internal The session, until the stream is destroyed. */
  declare sess: StreamHost | undefined;
  private askTrailers = false;
  private trailersReady = false;

  constructor(session: StreamHost, id: number, headers: IncomingHttpHeaders, endStream: boolean, recvWindow: number, sendWindow: number) {
    super(session);
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
    // Its body not read to the end yet: destroyed at 'end', or with the session (node keeps such
    // a stream in the session's list until it is destroyed).
    this.sess?.lingering.add(this);
    this.once('end', destroyStream);
    this.pushEof();
    if (!this.didRead && this.readableFlowing === null) this.resume();
    else this.read(0);
  }

  protected override detach(s: StreamHost): void {
    s.lingering.delete(this);
  }
}
