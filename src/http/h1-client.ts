/**
 * The upstream HTTP/1.1 client: a keep-alive connection pool per endpoint, speaking HTTP/1.1 on
 * plain sockets and parsing responses with Node's own native parser (llhttp, the one node:http
 * uses), or, for a whole head framed by Content-Length, with a strict JavaScript scan that reads
 * it as llhttp would (src/http/h1-fast-heads.ts). It exists for speed: measured on this box, a
 * proxy on it spends about 25% less CPU per request than the same proxy on undici's Pool (see
 * bench/), because a request is one string write and a response is parsed straight into the
 * proxy's callbacks, with no intermediate objects or streams.
 *
 * Semantics kept from a full client:
 * - request bodies stream with backpressure, as given (Content-Length) or chunked;
 * - 1xx responses are skipped; HEAD responses have no body; responses framed by connection
 *   close are finished on EOF; trailers are delivered;
 * - a connection is reused only after a complete exchange the server did not mark `close`;
 * - a request without a body that fails on a reused connection before any response byte (the
 *   server closed it while idle) is retried once on a new connection, as undici does;
 * - errors before the connection is up are `UpstreamConnectError` (the proxy's `UF`).
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Readable } from 'node:stream';
import type { ConnectionLimits, Headers, ResponseSink, UpstreamCall, UpstreamRequest } from './upstream-types';
import { UpstreamConnectError, UpstreamOverflowError } from './upstream-types';

import { lineStart, lowerName } from './headers';
import { head as fastHead, readResponseHead } from './h1-fast-heads';
import { BODY_IS_COPY, HTTPParser, releaseParser, type NativeParser } from './native-parser';
import { send, send3 } from './raw-socket';

const kOnHeaders = HTTPParser.kOnHeaders;
const kOnHeadersComplete = HTTPParser.kOnHeadersComplete;
const kOnBody = HTTPParser.kOnBody;
const kOnMessageComplete = HTTPParser.kOnMessageComplete;

export interface H1PoolOptions {
  keepAliveMs: number;
  connectTimeoutMs: number;
  /** Response header bytes allowed (default 256 KiB). */
  maxHeaderBytes?: number;
  /** mTLS to another sidecar: the options of each new connection (certificate, expected identity, session to resume). */
  tls?: () => tls.ConnectionOptions;
  /** A TLS session ticket arrived (kept for the next connection's resumption). */
  onTlsSession?: (session: Buffer) => void;
  /** Each new TLS socket (handshake metrics). */
  onTlsSocket?: (socket: tls.TLSSocket) => void;
}

/** The parsers' async resource (the parser is re-initialized per response whose body `takeBody` reads). */
const PARSER_RESOURCE = {};

/** Where every upstream connection's reads land (see Conn). */
const readBuffer = Buffer.allocUnsafe(64 * 1024);

/** One request/response on a connection. */
interface Exchange {
  req: UpstreamRequest;
  sink: ResponseSink;
  head: boolean;
  started: boolean;
  done: boolean;
  /** Request fully written (body ended). */
  sent: boolean;
  /** Response complete. */
  received: boolean;
  keepAlive: boolean;
  trailers?: Headers;
  retried: boolean;
  call: Call;
}

class Call implements UpstreamCall {
  conn: Conn | undefined;
  aborted = false;
  /** Set while the exchange waits for a connection (connection limits). */
  queuedIn: H1Pool | undefined;
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    if (this.queuedIn) {
      this.queuedIn.unqueue(this);
      return;
    }
    const c = this.conn;
    if (c && c.ex && c.ex.call === this) {
      c.ex.done = true;
      c.destroy();
    }
  }
  resume(): void {
    this.conn?.socket.resume();
  }
}

class Conn {
  readonly socket: net.Socket;
  ex: Exchange | undefined;
  connected = false;
  /** Completed exchanges on this connection. */
  uses = 0;
  dead = false;
  /** When it went idle in the pool (ms, Date.now()); the pool's sweeper closes it after keepAliveMs. */
  idleSince = 0;
  private partialHeaders: string[] = [];
  private readonly parser: NativeParser;
  /** The parser's message-complete callback; unset while `takeBody` reads a body (see onHeadersComplete). */
  private readonly messageComplete = (): void => this.onMessageComplete();
  private readonly maxHeaderBytes: number;
  /**
   * Body bytes of the current response still to come, read by `takeBody` rather than the parser,
   * which stopped at the head (0: none, or the parser frames this response's body). See
   * `ownBodyLength`.
   */
  private bodyLeft = 0;
  /**
   * The parser has been given bytes of a message and is not known to stand at a message's start
   * again; until `takeBody` re-initializes it, every byte goes to it (the fast path reads only
   * from a message's start).
   */
  private inParser = false;

