/**
 * HTTP/2 frame codec (RFC 9113 section 4 and 6): an incremental parser over socket chunks and the
 * writers of every frame type, for meshlet's own HTTP/2 server layer (src/http/h2/session.ts),
 * which replaces node:http2's JavaScript session layer on the measured hot path (issue 20).
 *
 * HAND-WRITTEN HOT-PATH CODE: every request's bytes pass through `FrameParser.push` and every
 * response's through `FrameWriter`; they are written for few allocations (no object per frame,
 * DATA payloads handed on as views of the socket chunk when the frame sits whole in it, small
 * frames packed into one pooled buffer per flush).
 *
 * The parser checks what can be checked frame by frame, without stream state: sizes against
 * SETTINGS_MAX_FRAME_SIZE (FRAME_SIZE_ERROR), padding (PROTOCOL_ERROR), fixed payload lengths
 * (SETTINGS multiple of 6, PING 8, WINDOW_UPDATE 4, RST_STREAM 4, PRIORITY 5, GOAWAY >= 8),
 * stream-id zero or non-zero where required, SETTINGS values, a zero WINDOW_UPDATE increment, and
 * the HEADERS + CONTINUATION sequence (any other frame in between is a PROTOCOL_ERROR; the block
 * is capped). PRIORITY frames and the priority fields of HEADERS are checked and ignored; frames
 * of unknown types are ignored. Stream states, flow control and HPACK are the session's.
 */

const FRAME_HEADER_SIZE = 9;
/** The client connection preface (RFC 9113 3.4). */
export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const DEFAULT_MAX_FRAME_SIZE = 16_384;
const MAX_MAX_FRAME_SIZE = 16_777_215;
export const MAX_WINDOW = 2_147_483_647;
export const DEFAULT_WINDOW = 65_535;

export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

export const Flags = {
  END_STREAM: 0x1,
  ACK: 0x1,
  END_HEADERS: 0x4,
  PADDED: 0x8,
  PRIORITY: 0x20,
} as const;

export const ErrorCode = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  CONNECT_ERROR: 10,
  ENHANCE_YOUR_CALM: 11,
  INADEQUATE_SECURITY: 12,
  HTTP_1_1_REQUIRED: 13,
} as const;

export const Setting = {
  HEADER_TABLE_SIZE: 1,
  ENABLE_PUSH: 2,
  MAX_CONCURRENT_STREAMS: 3,
  INITIAL_WINDOW_SIZE: 4,
  MAX_FRAME_SIZE: 5,
  MAX_HEADER_LIST_SIZE: 6,
  ENABLE_CONNECT_PROTOCOL: 8,
} as const;

/** A protocol error found by the codec or the session: `code` is the RFC 9113 error code to send. */
export class H2ProtocolError extends Error {
  readonly code = 'ERR_H2_PROTOCOL';
  constructor(
    readonly h2Code: number,
    message: string,
    /** 0: a connection error (GOAWAY); else the stream to reset (RST_STREAM). */
    readonly streamId = 0,
  ) {
    super(message);
  }
}

/** Where the parser delivers frames. Payload buffers may be views of the socket chunk. */
export interface FrameSink {
  /** A DATA frame, padding removed; `flowBytes` is the whole frame payload (padding counts against the windows). */
  onData(streamId: number, data: Buffer, endStream: boolean, flowBytes: number): void;
  /**
   * A complete header block (HEADERS and its CONTINUATIONs, padding and priority fields removed).
   * `selfDependent`: the priority fields named the stream itself (a stream PROTOCOL_ERROR once
   * the block is decoded).
   */
  onHeaders(streamId: number, block: Buffer, endStream: boolean, selfDependent: boolean): void;
  onRstStream(streamId: number, code: number): void;
  /** SETTINGS: `params` flat [id, value, id, value, ...] (values checked); empty for an ACK. */
  onSettings(ack: boolean, params: number[]): void;
  onPing(ack: boolean, payload: Buffer): void;
  onGoaway(lastStreamId: number, code: number, debug: Buffer): void;
  onWindowUpdate(streamId: number, increment: number): void;
  /** A stream error found by the codec (PRIORITY of the wrong size or on itself, a zero stream WINDOW_UPDATE). */
  onStreamError(streamId: number, code: number, message: string): void;
  /** A connection error: the parser stops; the session sends GOAWAY and closes. */
  onConnectionError(code: number, message: string): void;
}

