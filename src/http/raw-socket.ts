/**
 * Reads and writes of a plain TCP socket straight through its stream handle, for the HTTP/1.1
 * server and client (h1-server.ts, h1-client.ts): the hot path of every HTTP/1.1 request.
 *
 * Why hand-written: node's net.Socket runs every read through a Readable (a Buffer per read,
 * `push`, a `'data'` emit, a `maybeReadMore` tick) and every write through a Writable (state,
 * a WriteWrap object, an after-write tick). The profile of the HTTP/1.1 full chain put these at
 * ~2.8 µs (server read) and ~1.5 µs per write (docs/performance.md, "HTTP/1.1 full chain: where
 * each microsecond goes"). Measured with this module (alternating A/B, bench/cpu.js --gc, same
 * document, "HTTP/1.1 socket I/O through the stream handle"): bytes allocated per request −10 % on
 * the full chain and −12 % over the two-sidecar hop; CPU per request 56.0 -> 51.5 µs (h1) and
 * 98.0 -> 86.5 µs (hop, both sidecars), medians of five rounds.
 *
 * - Reads use node's own user-buffer mode (what `net.connect({ onread })` does, which the
 *   upstream client has always used): the accepted socket's handle reads into one shared buffer
 *   and node's `onStreamRead` hands each read to a callback instead of the Readable. Node keeps
 *   doing EOF ('end'), read errors (destroy), and pause/resume (net.Socket's pause/resume stop and
 *   start the handle in this mode). `releaseReads` turns the socket back into an ordinary
 *   Readable for a tunnel (WebSocket): each read is then copied and pushed.
 * - Writes go to the handle (`writeLatin1String`, `writeBuffer`, `writev`) with one reusable
 *   request object while they complete at once (the usual case on loopback and on a LAN); a write
 *   the kernel does not take whole stays queued in libuv and keeps its request object; `send`
 *   returns false while 16 KiB or more are queued and the socket emits 'drain' once they are
 *   written (the contract of `socket.write`). A write error destroys the socket on the next tick,
 *   as the Writable does. Ordering with the Writable is kept: when the Writable holds anything
 *   (connecting, corked, a write of its own pending) `send` writes through it; the Writable's own
 *   writes and `end()` (a shutdown, which libuv queues behind pending writes) go to the same libuv
 *   queue.
 *
 * Private API (net.Socket's user-buffer symbols, the `stream_wrap` binding's WriteWrap and shared
 * state): what is needed is looked up once at load; if the shape is not there (another Node
 * version), or the socket is TLS (TLSWrap completes writes asynchronously and keeps its own
 * buffers), everything goes through the ordinary stream API.
 */
import * as net from 'node:net';
import { getSystemErrorName } from 'node:util';

interface StreamHandle {
  reading?: boolean;
  writeQueueSize: number;
  useUserBuffer(buf: Uint8Array): void;
  writeLatin1String(req: WriteReq, data: string): number;
  writeBuffer(req: WriteReq, data: Uint8Array): number;
  writev(req: WriteReq, chunks: unknown[], allBuffers: boolean): number;
}

interface WriteReq {
  handle: StreamHandle | null;
  oncomplete: (this: WriteReq, status: number) => void;
  socket: net.Socket | null;
  /** What the pending write reads from (kept alive until it completes). */
  data: unknown;
}

interface RawState {
  /** Writes queued in libuv (not yet completed). */
  pending: number;
  /** A `send` returned false: emit 'drain' once the queue is empty. */
  needDrain: boolean;
  /** A write failed: the socket is being destroyed. */
  failed: boolean;
}

type Bag = Record<symbol, unknown>;

/** The Writable's default high-water mark for sockets (Node 20): `send` returns false at this much queued. */
const HIGH_WATER = 16 * 1024;

// --- shape detection, once ---

let kBuffer: symbol | undefined;
let kBufferCb: symbol | undefined;
try {
  const probe = new net.Socket();
  for (const s of Object.getOwnPropertySymbols(probe)) {
    if (s.description === 'kBuffer') kBuffer = s;
    else if (s.description === 'kBufferCb') kBufferCb = s;
  }
} catch {
  // no probe: stream path
}

interface StreamWrapBinding {
  WriteWrap: new () => WriteReq;
  streamBaseState: Int32Array;
  kLastWriteWasAsync: number;
}

let binding: StreamWrapBinding | undefined;
try {
  const b = (process as unknown as { binding(name: string): StreamWrapBinding }).binding('stream_wrap');
  if (typeof b.WriteWrap === 'function' && b.streamBaseState instanceof Int32Array && typeof b.kLastWriteWasAsync === 'number') binding = b;
} catch {
  // not available: stream path
}

const READS = kBuffer !== undefined && kBufferCb !== undefined && process.env.MESHLET_RAW_SOCKET !== 'off';
const WRITES = binding !== undefined && process.env.MESHLET_RAW_SOCKET !== 'off';
const state = binding?.streamBaseState;
const kAsync = binding?.kLastWriteWasAsync ?? 0;
const kRaw = Symbol('meshlet.rawSocket');

/** Whether this Node offers what the module needs (for tests and the docs). */
export const rawSupport = { reads: READS, writes: WRITES };

/** Where every raw-read socket's reads land: parsing is synchronous, nothing keeps a view of it. */
const readBuffer = Buffer.allocUnsafe(64 * 1024);

function handleOf(socket: net.Socket): StreamHandle | null {
  return (socket as unknown as { _handle: StreamHandle | null })._handle;
}

// --- reads ---

