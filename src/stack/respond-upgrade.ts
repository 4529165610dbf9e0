/**
 * The front adapter of HTTP/1.1 upgrades (WebSocket): the call goes through the stack like any
 * other; when the upstream answered, the dispatcher hands the sockets to `tunnel`
 * (src/http/websocket.ts), which writes the answer head to the client byte for byte and pipes both
 * ways. Mesh errors before that are written as HTTP responses (status, `x-meshlet-flags`).
 */
import { NOOP_CALL, type Handler, type MeshCall } from '../core/layer';
import type { H1Request, H1Response } from '../http/h1-server';
import type { Headers, ResponseSink, UpstreamCall } from '../http/upstream-types';
import { DEFAULT_WEBSOCKET_IDLE_MS, tunnel } from '../http/websocket';
import type { StackContext } from './context';
import { asReply, countUnobserved, writeReply } from './respond-http';

export class UpgradeResponder implements ResponseSink {
  upstream: UpstreamCall = NOOP_CALL;
  private finished = false;

  constructor(
    private readonly ctx: StackContext,
    private readonly call: MeshCall,
    private readonly req: H1Request,
    private readonly res: H1Response,
    private readonly idleMs = DEFAULT_WEBSOCKET_IDLE_MS,
  ) {}

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
        tunnel(this.ctx.stats, this.ctx.clock, this.req, client, upstream, head, status, this.idleMs, end);
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

  onResponse(_status: number, _headers: Headers): void {
    // The answer head is written raw by the tunnel.
  }
  onData(): boolean {
    return true;
  }
  onEnd(): void {
    this.finished = true;
  }
  onError(err: Error, started: boolean): void {
    if (this.finished) return;
    this.finished = true;
    const reply = asReply(err);
    const flags = reply.flag ? (this.call.flags ? `${reply.flag},${this.call.flags}` : reply.flag) : this.call.flags;
    if (!this.call.obs) countUnobserved(this.ctx, this.call, reply, flags);
    if (started || this.res.headersSent) {
      this.req.upgrade?.socket.destroy();
      return;
    }
    writeReply(this.res, reply, flags);
  }
}
