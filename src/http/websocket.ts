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
 *
 * WebSocket over HTTP/2 (RFC 8441 extended CONNECT) reaches the upstream the same way, as an
 * HTTP/1.1 Upgrade (most apps speak WebSocket over HTTP/1.1 only; Envoy bridges it so too):
 * `tunnelH2` answers the stream `200` for the upstream's `101` (its headers less the
 * connection-specific ones and `sec-websocket-accept`, which RFC 8441 does not use) and carries
 * the bytes both ways as DATA; any other answer becomes the stream's response. Closing propagates:
 * the client's END_STREAM is a FIN upstream and the upstream's FIN an END_STREAM; a reset stream
 * resets the TCP connection, and a TCP connection that fails resets the stream with CONNECT_ERROR
 * (RFC 9113 8.5).
 */
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Clock, Timer } from '../core/clock';
import type { HeaderOmit } from './headers';
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
  /**
   * The status the client is answered with for the upstream's 101, when it is another: an HTTP/2
   * extended CONNECT is accepted with 200 (RFC 8441 5). Metrics, the access log and the recent
   * decisions record what the client saw.
   */
  acceptStatus?: number;
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
    sink.onResponse(status === 101 && req.acceptStatus ? req.acceptStatus : status, {});
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

/**
 * Calls `onIdle` once no data has moved on any of `streams` for `idleMs`: one timer, re-armed for
 * what is left of the window when it fires early, instead of a timer reset per chunk.
 */
function idleWatch(clock: Clock, idleMs: number, streams: NodeJS.EventEmitter[], onIdle: () => void): Timer {
  let last = clock.monotonic();
  const touch = (): void => {
    last = clock.monotonic();
  };
  for (const s of streams) s.on('data', touch);
  let timer: Timer;
  const arm = (ms: number): Timer =>
    (timer = clock.setTimeout(() => {
      const idle = clock.monotonic() - last;
      if (idle >= idleMs) onIdle();
      else arm(idleMs - idle);
    }, ms));
  timer = arm(idleMs);
  return { cancel: () => timer.cancel() };
}

/**
 * The client side: the answer head and the tunnel, both ways, closed together, idle-timed. `omit`:
 * names the client's response leaves out (its H1Response's); the rest of the head goes as it came.
 */
export function tunnel(stats: TunnelStats, clock: Clock, req: H1Request, client: net.Socket, upstream: net.Socket, answer: Buffer, status: number, idleMs: number, ended: () => void, omit?: HeaderOmit): void {
  client.write(omit ? headWithout(answer, omit) : answer);
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
  const idle = idleWatch(clock, idleMs, [client, upstream], () => {
    client.destroy();
    upstream.destroy();
  });
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    idle.cancel();
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

/** Connection-specific (RFC 9113 8.2.2) and handshake-only headers of an HTTP/1.1 answer, left out of the HTTP/2 response. */
const H2_DROP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'sec-websocket-accept', 'te', 'http2-settings']);

/** An HTTP/1.1 answer (head and any bytes past it) less the header lines `omit` drops: `answer` itself when it drops none. */
export function headWithout(answer: Buffer, omit: HeaderOmit): Buffer {
  const end = answer.indexOf('\r\n\r\n');
  if (end < 0) return answer;
  const lines = answer.toString('latin1', 0, end).split('\r\n');
  const kept = lines.filter((line, i) => {
    const c = line.indexOf(':');
    return i === 0 || c <= 0 || !omit(line.slice(0, c).trim());
  });
  return kept.length === lines.length ? answer : Buffer.concat([Buffer.from(kept.join('\r\n'), 'latin1'), answer.subarray(end)]);
}

/** The headers of an HTTP/1.1 response head (lower-case names; repeated ones as lists), and where its body starts. */
export function parseResponseHead(buf: Buffer): { headers: Record<string, string | string[]>; bodyAt: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const headers: Record<string, string | string[]> = {};
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const c = line.indexOf(':');
    if (c <= 0) continue;
    const name = line.slice(0, c).trim().toLowerCase();
    const value = line.slice(c + 1).trim();
    const was = headers[name];
    headers[name] = was === undefined ? value : Array.isArray(was) ? [...was, value] : [was, value];
  }
  return { headers, bodyAt: end + 4 };
}

