/**
 * The downstream HTTP/1.1 server: connections handed over by the listener after protocol
 * detection, parsed with Node's native parser (llhttp, as node:http uses it) except for whole
 * bodiless request heads, which a strict JavaScript scan reads as llhttp would
 * (src/http/h1-fast-heads.ts), answered through small request/response objects that offer the
 * subset of node:http's API the proxy uses.
 *
 * Why not node:http: a proxy needs none of its conveniences (header validation of what llhttp
 * already validated, automatic Date, writable-stream machinery per response), and they cost about
 * a fifth of the sidecar's CPU per request (bench/). This keeps what matters:
 *
 * - bad input refused before any handler sees it: llhttp's errors (request smuggling, invalid
 *   header names or values, bad chunking) -> 400, headers over the limit -> 431, headers not
 *   complete within `headersTimeoutMs` -> 408, no Host or several -> 400; CONNECT -> 501; the
 *   connection is then closed and the reason reported;
 * - `Connection: upgrade` requests (WebSocket) go to the handler like any other, with
 *   `req.upgrade` set: the parser lets go of the socket, and the handler may take it over
 *   (src/http/websocket.ts) or answer normally, which closes the connection;
 * - keep-alive with an idle timeout, HTTP/1.0 clients, pipelined requests answered in order;
 * - `Expect: 100-continue` answered at once; request bodies streamed with backpressure;
 * - responses framed as the upstream framed them (Content-Length), or chunked, or by close for
 *   HTTP/1.0; no body for HEAD, 1xx, 204 and 304;
 * - a client that goes away mid-request aborts the request body and emits `close` on the
 *   response, so the proxy cancels the upstream.
 *
 * Timers: one interval per server checks every connection's header deadline and idle time,
 * rather than a timer per request.
 */
import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type * as net from 'node:net';
import { Readable } from 'node:stream';
import type { SpiffeId } from '../security/spiffe';
import { getPeer } from './peer';

import { head as fastHead, readRequestHead } from './h1-fast-heads';
import { BODY_IS_COPY, HTTPParser, METHODS, releaseParser, type NativeParser } from './native-parser';
import { readInto, releaseReads, send, send3 } from './raw-socket';
import { FLAG_HEADER } from '../core/errors';
import { isHopByHop, lineStart, type HeaderOmit } from './headers';
import { BODY_TIMEOUT_FLAG } from './overload';

export interface H1ServerOptions {
  maxHeaderBytes: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  onRequest(req: H1Request, res: H1Response): void;
  /** A request or connection refused as malformed: the reason, the status sent, the peer. */
  onRefused(reason: string, detail: { code?: string; status: number; remote?: string }): void;
  /**
   * A request body (not gRPC: its streams are long-lived by design) that receives no byte for this
   * long is answered 408 and the connection closed (0: no limit). Time the proxy itself holds the
   * body back (the upstream reads slowly) does not count.
   */
  bodyIdleTimeoutMs?: number;
  /** After `bodyIdleTimeoutMs` of a body, it must average at least this many bytes/s, else 408 (0: no minimum). */
  minBodyBytesPerSec?: number;
  /** Told when a body was cut: idle too long, or too slow. */
  onBodyTimeout?(kind: 'idle' | 'slow'): void;
  /** Requests in flight, counted here (shared with the other listeners: overload protection). */
  inflight?: { active: number };
}

/** llhttp error codes -> status and a reason a human can act on. */
export const PARSE_ERRORS: Record<string, [number, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'request header fields too large'],
  HPE_UNEXPECTED_CONTENT_LENGTH: [400, 'conflicting or duplicate content-length / transfer-encoding (request smuggling)'],
  HPE_INVALID_TRANSFER_ENCODING: [400, 'invalid transfer-encoding'],
  HPE_INVALID_CONTENT_LENGTH: [400, 'invalid content-length'],
  HPE_INVALID_HEADER_TOKEN: [400, 'invalid header name or value'],
  HPE_INVALID_METHOD: [400, 'invalid method'],
  HPE_INVALID_URL: [400, 'invalid request target'],
  HPE_INVALID_VERSION: [400, 'invalid HTTP version'],
  HPE_LF_EXPECTED: [400, 'malformed request line or header'],
  HPE_CR_EXPECTED: [400, 'malformed request line or header'],
  HPE_INVALID_CHUNK_SIZE: [400, 'invalid chunk size'],
  HPE_INVALID_CONSTANT: [400, 'malformed request line'],
  HPE_STRICT: [400, 'malformed request'],
};

