/**
 * HTTP/2 requests served from node:http2's core API (the session's `'stream'` event), without the
 * compat `Http2ServerRequest` / `Http2ServerResponse` pair. Per stream the compat layer builds a
 * Readable (the request, fed chunk by chunk from the stream), a Stream (the response, with its
 * own header and trailer objects), a Proxy for `req.socket`, and hangs eleven listeners on the
 * stream; all of it became young-generation garbage on every call (docs/performance.md).
 *
 * Here a request is two small plain objects over the stream itself:
 * - `H2Request`: the header object node built, the raw header list, and the request body, which
 *   is the stream's own readable side (no second Readable). Body bytes are counted as node pushes
 *   them (one shared function, no closure per request), for the byte counts of the observe layer
 *   and the body-timeout checks.
 * - `H2Response`: `writeHead` / `write` / `end` / `addTrailers` straight onto the stream
 *   (`respond`, `write`, `end`, `sendTrailers` on `'wantTrailers'`), with the parts of the compat
 *   response's behaviour the proxy relies on: trailers collected until the end, writes after the
 *   end dropped, connection-specific headers left out of mesh-made answers.
 *   Trailers are asked of node:http2 (`waitForTrailers`) only by a response that can have them
 *   (`respond(headers, true)`: gRPC, and HTTP responses from an HTTP/2 or chunked HTTP/1.1
 *   upstream; `trailersPossible`): asking costs a `'wantTrailers'` listener, the event, a
 *   `sendTrailers` and, with none to send, an extra empty DATA frame with END_STREAM on the wire.
 *   A response that did not ask ends its stream with its last DATA frame, and trailers handed to
 *   it (`addTrailers`) are dropped: none can come from a source that did not announce them so.
 *
 * A layer that must see the body's bytes (the gRPC message-size guard) runs over them in the
 * stream's own `push` (`filterBody`), rather than through a Transform piped behind the stream.
 *
 * `serveStream` reproduces what the compat server did before calling the handler: a plain CONNECT
 * (a TCP tunnel) is answered 405, `expect: 100-continue` gets a 100 first, any other expectation
 * 417. An extended CONNECT (RFC 8441: `:protocol`, e.g. `websocket`; the listener advertises
 * SETTINGS_ENABLE_CONNECT_PROTOCOL) goes to the handler: the front bridges it to an HTTP/1.1
 * Upgrade (src/stack/respond-upgrade.ts).
 */
import * as http2 from 'node:http2';
import { Readable } from 'node:stream';
import { withoutOmitted, type HeaderOmit } from './headers';
import { H1Response } from './h1-server';
import { H2Stream } from './h2/stream';

const { HTTP2_HEADER_STATUS } = http2.constants;

const REQUEST = Symbol('meshlet.h2request');
const TRAILERS = Symbol('meshlet.h2trailers');
const FILTER = Symbol('meshlet.h2bodyfilter');

type Stream = http2.ServerHttp2Stream & {
  [REQUEST]?: H2Request;
  [TRAILERS]?: http2.OutgoingHttpHeaders;
  [FILTER]?: BodyFilter;
};

/**
 * What a layer runs over an HTTP/2 request body's chunks as node pushes them (`filterBody`),
 * instead of a Transform piped behind the stream.
 */
export interface BodyFilter {
  /** The bytes to pass on for `chunk`: the chunk itself, or some other buffer (held bytes, a prefix). */
  filter(chunk: Buffer): Buffer;
  /** Called after what `filter` returned was pushed (and, when flowing, handed to the pipe). */
  afterPush(): void;
}

const readablePush = Readable.prototype.push;

/** The stream's `push`: counts the body bytes on its request as node delivers them, and runs its filter. */
function countingPush(this: Stream, chunk: unknown, encoding?: BufferEncoding): boolean {
  if (chunk !== null) {
    const r = this[REQUEST];
    if (r) r.bodyBytes += (chunk as Buffer).length;
    const f = this[FILTER];
    if (f !== undefined) {
      const ok = readablePush.call(this, f.filter(chunk as Buffer));
      f.afterPush();
      return ok;
    }
  }
  return readablePush.call(this, chunk, encoding);
}

/** Whether `body` is an HTTP/2 request's stream (served here): `filterBody` and direct piping apply. */
export function isH2Body(body: Readable): boolean {
  return (body as Stream)[REQUEST] !== undefined;
}

/**
 * Runs `f` over an HTTP/2 request body from now on, in place (no second Readable). The chunks node
 * buffered already (DATA in the same read as the HEADERS, or before the call got here) are run
 * through `f` first: they must pass whole (`filter` returns the chunk itself), since they are in
 * the stream's buffer already. False, and `f` not installed, when they do not (a chunk split a
 * gRPC prefix, an oversized message), when the buffer cannot be read, or when `body` is not an
 * HTTP/2 request stream: the caller then filters through a stream of its own.
 */
