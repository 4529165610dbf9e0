/**
 * The write path and connection-level flow control shared by both ends of meshlet's own HTTP/2
 * layer: the server's `H2Session` (session.ts) and the client's `H2ClientSession` (client.ts)
 * extend `H2Output`. It owns the frame queue (frames.ts `FrameWriter`) and its flush, the
 * streams whose last DATA frame is held until the flush, the write callbacks that wait for the
 * socket to drain, the streams that wait for connection window, and the credit (WINDOW_UPDATE)
 * returned to the peer as the application reads.
 *
 * - frames produced in one turn of the event loop go out in one socket write: a `setImmediate`
 *   flush, after every I/O callback of that turn, as node's own session schedules its writes;
 *   several buffers through cork/uncork, i.e. one writev. A microtask flush wrote once per
 *   callback instead: a gRPC call's response cost ~23% more CPU that way (bench/cpu.js A/B,
 *   docs/performance.md). Nothing is flushed while `connecting` (the client: before the preface).
 * - a stream write's callback runs at once unless the queue and the socket hold CONGESTED
 *   bytes; then at the next flush after the socket drains (so `write()` returning false and
 *   `'drain'` reflect a peer that does not read).
 * - credit is returned in batches of half a window (connection: half our connection window;
 *   stream: half our SETTINGS_INITIAL_WINDOW_SIZE).
 *
 * HAND-WRITTEN HOT-PATH CODE (every HTTP/2 frame either end writes passes here).
 */
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { DEFAULT_WINDOW, ErrorCode, FrameWriter, MAX_WINDOW, Setting } from './frames';
import { HpackEncoder } from './hpack';
import type { StreamTable } from './stream-table';

/** Socket bytes (queued here and in the socket) over which stream writes wait for 'drain'. */
const CONGESTED = 256 * 1024;
/** Socket bytes unsent over which a peer's PING or SETTINGS is refused (it does not read our answers). */
const FLOOD = 4 * 1024 * 1024;
/** After our GOAWAY and FIN: how long the socket reads on (and drops) what the peer still sends. */
const LINGER_MS = 1000;

/**
 * A lingering close, for a session that has ended its socket after a GOAWAY. Closing a socket
 * that has unread bytes makes the kernel send RST, and a peer that gets the RST may drop our
 * GOAWAY unread (its error code lost; found by the client's fuzz test). So after end() the socket
 * reads on, the bytes dropped (the session's parser has stopped), until the peer closes its side
 * (allowHalfOpen is off: the socket is destroyed then) or LINGER_MS pass (nginx's lingering_close
 * does the same on HTTP/1.1).
 */
export function linger(socket: net.Socket): void {
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.resume();
}

/** What the write path needs of a stream (H2Stream, H2ClientStream). */
export interface OutputStream {
  readonly id: number;
  /** In the session's list of streams with a held tail. */
  tailQueued: boolean;
  /** Waiting for connection window. */
  blocked: boolean;
  /** The peer's END_STREAM came: no more stream credit. */
  remoteEnded: boolean;
  /** Credit taken by the application, not yet returned. */
  unacked: number;
  /** Bytes the peer may still send on the stream. */
  recvWindow: number;
  /** Bytes the peer lets us send on the stream. */
  sendWindow: number;
  /** Writes the held last DATA frame. */
  emitTail(endStream: boolean): void;
  /** More window: sends what waited for it. */
  resumeSend(): void;
}

export abstract class H2Output<S extends OutputStream> extends EventEmitter {
  /** @internal */
  readonly writer = new FrameWriter();
  /** @internal Bytes the peer lets us send on the connection. */
  sendWindow = DEFAULT_WINDOW;
  /** @internal */
  readonly encoder = new HpackEncoder();
  readonly remoteSettings = { headerTableSize: 4096, enablePush: true, maxConcurrentStreams: 0xffffffff, initialWindowSize: DEFAULT_WINDOW, maxFrameSize: 16_384, maxHeaderListSize: 0xffffffff, enableConnectProtocol: false };
  /** Whether the connection is not up yet (the client before its preface): nothing is flushed. */
  connecting = false;
  abstract readonly socket: net.Socket;
  abstract readonly localSettings: { readonly initialWindowSize: number };
  /** Our connection receive window (what credit is batched against). */
  protected connWindow = DEFAULT_WINDOW;
  /** Bytes the peer may still send on the connection. */
  protected recvWindow = DEFAULT_WINDOW;
  private connUnacked = 0;
  private flushQueued = false;
  private readonly flushFn = (): void => this.flush();
  private tails: S[] = [];
  protected windowWaiters: S[] = [];
  private drainWaiters: (() => void)[] = [];
  private drainHooked = false;

  /** @internal Frames were queued: one flush after this turn of the event loop's I/O callbacks. */
  scheduleFlush(): void {
    if (this.flushQueued || this.connecting) return;
    this.flushQueued = true;
    setImmediate(this.flushFn);
  }

  /** @internal A stream holds a DATA frame back until the flush (so END_STREAM can ride on it). */
  queueTail(s: S): void {
    s.tailQueued = true;
    this.tails.push(s);
    this.scheduleFlush();
  }