  constructor(
    private readonly pool: H1Pool,
    host: string,
    port: number,
    opts: H1PoolOptions,
  ) {
    // Reads land in one buffer shared by every upstream connection (parsing is synchronous), and
    // go straight to the parser: no per-read allocation, no Readable stream machinery. Over mTLS
    // (another sidecar) the same: TLSWrap decrypts into the shared buffer (tls.connect takes
    // `onread` like net.connect), which spares each response a Buffer, a Readable push and a
    // 'data' event (measured: docs/performance.md, "The mTLS hop").
    const onread = {
      buffer: readBuffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        let off = 0;
        while (off < n && !this.dead) {
          if (this.bodyLeft > 0) {
            off += this.takeBody(buf as Buffer, off, n);
            continue;
          }
          // A whole head of the common kind, read in JavaScript (src/http/h1-fast-heads.ts),
          // while the parser stands at a message's start; anything else goes to the parser.
          if (!this.inParser) {
            const ex = this.ex;
            // A new array each time: the young strings go into a young array (stores into a
            // long-lived scratch array each took the write barrier's slow path).
            const fields: string[] = [];
            const e = ex !== undefined && !ex.done ? readResponseHead(buf as Buffer, off, n, this.maxHeaderBytes, fields) : -1;
            if (e > 0) {
              off = e;
              if (this.onHeadersComplete(fields, fastHead.status, false, fastHead.keepAlive) !== 2) this.onMessageComplete();
              continue;
            }
            this.inParser = true;
          }
          const r = parser.execute((off === 0 ? buf.subarray(0, n) : buf.subarray(off, n)) as Buffer);
          if (r instanceof Error) {
            this.fail(r);
            break;
          }
          // The parser stops at a head whose body `takeBody` reads (`r`: the bytes up to it).
          if (this.bodyLeft === 0) break;
          off += r as number;
        }
        return !socket.isPaused();
      },
    };
    const secure = opts.tls?.();
    const socket: net.Socket = secure
      ? tls.connect({ host, port, ...secure, ALPNProtocols: ['http/1.1'], onread } as tls.ConnectionOptions)
      : net.connect({ host, port, noDelay: true, onread });
    if (secure) {
      socket.setNoDelay(true);
      const onSession = opts.onTlsSession;
      if (onSession) socket.on('session', (s: Buffer) => onSession(s));
      opts.onTlsSocket?.(socket as tls.TLSSocket);
    }
    this.socket = socket;
    const parser = new HTTPParser();
    this.parser = parser;
    this.maxHeaderBytes = opts.maxHeaderBytes ?? 256 * 1024;
    parser.initialize(HTTPParser.RESPONSE, PARSER_RESOURCE, this.maxHeaderBytes, HTTPParser.kLenientNone);
    parser[kOnHeaders] = (headers: string[]) => {
      for (let i = 0; i < headers.length; i++) this.partialHeaders.push(headers[i] as string);
    };
    parser[kOnHeadersComplete] = (
      _maj: number,
      _min: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      _msg: string,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => {
      const r = this.onHeadersComplete(headers, status, upgrade, keepAlive);
      // The parser stops here (2: as for an upgrade) and `takeBody` reads the body. The parser
      // then reports the message complete at once: with no callback set, that is not a call into
      // JavaScript (one transition from C++ less a response); takeBody sets it back.
      if (r === 2) parser[kOnMessageComplete] = null;
      return r;
    };
    parser[kOnBody] = (chunk: Buffer) => {
      const ex = this.ex;
      if (!ex || ex.done) return;
      // Node 20's parser hands each body chunk over as its own copy (BODY_IS_COPY, probed at
      // load); elsewhere the chunk is a view of the shared read buffer and the sink gets a copy.
      if (!ex.sink.onData(BODY_IS_COPY ? chunk : Buffer.from(chunk))) socket.pause();
    };
    parser[kOnMessageComplete] = this.messageComplete;
    const timer = setTimeout(() => {
      if (!this.connected) socket.destroy(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' }));
    }, opts.connectTimeoutMs);
    timer.unref();
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      this.connected = true;
    });
    socket.on('end', () => {
      // A response framed by the connection closing ends here. One whose body `takeBody` was
      // reading is cut short: the error the parser gives for it.
      const r = this.bodyLeft > 0 ? invalidEof() : this.ex && !this.ex.received && this.ex.started ? parser.finish() : undefined;
      if (r instanceof Error) this.fail(r);
      socket.end();
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => {
      clearTimeout(timer);
      this.dead = true;
      this.pool.forget(this);
      if (this.ex && !this.ex.done) this.fail(Object.assign(new Error('upstream closed the connection'), { code: 'UND_ERR_SOCKET' }));
      releaseParser(parser);
    });
  }

