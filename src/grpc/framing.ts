/**
 * gRPC's length-prefixed messages (PROTOCOL-HTTP2.md): 1 flag byte (bit 0: compressed; gRPC-Web
 * uses bit 7 for its trailer frame), a 4-byte big-endian length, the payload.
 *
 * - `encodeFrame` / `FrameDecoder`: whole frames, for gRPC-Web trailers and for tests;
 * - `MessageDecoder`: whole uncompressed messages, for the HTTP/JSON transcoder;
 * - `MessageSizeGuard`: what the proxy runs over every gRPC body. It never buffers a message: it
 *   follows the prefixes as bytes stream past and says how much may be forwarded, holding back at
 *   most the 4 bytes of a split prefix, so an oversized message is stopped before any of it leaves.
 */

/** Default largest message (grpc-js's default receive limit). */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export const HEADER_BYTES = 5;
export const FLAG_COMPRESSED = 0x01;
/** gRPC-Web: the frame carries the trailers, as an HTTP/1 header block. */
export const FLAG_TRAILERS = 0x80;

export function encodeFrame(payload: Uint8Array, flags = 0): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  out[0] = flags;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, HEADER_BYTES);
  return out;
}

export interface Frame {
  flags: number;
  payload: Buffer;
}

/** Splits a byte stream into frames. `maxBytes` bounds one frame's payload. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly maxBytes = 4 * 1024 * 1024) {}

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Frame[] = [];
    while (this.buf.length >= HEADER_BYTES) {
      const len = this.buf.readUInt32BE(1);
      if (len > this.maxBytes) throw new Error(`gRPC message of ${len} bytes is over the limit of ${this.maxBytes}`);
      if (this.buf.length < HEADER_BYTES + len) break;
      out.push({ flags: this.buf[0] as number, payload: this.buf.subarray(HEADER_BYTES, HEADER_BYTES + len) });
      this.buf = this.buf.subarray(HEADER_BYTES + len);
    }
    return out;
  }

  /** Bytes of an incomplete frame still held. */
  get pending(): number {
    return this.buf.length;
  }
}

export interface GuardResult {
  /** Bytes that may be forwarded now (a prefix of the input, plus any held-back bytes before it). */
  out: Buffer;
  /** Set when a message announced more than the limit: its size. Nothing of it is in `out`. */
  tooLarge?: number;
}

/** Follows message boundaries in a gRPC body and stops the first message over `maxBytes`. */
export class MessageSizeGuard {
  /** Bytes of the current message's payload still to pass; -1 while reading a prefix. */
  private left = -1;
  private held: Buffer | undefined;
  failed = false;

  constructor(private readonly maxBytes: number) {}

  push(chunk: Buffer): GuardResult {
    if (this.failed) return { out: Buffer.alloc(0) };
    let data = chunk;
    if (this.held) {
      data = Buffer.concat([this.held, chunk]);
      this.held = undefined;
    }
    let i = 0;
    while (i < data.length) {
      if (this.left > 0) {
        const take = Math.min(this.left, data.length - i);
        this.left -= take;
        i += take;
        if (this.left === 0) this.left = -1;
        continue;
      }
      // At a prefix.
      if (data.length - i < HEADER_BYTES) {
        this.held = Buffer.from(data.subarray(i));
        return { out: data.subarray(0, i) };
      }
      const len = data.readUInt32BE(i + 1);
      if (len > this.maxBytes) {
        this.failed = true;
        return { out: data.subarray(0, i), tooLarge: len };
      }
      i += HEADER_BYTES;
      this.left = len === 0 ? -1 : len;
    }
    return { out: data };
  }
}

/** gRPC-Web trailer frame: `name: value\r\n` lines, lower-case names, flag 0x80. */
export function encodeTrailerFrame(trailers: Record<string, string | string[] | number | undefined>): Buffer {
  let block = '';
  for (const name in trailers) {
    const v = trailers[name];
    if (v === undefined || name.charCodeAt(0) === 58) continue;
    for (const x of Array.isArray(v) ? v : [v]) block += `${name.toLowerCase()}: ${x}\r\n`;
  }
  return encodeFrame(Buffer.from(block, 'latin1'), FLAG_TRAILERS);
}

export function parseTrailerBlock(payload: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of payload.toString('latin1').split('\r\n')) {
    const c = line.indexOf(':');
    if (c <= 0) continue;
    const name = line.slice(0, c).trim().toLowerCase();
    const v = line.slice(c + 1).trim();
    out[name] = out[name] === undefined ? v : `${out[name]}, ${v}`;
  }
  return out;
}

export class FrameError extends Error {
  constructor(
    message: string,
    readonly code: 'FRAME_TOO_LARGE' | 'FRAME_COMPRESSED' | 'FRAME_TRUNCATED',
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Splits a byte stream into whole messages (the transcoder decodes each one): `push` returns the
 * complete messages found so far. `push` returns the complete messages found so far; a
 * message larger than `maxMessageBytes` or a compressed one (no grpc-encoding is negotiated)
 * throws a FrameError. `end()` throws when the stream stopped inside a message.
 */
export class MessageDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES) {}

  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < HEADER_BYTES) break;
      const head = this.peek(HEADER_BYTES);
      const flag = head[0] as number;
      const len = head.readUInt32BE(1);
      if (flag !== 0) throw new FrameError('compressed gRPC message, but no compression was negotiated', 'FRAME_COMPRESSED');
      if (len > this.maxMessageBytes) throw new FrameError(`gRPC message of ${len} bytes exceeds the limit of ${this.maxMessageBytes}`, 'FRAME_TOO_LARGE');
      if (this.buffered < HEADER_BYTES + len) break;
      const all = this.take(HEADER_BYTES + len);
      out.push(all.subarray(HEADER_BYTES));
    }
    return out;
  }

  end(): void {
    if (this.buffered > 0) throw new FrameError(`gRPC stream ended inside a message (${this.buffered} bytes left)`, 'FRAME_TRUNCATED');
  }

  private peek(n: number): Buffer {
    if ((this.chunks[0] as Buffer).length >= n) return this.chunks[0] as Buffer;
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