/**
 * The HTTP/2 client side of an upgrade (extended CONNECT): the upstream's HTTP/1.1 answer `head`
 * (with any bytes read past it) becomes the stream's response, and a `101` a tunnel, both ways,
 * idle-timed, until either side closes. `ended` is called once, when it is over. `omit`: names the
 * stream's response leaves out (its H2Response's).
 */
export function tunnelH2(stats: TunnelStats, clock: Clock, stream: http2.ServerHttp2Stream, upstream: net.Socket, answer: Buffer, status: number, idleMs: number, ended: () => void, omit?: HeaderOmit): void {
  const parsed = parseResponseHead(answer) ?? { headers: {}, bodyAt: answer.length };
  const rest = answer.subarray(parsed.bodyAt);
  const h: http2.OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(parsed.headers)) if (!H2_DROP.has(k) && !omit?.(k)) h[k] = v;
  let done = false;
  const finish = (): void => {
    if (done) return;
    done = true;
    ended();
  };
  upstream.on('error', () => undefined);
  if (stream.destroyed || stream.closed) {
    upstream.destroy();
    return finish();
  }
  if (status !== 101) {
    // Not switched: the answer (a 401 from the app, say) is the stream's response. A body of a
    // declared length is passed on; one without (chunked, or up to the close) is left out.
    h[':status'] = status >= 200 ? status : 502;
    const length = Number(parsed.headers['content-length']);
    const withBody = Number.isSafeInteger(length) && length > 0;
    if (!withBody) delete h['content-length'];
    try {
      stream.respond(h, { endStream: !withBody });
    } catch {
      stream.respond({ ':status': 502 }, { endStream: true });
      upstream.destroy();
      return finish();
    }
    if (!withBody) {
      upstream.destroy();
      return finish();
    }
    let left = length;
    const pass = (chunk: Buffer): void => {
      const part = chunk.length > left ? chunk.subarray(0, left) : chunk;
      left -= part.length;
      if (part.length) stream.write(part);
      if (left === 0) {
        upstream.destroy();
        stream.end();
      }
    };
    upstream.setTimeout(idleMs, () => upstream.destroy());
    upstream.on('data', pass);
    upstream.on('close', () => {
      if (left > 0 && !stream.closed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      finish();
    });
    if (rest.length) pass(rest);
    if (left > 0) upstream.resume();
    return;
  }
  // RFC 8441 5: the 2xx that accepts the CONNECT; the WebSocket bytes follow as DATA.
  h[':status'] = 200;
  try {
    stream.respond(h);
  } catch {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    upstream.destroy();
    return finish();
  }
  stats.websocketsOpen++;
  stats.websocketsTotal++;
  const idle = idleWatch(clock, idleMs, [stream, upstream], () => {
    upstream.destroy();
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  });
  let upstreamEnded = false;
  upstream.once('end', () => (upstreamEnded = true));
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    idle.cancel();
    stats.websocketsOpen--;
    finish();
  };
  stream.once('close', () => {
    // The client reset the stream (or the session went): reset the TCP connection too, so the
    // app sees an abort, not a clean close. After a clean end both ways the socket is done anyway.
    if (stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR && !upstream.destroyed) {
      try {
        upstream.resetAndDestroy();
      } catch {
        upstream.destroy(); // a TLS socket (mTLS to a sidecar) has no TCP reset of its own
      }
    } else upstream.destroy();
    close();
  });
  upstream.once('close', (hadError: boolean) => {
    if (!stream.closed && !stream.destroyed) {
      if (hadError || !upstreamEnded) stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
      // A clean FIN: the pipe ends our side (END_STREAM) after the last bytes; then the client
      // is told to stop sending (RST_STREAM NO_ERROR, RFC 9113 8.1) if it has not ended too.
      else if (stream.writableFinished) stream.close(http2.constants.NGHTTP2_NO_ERROR);
      else stream.once('finish', () => !stream.closed && stream.close(http2.constants.NGHTTP2_NO_ERROR));
    }
    close();
  });
  if (rest.length) stream.write(rest);
  upstream.pipe(stream);
  stream.pipe(upstream);
  upstream.resume();
}