export function filterBody(body: Readable, f: BodyFilter): boolean {
  const s = body as Stream;
  if (s[REQUEST] === undefined || s[FILTER] !== undefined) return false;
  if (s.readableLength > 0) {
    const st = (s as unknown as { _readableState?: { buffer?: unknown; bufferIndex?: number } })._readableState;
    const buf = st?.buffer;
    if (!Array.isArray(buf)) return false;
    let n = 0;
    for (let i = st?.bufferIndex ?? 0; i < buf.length; i++) {
      const c = buf[i] as Buffer;
      if (!Buffer.isBuffer(c) || f.filter(c) !== c) return false;
      n += c.length;
    }
    if (n !== s.readableLength) return false;
  }
  s[FILTER] = f;
  return true;
}

/** Errors of a stream are its owner's business (the 'close' handlers); never an uncaught exception. */
function ignore(): void {}

/** Sends the trailers `addTrailers` collected (an empty set ends the stream with an empty DATA frame). */
function onWantTrailers(this: Stream): void {
  const t = this[TRAILERS];
  try {
    this.sendTrailers(t ?? {});
  } catch {
    // An invalid trailer from upstream (mapToHeaders refused it): end the stream without them.
    if (t && !this.destroyed) this.sendTrailers({});
  }
}

/** A field list (`[name, value, ...]`) less the names `omit` drops: `fields` itself when it drops none. */
function fieldsWithout(fields: string[], omit: HeaderOmit): string[] {
  let out: string[] | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (omit(name)) out ??= fields.slice(0, i);
    else if (out !== undefined) out.push(name, fields[i + 1] as string);
  }
  return out ?? fields;
}

/** meshlet's own stream (src/http/h2/stream.ts), as `respondFields` tells it from node's. */
interface FieldsStream {
  respondFields?(fields: string[], status: number, options: http2.ServerStreamResponseOptions): void;
}

/** `respond()` options: shared (node copies them), so no object per response. */
const ASK_TRAILERS: http2.ServerStreamResponseOptions = { waitForTrailers: true };
const NO_TRAILERS: http2.ServerStreamResponseOptions = {};
const END_STREAM: http2.ServerStreamResponseOptions = { endStream: true };

/**
 * Whether a response with these headers (as an upstream gave them, before cleaning) can end
 * with trailers: an HTTP/2 response (node's header object has `:status`) or a chunked HTTP/1.1
 * one can; an HTTP/1.1 response delimited by its `content-length` cannot (RFC 9112 6.3: trailers
 * only follow the last chunk). Anything else (no length, no chunking) is treated as possible.
 */
export function trailersPossible(h: Record<string, unknown>): boolean {
  return h[':status'] !== undefined || h['transfer-encoding'] !== undefined || h['content-length'] === undefined;
}

/**
 * Whether a response with this head has no body at all, so that its HEADERS frame carries
 * END_STREAM (`respond(h, { endStream: true })`, one frame): `content-length: 0` on a response
 * that cannot have trailers (`trailers` false: an HTTP/1.1 upstream's length-delimited response,
 * a mesh-made answer) went out as HEADERS and then an empty DATA frame with END_STREAM. For 204,
 * 205, 304 and a HEAD request node:http2 already ends the writable side inside `respond()` before
 * the frame is submitted (one frame on the wire before this too); saying so here only spares such
 * a response the trailers request and its `'wantTrailers'` listener, which could never fire.
 */
function bodiless(stream: http2.ServerHttp2Stream, h: http2.OutgoingHttpHeaders, trailers: boolean): boolean {
  // `:status` is a number (writeHead) or a string (the responders' heads).
  const cl = h['content-length'];
  return bodilessHead(stream, Number(h[HTTP2_HEADER_STATUS]), cl === 0 ? '0' : (cl as string | undefined), trailers);
}

/** The same rule for a head given as status and content-length (`respondFields`). */
function bodilessHead(stream: http2.ServerHttp2Stream, status: number, contentLength: string | undefined, trailers: boolean): boolean {
  if (status === 204 || status === 304 || status === 205) return true;
  if ((stream as { headRequest?: boolean }).headRequest === true) return true;
  return !trailers && contentLength === '0';
}

