/**
 * An HTTP listener that serves HTTP/1.1 and h2c (prior knowledge) on one port, detected from
 * the connection preface, and refuses bad input before it reaches any handler:
 *
 * - HTTP/1.1 parse errors (request smuggling with conflicting Content-Length/Transfer-Encoding,
 *   invalid header names or values, bad framing) answer 400; headers over the limit 431; a client
 *   too slow to send its headers 408. The connection is closed.
 * - HTTP/2: header lists over the limit are refused by nghttp2; a client that resets most of the
 *   streams it opens before they are answered (the "rapid reset" attack, CVE-2023-44487) gets a
 *   GOAWAY(ENHANCE_YOUR_CALM) and is disconnected, as Envoy does with premature resets.
 *
 * Every refusal is logged with its reason and counted.
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import type { Logger } from 'pino';
import { sniffProtocol } from './detect';
import { H1Server, type H1Request, type H1Response } from './h1-server';

export type DownstreamRequest = H1Request | http2.Http2ServerRequest;
export type DownstreamResponse = H1Response | http2.Http2ServerResponse;
export type RequestHandler = (req: DownstreamRequest, res: DownstreamResponse, protocol: 'http1' | 'http2') => void;

export interface ListenerOptions {
  name: string;
  handler: RequestHandler;
  logger: Logger;
  /** Request header bytes allowed (default 64 KiB); more answers 431. */
  maxHeaderBytes?: number;
  /** A client must send its request headers within this time (default 10 s); else 408. */
  headersTimeoutMs?: number;
  /** Idle HTTP/1.1 keep-alive connections are closed after this (default 60 s). */
  keepAliveTimeoutMs?: number;
  /** HTTP/2: after this many streams, close a connection whose streams were mostly reset prematurely. */
  prematureResetMinStreams?: number;
  /** Sees every connection first; returning true means it took the connection (not HTTP). */
  takeover?: (socket: net.Socket) => boolean;
  /** Called for every refused request or connection, with a short reason code. */
  onRefused?: (reason: string) => void;
}

export interface Listener {
  readonly server: net.Server;
  address(): { host: string; port: number };
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes everything. */
  close(graceMs?: number): Promise<void>;
}

export function startListener(host: string, port: number, opts: ListenerOptions): Promise<Listener> {
  const log = opts.logger;
  const maxHeaderBytes = opts.maxHeaderBytes ?? 64 * 1024;
  const headersTimeoutMs = opts.headersTimeoutMs ?? 10_000;
  const refused = (reason: string, detail: Record<string, unknown>): void => {
    log.warn({ listener: opts.name, reason, ...detail }, 'request refused');
    opts.onRefused?.(reason);
  };

  const h1 = new H1Server({
    maxHeaderBytes,
    headersTimeoutMs,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 60_000,
    onRequest: (req, res) => opts.handler(req, res, 'http1'),
    onRefused: (reason, detail) => refused(reason, detail),
  });

  const h2 = http2.createServer(
    {
      maxHeaderListPairs: 512,
      maxSessionMemory: 64,
      settings: { maxHeaderListSize: maxHeaderBytes, maxConcurrentStreams: 1000, initialWindowSize: 1024 * 1024 },
    },
    (req, res) => opts.handler(req, res, 'http2'),
  );
  const minStreams = opts.prematureResetMinStreams ?? 100;
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    let streams = 0;
    let premature = 0;
    session.on('stream', (stream) => {
      streams++;
      stream.on('close', () => {
        // Reset by the client before we answered: premature (Envoy's premature_reset heuristic).
        if (stream.rstCode === http2.constants.NGHTTP2_CANCEL && !stream.headersSent) premature++;
        if (streams >= minStreams && premature * 2 >= streams && !session.destroyed) {
          refused('rapid reset: most streams reset by the client before a response', {
            streams,
            premature,
            remote: session.socket?.remoteAddress,
          });
          session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
          session.destroy();
        }
      });
    });
    session.on('error', (err) => log.debug({ err, listener: opts.name }, 'http2 session error'));
  });
  h2.on('sessionError', (err) => log.debug({ err, listener: opts.name }, 'http2 session error'));

  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (opts.takeover?.(socket)) return;
    sniffProtocol(socket, headersTimeoutMs, (r) => {
      if (r.kind === 'closed') return;
      if (r.kind === 'timeout') {
        if (r.head.length === 0) {
          socket.destroy();
          return;
        }
        // Partial preface: let the HTTP/1.1 parser judge (and time out) what there is.
      }
      // Paused, the bytes read so far stay buffered until the server that takes the socket reads
      // them: a flowing socket would emit them at once, to no 'data' listener, and lose them (the
      // HTTP/2 session only picks up buffered bytes on the next tick: "bad client magic").
      if (r.kind === 'http1') {
        h1.serve(socket, r.head);
        return;
      }
      socket.pause();
      socket.unshift(r.head);
      h2.emit('connection', socket);
    });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.on('error', (err) => log.error({ err, listener: opts.name }, 'listener error'));
      const a = server.address() as net.AddressInfo;
      log.info({ listener: opts.name, address: `${a.address}:${a.port}` }, 'listening');
      resolve({
        server,
        address: () => ({ host: a.address, port: a.port }),
        close: (graceMs = 5000) =>
          new Promise<void>((done) => {
            server.close(() => undefined);
            h1.close();
            // HTTP/2 sessions: a GOAWAY lets clients move on; in-flight streams finish.
            for (const sess of sessions) if (!sess.closed) sess.close();
            const force = setTimeout(() => {
              for (const s of sockets) s.destroy();
            }, graceMs);
            force.unref();
            const poll = setInterval(() => {
              h1.shutdown();
              if (sockets.size === 0) {
                clearInterval(poll);
                clearTimeout(force);
                done();
              }
            }, 20);
            poll.unref();
          }),
      });
    });
  });
}
