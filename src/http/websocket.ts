/**
 * WebSocket (and any HTTP/1.1 `Connection: upgrade`) through the sidecar. The request is routed like
 * any other; then `forwardUpgrade` opens a TCP connection to the chosen endpoint, sends the request
 * head (forwarding headers added, hop-by-hop ones dropped, `Connection: upgrade` and `Upgrade` kept),
 * and reads the answer:
 *
 * - `101 Switching Protocols`: the head goes to the client and the two sockets are piped both ways
 *   (with backpressure: `pipe` pauses the side whose peer is full) until either side closes, or no
 *   byte moved either way for the idle timeout;
 * - any other answer: passed to the client as it is, and the connection is closed after it;
 * - no connection, or no answer head: a 503 (UF) or 502 (UR) with the response-flag header.
 *
 * Open and total connections are counted.
 */
import * as net from 'node:net';
import type { Logger } from 'pino';
import { FLAG_HEADER, Flags } from '../core/errors';
import type { H1Request, H1Response } from './h1-server';
import { forwardRequestHeaders } from './headers';
import type { UpstreamTarget } from './upstream-types';

export const DEFAULT_WEBSOCKET_IDLE_MS = 300_000;
const MAX_HEAD_BYTES = 64 * 1024;

export interface UpgradeContext {
  logger: Logger;
  viaName: string;
  stats: {
    record(direction: 'inbound' | 'outbound', status: number, flag?: string): void;
    websocketsOpen: number;
    websocketsTotal: number;
  };
}

export interface UpgradePlan {
  target: UpstreamTarget;
  path: string;
  authority: string;
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** The endpoint's outcome for outlier detection: a failed connect or answer is a gateway failure. */
  report?(outcome: 'success' | 'gateway'): void;
}

export function forwardUpgrade(ctx: UpgradeContext, direction: 'inbound' | 'outbound', req: H1Request, res: H1Response, plan: UpgradePlan): void {
  const up = req.upgrade;
  if (!up) return;
  const client = up.socket;
  const idleMs = plan.idleTimeoutMs ?? DEFAULT_WEBSOCKET_IDLE_MS;
  const headers = forwardRequestHeaders(req.rawHeaders, {
    remoteAddress: req.socket.remoteAddress,
    proto: 'http',
    version: '1.1',
    via: ctx.viaName,
    host: plan.authority,
  });
  let head = `${req.method} ${plan.path} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  const protocol = req.headers['upgrade'];
  head += `connection: upgrade\r\nupgrade: ${Array.isArray(protocol) ? protocol.join(', ') : protocol ?? 'websocket'}\r\n\r\n`;

  const upstream = net.connect({ host: plan.target.address, port: plan.target.port, noDelay: true });
  let connected = false;
  let tunnel = false;
  const fail = (status: number, flag: string, text: string): void => {
    upstream.destroy();
    ctx.stats.record(direction, status, flag);
    if (res.headersSent || res.destroyed) {
      client.destroy();
      return;
    }
    const body = `${text}\n`;
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), [FLAG_HEADER]: flag });
    res.end(body);
  };
  const connectTimer = setTimeout(() => {
    if (!connected) fail(503, Flags.UpstreamConnectFailure, 'upstream connect failure: connect timeout');
  }, plan.connectTimeoutMs ?? 10_000);
  connectTimer.unref();
  upstream.on('connect', () => {
    connected = true;
    clearTimeout(connectTimer);
    upstream.write(head, 'latin1');
  });
  upstream.on('error', (err: Error & { code?: string }) => {
    if (tunnel) return;
    clearTimeout(connectTimer);
    ctx.logger.debug({ err, upstream: plan.target.key }, 'upgrade upstream failed');
    plan.report?.('gateway');
    if (!connected) fail(503, Flags.UpstreamConnectFailure, `upstream connect failure: ${err.code ?? err.message}`);
    else fail(502, Flags.UpstreamReset, `upstream reset: ${err.code ?? err.message}`);
  });
  // A client gone before the upstream answered.
  client.once('close', () => {
    if (!tunnel) upstream.destroy();
  });

  let buf: Buffer = Buffer.alloc(0);
  const onHead = (chunk: Buffer): void => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > MAX_HEAD_BYTES) fail(502, Flags.UpstreamReset, 'upstream response head too large');
      return;
    }
    upstream.off('data', onHead);
    upstream.off('end', onEndBeforeHead);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.toString('latin1', 0, Math.min(end, 64)))?.[1] ?? 0);
    if (status === 0) return fail(502, Flags.UpstreamReset, 'upstream sent an invalid response');
    ctx.stats.record(direction, status);
    plan.report?.(status >= 500 ? 'gateway' : 'success');
    // Whatever the answer, it goes to the client byte for byte; the parser has let go of the socket.
    res.headersSent = true;
    tunnel = true;
    client.write(buf);
    if (status !== 101) {
      // Not switched: pass the rest of this response, then close.
      upstream.pipe(client);
      upstream.setTimeout(idleMs, () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      return;
    }
    open(ctx, client, upstream, up.head, idleMs);
  };
  const onEndBeforeHead = (): void => fail(502, Flags.UpstreamReset, 'upstream closed before answering the upgrade');
  upstream.on('data', onHead);
  upstream.on('end', onEndBeforeHead);
}

/** The tunnel: both ways, closed together, idle-timed. */
function open(ctx: UpgradeContext, client: net.Socket, upstream: net.Socket, head: Buffer, idleMs: number): void {
  ctx.stats.websocketsOpen++;
  ctx.stats.websocketsTotal++;
  let last = Date.now();
  const touch = (): void => {
    last = Date.now();
  };
  client.on('data', touch);
  upstream.on('data', touch);
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number): void => {
    timer = setTimeout(() => {
      const idle = Date.now() - last;
      if (idle >= idleMs) {
        client.destroy();
        upstream.destroy();
      } else arm(idleMs - idle);
    }, ms);
    timer.unref();
  };
  arm(idleMs);
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    ctx.stats.websocketsOpen--;
    client.destroy();
    upstream.destroy();
  };
  client.on('close', close);
  upstream.on('close', close);
  client.on('error', () => undefined);
  upstream.on('error', () => undefined);
  if (head.length) upstream.write(head);
  upstream.pipe(client);
  client.pipe(upstream);
  client.resume();
}
