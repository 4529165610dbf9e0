/**
 * A raw HTTP/2 client for conformance tests: writes frames byte by byte as a test builds them
 * (including frames no well-behaved client sends: bad padding, interleaved CONTINUATION, zero
 * window increments) and reads the server's frames into a queue. Request header blocks use HPACK
 * literals without indexing and without Huffman (RFC 7541 6.2.2), which every decoder must take;
 * response blocks are decoded with meshlet's own HPACK decoder. Frame types, flags, error codes
 * and the frame header come from the codec (src/http/h2/frames.ts).
 */
import * as net from 'node:net';
import { CLIENT_PREFACE as PREFACE, encodeFrame as frame, Flags as F, FrameType as T } from '../../../../../src/http/h2/frames';
import { HpackDecoder } from '../../../../../src/http/h2/hpack';

export { CLIENT_PREFACE as PREFACE, FrameType as T, Flags as F, ErrorCode as E, encodeFrame as frame } from '../../../../../src/http/h2/frames';

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

function hpackInt(value: number, prefixBits: number, first: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [first | value];
  const out = [first | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/** A header block of literals without indexing, no Huffman: [[name, value], ...]. */
export function block(fields: Array<[string, string]>): Buffer {
  const bytes: number[] = [];
  for (const [n, v] of fields) {
    const nb = Buffer.from(n, 'latin1');
    const vb = Buffer.from(v, 'latin1');
    bytes.push(0x00, ...hpackInt(nb.length, 7, 0), ...nb, ...hpackInt(vb.length, 7, 0), ...vb);
  }
  return Buffer.from(bytes);
}

export function request(path: string, method = 'GET', extra: Array<[string, string]> = []): Array<[string, string]> {
  return [[':method', method], [':scheme', 'http'], [':authority', 'conformance.test'], [':path', path], ...extra];
}

export function settings(pairs: Array<[number, number]> = [], ack = false): Buffer {
  const p = Buffer.alloc(pairs.length * 6);
  pairs.forEach(([id, v], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(v >>> 0, i * 6 + 2);
  });
  return frame(T.SETTINGS, ack ? F.ACK : 0, 0, p);
}

export function windowUpdate(stream: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment >>> 0);
  return frame(T.WINDOW_UPDATE, 0, stream, p);
}

export function rst(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(T.RST_STREAM, 0, stream, p);
}

export function goaway(last: number, code: number): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(last, 0);
  p.writeUInt32BE(code, 4);
  return frame(T.GOAWAY, 0, 0, p);
}

/** What a stream's response looked like on the wire. */
export interface Answer {
  headers: Record<string, string>;
  body: Buffer;
  trailers?: Record<string, string>;
  rst?: number;
  frames: Frame[];
}

