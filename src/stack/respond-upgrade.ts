/**
 * The front adapters of upgrades (WebSocket): the call goes through the stack like any other; when
 * the upstream answered, the dispatcher hands the upstream socket to the tunnel of the client's
 * protocol (src/http/websocket.ts):
 * - HTTP/1.1 `Upgrade` (`UpgradeResponder`): `tunnel` writes the answer head to the client byte
 *   for byte and pipes both ways;
 * - HTTP/2 extended CONNECT, RFC 8441 (`H2UpgradeResponder`): `tunnelH2` answers the stream 200 for
 *   the upstream's 101 and carries the bytes as DATA both ways.
 * Mesh errors before that are written as HTTP responses (status, `x-meshlet-flags`): a route that
 * denies (401/403), no route (404 NR), no upstream (503 UF) reach an HTTP/2 client as its stream's
 * response; after the tunnel opened, a failure resets the stream (CONNECT_ERROR).
 */
import * as http2 from 'node:http2';
import { NOOP_CALL, type Handler, type MeshCall } from '../core/layer';
import type { H1Request, H1Response } from '../http/h1-server';
import type { H2Request, H2Response } from '../http/h2-server';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import { DEFAULT_WEBSOCKET_IDLE_MS, tunnel, tunnelH2 } from '../http/websocket';
import type { StackContext } from './context';
import { failedCall, writeReply } from './respond-http';

/**
 * What both upgrade responders do as the stack's sink: the answer itself is made by the tunnel
 * (`onResponse` and `onData` have nothing to write); a failure before the tunnel opened is an HTTP
 * answer with its status and flags, after it a reset of the tunnel.
 */
abstract class UpgradeSink implements ResponseSink {
  upstream: UpstreamCall = NOOP_CALL;
  protected finished = false;

  constructor(
    protected readonly ctx: StackContext,
    protected readonly call: MeshCall,
    protected readonly res: H1Response | H2Response,
    protected readonly idleMs: number,
  ) {}

  /** Whether the client has been answered (the tunnel took over). */
  protected abstract tunnelOpened(): boolean;
  protected abstract resetTunnel(): void;

  onResponse(_status: number, _headers: Headers): void {}
  onData(): boolean {
    return true;
  }
  onEnd(): void {
    this.finished = true;
  }
  onError(err: Error, started: boolean): void {
    if (this.finished) return;
    this.finished = true;
    const { reply, flags } = failedCall(this.ctx, this.call, err);
    if (started || this.tunnelOpened()) return this.resetTunnel();
    writeReply(this.res, reply, flags);
  }
}

export class UpgradeResponder extends UpgradeSink {
  constructor(
    ctx: StackContext,
    call: MeshCall,
    private readonly req: H1Request,
    protected override readonly res: H1Response,
    idleMs = DEFAULT_WEBSOCKET_IDLE_MS,
  ) {
    super(ctx, call, res, idleMs);
  }

  run(stack: Handler): void {
    const up = this.req.upgrade;
    if (!up) return;
    const client = up.socket;
    const protocol = this.req.header('upgrade') ?? 'websocket';
    this.call.upgrade = {
      protocol,
      onHead: (upstream, head, status, end) => {
        // Whatever the answer, it goes to the client byte for byte; the parser has let go of the socket.
        this.res.headersSent = true;
        tunnel(this.ctx.stats, this.ctx.clock, this.req, client, upstream, head, status, this.idleMs, end, this.res.omit);
      },
    };
    // A client gone before the upstream answered.
    client.once('close', () => {
      if (this.finished || this.res.headersSent) return;
      this.finished = true;
      this.upstream.abort();
    });
    this.upstream = stack(this.call, this);
  }

  protected tunnelOpened(): boolean {
    return this.res.headersSent;
  }
  protected resetTunnel(): void {
    this.req.upgrade?.socket.destroy();
  }
}

/** An extended CONNECT stream (RFC 8441) through the stack, to the upstream as an HTTP/1.1 Upgrade. */
export class H2UpgradeResponder extends UpgradeSink {
  private tunneled = false;

  constructor(
    ctx: StackContext,
    call: MeshCall,
    private readonly req: H2Request,
    res: H2Response,
    idleMs = DEFAULT_WEBSOCKET_IDLE_MS,
  ) {
    super(ctx, call, res, idleMs);
  }

  run(stack: Handler): void {
    const stream = this.req.stream;
    this.call.upgrade = {
      protocol: this.req.connectProtocol ?? 'websocket',
      acceptStatus: 200,
      onHead: (upstream, head, status, end) => {
        this.tunneled = true;
        tunnelH2(this.ctx.stats, this.ctx.clock, stream, upstream, head, status, this.idleMs, end, this.res.omit);
      },
    };
    // A client that reset the stream before the upstream answered.
    stream.once('close', () => {
      if (this.finished || this.tunneled) return;
      this.finished = true;
      this.upstream.abort();
    });
    this.upstream = stack(this.call, this);
  }

  protected tunnelOpened(): boolean {
    return this.tunneled || this.req.stream.headersSent;
  }
  protected resetTunnel(): void {
    const stream = this.req.stream;
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
  }
}
