/**
 * Retries: one `RetryState` per request owns every try (Envoy's RetryStateImpl): the attempts the
 * policy allows, the backoff (exponential, full jitter, `Retry-After` honoured within the
 * deadline), the destination's retry budget and `maxRetries`, the per-try timeout, and the body
 * replay (ReplayableBody, bounded by the policy's buffer).
 *
 * Whatever the policy, a try the upstream never saw (REFUSED_STREAM, a GOAWAY racing it; for gRPC
 * also a connection that could not be opened; an endpoint that refused the HTTP/2 preface under
 * `protocol: auto`) is sent again at once, to another endpoint when there is one, twice at most
 * (RFC 9113 §8.7), when its body can be replayed.
 *
 * The response goes up only once no retry will follow, so a retry never happens after response
 * bytes were sent. Upstream errors are classified here into MeshErrors (code, status, flag).
 */
import { classifyUpstreamError, Flags, MeshError } from '../core/errors';
import type { Timer } from '../core/clock';
import { Expiring, timeoutsOf, type Timeouts } from '../core/timeouts';
import type { Handler, Layer, MeshCall } from '../core/layer';
import { isH2Body } from '../http/h2-server';
import { refusedUnseen, UpstreamConnectError, type Headers, type ResponseSink, type UpstreamCall } from '../http/upstream-types';
import type { RetryPolicy } from '../policy/types';
import { ReplayableBody } from '../resilience/replay-body';
import { backoffMs, retryAfterMs, retryMatcher, type FailureKind } from '../resilience/retry';
import type { Readable } from 'node:stream';
import { refusedHttp2, rememberHttp1Only } from './auto-protocol';
import type { StackContext } from './context';
import { isGrpcKind, PER_TRY_TIMEOUT } from './profile';

/** How many times one request is sent again after being refused unseen. */
const MAX_RESENDS = 2;
/** Request bytes a gRPC call keeps to be sent again unseen, without a retry policy. */
const GRPC_REPLAY_BYTES = 64 * 1024;

export function retryLayer(ctx: StackContext, policy: RetryPolicy | undefined): Layer {
  const timeouts = timeoutsOf(ctx.clock);
  return (next) => (call, sink) => new RetryState(ctx, timeouts, policy, next, call, sink).start();
}

/** One try: its own sink, so callbacks of an abandoned try are ignored; its own per-try timeout (timeouts.ts). */
class Try extends Expiring implements ResponseSink {
  call: UpstreamCall | undefined;
  constructor(private readonly rs: RetryState) {
    super();
  }
  expire(): void {
    this.rs.onTryTimeout(this);
  }
  onResponse(status: number, headers: Headers): void {
    if (this.rs.current === this) this.rs.onResponse(this, status, headers);
  }
  onData(chunk: Buffer): boolean {
    return this.rs.current === this ? this.rs.sink.onData(chunk) : true;
  }
  onEnd(trailers: Headers | undefined): void {
    if (this.rs.current === this) this.rs.onEnd(trailers);
  }
  onError(err: Error, started: boolean): void {
    if (this.rs.current === this) this.rs.onError(this, err, started);
  }
}

export class RetryState implements UpstreamCall {
  current: Try | undefined;
  private resent = 0;
  private done = false;
  private committed = false;
  private readonly body: Readable | null;
  private replay: ReplayableBody | undefined;
  /** The try whose per-try timeout runs. */
  private tryTimer: Try | undefined;
  private backoffTimer: Timer | undefined;

  constructor(
    private readonly ctx: StackContext,
    private readonly timeouts: Timeouts,
    private readonly policy: RetryPolicy | undefined,
    private readonly next: Handler,
    private readonly call: MeshCall,
    readonly sink: ResponseSink,
  ) {
    this.body = call.body;
  }

  start(): UpstreamCall {
    const p = this.policy;
    if (this.body) {
      // An HTTP/2 request stream goes to the first try as it is (replay-body.ts, `direct`).
      if (p && p.attempts > 0) this.replay = new ReplayableBody(this.body, p.bufferLimitBytes, isH2Body(this.body));
      else if (isGrpcKind(this.call.kind) || this.call.protocol === 'http2') this.replay = new ReplayableBody(this.body, GRPC_REPLAY_BYTES, isH2Body(this.body));
    }
    this.send();
    return this;
  }

  abort(reason?: Error): void {
    if (this.done) return;
    this.done = true;
    this.clearTimers();
    const t = this.current;
    this.current = undefined;
    t?.call?.abort(reason);
  }

  resume(): void {
    this.current?.call?.resume();
  }

  private send(): void {
    const call = this.call;
    call.tries++;
    if (this.body) call.body = this.replay ? (this.replay.cursor() ?? null) : this.body;
    const t = new Try(this);
    this.current = t;
    const perTry = this.policy?.perTryTimeoutMs;
    if (perTry !== undefined) {
      this.timeouts.start(t, perTry);
      this.tryTimer = t;
    }
    t.call = this.next(call, t);
  }