const EMPTY = Buffer.alloc(0);

export interface FrameParserOptions {
  /** Expect the 24-byte client preface, then a SETTINGS frame, first (a server). */
  expectPreface?: boolean;
  /** Expect a SETTINGS frame first, without a preface before it (a client reading the server's preface). */
  expectSettings?: boolean;
  /** Our SETTINGS_MAX_FRAME_SIZE: larger frames are a FRAME_SIZE_ERROR. */
  maxFrameSize?: number;
  /** Cap on an assembled header block (HEADERS + CONTINUATION), in bytes; over it: ENHANCE_YOUR_CALM. */
  maxHeaderBlockSize?: number;
}

/** HAND-WRITTEN HOT PATH. Incremental frame parser: feed it socket chunks with `push`. */
export class FrameParser {
  maxFrameSize: number;
  maxHeaderBlockSize: number;
  private stopped = false;
  /** Bytes of the client preface still to check (0: done). */
  private prefaceLeft: number;
  /** The first frame after the preface must be SETTINGS. */
  private needSettings: boolean;
  /** Reading a server's frames (expectSettings): its first frame is its preface. */
  private readonly serverPreface: boolean;
  // The frame header being read (possibly split across chunks).
  private readonly head = Buffer.alloc(FRAME_HEADER_SIZE);
  private headLen = 0;
  // A payload split across chunks.
  private payload: Buffer | null = null;
  private payloadGot = 0;
  private type = 0;
  private flags = 0;
  private streamId = 0;
  // The header block being assembled (CONTINUATION expected while contStream != 0).
  private contStream = 0;
  private contEndStream = false;
  private contSelfDep = false;
  private block: Buffer[] = [];
  private blockLen = 0;

  constructor(
    private readonly sink: FrameSink,
    opts: FrameParserOptions = {},
  ) {
    this.maxFrameSize = opts.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    this.maxHeaderBlockSize = opts.maxHeaderBlockSize ?? 256 * 1024;
    this.prefaceLeft = opts.expectPreface ? CLIENT_PREFACE.length : 0;
    this.needSettings = opts.expectPreface === true || opts.expectSettings === true;
    this.serverPreface = opts.expectPreface !== true && opts.expectSettings === true;
  }

