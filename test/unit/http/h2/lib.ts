/**
 * Test helpers for meshlet's own HTTP/2 server layer (src/http/h2/): a server on a loopback port
 * that serves every connection with `serveH2` and keeps count of its sessions and streams, and a
 * raw-socket client that writes any frame (also those node's client never sends) and reads the
 * server's frames back through the codec and HPACK.
 */
import * as net from 'node:net';
import { CLIENT_PREFACE, FrameParser, FrameType, FrameWriter, type FrameSink } from '../../../../src/http/h2/frames';
import { HpackDecoder, HpackEncoder } from '../../../../src/http/h2/hpack';
import { serveH2, type H2ServerOptions, type H2Session, type H2Stream, type H2StreamListener } from '../../../../src/http/h2/session';

export interface TestServer {
  port: number;
  sessions: Set<H2Session>;
  /** Streams not yet closed ('close' not emitted). */
  streams: Set<H2Stream>;
  sessionErrors: Error[];
  close(): Promise<void>;
}

export const DEFAULT_OPTS: H2ServerOptions = {
  maxHeaderListPairs: 512,
  settings: { maxHeaderListSize: 64 * 1024, maxConcurrentStreams: 1000, initialWindowSize: 1024 * 1024, enableConnectProtocol: true },
};

export async function startServer(onStream: H2StreamListener, opts: H2ServerOptions = DEFAULT_OPTS): Promise<TestServer> {
  const sessions = new Set<H2Session>();
  const streams = new Set<H2Stream>();
  const sessionErrors: Error[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    serveH2(
      socket,
      opts,
      (s) => {
        sessions.add(s);
        s.on('close', () => sessions.delete(s));
        s.on('error', (e: Error) => sessionErrors.push(e));
      },
      (stream, headers, flags, raw) => {
        streams.add(stream);
        stream.on('close', () => streams.delete(stream));
        onStream(stream, headers, flags, raw);
      },
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    sessions,
    streams,
    sessionErrors,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A seeded PRNG (mulberry32) and helpers drawing from it, for the fuzz tests: one seed replays a whole run. */
export function seeded(seed: number): { rnd: () => number; int: (n: number) => number; pick: <T>(xs: readonly T[]) => T; bytes: (n: number) => Buffer } {
  let a = seed >>> 0;
  const rnd = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const bytes = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  return { rnd, int, pick, bytes };
}

/** Waits until `cond()` holds (polling), or fails after `ms`. */
export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export interface RawFrame {
  type: string;
  id: number;
  code?: number;
  end?: boolean;
  headers?: string[];
  data?: Buffer;
  params?: number[];
  ack?: boolean;
  increment?: number;
  last?: number;
}

/** A frame sink that records every frame decoded (header blocks through `dec`) into `frames`. */
export function recorder(frames: RawFrame[], dec: HpackDecoder): FrameSink {
  return {
    onData: (id, data, end) => frames.push({ type: 'DATA', id, data: Buffer.from(data), end }),
    onHeaders: (id, block, end) => frames.push({ type: 'HEADERS', id, headers: dec.decode(block), end }),
    onRstStream: (id, code) => frames.push({ type: 'RST_STREAM', id, code }),
    onSettings: (ack, params) => frames.push({ type: 'SETTINGS', id: 0, ack, params }),
    onPing: (ack, p) => frames.push({ type: 'PING', id: 0, ack, data: Buffer.from(p) }),
    onGoaway: (last, code) => frames.push({ type: 'GOAWAY', id: 0, last, code }),
    onWindowUpdate: (id, increment) => frames.push({ type: 'WINDOW_UPDATE', id, increment }),
    onStreamError: () => undefined,
    onConnectionError: (code) => frames.push({ type: 'PARSE_ERROR', id: 0, code }),
  };
}

/** A client on a raw socket: sends frames as given, collects the server's frames decoded. */
export class RawClient {
  readonly socket: net.Socket;
  readonly frames: RawFrame[] = [];
  readonly enc = new HpackEncoder();
  private readonly dec = new HpackDecoder();
  readonly w = new FrameWriter();
  closed = false;
  private readonly parser: FrameParser;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.parser = new FrameParser(recorder(this.frames, this.dec), { maxFrameSize: 16_777_215 });
    socket.on('data', (c: Buffer) => this.parser.push(c));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  /** Connects and sends the preface and an empty SETTINGS (unless `preface` is false). */
  static async connect(port: number, preface = true): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
    const c = new RawClient(socket);
    if (preface) {
      c.w.settings([]);
      c.raw(Buffer.concat([CLIENT_PREFACE, ...c.w.take()]));
    }
    return c;
  }

  raw(b: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(b);
  }

  /** Sends what was queued on `w`. */
  send(): void {
    this.raw(Buffer.concat(this.w.take()));
  }

  /** A request HEADERS frame (HPACK-encoded `fields`). */
  request(id: number, fields: string[], endStream: boolean): void {
    this.w.headers(id, this.enc.encode(fields), endStream);
    this.send();
  }

  async waitFor(pred: (f: RawFrame) => boolean, ms = 3000): Promise<RawFrame> {
    let found: RawFrame | undefined;
    await until(() => (found = this.frames.find(pred)) !== undefined, ms, 'a frame');
    return found!;
  }

  async goaway(ms = 3000): Promise<RawFrame> {
    return this.waitFor((f) => f.type === 'GOAWAY', ms);
  }

  async rst(id: number, ms = 3000): Promise<RawFrame> {
    return this.waitFor((f) => f.type === 'RST_STREAM' && f.id === id, ms);
  }

  async response(id: number, ms = 3000): Promise<RawFrame> {
    return this.waitFor((f) => f.type === 'HEADERS' && f.id === id, ms);
  }

  body(id: number): string {
    return Buffer.concat(this.frames.filter((f) => f.type === 'DATA' && f.id === id).map((f) => f.data!)).toString();
  }

  ended(id: number): boolean {
    return this.frames.some((f) => (f.type === 'DATA' || f.type === 'HEADERS') && f.id === id && f.end === true);
  }

  /** Destroys the socket: a FIN, or a reset when the server's frames still sit unread here (timing). */
  close(): void {
    this.socket.destroy();
  }

  /** Goes away cleanly: a FIN, reading on until the server closes too (never a reset). */
  end(): void {
    this.socket.end();
  }

  /** Goes away with a TCP reset (RST), as a client process killed or a tab closed mid-stream. */
  reset(): void {
    this.socket.resetAndDestroy();
  }
}

export const GET = (path = '/'): string[] => [':method', 'GET', ':scheme', 'http', ':path', path, ':authority', 'localhost'];
export const POST = (path = '/'): string[] => [':method', 'POST', ':scheme', 'http', ':path', path, ':authority', 'localhost'];
export { FrameType };