  onResponse(t: Try, status: number, headers: Headers): void {
    const p = this.policy;
    if (p && retryMatcher(p).status(status, headers)) {
      const ra = retryAfterMs(headers, this.ctx.clock.now());
      const room = this.call.deadline > 0 ? this.call.deadline - this.ctx.clock.monotonic() : (p.backoff?.maxIntervalMs ?? 250);
      const why = ra !== undefined && ra > room ? Flags.RetriesExhausted : this.canRetry();
      if (why === '') {
        this.clearTryTimer();
        this.current = undefined;
        t.call?.abort();
        this.replay?.detach();
        this.scheduleRetry(ra);
        return;
      }
      this.call.addFlag(why);
    }
    this.clearTryTimer();
    this.committed = true;
    this.sink.onResponse(status, headers);
  }

  onEnd(trailers: Headers | undefined): void {
    this.finish();
    this.sink.onEnd(trailers);
  }

  onError(t: Try, err: Error, started: boolean): void {
    this.clearTryTimer();
    if (started || this.committed) {
      // Bytes already went downstream: the layers above end the request as a reset.
      this.finish();
      this.sink.onError(classify(err), true);
      return;
    }
    // `protocol: auto`: the endpoint does not speak HTTP/2; remembered, and sent as HTTP/1.1.
    const h2Refused = refusedHttp2(err) && this.call.target?.auto === true;
    if (h2Refused) rememberHttp1Only((this.call.target as { key: string }).key, this.ctx.clock);
    // Refused unseen (a GOAWAY racing the request, e.g. the upstream's sidecar shutting down): sent
    // again at once, to another endpoint when there is one, whatever the policy and the method
    // (RFC 9113 §8.7), as long as the body can be replayed.
    const unseen = h2Refused || refusedUnseen(err) || (isGrpcKind(this.call.kind) && err instanceof UpstreamConnectError);
    if (unseen && this.resent < MAX_RESENDS && (!this.body || this.replay?.replayable)) {
      this.resent++;
      this.current = undefined;
      this.ctx.logger.debug({ err, upstream: this.call.target?.key }, 'upstream did not see the request: sending it again');
      this.send();
      return;
    }
    const e = err instanceof UpstreamConnectError ? new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', err.detail, { cause: err }) : classifyUpstreamError(err);
    this.ctx.logger.debug({ err, upstream: this.call.target?.key, direction: this.call.direction }, 'upstream request failed');
    if (e.code !== 'MESH_UPSTREAM_OVERFLOW' && !(err instanceof MeshError)) {
      const kind: FailureKind = e.code === 'MESH_UPSTREAM_CONNECT_FAILURE' ? 'connect-failure' : e.code === 'MESH_UPSTREAM_TIMEOUT' ? 'timeout' : 'reset';
      if (this.retryFailure(kind)) return;
    }
    this.fail(e);
  }

  onTryTimeout(t: Try): void {
    if (this.current !== t || this.committed || this.done) return;
    this.tryTimer = undefined;
    this.current = undefined;
    t.call?.abort(PER_TRY_TIMEOUT);
    this.replay?.detach();
    if (this.retryFailure('timeout')) return;
    this.fail(new MeshError('MESH_UPSTREAM_TIMEOUT', `per-try timeout ${this.policy?.perTryTimeoutMs}ms`));
  }

  /** Retries a failed try when the policy allows; true when a retry was scheduled. */
  private retryFailure(kind: FailureKind): boolean {
    const p = this.policy;
    if (!p || !retryMatcher(p).failure(kind)) return false;
    const why = this.canRetry();
    if (why !== '') {
      this.call.addFlag(why);
      return false;
    }
    this.current = undefined;
    this.replay?.detach();
    this.scheduleRetry(undefined);
    return true;
  }

  /** '' when another try may go, else the flag saying why not. */
  private canRetry(): string {
    const p = this.policy;
    if (!p || this.call.tries - this.resent > p.attempts) return Flags.RetriesExhausted;
    if (this.body && !this.replay?.replayable) return Flags.RetryBodyTooLarge;
    const svc = this.call.svc;
    if (svc?.maxRetries !== undefined && svc.activeRetries >= svc.maxRetries) return Flags.UpstreamOverflow;
    if (svc && !svc.budget.tryRetry(p.budget)) return Flags.RetryBudgetExhausted;
    return '';
  }

  private scheduleRetry(retryAfter: number | undefined): void {
    this.ctx.stats.metrics.retry(this.call.destination || 'app');
    const p = this.policy;
    const delay = p ? backoffMs(this.call.tries, p, this.ctx.random, retryAfter) : 0;
    this.backoffTimer = this.ctx.clock.setTimeout(() => {
      this.backoffTimer = undefined;
      if (!this.done) this.send();
    }, delay);
  }

  private fail(e: MeshError): void {
    if (e.code === 'MESH_UPSTREAM_TIMEOUT') this.ctx.stats.metrics.timeout(this.call.destination || 'app');
    this.finish();
    this.sink.onError(e, false);
  }

  private finish(): void {
    this.done = true;
    this.clearTimers();
  }

  private clearTryTimer(): void {
    const t = this.tryTimer;
    if (t === undefined) return;
    this.timeouts.cancel(t);
    this.tryTimer = undefined;
  }

  private clearTimers(): void {
    this.clearTryTimer();
    this.backoffTimer?.cancel();
    this.backoffTimer = undefined;
  }
}

/** An upstream error as the MeshError the layers above see (the original is its cause). */
function classify(err: Error): MeshError {
  if (err instanceof MeshError) return err;
  if (err instanceof UpstreamConnectError) return new MeshError('MESH_UPSTREAM_CONNECT_FAILURE', err.detail, { cause: err });
  return classifyUpstreamError(err);
}