/** An HTTP/2 request as the front reads it: method, target, headers, body. */
export class H2Request {
  /** Request body bytes received so far. */
  bodyBytes = 0;
  readonly httpVersion = '2.0';

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly headers: http2.IncomingHttpHeaders,
    readonly rawHeaders: string[],
  ) {}

  get method(): string {
    return (this.headers[':method'] as string | undefined) ?? 'GET';
  }

  /** The protocol of an extended CONNECT (RFC 8441 `:protocol`, e.g. `websocket`), else undefined. */
  get connectProtocol(): string | undefined {
    return this.headers[':method'] === 'CONNECT' ? (this.headers[':protocol'] as string | undefined) : undefined;
  }

  get url(): string | undefined {
    return this.headers[':path'] as string | undefined;
  }

  /** The connection (for its addresses): the session's socket. */
  get socket(): { remoteAddress?: string } | undefined {
    return this.stream.session?.socket;
  }

  /** The request body (the stream's readable side), or null when the HEADERS frame ended the stream. */
  get body(): Readable | null {
    return this.stream.endAfterHeaders ? null : this.stream;
  }

  header(name: string): string | undefined {
    const v = this.headers[name];
    return v === undefined ? undefined : Array.isArray(v) ? v.join(', ') : v;
  }
}

/** Connection-specific headers HTTP/2 forbids (RFC 9113 8.2.2): left out of mesh-made answers. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** The response side of an HTTP/2 request, written straight to its stream. */
export class H2Response {
  private ended = false;
  /** The head asked node:http2 to wait for trailers at the end (`respond(headers, true)`). */
  private asked = false;
  /** Names this response's head and trailers leave out, whoever writes them (set by the listener's handler). */
  omit: HeaderOmit | undefined = undefined;

  constructor(readonly stream: http2.ServerHttp2Stream) {}

  get headersSent(): boolean {
    return this.stream.headersSent;
  }

  get destroyed(): boolean {
    return this.stream.destroyed;
  }

  get writableEnded(): boolean {
    return this.ended;
  }

  /** Whether this response's head asked for trailers (only then does `addTrailers` reach the client). */
  get trailersAsked(): boolean {
    return this.asked;
  }

  /** Sends the head of a mesh-made answer (no trailers: its stream ends with its body). */
  writeHead(status: number, headers?: Record<string, string | string[] | number | undefined>): this {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return this;
    const h: http2.OutgoingHttpHeaders = {};
    if (headers) {
      for (const k in headers) {
        const name = k.toLowerCase();
        if (CONNECTION_SPECIFIC.has(name)) continue;
        h[name] = headers[k];
      }
    }
    h[HTTP2_HEADER_STATUS] = status;
    this.respond(h);
    return this;
  }

  /**
   * Sends a head the caller built (lower-case names, `:status` set); throws what `respond` throws.
   * `trailers`: the stream waits at its end for what `addTrailers` collected (sent on
   * `'wantTrailers'`); without, it ends with its last DATA frame and trailers are dropped. `end`:
   * the head is the whole response (the stream ends with it).
   */
  respond(headers: http2.OutgoingHttpHeaders, trailers = false, end = false): void {
    const options = end || this.ended || bodiless(this.stream, headers, trailers) ? END_STREAM : trailers ? ASK_TRAILERS : NO_TRAILERS;
    this.stream.respond(this.omit === undefined ? headers : withoutOmitted(headers, this.omit), options);
    if (options === ASK_TRAILERS) this.askedTrailers();
  }

  /** The head went out asking for trailers: `addTrailers`' go out when the stream wants them. */
  private askedTrailers(): void {
    this.asked = true;
    this.stream.on('wantTrailers', onWantTrailers);
  }

  /** The stream is meshlet's own (src/http/h2/stream.ts), which takes a head as a field list (`respondFields`). */
  get takesFields(): boolean {
    return typeof (this.stream as unknown as FieldsStream).respondFields === 'function';
  }

  /**
   * Sends a forwarded head as its field list (src/http/headers.ts `forwardResponseFields`), with no
   * header object, as `respond` sends the equivalent object. Only where `takesFields` (node:http2's
   * streams, MESHLET_H2_FRAMING=node, take objects only).
   */
  respondFields(fields: string[], status: number, contentLength: string | undefined, trailers: boolean): void {
    const options = this.ended || bodilessHead(this.stream, status, contentLength, trailers) ? END_STREAM : trailers ? ASK_TRAILERS : NO_TRAILERS;
    (this.stream as unknown as Required<FieldsStream>).respondFields(this.omit === undefined ? fields : fieldsWithout(fields, this.omit), status, options);
    if (options === ASK_TRAILERS) this.askedTrailers();
  }

