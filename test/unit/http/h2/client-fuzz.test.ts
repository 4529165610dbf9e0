/**
 * Fuzzing meshlet's own HTTP/2 client (src/http/h2/client.ts) on live connections: a fake server
 * on a real TCP port answers each connection with a random frame sequence drawn from a seeded
 * PRNG: valid responses mixed with malformed frames of every type, bad lengths and padding,
 * broken HPACK blocks, invalid response heads, DATA beyond the windows, WINDOW_UPDATE overflows,
 * bad SETTINGS, GOAWAY and RST_STREAM at odd moments, PUSH_PROMISE (push is disabled),
 * CONTINUATION misuse, flipped bytes, garbage, truncation mid-frame, written in random chunks
 * with pauses. A share of the connections is "targeted": a clean prefix then exactly one
 * protocol violation whose RFC 9113 answer is known, and the client must send that GOAWAY (or
 * RST_STREAM) code.
 *
 * What a user of the client sees is checked: no uncaught exception or unhandled rejection;
 * every request ends in a response or a 'close' with an rstCode/error within a deadline; then
 * the session is destroyed, its socket closed, no stream, pending request, window or drain
 * waiter is left, no handle or timer outlives the run, and the heap is flat over the run.
 * The seed is printed; H2_FUZZ_SEED replays a run (the default is fixed, so CI is deterministic).
 */
import * as net from 'node:net';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import t from 'tap';
import { connect, type H2ClientSession, type H2ClientStream } from '../../../../src/http/h2/client';
import { ErrorCode, FrameParser, FrameType, FrameWriter, Flags, Setting, type FrameSink } from '../../../../src/http/h2/frames';
import { HpackEncoder } from '../../../../src/http/h2/hpack';
import { seeded } from './lib';


const SEED = Number(process.env.H2_FUZZ_SEED ?? 20_261_204);
const CONNECTIONS = Number(process.env.H2_FUZZ_CONNECTIONS ?? 1000);
const PARALLEL = 10;
/** H2_FUZZ_ONLY=n runs only the batch of connection n (the plans are drawn all the same); H2_FUZZ_TRACE adds stream events to the failures. */
const ONLY = process.env.H2_FUZZ_ONLY === undefined ? -1 : Number(process.env.H2_FUZZ_ONLY);
/** Per connection: every request must have closed by then. */
const DEADLINE_MS = 4000;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

interface Plan {
  /** Client options. */
  initialWindowSize: number;
  connectionWindowSize: number;
  maxConcurrentStreams: number;
  requests: { post: number; endStream: boolean; cancelAfterMs: number; paused: boolean }[];
  /** The server's bytes and how they are written. */
  wire: Buffer;
  chunks: number[];
  yields: boolean[];
  /** After the script: wait for the client to close (targeted) or end/destroy after waitMs. */
  waitMs: number;
  ending: 'end' | 'destroy' | 'wait';
  /** Targeted: what the client must send. */
  expect?: { goaway?: number; rst?: { id: number; code: number } };
  /** Streams the script resets with NO_ERROR (a clean close without a response). */
  resetNoError: Set<number>;
  what: string;
}

interface Seen {
  goaway: number[];
  rst: { id: number; code: number }[];
  parseError?: number;
  closed: boolean;
  /** Resolves when the server's side of the connection has closed. */
  serverClosed: Promise<void>;
  onServerClose: () => void;
}

const RESPONSE = (status = 200, extra: string[] = []): string[] => [':status', String(status), ...extra];