/**
 * Reads of `socket` go to `onBytes(n, buf)` (the first n bytes of a shared buffer, valid only
 * during the call) instead of 'data' events; false when the socket cannot (TLS, buffered data, an
 * unknown Node), and the caller reads 'data' as before. Pause and resume with `socket.pause()` /
 * `socket.resume()`; 'end', 'error' and 'close' come as usual.
 */
export function readInto(socket: net.Socket, onBytes: (n: number, buf: Buffer) => void): boolean {
  if (!READS) return false;
  const h = handleOf(socket);
  const bag = socket as unknown as Bag;
  if (h === null || typeof h.useUserBuffer !== 'function' || (socket as { encrypted?: boolean }).encrypted) return false;
  if (socket.connecting || socket.destroyed || socket.readableLength !== 0 || bag[kBuffer as symbol]) return false;
  bag[kBufferCb as symbol] = (n: number, buf: Buffer): boolean => {
    onBytes(n, buf);
    return true;
  };
  bag[kBuffer as symbol] = readBuffer;
  h.useUserBuffer(readBuffer);
  return true;
}

/**
 * A socket read with `readInto` becomes an ordinary Readable again (its reads copied and pushed:
 * 'data', pipe, pause/resume as on any socket), for a tunnel after an upgrade.
 */
export function releaseReads(socket: net.Socket): void {
  const bag = socket as unknown as Bag;
  if (!READS || bag[kBuffer as symbol] !== readBuffer) return;
  bag[kBufferCb as symbol] = (n: number, buf: Buffer): boolean => socket.push(Buffer.from(buf.subarray(0, n)));
}

// --- writes ---

let spare: WriteReq | undefined;

function newReq(): WriteReq {
  const req = new (binding as StreamWrapBinding).WriteWrap();
  req.handle = null;
  req.oncomplete = afterWrite;
  req.socket = null;
  req.data = null;
  return req;
}

function rawState(socket: net.Socket): RawState {
  const bag = socket as unknown as Bag;
  let st = bag[kRaw] as RawState | undefined;
  if (st === undefined) bag[kRaw] = st = { pending: 0, needDrain: false, failed: false };
  return st;
}

function writeError(status: number): Error {
  let name = 'EIO';
  try {
    name = getSystemErrorName(status);
  } catch {
    // not an errno
  }
  return Object.assign(new Error(`write ${name}`), { errno: status, code: name, syscall: 'write' });
}

function fail(socket: net.Socket, status: number): void {
  const st = rawState(socket);
  if (st.failed) return;
  st.failed = true;
  // As the Writable does: the error destroys the socket on the next tick, not under the caller.
  process.nextTick(destroyWith, socket, writeError(status));
}

function destroyWith(socket: net.Socket, err: Error): void {
  if (!socket.destroyed) socket.destroy(err);
}

function afterWrite(this: WriteReq, status: number): void {
  const socket = this.socket as net.Socket;
  this.socket = null;
  this.data = null;
  this.handle = null;
  const st = rawState(socket);
  st.pending--;
  if (socket.destroyed) return;
  if (status < 0) {
    fail(socket, status);
    return;
  }
  if (st.pending === 0 && st.needDrain) {
    st.needDrain = false;
    socket.emit('drain');
  }
}

/** The handle to write to directly, or null: write through the Writable. */
function writableHandle(socket: net.Socket): StreamHandle | null {
  if (!WRITES) return null;
  const h = handleOf(socket);
  if (h === null || socket.connecting || socket.writableLength !== 0 || !socket.writable || (socket as { encrypted?: boolean }).encrypted) return null;
  return h;
}

/** After a handle write: true when done (or queued under the high-water mark). */
function dispatched(socket: net.Socket, h: StreamHandle, req: WriteReq, err: number, data: unknown): boolean {
  if (err !== 0) {
    spare = undefined; // not reused after a failed write
    fail(socket, err);
    return false;
  }
  if ((state as Int32Array)[kAsync] === 0) return true;
  // Queued in libuv: the request object belongs to this write until it completes.
  spare = undefined;
  req.socket = socket;
  req.handle = h;
  req.data = data;
  const st = rawState(socket);
  st.pending++;
  if (h.writeQueueSize >= HIGH_WATER) {
    st.needDrain = true;
    return false;
  }
  return true;
}

/** `socket.write(data, 'latin1')` (a string) or `socket.write(data)` (a Buffer), through the handle when it can. */
export function send(socket: net.Socket, data: string | Buffer): boolean {
  const h = writableHandle(socket);
  if (h === null) return typeof data === 'string' ? socket.write(data, 'latin1') : socket.write(data);
  const req = spare ?? (spare = newReq());
  const err = typeof data === 'string' ? h.writeLatin1String(req, data) : h.writeBuffer(req, data);
  return dispatched(socket, h, req, err, data);
}

/**
 * `prefix` (latin1), `chunk` (a Buffer, or a string as utf8), then `suffix` (latin1, may be empty)
 * in one write (a writev): a response head with its first body bytes, a chunk of a chunked body.
 */
export function send3(socket: net.Socket, prefix: string, chunk: Buffer | string, suffix: string): boolean {
  const h = writableHandle(socket);
  if (h === null) {
    socket.cork();
    if (prefix.length > 0) socket.write(prefix, 'latin1');
    let ok = socket.write(chunk);
    if (suffix.length > 0) ok = socket.write(suffix, 'latin1');
    socket.uncork();
    return ok;
  }
  const req = spare ?? (spare = newReq());
  const enc = typeof chunk === 'string' ? 'utf8' : 'buffer';
  const chunks = suffix.length > 0 ? [prefix, 'latin1', chunk, enc, suffix, 'latin1'] : [prefix, 'latin1', chunk, enc];
  const err = h.writev(req, chunks, false);
  return dispatched(socket, h, req, err, chunks);
}