export class H1Request {
  readonly socket: { remoteAddress: string | undefined };
  /** The request body, or null when the request has none. */
  body: Readable | null = null;
  /** Body bytes received from the client so far (after chunked decoding). */
  bodyBytes = 0;
  complete = false;
  /** The Host header (the only one, or the request was refused). */
  host: string | undefined;
  /** Set for an Upgrade request: the socket, and the bytes that followed the head (set once parsed). */
  upgrade: { socket: net.Socket; head: Buffer } | undefined;
  /** The caller's identity from its verified TLS client certificate (mTLS), computed once per connection. */
  peer: SpiffeId | undefined = undefined;
  /** Body timing (ms, the server's coarse clock): started, last byte or last wait on the proxy; 0 when untimed (gRPC). */
  bodyStart = 0;
  bodyLast = 0;
  private hdrs: Record<string, string | string[]> | undefined;
  constructor(
    readonly method: string,
    readonly url: string,
    readonly rawHeaders: string[],
    readonly httpVersion: '1.0' | '1.1',
    remoteAddress: string | undefined,
  ) {
    this.socket = { remoteAddress };
  }
  /**
   * One header by its lower-case name, repeated ones joined with ', ' (as `headers` has them),
   * read from the raw list: route matching asks for one or two headers, no object is built.
   */
  header(name: string): string | undefined {
    if (this.hdrs) {
      const v = this.hdrs[name];
      return Array.isArray(v) ? v.join(', ') : v;
    }
    const raw = this.rawHeaders;
    const len = name.length;
    let out: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i] as string;
      if (n.length !== len || (n !== name && n.toLowerCase() !== name)) continue;
      const v = raw[i + 1] as string;
      out = out === undefined ? v : `${out}, ${v}`;
    }
    return out;
  }

  /** Lower-case names; repeated headers as arrays (set-cookie) or joined with ', '. Built on first use. */
  get headers(): Record<string, string | string[]> {
    if (this.hdrs) return this.hdrs;
    const o: Record<string, string | string[]> = {};
    const raw = this.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const n = (raw[i] as string).toLowerCase();
      const v = raw[i + 1] as string;
      const prev = o[n];
      if (prev === undefined) o[n] = v;
      else if (n === 'set-cookie') o[n] = Array.isArray(prev) ? [...prev, v] : [prev, v];
      else o[n] = `${prev as string}, ${v}`;
    }
    return (this.hdrs = o);
  }
}

type HeaderValue = string | string[] | number | undefined;

export class H1Response extends EventEmitter {
  headersSent = false;
  finished = false;
  destroyed = false;
  /** Set false to close the connection after this response. */
  shouldKeepAlive: boolean;
  private head: string | undefined;
  flushQueued = false;
  /**
   * Body bytes still to come under the head's Content-Length (-1: no length declared): a small
   * body that completes it goes out with the head at once, with no deferred flush.
   */
  private lengthLeft = -1;
  private chunked = false;
  private noBody = false;
  /**
   * Told of 'drain' and 'close' before they are emitted (set by followResponse, h2-server.ts): the
   * responder follows an HTTP/1.1 response with no listener added per request.
   */
  follower: { downstreamDrain(): void; downstreamClose(): void } | undefined = undefined;
  /** Names this response's head leaves out, whoever writes it (set by the listener's handler). */
  omit: HeaderOmit | undefined = undefined;

  constructor(
    private readonly conn: H1Connection,
    readonly req: H1Request,
    keepAlive: boolean,
  ) {
    super();
    this.shouldKeepAlive = keepAlive;
  }