t.test(`our client against a fuzzing server (seed ${SEED}, ${CONNECTIONS} connections)`, async (t) => {
  t.comment(`H2_FUZZ_SEED=${SEED}`);
  const { rnd, int, pick, bytes } = seeded(SEED);

  let uncaught = 0;
  const errs: string[] = [];
  const onUncaught = (e: unknown): void => {
    uncaught++;
    errs.push(String((e as Error)?.stack ?? e));
  };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  t.teardown(() => {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });

  // ------------------------------------------------------------------ the server's scripts

  /** Random response frames for the streams 1, 3, 5, 7 (valid and not). */
  const fuzzFrame = (w: FrameWriter, enc: HpackEncoder, ids: number[]): void => {
    const id = rnd() < 0.8 ? pick(ids) : rnd() < 0.5 ? 0 : int(12);
    switch (int(22)) {
      case 0:
      case 1:
      case 2:
        w.headers(id, enc.encode(RESPONSE(pick([200, 200, 204, 304, 404, 500]), rnd() < 0.3 ? ['content-length', String(int(40))] : [])), rnd() < 0.3);
        return;
      case 3:
        w.headers(id, enc.encode(RESPONSE(pick([100, 103]))), rnd() < 0.1);
        return;
      case 4:
        // Invalid heads.
        w.headers(id, enc.encode(pick([['x', 'y'], [':status', 'abc'], [':status', '200', ':path', '/'], [':status', '200', 'Upper', 'x'], [':status', '200', 'connection', 'close'], [':status', '200', 'te', 'gzip'], [':status', '200', 'content-length', 'x']])), rnd() < 0.5);
        return;
      case 5:
        // Trailers (valid or with a pseudo-header).
        w.headers(id, enc.encode(rnd() < 0.8 ? ['grpc-status', '0'] : [':status', '200']), rnd() < 0.8);
        return;
      case 6:
      case 7:
        w.data(id, bytes(rnd() < 0.1 ? 16_384 : int(3000)), rnd() < 0.3);
        return;
      case 8:
        w.paddedData(id, bytes(int(50)), int(60), rnd() < 0.3);
        return;
      case 9:
        w.windowUpdate(id, rnd() < 0.15 ? 0x7fffffff : rnd() < 0.05 ? 0 : int(100_000));
        return;
      case 10:
        w.settings([pick([1, 2, 3, 4, 5, 6, 8, 9]), pick([0, 1, 2, 16_384, 65_535, 2 ** 31 - 1, 2 ** 31, int(2 ** 24), 0xffffffff])]);
        return;
      case 11:
        w.rstStream(id, int(14));
        return;
      case 12:
        w.ping(bytes(8), rnd() < 0.2);
        return;
      case 13:
        w.priority(id, int(12), rnd() < 0.5, int(256));
        return;
      case 14:
        w.continuation(id, rnd() < 0.5 ? enc.encode(['x-c', 'v']) : bytes(int(30)), rnd() < 0.5);
        return;
      case 15: {
        // A header block split into HEADERS + CONTINUATION (sometimes interrupted).
        const block = enc.encode(RESPONSE(200, ['x-long', 'y'.repeat(int(200))]));
        const cut = 1 + int(block.length - 1);
        w.frame(FrameType.HEADERS, rnd() < 0.3 ? Flags.END_STREAM : 0, id, block.subarray(0, cut));
        if (rnd() < 0.2) w.ping(bytes(8), false);
        w.continuation(rnd() < 0.9 ? id : id + 2, block.subarray(cut), true);
        return;
      }
      case 16:
        // HPACK garbage.
        w.frame(FrameType.HEADERS, pick([Flags.END_HEADERS, Flags.END_HEADERS | Flags.END_STREAM, Flags.PADDED | Flags.END_HEADERS, Flags.PRIORITY | Flags.END_HEADERS]), id, bytes(int(40)));
        return;
      case 17:
        w.goaway(pick([0, 1, 3, 5, 7, int(12), 0x7fffffff]), pick([0, 0, 1, 2, 11, int(20)]), bytes(int(10)));
        return;
      case 18:
        w.pushPromise(id, 2 + 2 * int(4), enc.encode([':method', 'GET', ':path', '/p', ':scheme', 'http', ':authority', 'x']));
        return;
      case 19:
        // Bad fixed lengths.
        w.frame(pick([FrameType.RST_STREAM, FrameType.PING, FrameType.WINDOW_UPDATE, FrameType.GOAWAY, FrameType.PRIORITY, FrameType.SETTINGS]), rnd() < 0.8 ? 0 : 1, pick([0, id]), bytes(int(12)));
        return;
      case 20:
        // Over the frame size.
        if (rnd() < 0.3) w.frame(FrameType.DATA, 0, id, bytes(16_385));
        else w.frame(pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xff]), int(256), id, bytes(int(64)));
        return;
      default:
        w.frame(pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xff]), int(256), id, bytes(int(64)));
    }
  };

  /** A valid response's frames for stream `id` (head, body within the smallest windows, end or trailers). */
  const responseFrames = (id: number): ((w: FrameWriter, enc: HpackEncoder) => void)[] => {
    const fs: ((w: FrameWriter, enc: HpackEncoder) => void)[] = [];
    if (rnd() < 0.1) fs.push((w, enc) => w.headers(id, enc.encode(RESPONSE(100)), false));
    const chunks = Array.from({ length: int(4) }, () => int(3000));
    const total = chunks.reduce((a, b) => a + b, 0);
    const trailers = rnd() < 0.3;
    const cl = rnd() < 0.3 ? ['content-length', String(total)] : [];
    fs.push((w, enc) => w.headers(id, enc.encode(RESPONSE(200, cl)), chunks.length === 0 && !trailers));
    chunks.forEach((n, i) => fs.push((w) => (rnd() < 0.2 ? w.paddedData(id, bytes(n), int(20), i === chunks.length - 1 && !trailers) : w.data(id, bytes(n), i === chunks.length - 1 && !trailers))));
    if (trailers) fs.push((w, enc) => w.headers(id, enc.encode(['grpc-status', '0']), true));
    return fs;
  };

  /** A clean prefix on streams other than 1: SETTINGS, PINGs, whole responses, small window updates. */
  const cleanPrefix = (w: FrameWriter, enc: HpackEncoder, ids: number[], settings: number[]): void => {
    w.settings(settings);
    for (let i = int(4); i > 0; i--) {
      const r = int(4);
      if (r === 0) w.ping(bytes(8), false);
      else if (r === 1) w.windowUpdate(0, 1 + int(1000));
      else if (r === 2) w.settingsAck();
      else if (ids.length > 1) {
        const id = ids[1 + int(ids.length - 1)]!;
        w.headers(id, enc.encode(RESPONSE(200)), false);
        w.data(id, bytes(int(100)), true);
      }
    }
  };

  type Violation = { what: string; write: (w: FrameWriter, enc: HpackEncoder) => void; goaway?: number; rst?: number; paused?: boolean; conn?: number; stream?: number };
  const P = ErrorCode.PROTOCOL_ERROR;
  const FS = ErrorCode.FRAME_SIZE_ERROR;
  const FC = ErrorCode.FLOW_CONTROL_ERROR;
  const VIOLATIONS: Violation[] = [
    { what: 'PUSH_PROMISE', goaway: P, write: (w, enc) => w.pushPromise(1, 2, enc.encode([':method', 'GET', ':path', '/', ':scheme', 'http', ':authority', 'x'])) },
    { what: 'CONTINUATION without HEADERS', goaway: P, write: (w, enc) => w.continuation(1, enc.encode(['a', 'b']), true) },
    { what: 'DATA inside a header block', goaway: P, write: (w, enc) => (w.frame(FrameType.HEADERS, 0, 1, enc.encode(RESPONSE())), w.data(1, Buffer.from('x'), false)) },
    { what: 'CONTINUATION on another stream', goaway: P, write: (w, enc) => (w.frame(FrameType.HEADERS, 0, 1, enc.encode(RESPONSE())), w.continuation(3, Buffer.from([0x88]), true)) },
    { what: 'HPACK index 0', goaway: ErrorCode.COMPRESSION_ERROR, write: (w) => w.frame(FrameType.HEADERS, Flags.END_HEADERS, 1, Buffer.from([0x80])) },
    { what: 'HPACK index past the table', goaway: ErrorCode.COMPRESSION_ERROR, write: (w) => w.frame(FrameType.HEADERS, Flags.END_HEADERS, 1, Buffer.from([0xff, 0x80, 0x10])) },
    { what: 'HPACK table size over the limit', goaway: ErrorCode.COMPRESSION_ERROR, write: (w) => w.frame(FrameType.HEADERS, Flags.END_HEADERS, 1, Buffer.from([0x3f, 0xe1, 0xff, 0x03, 0x88])) },
    { what: 'HPACK literal cut short', goaway: ErrorCode.COMPRESSION_ERROR, write: (w) => w.frame(FrameType.HEADERS, Flags.END_HEADERS, 1, Buffer.from([0x00, 0x05, 0x61])) },
    { what: 'SETTINGS_ENABLE_PUSH 2', goaway: P, write: (w) => w.settings([Setting.ENABLE_PUSH, 2]) },
    { what: 'SETTINGS_INITIAL_WINDOW_SIZE 2^31', goaway: FC, write: (w) => w.settings([Setting.INITIAL_WINDOW_SIZE, 2 ** 31]) },
    { what: 'SETTINGS_MAX_FRAME_SIZE 16383', goaway: P, write: (w) => w.settings([Setting.MAX_FRAME_SIZE, 16_383]) },
    { what: 'SETTINGS_MAX_FRAME_SIZE 2^24', goaway: P, write: (w) => w.settings([Setting.MAX_FRAME_SIZE, 2 ** 24]) },
    { what: 'SETTINGS of 5 bytes', goaway: FS, write: (w) => w.frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5)) },
    { what: 'SETTINGS ACK with a payload', goaway: FS, write: (w) => w.frame(FrameType.SETTINGS, Flags.ACK, 0, Buffer.alloc(6)) },
    { what: 'SETTINGS on a stream', goaway: P, write: (w) => w.frame(FrameType.SETTINGS, 0, 1, Buffer.alloc(0)) },
    { what: 'PING of 7 bytes', goaway: FS, write: (w) => w.frame(FrameType.PING, 0, 0, Buffer.alloc(7)) },
    { what: 'PING on a stream', goaway: P, write: (w) => w.frame(FrameType.PING, 0, 1, Buffer.alloc(8)) },
    { what: 'WINDOW_UPDATE 0 on the connection', goaway: P, write: (w) => w.frame(FrameType.WINDOW_UPDATE, 0, 0, Buffer.alloc(4)) },
    { what: 'connection window overflow', goaway: FC, write: (w) => (w.windowUpdate(0, 0x7fffffff), w.windowUpdate(0, 0x7fffffff)) },
    { what: 'WINDOW_UPDATE of 3 bytes', goaway: FS, write: (w) => w.frame(FrameType.WINDOW_UPDATE, 0, 1, Buffer.alloc(3)) },
    { what: 'RST_STREAM of 3 bytes', goaway: FS, write: (w) => w.frame(FrameType.RST_STREAM, 0, 1, Buffer.alloc(3)) },
    { what: 'RST_STREAM on stream 0', goaway: P, write: (w) => w.rstStream(0, 0) },
    { what: 'GOAWAY of 7 bytes', goaway: FS, write: (w) => w.frame(FrameType.GOAWAY, 0, 0, Buffer.alloc(7)) },
    { what: 'GOAWAY on a stream', goaway: P, write: (w) => w.frame(FrameType.GOAWAY, 0, 1, Buffer.alloc(8)) },
    { what: 'DATA on stream 0', goaway: P, write: (w) => w.frame(FrameType.DATA, 0, 0, Buffer.alloc(3)) },
    { what: 'HEADERS on stream 0', goaway: P, write: (w, enc) => w.frame(FrameType.HEADERS, Flags.END_HEADERS, 0, enc.encode(RESPONSE())) },
    { what: 'DATA padding too long', goaway: P, write: (w) => w.frame(FrameType.DATA, Flags.PADDED, 1, Buffer.from([5, 1, 2])) },
    { what: 'HEADERS padding too long', goaway: P, write: (w) => w.frame(FrameType.HEADERS, Flags.PADDED | Flags.END_HEADERS, 1, Buffer.from([9, 0x88])) },
    { what: 'a frame over SETTINGS_MAX_FRAME_SIZE', goaway: FS, write: (w) => w.frame(pick([FrameType.DATA, FrameType.HEADERS, 0xee]), 0, 1, Buffer.alloc(16_385)) },
    { what: 'DATA on an even stream', goaway: P, write: (w) => w.data(2, Buffer.from('x'), false) },
    { what: 'HEADERS on an idle stream', goaway: P, write: (w, enc) => w.headers(101, enc.encode(RESPONSE()), true) },
    { what: 'RST_STREAM on an idle stream', goaway: P, write: (w) => w.rstStream(99, ErrorCode.CANCEL) },
    { what: 'WINDOW_UPDATE on an idle stream', goaway: P, write: (w) => w.windowUpdate(97, 10) },
    {
      what: 'DATA beyond the connection window',
      goaway: FC,
      paused: true,
      conn: 65_535,
      stream: 1 << 20,
      write: (w, enc) => {
        w.headers(1, enc.encode(RESPONSE()), false);
        for (let i = 0; i < 5; i++) w.data(1, Buffer.alloc(16_384), false);
      },
    },
    {
      what: 'DATA beyond the stream window',
      rst: FC,
      paused: true,
      stream: 16_384,
      write: (w, enc) => {
        w.headers(1, enc.encode(RESPONSE()), false);
        w.data(1, Buffer.alloc(16_384), false);
        w.data(1, Buffer.alloc(1), false);
      },
    },
    { what: 'stream window overflow', rst: FC, write: (w) => (w.windowUpdate(1, 0x7fffffff), w.windowUpdate(1, 0x7fffffff)) },
    { what: 'WINDOW_UPDATE 0 on a stream', rst: P, write: (w) => w.frame(FrameType.WINDOW_UPDATE, 0, 1, Buffer.alloc(4)) },
    { what: 'PRIORITY of 4 bytes', rst: FS, write: (w) => w.frame(FrameType.PRIORITY, 0, 1, Buffer.alloc(4)) },
    { what: 'DATA before the head', rst: P, write: (w) => w.data(1, Buffer.from('x'), false) },
    { what: 'a head without :status', rst: P, write: (w, enc) => w.headers(1, enc.encode(['x', 'y']), false) },
    { what: 'a head with a request pseudo-header', rst: P, write: (w, enc) => w.headers(1, enc.encode(RESPONSE(200, [':path', '/'])), false) },
    { what: 'a head with a connection header', rst: P, write: (w, enc) => w.headers(1, enc.encode(RESPONSE(200, ['connection', 'close'])), false) },
    { what: 'a 1xx head with END_STREAM', rst: P, write: (w, enc) => w.headers(1, enc.encode(RESPONSE(103)), true) },
    { what: 'trailers without END_STREAM', rst: P, write: (w, enc) => (w.headers(1, enc.encode(RESPONSE()), false), w.headers(1, enc.encode(['x-t', '1']), false)) },
    { what: 'a body over its content-length', rst: P, write: (w, enc) => (w.headers(1, enc.encode(RESPONSE(200, ['content-length', '2'])), false), w.data(1, Buffer.from('abc'), true)) },
  ];

  const plan = (): Plan => {
    const nreq = 1 + int(4);
    const ids = Array.from({ length: nreq }, (_, i) => 1 + 2 * i);
    const targeted = rnd() < 0.4 ? pick(VIOLATIONS) : undefined;
    const p: Plan = {
      initialWindowSize: targeted?.stream ?? pick([65_535, 16_384, 1 << 20]),
      connectionWindowSize: targeted?.conn ?? pick([65_535, 1 << 20]),
      maxConcurrentStreams: pick([1, 100]),
      requests: ids.map((id) => ({
        post: targeted !== undefined && id === 1 ? 0 : rnd() < 0.3 ? int(rnd() < 0.3 ? 200_000 : 2000) : -1,
        endStream: rnd() < 0.5,
        cancelAfterMs: targeted === undefined && rnd() < 0.1 ? int(10) : -1,
        paused: targeted?.paused === true && id === 1,
      })),
      wire: Buffer.alloc(0),
      chunks: [],
      yields: [],
      waitMs: int(15),
      ending: pick(['end', 'destroy'] as const),
      resetNoError: new Set(),
      what: targeted?.what ?? 'random',
    };
    const enc = new HpackEncoder();
    const w = new FrameWriter();
    const out: Buffer[] = [];
    if (targeted !== undefined) {
      // The request on stream 1 must be open when the violation comes: the others are answered first.
      p.maxConcurrentStreams = 100;
      cleanPrefix(w, enc, ids, rnd() < 0.5 ? [] : [Setting.MAX_CONCURRENT_STREAMS, 100, Setting.INITIAL_WINDOW_SIZE, 65_535]);
      targeted.write(w, enc);
      out.push(...w.take());
      p.ending = 'wait';
      p.expect = targeted.goaway !== undefined ? { goaway: targeted.goaway } : { rst: { id: 1, code: targeted.rst! } };
    } else {
      // A SETTINGS first (most of the time), then anything.
      if (rnd() < 0.9) w.settings(rnd() < 0.7 ? [] : [Setting.INITIAL_WINDOW_SIZE, pick([0, 1, 100, 65_535, 1 << 20]), Setting.MAX_CONCURRENT_STREAMS, pick([0, 1, 2, 100]), Setting.MAX_FRAME_SIZE, pick([16_384, 65_536]), Setting.HEADER_TABLE_SIZE, pick([0, 100, 4096, 65_536])]);
      if (rnd() < 0.5) {
        // Mostly valid responses (within the windows), with a random frame between now and then:
        // GOAWAY, RST_STREAM, SETTINGS and the rest at odd moments of a response.
        const queues = ids.map((id) => responseFrames(id));
        while (queues.some((q) => q.length > 0)) {
          if (rnd() < 0.1) fuzzFrame(w, enc, ids);
          const q = pick(queues.filter((x) => x.length > 0));
          q.shift()!(w, enc);
          out.push(...w.take());
        }
      } else {
        const count = int(30);
        for (let i = 0; i < count; i++) {
          fuzzFrame(w, enc, ids);
          out.push(...w.take());
        }
      }
      out.push(...w.take());
    }
    let wire = Buffer.concat(out);
    if (targeted === undefined) {
      if (rnd() < 0.1) {
        wire = Buffer.from(wire);
        for (let i = 0; i < 1 + int(5); i++) wire[int(Math.max(1, wire.length))] = int(256);
      }
      if (rnd() < 0.1) wire = wire.subarray(0, int(wire.length)); // cut short, maybe mid-frame
      if (rnd() < 0.05) wire = Buffer.concat([wire, bytes(int(100))]); // garbage
      if (rnd() < 0.03) wire = Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n');
    }
    p.wire = wire;
    const noop = (): void => undefined;
    new FrameParser({ onData: noop, onHeaders: noop, onSettings: noop, onPing: noop, onGoaway: noop, onWindowUpdate: noop, onStreamError: noop, onConnectionError: noop, onRstStream: (id, code) => code === 0 && p.resetNoError.add(id) }, { maxFrameSize: 16_777_215 }).push(wire);
    for (let off = 0; off < wire.length; ) {
      const n = 1 + int(rnd() < 0.3 ? 9 : rnd() < 0.5 ? 200 : 20_000);
      p.chunks.push(n);
      p.yields.push(rnd() < 0.15);
      off += n;
    }
    return p;
  };

  // ------------------------------------------------------------------ the fake server

  /** The plan for the next connection the server accepts (the client connects one at a time per plan). */
  const forPort = new Map<number, { plan: Plan; seen: Seen }>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    accepted.set(sock.remotePort!, sock);
    match(sock.remotePort!);
  });
  /** Accepted sockets whose plan is not registered yet (accept and the client's 'connect' race). */
  const accepted = new Map<number, net.Socket>();
  const match = (p: number): void => {
    const sock = accepted.get(p);
    const entry = forPort.get(p);
    if (sock === undefined || entry === undefined) return;
    accepted.delete(p);
    void serve(sock, entry.plan, entry.seen);
  };
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;

  const serve = async (sock: net.Socket, p: Plan, seen: Seen): Promise<void> => {
    let wake: (() => void) | undefined;
    const sink: FrameSink = {
      onData: () => undefined,
      onHeaders: () => undefined,
      onRstStream: (id, code) => {
        seen.rst.push({ id, code });
        wake?.();
      },
      onSettings: () => undefined,
      onPing: () => undefined,
      onGoaway: (_last, code) => {
        seen.goaway.push(code);
        wake?.();
      },
      onWindowUpdate: () => undefined,
      onStreamError: () => undefined,
      onConnectionError: (code) => (seen.parseError = code),
    };
    const parser = new FrameParser(sink, { expectPreface: true, maxFrameSize: 16_777_215, maxHeaderBlockSize: 1 << 24 });
    sock.on('data', (c: Buffer) => parser.push(c));
    sock.on('close', () => {
      seen.closed = true;
      seen.onServerClose();
      wake?.();
    });
    let off = 0;
    for (let i = 0; i < p.chunks.length && !sock.destroyed; i++) {
      sock.write(p.wire.subarray(off, off + p.chunks[i]!));
      off += p.chunks[i]!;
      if (p.yields[i]) await new Promise((r) => setImmediate(r));
    }
    if (p.ending === 'wait') {
      // Until the client answers the violation (or gives up on the connection), then close.
      await new Promise<void>((r) => {
        const done = (): void => {
          if (seen.closed || seen.goaway.length > 0 || (p.expect?.rst !== undefined && seen.rst.some((x) => x.id === p.expect!.rst!.id))) {
            clearTimeout(timer);
            r();
          }
        };
        const timer = setTimeout(r, 1000);
        wake = done;
        done();
      });
      wake = undefined;
    } else await new Promise((r) => setTimeout(r, p.waitMs));
    if (p.ending === 'end' || p.ending === 'wait') sock.end();
    sock.destroy();
  };

  // ------------------------------------------------------------------ the client side

  interface Result {
    session: H2ClientSession;
    outcomes: { id: number; status?: number; ended: boolean; rstCode: number; error?: string; closed: boolean }[];
    timedOut: boolean;
  }

  const runOne = async (p: Plan, seen: Seen): Promise<Result> => {
    const local = await freePortSocket();
    forPort.set(local.localPort, { plan: p, seen });
    match(local.localPort);
    const session = connect(`http://127.0.0.1:${port}`, {
      settings: { initialWindowSize: p.initialWindowSize, maxConcurrentStreams: 100 },
      connectionWindowSize: p.connectionWindowSize,
      createConnection: () => local.socket,
    });
    session.on('error', () => undefined);
    const sessionClosed = new Promise<void>((r) => session.once('close', () => r()));
    const socketClosed = new Promise<void>((r) => (local.socket.destroyed ? r() : local.socket.once('close', () => r())));
    const outcomes: Result['outcomes'] = [];
    const done: Promise<void>[] = [];
    const timers: NodeJS.Timeout[] = [];
    for (const rq of p.requests) {
      let s: H2ClientStream;
      try {
        s = session.request({ ':method': rq.post >= 0 ? 'POST' : 'GET', ':path': '/', ':scheme': 'http', ':authority': 'fuzz.test' }, { endStream: rq.post < 0 && rq.endStream });
      } catch (e) {
        outcomes.push({ id: 1 + 2 * outcomes.length, ended: false, rstCode: -1, error: (e as { code?: string }).code, closed: true });
        continue;
      }
      const o: Result['outcomes'][number] = { id: 1 + 2 * outcomes.length, ended: false, rstCode: 0, closed: false };
      outcomes.push(o);
      s.on('response', (h: Record<string, unknown>) => (o.status = Number(h[':status'])));
      s.on('error', (e: Error & { code?: string }) => (o.error = e.code ?? e.message));
      s.on('end', () => (o.ended = true));
      if (process.env.H2_FUZZ_TRACE !== undefined) {
        const ev = ((o as unknown as { ev: string[] }).ev = [] as string[]);
        for (const e of ['response', 'headers', 'end', 'finish', 'aborted', 'error', 'close', 'trailers']) s.on(e, () => ev.push(`${e}:${s.id}:${s.rstCode}:${session.sessionCode}`));
      }
      if (!rq.paused) s.resume();
      done.push(
        new Promise<void>((r) =>
          s.on('close', () => {
            o.closed = true;
            o.rstCode = s.rstCode;
            r();
          }),
        ),
      );
      if (rq.post >= 0) {
        if (rq.endStream) s.end(Buffer.alloc(rq.post));
        else {
          s.write(Buffer.alloc(rq.post >> 1));
          setImmediate(() => s.end(Buffer.alloc(rq.post - (rq.post >> 1))));
        }
      } else if (!rq.endStream) s.end();
      if (rq.cancelAfterMs >= 0) timers.push(setTimeout(() => s.close(ErrorCode.CANCEL), rq.cancelAfterMs));
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all([...done, sessionClosed, socketClosed, seen.serverClosed]).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), DEADLINE_MS))),
    ]);
    clearTimeout(timer);
    for (const x of timers) clearTimeout(x);
    forPort.delete(local.localPort);
    return { session, outcomes, timedOut };
  };

  /** A socket connected to the server; its local port names the plan on the server side. */
  const freePortSocket = async (): Promise<{ socket: net.Socket; localPort: number }> => {
    const socket = new net.Socket();
    const localPort = await new Promise<number>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect({ port, host: '127.0.0.1' });
      socket.once('connect', () => resolve(socket.localPort!));
    });
    return { socket, localPort };
  };

  const failures: string[] = [];
  const fail = (i: number, p: Plan, msg: string): void => {
    if (failures.length < 30) failures.push(`#${i} (${p.what}): ${msg}`);
  };
  let goawaysChecked = 0;
  let rstChecked = 0;
  let responses = 0;
  let heapAt100 = 0;
  const handlesBefore = process.getActiveResourcesInfo().length;

  for (let i = 0; i < CONNECTIONS; i += PARALLEL) {
    const plans = Array.from({ length: Math.min(PARALLEL, CONNECTIONS - i) }, plan);
    const seens = plans.map((): Seen => {
      let onServerClose!: () => void;
      const serverClosed = new Promise<void>((r) => (onServerClose = r));
      return { goaway: [], rst: [], closed: false, serverClosed, onServerClose };
    });
    if (ONLY >= 0 && (ONLY < i || ONLY >= i + PARALLEL)) continue;
    const results = await Promise.all(plans.map((p, k) => runOne(p, seens[k]!)));
    for (let k = 0; k < results.length; k++) {
      const { session, outcomes, timedOut } = results[k]!;
      const p = plans[k]!;
      const seen = seens[k]!;
      const n = i + k;
      const x = session as unknown as { streams: Map<number, unknown>; pending: unknown[]; windowWaiters: unknown[]; drainWaiters: unknown[]; tails: unknown[] };
      if (timedOut) fail(n, p, `not settled in ${DEADLINE_MS} ms: ${JSON.stringify(outcomes)} destroyed ${session.destroyed} open ${session.openStreams} pending ${session.pendingStreams}`);
      for (const o of outcomes) {
        if (o.status !== undefined && o.ended && o.rstCode === 0) responses++;
        // RST_STREAM NO_ERROR before the response closes the stream cleanly, as node's client does.
        else if (o.closed && o.rstCode === 0 && o.error === undefined && !(o.status !== undefined && o.ended) && !p.resetNoError.has(o.id)) fail(n, p, `a stream closed with no response, no code and no error: ${JSON.stringify(o)}`);
      }
      if (!session.destroyed) fail(n, p, 'session not destroyed');
      if (!session.socket.destroyed) fail(n, p, 'socket not destroyed');
      if (x.streams.size !== 0 || x.pending.length !== 0 || x.windowWaiters.length !== 0 || x.drainWaiters.length !== 0 || x.tails.length !== 0) {
        fail(n, p, `left: streams ${x.streams.size} pending ${x.pending.length} windowWaiters ${x.windowWaiters.length} drainWaiters ${x.drainWaiters.length} tails ${x.tails.length}`);
      }
      for (const code of seen.goaway) if (code > ErrorCode.HTTP_1_1_REQUIRED) fail(n, p, `GOAWAY with code ${code}`);
      if (seen.parseError !== undefined) fail(n, p, `the client sent a malformed frame (server parser: ${seen.parseError})`);
      if (p.expect?.goaway !== undefined) {
        goawaysChecked++;
        if (seen.goaway[0] !== p.expect.goaway) fail(n, p, `GOAWAY ${JSON.stringify(seen.goaway)}, expected ${p.expect.goaway}; RST_STREAM ${JSON.stringify(seen.rst)}; streams ${JSON.stringify(outcomes)}`);
      }
      if (p.expect?.rst !== undefined) {
        rstChecked++;
        const r = seen.rst.find((y) => y.id === p.expect!.rst!.id);
        if (r?.code !== p.expect.rst.code) fail(n, p, `RST_STREAM ${JSON.stringify(seen.rst)}, expected ${JSON.stringify(p.expect.rst)}; GOAWAY ${JSON.stringify(seen.goaway)}`);
        else if (outcomes[0]!.rstCode !== p.expect.rst.code) fail(n, p, `stream 1 rstCode ${outcomes[0]!.rstCode}`);
      }
    }
    if (i + PARALLEL === 100) {
      gc();
      heapAt100 = process.memoryUsage().heapUsed;
    }
  }
  await new Promise((r) => setTimeout(r, 50));
  gc();
  const heapEnd = process.memoryUsage().heapUsed;
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  await new Promise((r) => setImmediate(r));

  t.same(failures, [], 'every connection settled, cleaned up and answered violations as RFC 9113 says');
  t.equal(uncaught, 0, `no uncaught exception or unhandled rejection ${errs.slice(0, 3).join('\n')}`);
  t.ok(responses > CONNECTIONS / 10, `responses were received (${responses}), not only errors`);
  t.ok(goawaysChecked > CONNECTIONS / 10 && rstChecked > CONNECTIONS / 20, `targeted violations checked (${goawaysChecked} GOAWAY, ${rstChecked} RST_STREAM)`);
  t.ok(heapEnd - heapAt100 < 16 * 1024 * 1024, `heap flat over the run (${((heapEnd - heapAt100) / 1048576).toFixed(1)} MiB after the first 100 connections)`);
  t.ok(process.getActiveResourcesInfo().length <= handlesBefore, `no handle or timer left (${process.getActiveResourcesInfo().join(', ')})`);
});