  /** No more frames are delivered (after a connection error, or when the session closes). */
  stop(): void {
    this.stopped = true;
    this.payload = null;
    this.block = [];
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** Whether a header block is being assembled (a CONTINUATION is expected next). */
  get inHeaderBlock(): boolean {
    return this.contStream !== 0;
  }

  push(chunk: Buffer): void {
    let off = 0;
    const n = chunk.length;
    if (this.prefaceLeft > 0) {
      const at = CLIENT_PREFACE.length - this.prefaceLeft;
      const take = Math.min(this.prefaceLeft, n);
      if (chunk.compare(CLIENT_PREFACE, at, at + take, 0, take) !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'invalid client preface');
      this.prefaceLeft -= take;
      off = take;
    }
    while (off < n && !this.stopped) {
      const payload = this.payload;
      if (payload !== null) {
        // Completing a payload split across chunks.
        const take = Math.min(payload.length - this.payloadGot, n - off);
        chunk.copy(payload, this.payloadGot, off, off + take);
        this.payloadGot += take;
        off += take;
        if (this.payloadGot < payload.length) return;
        this.payload = null;
        this.frame(payload);
        continue;
      }
      let length: number;
      if (this.headLen === 0 && n - off >= FRAME_HEADER_SIZE) {
        length = (chunk[off]! << 16) | (chunk[off + 1]! << 8) | chunk[off + 2]!;
        this.type = chunk[off + 3]!;
        this.flags = chunk[off + 4]!;
        this.streamId = chunk.readUInt32BE(off + 5) & 0x7fffffff;
        off += FRAME_HEADER_SIZE;
      } else {
        const take = Math.min(FRAME_HEADER_SIZE - this.headLen, n - off);
        chunk.copy(this.head, this.headLen, off, off + take);
        this.headLen += take;
        off += take;
        if (this.headLen < FRAME_HEADER_SIZE) return;
        this.headLen = 0;
        const h = this.head;
        length = (h[0]! << 16) | (h[1]! << 8) | h[2]!;
        this.type = h[3]!;
        this.flags = h[4]!;
        this.streamId = h.readUInt32BE(5) & 0x7fffffff;
      }
      if (length > this.maxFrameSize) return this.fail(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes over the maximum frame size ${this.maxFrameSize}`);
      if (length === 0) {
        this.frame(EMPTY);
      } else if (n - off >= length) {
        const p = chunk.subarray(off, off + length);
        off += length;
        this.frame(p);
      } else {
        const p = Buffer.allocUnsafe(length);
        const take = n - off;
        chunk.copy(p, 0, off, n);
        this.payload = p;
        this.payloadGot = take;
        return;
      }
    }
  }

  private fail(code: number, message: string): void {
    this.stop();
    this.sink.onConnectionError(code, message);
  }

  /** One whole frame (type, flags and stream id in the fields). */
  private frame(p: Buffer): void {
    const type = this.type;
    const flags = this.flags;
    const sid = this.streamId;
    const sink = this.sink;
    if (this.needSettings) {
      if (type !== FrameType.SETTINGS || (flags & Flags.ACK) !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, this.prefaceLeft === 0 && this.serverPreface ? 'the server preface must be a SETTINGS frame' : 'the client preface must end with a SETTINGS frame');
      this.needSettings = false;
    }
    if (this.contStream !== 0 && (type !== FrameType.CONTINUATION || sid !== this.contStream)) {
      return this.fail(ErrorCode.PROTOCOL_ERROR, 'a frame other than CONTINUATION inside a header block');
    }
    switch (type) {
      case FrameType.DATA: {
        if (sid === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'DATA on stream 0');
        const flow = p.length;
        if ((flags & Flags.PADDED) !== 0) {
          if (p.length < 1) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'padded DATA frame without a pad length');
          const pad = p[0]!;
          if (pad >= p.length) return this.fail(ErrorCode.PROTOCOL_ERROR, 'DATA padding as long as the frame or longer');
          p = p.subarray(1, p.length - pad);
        }
        sink.onData(sid, p, (flags & Flags.END_STREAM) !== 0, flow);
        return;
      }
      case FrameType.HEADERS: {
        if (sid === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'HEADERS on stream 0');
        let start = 0;
        let end = p.length;
        if ((flags & Flags.PADDED) !== 0) {
          if (p.length < 1) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'padded HEADERS frame without a pad length');
          const pad = p[0]!;
          start = 1;
          end -= pad;
        }
        let selfDep = false;
        if ((flags & Flags.PRIORITY) !== 0) {
          if (end - start < 5) return this.fail(end < start + 5 && (flags & Flags.PADDED) !== 0 ? ErrorCode.PROTOCOL_ERROR : ErrorCode.FRAME_SIZE_ERROR, 'HEADERS too short for its priority fields');
          selfDep = (p.readUInt32BE(start) & 0x7fffffff) === sid;
          start += 5;
        }
        if (end < start) return this.fail(ErrorCode.PROTOCOL_ERROR, 'HEADERS padding as long as the frame or longer');
        const frag = p.subarray(start, end);
        const endStream = (flags & Flags.END_STREAM) !== 0;
        if ((flags & Flags.END_HEADERS) !== 0) {
          sink.onHeaders(sid, frag, endStream, selfDep);
          return;
        }
        if (frag.length > this.maxHeaderBlockSize) return this.fail(ErrorCode.ENHANCE_YOUR_CALM, 'header block too large');
        this.contStream = sid;
        this.contEndStream = endStream;
        this.contSelfDep = selfDep;
        this.block = [frag];
        this.blockLen = frag.length;
        return;
      }
      case FrameType.CONTINUATION: {
        if (this.contStream === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'CONTINUATION without a header block');
        this.blockLen += p.length;
        if (this.blockLen > this.maxHeaderBlockSize) return this.fail(ErrorCode.ENHANCE_YOUR_CALM, 'header block too large');
        this.block.push(p);
        if ((flags & Flags.END_HEADERS) === 0) return;
        const block = this.block.length === 1 ? this.block[0]! : Buffer.concat(this.block, this.blockLen);
        this.block = [];
        this.contStream = 0;
        sink.onHeaders(sid, block, this.contEndStream, this.contSelfDep);
        return;
      }
      case FrameType.PRIORITY: {
        if (sid === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (p.length !== 5) return sink.onStreamError(sid, ErrorCode.FRAME_SIZE_ERROR, 'PRIORITY frame not 5 bytes');
        if ((p.readUInt32BE(0) & 0x7fffffff) === sid) return sink.onStreamError(sid, ErrorCode.PROTOCOL_ERROR, 'stream depends on itself');
        return; // ignored (RFC 9113 5.3.2)
      }
      case FrameType.RST_STREAM:
        if (sid === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'RST_STREAM on stream 0');
        if (p.length !== 4) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'RST_STREAM frame not 4 bytes');
        sink.onRstStream(sid, p.readUInt32BE(0));
        return;
      case FrameType.SETTINGS: {
        if (sid !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'SETTINGS on a stream');
        const ack = (flags & Flags.ACK) !== 0;
        if (ack) {
          if (p.length !== 0) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
          sink.onSettings(true, []);
          return;
        }
        if (p.length % 6 !== 0) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'SETTINGS length not a multiple of 6');
        const params: number[] = [];
        for (let i = 0; i < p.length; i += 6) {
          const id = p.readUInt16BE(i);
          const v = p.readUInt32BE(i + 2);
          switch (id) {
            case Setting.ENABLE_PUSH:
            case Setting.ENABLE_CONNECT_PROTOCOL:
              if (v > 1) return this.fail(ErrorCode.PROTOCOL_ERROR, `SETTINGS ${id} must be 0 or 1`);
              break;
            case Setting.INITIAL_WINDOW_SIZE:
              if (v > MAX_WINDOW) return this.fail(ErrorCode.FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1');
              break;
            case Setting.MAX_FRAME_SIZE:
              if (v < DEFAULT_MAX_FRAME_SIZE || v > MAX_MAX_FRAME_SIZE) return this.fail(ErrorCode.PROTOCOL_ERROR, 'SETTINGS_MAX_FRAME_SIZE out of range');
              break;
          }
          params.push(id, v);
        }
        sink.onSettings(false, params);
        return;
      }
      case FrameType.PUSH_PROMISE:
        // Only servers push; a client's PUSH_PROMISE is a connection error (RFC 9113 8.4).
        return this.fail(ErrorCode.PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      case FrameType.PING:
        if (sid !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'PING on a stream');
        if (p.length !== 8) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'PING frame not 8 bytes');
        sink.onPing((flags & Flags.ACK) !== 0, p);
        return;
      case FrameType.GOAWAY:
        if (sid !== 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (p.length < 8) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'GOAWAY frame shorter than 8 bytes');
        sink.onGoaway(p.readUInt32BE(0) & 0x7fffffff, p.readUInt32BE(4), p.subarray(8));
        return;
      case FrameType.WINDOW_UPDATE: {
        if (p.length !== 4) return this.fail(ErrorCode.FRAME_SIZE_ERROR, 'WINDOW_UPDATE frame not 4 bytes');
        const inc = p.readUInt32BE(0) & 0x7fffffff;
        if (inc === 0) {
          if (sid === 0) return this.fail(ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE with a zero increment');
          return sink.onStreamError(sid, ErrorCode.PROTOCOL_ERROR, 'WINDOW_UPDATE with a zero increment');
        }
        sink.onWindowUpdate(sid, inc);
        return;
      }
      default:
        return; // unknown frame types are ignored (RFC 9113 4.1, 5.5)
    }
  }
}

// ------------------------------------------------------------------------------------ writing

const POOL_SIZE = 16 * 1024;
/** Payloads at least this long are queued as they are (one more iovec), shorter ones copied into the pool. */
const COPY_BELOW = 1024;

/**
 * HAND-WRITTEN HOT PATH. Frames queued for one socket write: frame headers and small payloads go
 * into a pooled buffer, large payloads are queued as they are; `take()` returns the buffers of
 * one flush, in order (for `socket.write` of one Buffer, or cork + writes + uncork, i.e. writev).
 */
export class FrameWriter {
  /** The peer's SETTINGS_MAX_FRAME_SIZE: HEADERS over it continue in CONTINUATION frames. */
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  private pool = Buffer.allocUnsafe(POOL_SIZE);
  /** Where the pool's bytes not yet cut into `out` start, and where the next byte goes. */
  private cut = 0;
  private pos = 0;
  private out: Buffer[] = [];
  /** Bytes queued (all buffers of the next flush). */
  queued = 0;

  get empty(): boolean {
    return this.queued === 0;
  }

  /** The buffers queued since the last call, in order; the writer is empty after. */
  take(): Buffer[] {
    this.cutPool();
    const out = this.out;
    this.out = [];
    this.queued = 0;
    return out;
  }

  private cutPool(): void {
    if (this.pos > this.cut) {
      this.out.push(this.pool.subarray(this.cut, this.pos));
      this.cut = this.pos;
    }
  }

  /** Room for `n` bytes in the pool (a new pool when the rest is too small). */
  private reserve(n: number): void {
    if (this.pool.length - this.pos >= n) return;
    this.cutPool();
    this.pool = Buffer.allocUnsafe(Math.max(POOL_SIZE, n));
    this.cut = 0;
    this.pos = 0;
  }

  private header(length: number, type: number, flags: number, streamId: number): void {
    const b = this.pool;
    let p = this.pos;
    b[p++] = length >>> 16;
    b[p++] = (length >>> 8) & 0xff;
    b[p++] = length & 0xff;
    b[p++] = type;
    b[p++] = flags;
    b.writeUInt32BE(streamId >>> 0, p);
    this.pos = p + 4;
    this.queued += FRAME_HEADER_SIZE + length;
  }

  private payload(data: Buffer): void {
    if (data.length === 0) return;
    if (data.length < COPY_BELOW) {
      data.copy(this.pool, this.pos);
      this.pos += data.length;
      return;
    }
    this.cutPool();
    this.out.push(data);
  }

  /** Any frame, as given (also for tests: frames of unknown types, bad lengths, stray flags). */
  frame(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): void {
    this.reserve(FRAME_HEADER_SIZE + (payload.length < COPY_BELOW ? payload.length : 0));
    this.header(payload.length, type, flags, streamId);
    this.payload(payload);
  }

  /** One DATA frame (the caller keeps it within the peer's frame size and windows). */
  data(streamId: number, data: Buffer, endStream: boolean): void {
    this.frame(FrameType.DATA, endStream ? Flags.END_STREAM : 0, streamId, data);
  }

  /** A DATA frame with `padLength` bytes of padding (flow-controlled: 1 + data + padLength). */
  paddedData(streamId: number, data: Buffer, padLength: number, endStream: boolean): void {
    const p = Buffer.alloc(1 + data.length + padLength);
    p[0] = padLength;
    data.copy(p, 1);
    this.frame(FrameType.DATA, Flags.PADDED | (endStream ? Flags.END_STREAM : 0), streamId, p);
  }

  /** A header block: one HEADERS frame, or HEADERS and CONTINUATIONs over the peer's frame size. */
  headers(streamId: number, block: Buffer, endStream: boolean): void {
    const max = this.maxFrameSize;
    const es = endStream ? Flags.END_STREAM : 0;
    if (block.length <= max) {
      this.frame(FrameType.HEADERS, Flags.END_HEADERS | es, streamId, block);
      return;
    }
    this.frame(FrameType.HEADERS, es, streamId, block.subarray(0, max));
    for (let off = max; off < block.length; off += max) {
      const last = off + max >= block.length;
      this.frame(FrameType.CONTINUATION, last ? Flags.END_HEADERS : 0, streamId, block.subarray(off, Math.min(off + max, block.length)));
    }
  }

  /** A PRIORITY frame (never sent by the server; for tests and completeness). */
  priority(streamId: number, dependsOn: number, exclusive: boolean, weight: number): void {
    const p = Buffer.allocUnsafe(5);
    p.writeUInt32BE(((exclusive ? 0x80000000 : 0) | (dependsOn & 0x7fffffff)) >>> 0, 0);
    p[4] = weight & 0xff;
    this.frame(FrameType.PRIORITY, 0, streamId, p);
  }

  rstStream(streamId: number, code: number): void {
    this.reserve(FRAME_HEADER_SIZE + 4);
    this.header(4, FrameType.RST_STREAM, 0, streamId);
    this.pool.writeUInt32BE(code >>> 0, this.pos);
    this.pos += 4;
  }

  /** SETTINGS: `params` flat [id, value, ...]. */
  settings(params: readonly number[]): void {
    const len = (params.length / 2) * 6;
    this.reserve(FRAME_HEADER_SIZE + len);
    this.header(len, FrameType.SETTINGS, 0, 0);
    for (let i = 0; i < params.length; i += 2) {
      this.pool.writeUInt16BE(params[i]!, this.pos);
      this.pool.writeUInt32BE(params[i + 1]! >>> 0, this.pos + 2);
      this.pos += 6;
    }
  }

  settingsAck(): void {
    this.frame(FrameType.SETTINGS, Flags.ACK, 0);
  }

  /** PING with its 8-byte payload (`ack`: the answer to the peer's). */
  ping(payload: Buffer, ack: boolean): void {
    this.frame(FrameType.PING, ack ? Flags.ACK : 0, 0, payload);
  }

  /** PUSH_PROMISE (never sent by this server: push is not supported; for tests and completeness). */
  pushPromise(streamId: number, promisedId: number, block: Buffer): void {
    const p = Buffer.allocUnsafe(4 + block.length);
    p.writeUInt32BE(promisedId & 0x7fffffff, 0);
    block.copy(p, 4);
    this.frame(FrameType.PUSH_PROMISE, Flags.END_HEADERS, streamId, p);
  }

  goaway(lastStreamId: number, code: number, debug: Buffer = EMPTY): void {
    const p = Buffer.allocUnsafe(8 + debug.length);
    p.writeUInt32BE(lastStreamId & 0x7fffffff, 0);
    p.writeUInt32BE(code >>> 0, 4);
    debug.copy(p, 8);
    this.frame(FrameType.GOAWAY, 0, 0, p);
  }

  windowUpdate(streamId: number, increment: number): void {
    this.reserve(FRAME_HEADER_SIZE + 4);
    this.header(4, FrameType.WINDOW_UPDATE, 0, streamId);
    this.pool.writeUInt32BE(increment & 0x7fffffff, this.pos);
    this.pos += 4;
  }

  /** A CONTINUATION frame on its own (for tests: the session's `headers` splits blocks itself). */
  continuation(streamId: number, fragment: Buffer, endHeaders: boolean): void {
    this.frame(FrameType.CONTINUATION, endHeaders ? Flags.END_HEADERS : 0, streamId, fragment);
  }
}

/** One frame as a standalone buffer (tests, rare control frames). */
export function encodeFrame(type: number, flags: number, streamId: number, payload: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload.length);
  b.writeUIntBE(payload.length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(streamId >>> 0, 5);
  payload.copy(b, FRAME_HEADER_SIZE);
  return b;
}