  writeHead(status: number, headers: Record<string, HeaderValue> | undefined = undefined): this {
    // The pieces go into one scratch array joined once (writeHead is synchronous): one flat
    // string, where `+=` made three or four cons strings a header and a flat copy at the write.
    // Two pieces a field: its line's start (`\r\n` ending the line before, the name; cached) and
    // its value.
    const p = this.beginHead(status);
    let k = 1;
    let hasLength = false;
    const omit = this.omit;
    if (headers) {
      for (const name in headers) {
        const v = headers[name];
        if (v === undefined || (omit !== undefined && omit(name))) continue;
        const lower = name.length === 14 || name.length === 10 ? name.toLowerCase() : name;
        if (lower === 'content-length') {
          hasLength = true;
          const n = typeof v === 'number' ? v : Array.isArray(v) ? NaN : Number(v);
          this.lengthLeft = Number.isSafeInteger(n) && n >= 0 ? n : -1;
        } else if (lower === 'connection') {
          if (String(v).toLowerCase() === 'close') this.shouldKeepAlive = false;
          continue;
        }
        const start = lineStart(name);
        if (Array.isArray(v))
          for (const x of v) {
            p[k++] = start;
            p[k++] = `${x}`;
          }
        else {
          p[k++] = start;
          p[k++] = typeof v === 'string' ? v : `${v}`;
        }
      }
    }
    return this.endHead(status, k, hasLength);
  }

  /**
   * The head of a proxied response, straight from the upstream's header object: the bytes
   * `writeHead(status, forwardResponseHeaders(h, hop))` with `x-meshlet-flags`
   * extended by `flags` would write (src/http/headers.ts), without that object in between (one
   * object and a keyed store per field less a response). `hop` is the `via` entry (`1.1 name`);
   * `drop` the names the upstream's Connection header lists.
   */
  writeForwardedHead(status: number, h: Record<string, string | string[] | undefined>, hop: string, flags: string, drop: ReadonlySet<string> | undefined): this {
    const p = this.beginHead(status);
    let k = 1;
    let hasLength = false;
    let via = false;
    const omit = this.omit;
    let flagged = flags === '' || (omit !== undefined && omit(FLAG_HEADER));
    for (const name in h) {
      let v = h[name];
      if (v === undefined || name.charCodeAt(0) === 58 || (omit !== undefined && omit(name))) continue;
      if (isHopByHop(name) || (drop !== undefined && drop.has(name))) continue;
      if (name === 'via') {
        via = true;
        v = `${Array.isArray(v) ? v.join(', ') : v}, ${hop}`;
      } else if (name === FLAG_HEADER && !flagged) {
        flagged = true;
        v = v.length > 0 ? `${String(v)},${flags}` : flags;
      } else if (name === 'content-length') {
        hasLength = true;
        const n = Array.isArray(v) ? NaN : Number(v);
        this.lengthLeft = Number.isSafeInteger(n) && n >= 0 ? n : -1;
      }
      const start = lineStart(name);
      if (typeof v === 'string') {
        p[k++] = start;
        p[k++] = v;
      } else
        for (const x of v) {
          p[k++] = start;
          p[k++] = x;
        }
    }
    if (!via && (omit === undefined || !omit('via'))) {
      p[k++] = '\r\nvia: ';
      p[k++] = hop;
    }
    if (!flagged) {
      p[k++] = FLAG_LINE_START;
      p[k++] = flags;
    }
    return this.endHead(status, k, hasLength);
  }

  /** The scratch array with the status line as piece 0 (the head's fields follow from 1). */
  private beginHead(status: number): string[] {
    if (this.headersSent) throw Object.assign(new Error('headers already sent'), { code: 'ERR_HTTP_HEADERS_SENT' });
    this.headersSent = true;
    headParts[0] = statusLine(status);
    return headParts;
  }