  start(ex: Exchange): void {
    this.ex = ex;
    ex.call.conn = this;
    if (this.partialHeaders.length > 0) this.partialHeaders = [];
    const req = ex.req;
    const raw = req.headers;
    // The head's pieces go into one scratch array joined once (start is synchronous): the join
    // makes the flat string the write needs and nothing else, where `+=` made three or four cons
    // strings a header and a flat copy at the write (docs/performance.md, "HTTP/1.1 full chain: heads, request ids, one copy less").
    const p = headParts;
    p[0] = req.method;
    p[1] = ' ';
    p[2] = req.path;
    p[3] = ' HTTP/1.1\r\nhost: ';
    p[4] = req.authority;
    let k = 5;
    let hasLength = false;
    // Two pieces a field: its line's start (`\r\n` ending the line before, the name; cached) and its value.
    for (let i = 0; i < raw.length; i += 2) {
      const n = raw[i] as string;
      if (n.length === 14 && n === 'content-length') hasLength = true;
      p[k++] = lineStart(n);
      p[k++] = raw[i + 1] as string;
    }
    const body = req.body;
    const chunked = body !== null && !hasLength;
    p[k++] = chunked ? '\r\ntransfer-encoding: chunked\r\n\r\n' : '\r\n\r\n';
    if (p.length !== k) p.length = k;
    const head = p.join('');
    if (p.length > 64) p.length = 0; // a rare large head does not stay referenced
    send(this.socket, head);
    if (!body) {
      ex.sent = true;
      return;
    }
    streamBody(this, ex, body, chunked);
  }

  private onHeadersComplete(headers: string[] | undefined, status: number, upgrade: boolean, keepAlive: boolean): number {
    const ex = this.ex;
    const list = headers ?? this.partialHeaders;
    if (headers === undefined) this.partialHeaders = [];
    if (!ex || ex.done) return 0;
    if (status < 200) return 0; // 100 Continue, 103 Early Hints: not forwarded
    if (upgrade) {
      this.fail(Object.assign(new Error('upstream upgraded the connection; not supported here'), { code: 'UND_ERR_SOCKET' }));
      return 2;
    }
    ex.started = true;
    ex.keepAlive = keepAlive;
    const h = toObject(list);
    // Read before the sink sees (and may change) the headers.
    const own = ex.head ? 0 : ownBodyLength(status, h);
    ex.sink.onResponse(status, h);
    if (ex.head) return 1;
    if (own === 0) return 0;
    // `takeBody` reads the body (2: the parser, if it read the head, stops there).
    this.bodyLeft = own;
    return 2;
  }

  /**
   * Takes body bytes [off, off + bodyLeft) of the current response from `buf` (up to `n`), hands
   * them to the sink, and ends the response after its last byte; returns the bytes taken.
   *
   * Why not the parser: Node 20's parser hands each body chunk over in a new ArrayBuffer of its
   * own, and every ArrayBuffer made between two scavenges is swept in the next one's pause. For a
   * Content-Length body the framing is a count, so the bytes are copied here into a slice of
   * Node's buffer pool (one ArrayBuffer per 8 KiB of small bodies). Measured at 5k req/s: this
   * sweep was ~0.15 of each ~0.55 ms scavenge (docs/performance.md).
   */
  private takeBody(buf: Buffer, off: number, n: number): number {
    const len = Math.min(this.bodyLeft, n - off);
    this.bodyLeft -= len;
    const ex = this.ex;
    if (ex && !ex.done) {
      const chunk = Buffer.allocUnsafe(len);
      buf.copy(chunk, 0, off, off + len);
      if (!ex.sink.onData(chunk)) this.socket.pause();
    }
    if (this.bodyLeft === 0) {
      if (this.inParser) {
        // The parser read the head and stopped at it: a fresh start for the next response.
        this.parser.initialize(HTTPParser.RESPONSE, PARSER_RESOURCE, this.maxHeaderBytes, HTTPParser.kLenientNone);
        this.parser[kOnMessageComplete] = this.messageComplete;
        this.inParser = false;
      }
      this.onMessageComplete();
    }
    return len;
  }

