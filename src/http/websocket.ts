/**
 * WebSocket (and any HTTP/1.1 `Connection: upgrade`) at the bottom of the request stack. An upgrade
 * goes through the same layers as any request (observe, identity, route, pick with outlier
 * detection and limits, retries of connections that could not be opened); the dispatcher sends
 * it here instead of to the pools: `sendUpgrade` opens a dedicated TCP connection to the picked
 * endpoint, sends the request head (forwarding headers added, hop-by-hop ones dropped,
 * `Connection: upgrade` and `Upgrade` kept), reads the answer's status line and reports it to the
 * sink. When no layer above abandoned the try, the call's `tunnel` (set by the front adapter) takes
 * the two sockets:
 *
 * - `101 Switching Protocols`: the head goes to the client and the two sockets are piped both ways
 *   (with backpressure) until either side closes, or no byte moved either way for the idle
 *   timeout; the call ends (`onEnd`) when the tunnel closes;
 * - any other answer: passed to the client as it is, and the connection is closed after it;
 * - no connection (UF, retryable), or no answer head (UR): an error to the sink.
 *
 * Open and total tunnels are counted.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Clock, Timer } from '../core/clock';
import type { H1Request } from './h1-server';
import type { ResponseSink, UpstreamCall, UpstreamTarget } from './upstream-types';
import { UpstreamConnectError } from './upstream-types';

export const DEFAULT_WEBSOCKET_IDLE_MS = 300_000;
const MAX_HEAD_BYTES = 64 * 1024;

export interface TunnelStats {
  websocketsOpen: number;
  websocketsTotal: number;
}

/** What an upgrade call carries for the dispatcher and the front adapter. */
export interface UpgradeRequest {
  method: string;
  path: string;
  /** Forwarded headers (flat), `host` included. */
  headers: readonly string[];
  /** The `Upgrade` protocol. */
  protocol: string;
}

/** Opens the upstream connection and reads the answer head; `onHead` gets the socket when the try is still wanted. */
export function sendUpgrade(
  target: UpstreamTarget,
  req: UpgradeRequest,
  sink: ResponseSink,
  onHead: (upstream: net.Socket, head: Buffer, status: number) => void,
  clock: Clock,
  connectTimeoutMs = 10_000,
  /** mTLS to another sidecar (`target.identity`): the connection's TLS options. */
  secure?: tls.ConnectionOptions,
): UpstreamCall {
  let head = `${req.method} ${req.path} HTTP/1.1\r\n`;
  const h = req.headers;
  for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`;
  head += `connection: upgrade\r\nupgrade: ${req.protocol}\r\n\r\n`;
  const upstream = secure ? tls.connect({ host: target.address, port: target.port, ...secure, ALPNProtocols: ['http/1.1'] }) : net.connect({ host: target.address, port: target.port, noDelay: true });
  if (secure) upstream.setNoDelay(true);
  let connected = false;
  let done = false;
  let aborted = false;
  const fail = (err: Error): void => {
    if (done) return;
    done = true;
    connectTimer.cancel();
    upstream.destroy();
    sink.onError(err, false);
  };
  const connectTimer = clock.setTimeout(() => {
    if (!connected) fail(new UpstreamConnectError(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })));
  }, connectTimeoutMs);
  upstream.on(secure ? 'secureConnect' : 'connect', () => {
    connected = true;
    connectTimer.cancel();
    upstream.write(head, 'latin1');
  });
  upstream.on('error', (err: Error & { code?: string }) => {
    if (done) return;
    fail(connected ? Object.assign(new Error(`upstream reset: ${err.code ?? err.message}`), { code: err.code ?? 'ECONNRESET' }) : new UpstreamConnectError(err));
  });
  let buf: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > MAX_HEAD_BYTES) fail(Object.assign(new Error('upstream response head too large'), { code: 'ECONNRESET' }));
      return;
    }
    upstream.off('data', onData);
    upstream.off('end', onEnd);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1', 0, Math.min(end, 64)))?.[1] ?? 0);
    if (status === 0) return fail(Object.assign(new Error('upstream sent an invalid response'), { code: 'ECONNRESET' }));
    done = true;
    upstream.pause();
    sink.onResponse(status, {});
    // A layer above may have abandoned this try on its status (a retry): then it is closed.
    if (aborted) return;
    onHead(upstream, buf, status);
  };
  const onEnd = (): void => fail(Object.assign(new Error('upstream closed before answering the upgrade'), { code: 'ECONNRESET' }));
  upstream.on('data', onData);
  upstream.on('end', onEnd);
  return {
    abort() {
      aborted = true;
      done = true;
      connectTimer.cancel();
      upstream.destroy();
    },
    resume() {},
  };
}

/** The client side: the answer head and the tunnel, both ways, closed together, idle-timed. */
export function tunnel(stats: TunnelStats, clock: Clock, req: H1Request, client: net.Socket, upstream: net.Socket, answer: Buffer, status: number, idleMs: number, ended: () => void): void {
  client.write(answer);
  if (status !== 101) {
    // Not switched: pass the rest of this response, then close.
    upstream.pipe(client);
    upstream.resume();
    upstream.setTimeout(idleMs, () => upstream.destroy());
    upstream.on('close', () => {
      client.destroy();
      ended();
    });
    upstream.on('error', () => undefined);
    return;
  }
  stats.websocketsOpen++;
  stats.websocketsTotal++;
  let last = clock.monotonic();
  const touch = (): void => {
    last = clock.monotonic();
  };
  client.on('data', touch);
  upstream.on('data', touch);
  let timer: Timer | undefined;
  const arm = (ms: number): void => {
    timer = clock.setTimeout(() => {
      const idle = clock.monotonic() - last;
      if (idle >= idleMs) {
        client.destroy();
        upstream.destroy();
      } else arm(idleMs - idle);
    }, ms);
  };
  arm(idleMs);
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    timer?.cancel();
    stats.websocketsOpen--;
    client.destroy();
    upstream.destroy();
    ended();
  };
  client.on('close', close);
  upstream.on('close', close);
  client.on('error', () => undefined);
  upstream.on('error', () => undefined);
  const head = req.upgrade?.head;
  if (head?.length) upstream.write(head);
  upstream.pipe(client);
  client.pipe(upstream);
  upstream.resume();
  client.resume();
}