  /** The head's last pieces (framing, connection) after field `k - 1`, and the join. */
  private endHead(status: number, k: number, hasLength: boolean): this {
    const p = headParts;
    this.noBody = this.req.method === 'HEAD' || status < 200 || status === 204 || status === 304;
    if (!this.noBody && !hasLength) {
      if (this.req.httpVersion === '1.1') {
        this.chunked = true;
        p[k++] = '\r\ntransfer-encoding: chunked';
      } else this.shouldKeepAlive = false; // HTTP/1.0: the body ends when the connection does
    }
    if (!this.shouldKeepAlive) p[k++] = '\r\nconnection: close';
    else if (this.req.httpVersion === '1.0') p[k++] = '\r\nconnection: keep-alive';
    p[k++] = '\r\n\r\n';
    if (p.length !== k) p.length = k;
    this.head = p.join('');
    if (k > 64) p.length = 0; // a rare large head does not stay referenced
    return this;
  }

  /** Returns false when the client is slow to read: wait for 'drain'. */
  write(chunk: Buffer | string): boolean {
    if (this.finished || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(200);
    const len = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    if (this.noBody || len === 0) return this.flushHead();
    if (this.head !== undefined && !this.chunked && len <= COALESCE_BYTES) {
      // A small body right behind the head: one write (one syscall, no writev) for both, made
      // here when the body completes the declared length (most proxied responses), else by end()
      // when it follows in the same tick, else by a microtask.
      this.head += typeof chunk === 'string' ? Buffer.from(chunk).toString('latin1') : chunk.toString('latin1');
      // The whole declared body is here: nothing more can join the head, so it goes now.
      if (this.lengthLeft >= 0 && len >= this.lengthLeft) {
        this.lengthLeft = 0;
        return this.flushHead();
      }
      if (this.lengthLeft > 0) this.lengthLeft -= len;
      if (!this.flushQueued) {
        this.flushQueued = true;
        // A microtask, not process.nextTick: with no tick queued, Node runs microtasks without its
        // tick-and-rejection processing (which allocates per run).
        queueMicrotask(() => flushLater(this));
      }
      return true;
    }
    // The head (if not sent yet) and the chunk in one write.
    const head = this.head ?? '';
    this.head = undefined;
    const socket = this.conn.socket;
    if (this.chunked) return send3(socket, `${head}${len.toString(16)}\r\n`, chunk, '\r\n');
    if (head.length > 0) return send3(socket, head, chunk, '');
    return send(socket, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }

  end(chunk?: Buffer | string): this {
    if (this.finished || this.destroyed) return this;
    if (!this.headersSent) this.writeHead(200);
    if (chunk !== undefined && chunk.length > 0) this.write(chunk);
    if (this.chunked && !this.noBody) {
      const head = this.head ?? '';
      this.head = undefined;
      send(this.conn.socket, `${head}0\r\n\r\n`);
    } else this.flushHead();
    this.finished = true;
    this.conn.responseDone(this);
    return this;
  }

  /** Cuts the connection: the client sees the response fail. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.conn.socket.destroy();
  }

  /** Writes what is buffered (the head, and any small body coalesced into it). */
  flushHead(): boolean {
    if (this.head === undefined) return true;
    const h = this.head;
    this.head = undefined;
    return send(this.conn.socket, h);
  }
}

/**
 * Status lines of the registered codes, made at load (a template string per response was ~40
 * bytes each); without their `\r\n`, which the next piece of the head starts with.
 */
const STATUS_LINES: Record<number, string> = {};
for (const code of Object.keys(STATUS_CODES)) STATUS_LINES[Number(code)] = `HTTP/1.1 ${code} ${STATUS_CODES[code]}`;
/** A code outside the registry (any 3-digit number an upstream sends) gets its line made per response. */
const statusLine = (status: number): string => STATUS_LINES[status] ?? `HTTP/1.1 ${status} Unknown`;

const FLAG_LINE_START = `\r\n${FLAG_HEADER}: `;

/** Scratch for `H1Response.writeHead`'s head (see there). */
const headParts: string[] = [];

/** Bodies up to this size are written together with the response head. */
const COALESCE_BYTES = 16 * 1024;

function flushLater(res: H1Response): void {
  res.flushQueued = false;
  if (!res.destroyed) res.flushHead();
}

interface Pending {
  req: H1Request;
  res: H1Response;
}

export class H1Connection {
  readonly socket: net.Socket;
  private readonly parser: NativeParser;
  private readonly opts: H1ServerOptions;
  private readonly remote: string | undefined;
  private readonly peer: SpiffeId | undefined;
  private partial: string[] = [];
  private partialUrl = '';
  private current: Pending | undefined;
  private readonly queue: Pending[] = [];
  /** The request whose body is being parsed (may be queued behind `current`). */
  private parsing: H1Request | undefined;
  /** A response that ended while its bodiless request was still being parsed (see responseDone). */
  private doneEarly: Pending | undefined;
  /** ms timestamps for the shared checker: start of headers not yet complete / of idleness. */
  headersSince = 0;
  idleSince: number;
  private closing = false;
  private dead = false;
  /** An Upgrade request whose head is being parsed; the socket is handed over after it. */
  private upgrading: H1Request | undefined;
  /** The socket belongs to an upgraded connection (a tunnel) now. */
  upgraded = false;
  private readonly dataListener = (d: Buffer): void => this.onData(d);
  /** Reads come straight from the handle into a shared buffer (raw-socket.ts), not as 'data' events. */
  private readonly rawReads: boolean;
  /** The parser's message-complete callback; unset while a request known to be bodiless is parsed (see onHeadersComplete). */
  private readonly onMessageComplete: () => void;
  /** The parser has been given bytes: it reads the rest of the connection (see onBytes). */
  private inParser = false;

  constructor(socket: net.Socket, opts: H1ServerOptions, private readonly server: H1Server) {
    this.socket = socket;
    this.opts = opts;
    this.remote = socket.remoteAddress;
    this.peer = getPeer(socket);
    this.idleSince = Date.now();
    const p = new HTTPParser();
    p.initialize(HTTPParser.REQUEST, {}, opts.maxHeaderBytes, HTTPParser.kLenientNone);
    this.parser = p;
    p[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
      for (let i = 0; i < headers.length; i++) this.partial.push(headers[i] as string);
      this.partialUrl += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string | undefined,
      _status: unknown,
      _msg: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => this.onHeadersComplete(major, minor, headers, method, url, upgrade, keepAlive);
    p[HTTPParser.kOnBody] = (chunk: Buffer) => {
      const req = this.parsing;
      if (!req) return;
      req.bodyBytes += chunk.length;
      if (req.bodyStart !== 0) req.bodyLast = server.now;
      const body = req.body;
      // A view of the shared read buffer (raw reads, a Node whose parser does not copy) is copied.
      if (body && !body.push(this.rawReads && !BODY_IS_COPY ? Buffer.from(chunk) : chunk)) socket.pause();
    };
    this.onMessageComplete = () => {
      const req = this.parsing;
      if (!req) return;
      this.parsing = undefined;
      req.complete = true;
      req.body?.push(null);
      // A response that ended before its (bodiless) request was complete: finish it now.
      const done = this.doneEarly;
      if (done && done.req === req) {
        this.doneEarly = undefined;
        this.responseDone(done.res);
      }
    };
    p[HTTPParser.kOnMessageComplete] = this.onMessageComplete;
    this.rawReads = readInto(socket, (n, buf) => this.onBytes(buf as Buffer, n));
    if (!this.rawReads) socket.on('data', this.dataListener);
    socket.on('drain', () => {
      const res = this.current?.res;
      if (!res) return;
      res.follower?.downstreamDrain();
      res.emit('drain');
    });
    socket.on('end', () => {
      // The client's FIN. The socket is not half-open (node ends its writing side at the FIN), so
      // a FIN is a client that went away, as nginx and Envoy treat it: a request still in flight is
      // abandoned ('close' on its response cancels the upstream call: 499, DC) rather than answered.
      this.closing = true;
      if (!this.current) socket.end();
    });
    socket.on('close', () => this.onClose());
  }

  /** Bytes read from the socket (or by protocol detection before the connection was handed over). */
  onData(d: Buffer): void {
    this.onBytes(d, d.length);
  }

  /** The first `n` bytes of `buf` (a shared read buffer: valid during the call only). */
  private onBytes(buf: Buffer, n: number): void {
    if (this.dead) return;
    let off = 0;
    if (!this.inParser) {
      // Whole request heads without a body, read in JavaScript (src/http/h1-fast-heads.ts) while
      // the parser stands at a message's start. Anything else goes to the parser, which then reads
      // every later byte of the connection.
      const max = this.opts.maxHeaderBytes;
      while (off < n) {
        const fields: string[] = [];
        const e = readRequestHead(buf, off, n, max, fields);
        if (e < 0) break;
        off = e;
        this.onHeadersComplete(1, fastHead.minor, fields, fastHead.method, fastHead.url, false, fastHead.keepAlive);
        if (this.dead) return;
      }
      if (off === n) return;
      this.inParser = true;
    }
    const d = off === 0 && n === buf.length ? buf : buf.subarray(off, n);
    const r = this.parser.execute(d);
    if (r instanceof Error) this.parseError(r as Error & { code?: string });
    else if (this.upgrading) {
      // The rest of the bytes belong to the upgraded protocol: stop parsing, hand them over.
      const req = this.upgrading;
      this.upgrading = undefined;
      this.upgraded = true;
      if (this.rawReads) releaseReads(this.socket);
      else this.socket.off('data', this.dataListener);
      this.socket.pause();
      // Raw reads: d is a view of the shared read buffer, which the next read overwrites.
      if (req.upgrade) req.upgrade.head = this.rawReads ? Buffer.from(d.subarray(r as number)) : d.subarray(r as number);
    } else if (this.parsing === undefined && this.headersSince === 0 && !this.parser.headersCompleted()) {
      // Bytes of a head not complete yet (a new request begun, possibly behind a complete one in
      // the same read) start the header clock, and the connection is no longer idle. Judged after
      // parsing: set before it, a complete request's head stopped the clock for the half one behind.
      this.headersSince = Date.now();
      this.idleSince = 0;
    }
  }

  private onHeadersComplete(
    major: number,
    minor: number,
    headers: string[] | undefined,
    methodIndex: number,
    url: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    this.headersSince = 0;
    this.idleSince = 0;
    if (this.dead) return 0;
    const raw = headers ?? this.partial;
    const target = headers ? (url ?? '') : this.partialUrl + (url ?? '');
    this.partial = [];
    this.partialUrl = '';
    const version = major === 1 && minor === 0 ? '1.0' : '1.1';
    const req = new H1Request(METHODS[methodIndex] ?? 'GET', target, raw, version, this.remote);
    if (this.peer) req.peer = this.peer;
    if (upgrade) {
      if (req.method === 'CONNECT' || this.current || this.upgraded) {
        this.refuse(501, req.method === 'CONNECT' ? 'CONNECT is not supported on this listener' : 'an upgrade behind a pipelined request');
        return 2;
      }
      req.upgrade = { socket: this.socket, head: Buffer.alloc(0) };
      this.upgrading = req;
    }
    let hosts = 0;
    let expect: string | undefined;
    let body = false;
    let grpc = false;
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i] as string;
      const len = n.length;
      if (len === 4) {
        if (n.toLowerCase() === 'host') {
          hosts++;
          req.host = raw[i + 1] as string;
        }
      } else if (len === 6) {
        if (n.toLowerCase() === 'expect') expect = (raw[i + 1] as string).toLowerCase();
      } else if (len === 12) {
        if (n.toLowerCase() === 'content-type' && (raw[i + 1] as string).startsWith('application/grpc')) grpc = true;
      } else if (len === 14) {
        if (n.toLowerCase() === 'content-length' && raw[i + 1] !== '0') body = true;
      } else if (len === 17) {
        if (n.toLowerCase() === 'transfer-encoding') body = true;
      }
    }
    if (hosts > 1 || (hosts === 0 && version === '1.1')) {
      this.refuse(400, hosts > 1 ? 'more than one host header' : 'no host header');
      return 0;
    }
    if (expect !== undefined && expect !== '100-continue') {
      this.refuse(417, `unsupported expectation: ${expect}`);
      return 0;
    }
    if (body) {
      const conn = this;
      req.body = new Readable({
        highWaterMark: 64 * 1024,
        read() {
          conn.socket.resume();
        },
      });
      if (!grpc && this.opts.bodyIdleTimeoutMs) req.bodyStart = req.bodyLast = this.server.now || Date.now();
    }
    if (body || upgrade || expect !== undefined) {
      this.parser[HTTPParser.kOnMessageComplete] = this.onMessageComplete;
      this.parsing = req;
    } else {
      // No content-length (or 0), no transfer-encoding: llhttp ends this message right after its
      // head. Complete now, and spare the parser its message-complete call into JS (~1.6k
      // instructions a request; the native parser skips a slot that is not a function).
      this.parser[HTTPParser.kOnMessageComplete] = null;
      req.complete = true;
    }
    const res = new H1Response(this, req, keepAlive && !this.closing);
    const pending = { req, res };
    if (this.current) {
      // Pipelined: answered after the one in flight. Stop reading until then.
      this.queue.push(pending);
      this.socket.pause();
      return 0;
    }
    this.start(pending, expect !== undefined && version === '1.1');
    return 0;
  }

  private start(p: Pending, continue100: boolean): void {
    this.current = p;
    if (this.opts.inflight) this.opts.inflight.active++;
    if (continue100 && !p.req.complete) this.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
    try {
      this.opts.onRequest(p.req, p.res);
    } catch (err) {
      // A handler must not throw; if it does, the client gets a 500 rather than a hung request.
      if (!p.res.headersSent) p.res.writeHead(500, { 'content-type': 'text/plain', 'content-length': '22' }).end('internal proxy error\n');
      else p.res.destroy();
      this.server.handlerError(err);
    }
  }

  /** Called by a response when it ended. */
  responseDone(res: H1Response): void {
    const cur = this.current;
    if (!cur || cur.res !== res) return;
    if (!cur.req.complete && !cur.req.body && this.parsing === cur.req && !this.closing) {
      // Answered from inside the header callback (a local 404, say): the parser completes this
      // bodiless request as soon as the callback returns. Keep the connection for the next one.
      this.doneEarly = cur;
      return;
    }
    this.current = undefined;
    if (this.opts.inflight) this.opts.inflight.active--;
    // A request body not read to its end leaves the connection in an unknown place: close it.
    // An upgrade answered without switching protocols: the parser let go of the socket; close it.
    if (!res.shouldKeepAlive || this.closing || !cur.req.complete || cur.req.upgrade) {
      this.closing = true;
      this.socket.end();
      return;
    }
    const next = this.queue.shift();
    if (next) {
      this.start(next, false);
      if (this.queue.length === 0) this.socket.resume();
      return;
    }
    this.idleSince = Date.now();
    this.socket.resume();
  }

  /** Idle: close now. Busy: close once the response in flight is done. */
  shutdown(): void {
    this.closing = true;
    if (!this.current && !this.parsing) this.socket.end();
  }

  /** No request in flight or begun, not upgraded: closing it loses nothing (overload protection). */
  isIdle(): boolean {
    return !this.current && !this.parsing && this.headersSince === 0 && !this.upgraded && !this.dead;
  }

  /** Called by the server's checker. */
  check(now: number, elapsed: number): void {
    const req = this.parsing;
    if (req !== undefined && req.bodyStart !== 0 && !req.complete && !this.dead) {
      const o = this.opts;
      if (this.socket.isPaused() || (req.body !== null && req.body.readableLength > 0)) {
        // The proxy holds the body back (its reader is slow): the client is not the one waiting.
        req.bodyLast = now;
        req.bodyStart += elapsed;
      } else if (now - req.bodyLast > (o.bodyIdleTimeoutMs as number)) {
        o.onBodyTimeout?.('idle');
        this.refuse(408, `request body idle for more than ${o.bodyIdleTimeoutMs} ms`, 'ERR_BODY_TIMEOUT', BODY_TIMEOUT_FLAG);
        return;
      } else if (o.minBodyBytesPerSec && now > req.bodyStart + (o.bodyIdleTimeoutMs as number) + (req.bodyBytes * 1000) / o.minBodyBytesPerSec) {
        o.onBodyTimeout?.('slow');
        this.refuse(408, `request body slower than ${o.minBodyBytesPerSec} bytes/s`, 'ERR_BODY_TOO_SLOW', BODY_TIMEOUT_FLAG);
        return;
      }
    }
    if (this.headersSince > 0 && now - this.headersSince > this.opts.headersTimeoutMs) {
      this.headersSince = 0;
      this.refuse(408, 'request headers not received in time', 'ERR_HTTP_REQUEST_TIMEOUT');
    } else if (this.idleSince > 0 && !this.current && now - this.idleSince > this.opts.keepAliveTimeoutMs) {
      this.socket.end();
      this.idleSince = 0;
    }
  }

  private parseError(err: Error & { code?: string }): void {
    const code = err.code ?? 'HPE_UNKNOWN';
    const [status, reason] = PARSE_ERRORS[code] ?? [400, (err as { reason?: string }).reason || err.message || 'malformed request'];
    this.refuse(status, reason, code);
  }

  /** Answers a refused request (unless a response already started) and closes the connection. */
  private refuse(status: number, reason: string, code?: string, flag = 'DPE'): void {
    if (this.dead) return;
    this.opts.onRefused(reason, { code, status, remote: this.remote });
    const body = this.parsing?.body;
    if (body && !this.parsing?.complete) {
      body.emit('aborted');
      body.destroy();
    }
    if (this.current?.res.headersSent) {
      this.socket.destroy();
      return;
    }
    const text = `${reason}\n`;
    this.dead = true;
    this.socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: text/plain\r\n` +
        `x-meshlet-flags: ${flag}\r\ncontent-length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
      'latin1',
    );
    this.socket.destroySoon();
  }