  private onMessageComplete(): void {
    const ex = this.ex;
    if (!ex) return;
    if (!ex.started) {
      // The end of a 1xx: the real response follows. Trailers would have arrived via kOnHeaders.
      this.partialHeaders = [];
      return;
    }
    if (this.partialHeaders.length > 0) {
      ex.trailers = toObject(this.partialHeaders);
      this.partialHeaders = [];
    }
    ex.received = true;
    if (!ex.done) {
      ex.done = true;
      ex.sink.onEnd(ex.trailers);
    }
    this.maybeRelease();
  }

  /** Called when the exchange's request is fully written or its response complete. */
  maybeRelease(): void {
    const ex = this.ex;
    if (!ex || !ex.received) return;
    if (!ex.sent) {
      // The server answered before reading the whole body: the connection cannot be reused.
      this.destroy();
      return;
    }
    this.ex = undefined;
    ex.call.conn = undefined;
    this.uses++;
    if (!ex.keepAlive || this.dead) {
      this.socket.end();
      return;
    }
    this.socket.resume();
    this.pool.release(this);
  }

  fail(err: Error): void {
    const ex = this.ex;
    this.dead = true;
    if (ex && !ex.done) {
      // A reused connection the server closed while idle: try once more on a fresh one.
      if (!ex.started && !ex.retried && ex.req.body === null && this.uses > 0 && this.connected && !ex.call.aborted) {
        ex.retried = true;
        this.ex = undefined;
        this.socket.destroy();
        this.pool.dispatch(ex);
        return;
      }
      ex.done = true;
      const connectFailure = !this.connected && !ex.started;
      ex.sink.onError(connectFailure ? new UpstreamConnectError(err as Error & { code?: string }) : err, ex.started);
    }
    this.socket.destroy();
  }

  destroy(): void {
    this.dead = true;
    this.socket.destroy();
  }
}

/** Scratch for `Conn.start`'s request head (see there). */
const headParts: string[] = [];

function streamBody(conn: Conn, ex: Exchange, body: Readable, chunked: boolean): void {
  const socket = conn.socket;
  const onData = (chunk: Buffer): void => {
    if (conn.ex !== ex || conn.dead) return;
    let ok: boolean;
    if (chunked) {
      if (chunk.length === 0) return;
      ok = send3(socket, `${chunk.length.toString(16)}\r\n`, chunk, '\r\n');
    } else ok = send(socket, typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    if (!ok) body.pause();
  };
  const onDrain = (): void => {
    body.resume();
  };
  const cleanup = (): void => {
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('error', onError);
    body.off('aborted', onError);
    socket.off('drain', onDrain);
  };
  const onEnd = (): void => {
    cleanup();
    if (conn.ex !== ex) return;
    if (chunked) send(socket, '0\r\n\r\n');
    ex.sent = true;
    conn.maybeRelease();
  };
  const onError = (): void => {
    cleanup();
    // The client's body broke off: the upstream must not take a truncated body as whole.
    if (conn.ex === ex) {
      ex.done = true;
      conn.destroy();
    }
  };
  body.on('data', onData);
  body.once('end', onEnd);
  body.once('error', onError);
  body.once('aborted', onError);
  socket.on('drain', onDrain);
  socket.once('close', cleanup);
  // A body paused until its consumer came (an HTTP/2 request stream the retry layer hands over as
  // it is, src/resilience/replay-body.ts) flows now; 'data' alone resumes only a body never paused.
  body.resume();
}

/**
 * The body length of a response `takeBody` may read: a valid Content-Length above 0, no
 * Transfer-Encoding, a status that has a body. 0 otherwise (the parser frames it). The parser has
 * already refused what it does not accept (a conflicting or duplicate Content-Length, one beside
 * Transfer-Encoding, one that is not digits), before the head completes.
 */
function ownBodyLength(status: number, h: Headers): number {
  if (status === 204 || status === 304 || h['transfer-encoding'] !== undefined) return 0;
  const cl = h['content-length'];
  if (typeof cl !== 'string') return 0;
  const len = Number(cl);
  return Number.isSafeInteger(len) && len > 0 ? len : 0;
}

/** What the parser says of a connection that ends inside a Content-Length body. */
function invalidEof(): Error {
  return Object.assign(new Error('Parse Error: Invalid EOF state'), { code: 'HPE_INVALID_EOF_STATE', reason: 'Invalid EOF state' });
}

function toObject(list: readonly string[]): Headers {
  const out: Headers = {};
  for (let i = 0; i < list.length; i += 2) {
    const name = lowerName(list[i] as string);
    const value = list[i + 1] as string;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev, value];
  }
  return out;
}