  protected flush(): void {
    this.flushQueued = false;
    const tails = this.tails;
    if (tails.length > 0) {
      this.tails = [];
      for (let i = 0; i < tails.length; i++) {
        const s = tails[i]!;
        s.tailQueued = false;
        s.emitTail(false);
      }
    }
    const w = this.writer;
    if (w.empty) return;
    const bufs = w.take();
    const socket = this.socket;
    if (socket.destroyed || !socket.writable) return;
    if (bufs.length === 1) socket.write(bufs[0]!);
    else {
      socket.cork();
      for (let i = 0; i < bufs.length; i++) socket.write(bufs[i]!);
      socket.uncork();
    }
    if (this.drainWaiters.length > 0) this.releaseDrainWaiters();
  }

  /** @internal A stream write went into the frame queue: its callback now, or when the socket drains. */
  afterWrite(cb: () => void): void {
    if (this.writer.queued + this.socket.writableLength < CONGESTED) {
      cb();
      return;
    }
    this.drainWaiters.push(cb);
    this.scheduleFlush();
  }

  private releaseDrainWaiters(): void {
    const socket = this.socket;
    if (socket.writableNeedDrain) {
      if (!this.drainHooked) {
        this.drainHooked = true;
        socket.once('drain', () => {
          this.drainHooked = false;
          this.releaseDrainWaiters();
        });
      }
      return;
    }
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (let i = 0; i < ws.length; i++) ws[i]!();
  }

  /** The session is destroyed: no stream waits for window any more, waiting write callbacks run now. */
  protected releaseWaiters(): void {
    this.windowWaiters = [];
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const cb of ws) cb();
  }

  /** @internal A stream has data and stream window but no connection window. */
  waitForWindow(s: S): void {
    if (s.blocked) return;
    s.blocked = true;
    this.windowWaiters.push(s);
  }

  /** @internal */
  stopWaiting(s: S): void {
    s.blocked = false;
    const i = this.windowWaiters.indexOf(s);
    if (i >= 0) this.windowWaiters.splice(i, 1);
  }

  protected resumeWaiters(): void {
    const ws = this.windowWaiters;
    this.windowWaiters = [];
    for (let i = 0; i < ws.length; i++) {
      const s = ws[i]!;
      s.blocked = false;
      s.resumeSend();
    }
  }

  /** @internal Body bytes taken by the application: credit back to the peer (batched to half a window). */
  credit(s: S, n: number): void {
    this.connCredit(n);
    if (s.remoteEnded) return;
    const u = (s.unacked += n);
    if (u >= this.localSettings.initialWindowSize >> 1) {
      this.writer.windowUpdate(s.id, u);
      s.recvWindow += u;
      s.unacked = 0;
      this.scheduleFlush();
    }
  }

  /** Connection credit only (DATA dropped: a closed stream, or a stream error). */
  protected connCredit(n: number): void {
    const c = (this.connUnacked += n);
    if (c >= this.connWindow >> 1) {
      this.writer.windowUpdate(0, c);
      this.recvWindow += c;
      this.connUnacked = 0;
      this.scheduleFlush();
    }
  }

  protected rst(id: number, code: number): void {
    this.writer.rstStream(id, code);
    this.scheduleFlush();
  }

  /** A connection error: GOAWAY with `code`, and the session ends. */
  abstract onConnectionError(code: number, message: string): void;

  /**
   * Applies the peer's SETTINGS (values checked by the parser) and queues the ACK; a change of
   * SETTINGS_INITIAL_WINDOW_SIZE applies to every open stream. False: a stream window
   * overflowed (the connection is failing).
   */
  protected applySettings(params: number[], streams: StreamTable<S>): boolean {
    const rs = this.remoteSettings;
    let delta = 0;
    for (let i = 0; i < params.length; i += 2) {
      const v = params[i + 1]!;
      switch (params[i]) {
        case Setting.HEADER_TABLE_SIZE:
          rs.headerTableSize = v;
          this.encoder.setMaxTableSize(Math.min(v, 4096));
          break;
        case Setting.ENABLE_PUSH:
          rs.enablePush = v === 1;
          break;
        case Setting.MAX_CONCURRENT_STREAMS:
          rs.maxConcurrentStreams = v;
          break;
        case Setting.INITIAL_WINDOW_SIZE:
          delta += v - rs.initialWindowSize;
          for (const s of streams.values()) {
            s.sendWindow += v - rs.initialWindowSize;
            if (s.sendWindow > MAX_WINDOW) {
              this.onConnectionError(ErrorCode.FLOW_CONTROL_ERROR, 'SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window');
              return false;
            }
          }
          rs.initialWindowSize = v;
          break;
        case Setting.MAX_FRAME_SIZE:
          rs.maxFrameSize = v;
          this.writer.maxFrameSize = v;
          break;
        case Setting.MAX_HEADER_LIST_SIZE:
          rs.maxHeaderListSize = v;
          break;
        case Setting.ENABLE_CONNECT_PROTOCOL:
          rs.enableConnectProtocol = v === 1;
          break;
      }
    }
    this.writer.settingsAck();
    this.scheduleFlush();
    if (delta > 0) for (const s of streams.values()) s.resumeSend();
    return true;
  }

  /** Whether the peer does not read what we send (our answers to its PINGs and SETTINGS pile up). */
  protected overFlood(): boolean {
    return this.socket.writableLength + this.writer.queued >= FLOOD;
  }
}