  private onClose(): void {
    this.dead = true;
    this.server.forget(this);
    const req = this.parsing;
    if (req?.body && !req.complete) {
      // No error object: a body nobody is reading must not become an uncaught 'error'.
      req.body.emit('aborted');
      req.body.destroy();
    }
    if (this.current && this.opts.inflight) this.opts.inflight.active--;
    for (const p of [...(this.current ? [this.current] : []), ...this.queue]) {
      if (!p.res.finished) {
        p.res.destroyed = true;
        p.res.follower?.downstreamClose();
        p.res.emit('close');
      }
    }
    this.current = undefined;
    this.queue.length = 0;
    releaseParser(this.parser);
  }
}

export class H1Server {
  private readonly conns = new Set<H1Connection>();
  private timer: NodeJS.Timeout | undefined;
  /** The checker's clock (ms), read by the body-byte callback instead of Date.now() per chunk. */
  now = 0;

  constructor(private readonly opts: H1ServerOptions) {}

  /** Serves a socket whose first bytes (`head`) were already read by protocol detection. */
  serve(socket: net.Socket, head: Buffer): H1Connection {
    const c = new H1Connection(socket, this.opts, this);
    this.conns.add(c);
    if (!this.timer) {
      this.now = Date.now();
      const limits = [this.opts.headersTimeoutMs, this.opts.bodyIdleTimeoutMs || Infinity];
      this.timer = setInterval(() => {
        const now = Date.now();
        const elapsed = now - this.now;
        this.now = now;
        for (const x of this.conns) x.check(now, elapsed);
      }, Math.min(1000, Math.max(50, Math.min(...limits) / 4)));
      this.timer.unref();
    }
    if (head.length > 0) c.onData(head);
    if (!c.upgraded) socket.resume();
    return c;
  }

  handlerError(err: unknown): void {
    this.opts.onRefused(`handler failed: ${(err as Error)?.message}`, { status: 500 });
  }

  forget(c: H1Connection): void {
    this.conns.delete(c);
  }

  /** Closes idle connections now, busy ones after their response. */
  shutdown(): void {
    for (const c of this.conns) c.shutdown();
  }

  close(): void {
    this.shutdown();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