  write(chunk: Buffer | string): boolean {
    const stream = this.stream;
    if (this.ended || stream.destroyed || stream.writableEnded) return true;
    if (!stream.headersSent) this.writeHead(200);
    return stream.write(chunk);
  }

  end(chunk?: Buffer | string): this {
    if (this.ended) return this;
    const stream = this.stream;
    if (chunk !== undefined && chunk !== null) this.write(chunk);
    this.ended = true;
    if (stream.destroyed || stream.closed) return this;
    if (!stream.headersSent) this.writeHead(200);
    if (!stream.writableEnded) stream.end();
    return this;
  }

  /**
   * Trailers sent when the response ends; dropped when its head did not ask for them. The first
   * set is kept as given, not copied (the callers hand over objects of their own: a cleaned copy,
   * the upstream's trailer object); a second set is merged into a copy.
   */
  addTrailers(trailers: http2.OutgoingHttpHeaders): void {
    if (!this.asked) return;
    if (this.omit !== undefined) trailers = withoutOmitted(trailers, this.omit);
    const s = this.stream as Stream;
    const t = s[TRAILERS];
    if (!t) s[TRAILERS] = trailers;
    else s[TRAILERS] = { ...t, ...trailers };
  }

  /** `'drain'` and `'close'` are the stream's. */
  on(event: 'drain' | 'close', listener: () => void): this {
    this.stream.on(event, listener);
    return this;
  }

  destroy(err?: Error): void {
    this.stream.destroy(err);
  }
}

/** Takes a new stream of a session: the request and response pair, or the compat server's early answers. */
export function serveStream(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  rawHeaders: string[],
  handler: (req: H2Request, res: H2Response) => void,
): void {
  const s = stream as Stream;
  s.on('error', ignore);
  const req = new H2Request(stream, headers, rawHeaders);
  const res = new H2Response(stream);
  if (!stream.endAfterHeaders) {
    s[REQUEST] = req;
    s.push = countingPush;
    // DATA that came in the same read as the HEADERS is buffered already ('stream' is emitted on
    // the next tick): counted here.
    req.bodyBytes = stream.readableLength;
  } else if (stream instanceof H2Stream) {
    // No body (END_STREAM on the HEADERS): nobody reads this stream's readable side, which holds
    // only its EOF. Reading it now ends it (its 'end' on the next tick), so that the stream is
    // destroyed as soon as the response ends; read at that point instead, it was resumed, kept
    // in the session's lingering set and destroyed from a once('end') listener two ticks later.
    stream.read();
  }
  const method = headers[':method'];
  if (method === 'CONNECT' && headers[':protocol'] === undefined) {
    // No TCP tunnels: as the compat server without a 'connect' listener.
    res.writeHead(405);
    res.end();
    return;
  }
  const expect = headers.expect;
  if (expect !== undefined) {
    if (expect !== '100-continue') {
      res.writeHead(417);
      res.end();
      return;
    }
    if (!stream.headersSent && !stream.closed) stream.additionalHeaders({ [HTTP2_HEADER_STATUS]: 100 });
  }
  handler(req, res);
}

/**
 * Stops reading a request body the proxy no longer wants. An HTTP/2 request's body is its stream:
 * destroying it would reset the stream before the answer went out, so it is unpiped and paused
 * instead (flow control holds the client back), as the compat request's destroy() left it. Any
 * other body is destroyed.
 */
export function dropBody(body: Readable): void {
  if ((body as Stream)[REQUEST] !== undefined) {
    body.unpipe();
    body.pause();
    return;
  }
  body.destroy();
}

/** What follows a downstream response: told when it can take more, and when the client went away. */
export interface ResponseFollower {
  downstreamDrain(): void;
  downstreamClose(): void;
}

const FOLLOWER = Symbol('meshlet.responseFollower');
type Followed = NodeJS.EventEmitter & { [FOLLOWER]?: ResponseFollower };

function onFollowedDrain(this: Followed): void {
  this[FOLLOWER]?.downstreamDrain();
}

function onFollowedClose(this: Followed): void {
  this[FOLLOWER]?.downstreamClose();
}

/**
 * `follower` hears the response's 'drain' and 'close' (an HTTP/2 response's are its stream's)
 * through two shared listeners: no closure per request (an HTTP/1.1 response calls it directly).
 */
export function followResponse(res: H2Response | NodeJS.EventEmitter, follower: ResponseFollower): void {
  if (res instanceof H1Response) {
    // Called by the connection directly (h1-server.ts), before the events.
    res.follower = follower;
    return;
  }
  const e = (res instanceof H2Response ? res.stream : res) as Followed;
  e[FOLLOWER] = follower;
  e.on('drain', onFollowedDrain);
  e.on('close', onFollowedClose);
}