export class RawH2 {
  readonly frames: Frame[] = [];
  closed = false;
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private readonly decoder = new HpackDecoder();
  /** Index of the next frame `next()` looks at. */
  private cursor = 0;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      while (this.buf.length >= 9) {
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.length < 9 + len) break;
        this.frames.push({ type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) });
        this.buf = this.buf.subarray(9 + len);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  /** Connects, sends the preface and `ourSettings`, and ACKs the server's SETTINGS. */
  static async open(port: number, ourSettings: Array<[number, number]> = []): Promise<RawH2> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.setNoDelay(true);
    const c = new RawH2(socket);
    socket.write(Buffer.concat([PREFACE, settings(ourSettings)]));
    await c.next((f) => f.type === T.SETTINGS && (f.flags & F.ACK) === 0);
    c.send(settings([], true));
    return c;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(...bufs: Buffer[]): void {
    this.socket.write(Buffer.concat(bufs));
  }

  /** The next frame (after the last one returned) that matches, waiting for it; rejects on close or timeout. */
  async next(match: (f: Frame) => boolean = () => true, timeoutMs = 3000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (; this.cursor < this.frames.length; this.cursor++) {
        const f = this.frames[this.cursor]!;
        if (match(f)) {
          this.cursor++;
          return f;
        }
      }
      if (this.closed) throw new Error('connection closed before the frame came');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a frame');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits for the connection to close; the GOAWAY that came before it (if any). */
  async closedWith(timeoutMs = 3000): Promise<{ goaway?: { last: number; code: number } }> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('connection still open');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const g = this.frames.find((f) => f.type === T.GOAWAY);
    return g ? { goaway: { last: g.payload.readUInt32BE(0) & 0x7fffffff, code: g.payload.readUInt32BE(4) } } : {};
  }

  /** The GOAWAY the server sent, waiting for it. */
  async goaway(timeoutMs = 3000): Promise<{ last: number; code: number }> {
    const g = this.frames.find((f) => f.type === T.GOAWAY) ?? (await this.next((f) => f.type === T.GOAWAY, timeoutMs));
    return { last: g.payload.readUInt32BE(0) & 0x7fffffff, code: g.payload.readUInt32BE(4) };
  }

  /**
   * Collects stream `id`'s answer: response headers, body and trailers until END_STREAM, or its
   * RST_STREAM. Header blocks are decoded in arrival order (the HPACK table is per connection).
   * `credit`: sends WINDOW_UPDATEs for the DATA it reads (stream and connection).
   */
  async answer(id: number, opts: { credit?: boolean; timeoutMs?: number } = {}): Promise<Answer> {
    const a: Answer = { headers: {}, body: Buffer.alloc(0), frames: [] };
    const chunks: Buffer[] = [];
    let seenHeaders = false;
    for (;;) {
      const f = await this.next((x) => x.stream === id || (x.type === T.GOAWAY && x.stream === 0), opts.timeoutMs);
      if (f.type === T.GOAWAY) {
        // A GOAWAY that still covers this stream lets it finish.
        if ((f.payload.readUInt32BE(0) & 0x7fffffff) >= id) continue;
        throw new Error(`GOAWAY ${f.payload.readUInt32BE(4)} (last stream ${f.payload.readUInt32BE(0)}) while waiting for stream ${id}`);
      }
      a.frames.push(f);
      if (f.type === T.RST_STREAM) {
        a.rst = f.payload.readUInt32BE(0);
        break;
      }
      if (f.type === T.HEADERS) {
        const fields = this.decodeHeaders(f);
        const h: Record<string, string> = {};
        for (let i = 0; i < fields.length; i += 2) h[fields[i]!] = h[fields[i]!] === undefined ? fields[i + 1]! : `${h[fields[i]!]}, ${fields[i + 1]!}`;
        if (seenHeaders && h[':status'] === undefined) a.trailers = h;
        else if (h[':status'] !== undefined && Number(h[':status']) >= 100 && Number(h[':status']) < 200) {
          // an interim answer: keep looking for the final one
        } else {
          a.headers = h;
          seenHeaders = true;
        }
      } else if (f.type === T.DATA) {
        let p = f.payload;
        if (f.flags & F.PADDED) p = p.subarray(1, p.length - p[0]!);
        chunks.push(p);
        if (opts.credit && f.payload.length > 0) this.send(windowUpdate(0, f.payload.length), windowUpdate(id, f.payload.length));
      }
      if (f.flags & F.END_STREAM && (f.type === T.DATA || f.type === T.HEADERS)) break;
    }
    a.body = Buffer.concat(chunks);
    return a;
  }

  /** Decodes a HEADERS frame's block (END_HEADERS expected: servers here send whole blocks). */
  decodeHeaders(f: Frame): string[] {
    let p = f.payload;
    let pad = 0;
    if (f.flags & F.PADDED) {
      pad = p[0]!;
      p = p.subarray(1);
    }
    if (f.flags & F.PRIORITY) p = p.subarray(5);
    return this.decoder.decode(p.subarray(0, p.length - pad));
  }

  close(): void {
    this.socket.destroy();
  }
}