/** Keep-alive connections to one endpoint. */
export class H1Pool {
  private readonly idle: Conn[] = [];
  private readonly all = new Set<Conn>();
  private readonly queue: Exchange[] = [];
  private closed = false;
  private sweeper: NodeJS.Timeout | undefined;
  /** The destination's connection limits, refreshed by the pool's user on every request. */
  limits: ConnectionLimits | undefined;

  constructor(
    private readonly host: string,
    private readonly port: number,
    private readonly opts: H1PoolOptions,
  ) {}

  request(req: UpstreamRequest, sink: ResponseSink): UpstreamCall {
    const call = new Call();
    const ex: Exchange = {
      req,
      sink,
      head: req.method === 'HEAD',
      started: false,
      done: false,
      sent: false,
      received: false,
      keepAlive: false,
      retried: false,
      call,
    };
    this.dispatch(ex);
    return call;
  }

  dispatch(ex: Exchange): void {
    let conn: Conn | undefined;
    while ((conn = this.idle.pop())) if (!conn.dead) break;
    if (!conn) {
      const lim = this.limits;
      if (lim?.maxConnections !== undefined && this.all.size >= lim.maxConnections) {
        if (lim.maxPendingRequests !== undefined && lim.pending.n >= lim.maxPendingRequests) {
          ex.done = true;
          ex.sink.onError(new UpstreamOverflowError(`${lim.maxConnections} connections busy and ${lim.maxPendingRequests} requests pending`), false);
          return;
        }
        lim.pending.n++;
        ex.call.queuedIn = this;
        this.queue.push(ex);
        return;
      }
      conn = new Conn(this, this.host, this.port, this.opts);
      this.all.add(conn);
    }
    conn.start(ex);
  }

  /** The next queued exchange, if any, taken off the queue. */
  private dequeue(): Exchange | undefined {
    const ex = this.queue.shift();
    if (!ex) return undefined;
    ex.call.queuedIn = undefined;
    if (this.limits) this.limits.pending.n--;
    return ex;
  }

  unqueue(call: Call): void {
    const i = this.queue.findIndex((e) => e.call === call);
    if (i < 0) return;
    const [ex] = this.queue.splice(i, 1);
    call.queuedIn = undefined;
    if (this.limits) this.limits.pending.n--;
    if (ex) ex.done = true;
  }

  release(conn: Conn): void {
    // Waiting requests go first, even on a retiring pool: they were accepted.
    const next = this.dequeue();
    if (next) {
      conn.start(next);
      return;
    }
    if (this.closed) {
      conn.socket.end();
      return;
    }
    conn.idleSince = Date.now();
    this.idle.push(conn);
    this.sweepSoon();
  }

  /**
   * Idle connections are closed after keepAliveMs by one timer per pool, not a socket timeout
   * per connection (which costs a timer re-arm on every request).
   */
  private sweepSoon(): void {
    if (this.sweeper) return;
    const every = Math.max(10, Math.min(1000, Math.floor(this.opts.keepAliveMs / 4)));
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  private sweep(): void {
    const now = Date.now();
    const idle = this.idle;
    // Oldest first: release pushes, dispatch pops the most recently used.
    while (idle.length > 0 && now - (idle[0] as Conn).idleSince >= this.opts.keepAliveMs) (idle.shift() as Conn).destroy();
    if (idle.length === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  setKeepAlive(ms: number): void {
    this.opts.keepAliveMs = ms;
  }

  forget(conn: Conn): void {
    this.all.delete(conn);
    const i = this.idle.indexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
    // A connection slot freed up: a waiting request may open a new one.
    if (this.queue.length > 0 && !this.closed) {
      const next = this.dequeue();
      if (next) this.dispatch(next);
    }
  }

  /** Open connections (busy and idle). */
  size(): number {
    return this.all.size;
  }

  /** Closes idle connections now and busy ones when their exchange completes (or after `drainMs`). */
  close(drainMs: number): void {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const c of this.idle.splice(0)) c.socket.end();
    if (this.all.size === 0) return;
    const t = setTimeout(() => this.destroy(), drainMs);
    t.unref();
  }

  destroy(): void {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const ex of this.queue.splice(0)) {
      ex.done = true;
      ex.call.queuedIn = undefined;
      if (this.limits) this.limits.pending.n--;
      ex.sink.onError(new Error('upstream pool closed'), false);
    }
    for (const c of [...this.all]) c.destroy();
    this.idle.length = 0;
  }
}
