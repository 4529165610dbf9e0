/**
 * gRPC message framing (the length-prefixed message of the gRPC over HTTP/2 spec): one byte
 * compressed-flag, four bytes big-endian length, then the message. Shared by the gRPC proxy,
 * gRPC-Web and the HTTP/JSON transcoder.
 */

/** Default largest message accepted (grpc-js's default receive limit). */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export const FRAME_HEADER_BYTES = 5;

/** One framed, uncompressed message. */
export function encodeFrame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, FRAME_HEADER_BYTES);
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
 * Splits a byte stream into messages. `push` returns the complete messages found so far; a
 * message larger than `maxMessageBytes` or a compressed one (no grpc-encoding is negotiated)
 * throws a FrameError. `end()` throws when the stream stopped inside a message.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES) {}

  push(chunk: Buffer): Buffer[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < FRAME_HEADER_BYTES) break;
      const head = this.peek(FRAME_HEADER_BYTES);
      const flag = head[0] as number;
      const len = head.readUInt32BE(1);
      if (flag !== 0) throw new FrameError('compressed gRPC message, but no compression was negotiated', 'FRAME_COMPRESSED');
      if (len > this.maxMessageBytes) throw new FrameError(`gRPC message of ${len} bytes exceeds the limit of ${this.maxMessageBytes}`, 'FRAME_TOO_LARGE');
      if (this.buffered < FRAME_HEADER_BYTES + len) break;
      const all = this.take(FRAME_HEADER_BYTES + len);
      out.push(all.subarray(FRAME_HEADER_BYTES));
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
