/**
 * gRPC through the sidecar: what `forward()` does for a request whose content-type is gRPC or
 * gRPC-Web. On top of the plain HTTP/2 forwarding it
 *
 * - honours `grpc-timeout` (and the route's timeout): the call is cancelled upstream and answered
 *   DEADLINE_EXCEEDED when it runs out, and the upstream gets the time that is left, not the
 *   client's original figure;
 * - keeps Trailers-Only responses trailers-only (one HEADERS frame with END_STREAM), as clients
 *   require, and passes every trailer (grpc-status, grpc-message, grpc-status-details-bin, -bin
 *   metadata) through;
 * - follows message boundaries both ways and stops a message over the route's `maxMessageBytes`
 *   (outbound; default 4 MiB) with RESOURCE_EXHAUSTED before any of it is forwarded, without
 *   buffering messages;
 * - retries transparently, on another endpoint when the route has one, a call no upstream has seen:
 *   a stream refused by a GOAWAY or REFUSED_STREAM, or a connection that could not be opened. The
 *   request bytes sent so far are kept for that (up to 64 KiB, and only until the response starts);
 * - propagates cancellation both ways: a client that resets its stream resets the upstream one, an
 *   upstream reset reaches the client with the same HTTP/2 error code (CANCEL -> CANCELLED);
 * - answers the mesh's own failures as gRPC statuses (status.ts), never as HTTP error pages;
 * - speaks gRPC-Web to the client when it came that way (web.ts).
 *
 * Backpressure both ways: the downstream body pauses while the upstream stream is full, and the
 * upstream stream pauses while the client does not read; nothing here queues without bound.
 */
import { editFlat } from '../http/headers';
import * as http2 from 'node:http2';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import { FLAG_HEADER, Flags, type Flag } from '../core/errors';
import { forwardRequestHeaders, HOP_BY_HOP } from '../http/headers';
import type { H1Request } from '../http/h1-server';
import type { DownstreamRequest, DownstreamResponse } from '../http/listener';
import { refusedUnseen, UpstreamConnectError, type Headers, type UpstreamCall, type UpstreamPools, type UpstreamTarget } from '../http/upstream';
import type { GrpcRouteOptions, HeaderEditor, RetryPolicy } from '../policy';
import { backoffMs, retryMatcher } from '../resilience/retry';
import { MessageSizeGuard } from './framing';
import { FLAG_STATUS, isGrpcContentType, isGrpcWebContentType, Status, statusFromRstCode, trailersOnlyHeaders, type StatusCode } from './status';
import { formatGrpcTimeout, parseGrpcTimeout } from './timeout';
import { WebDownstream, webRequestHeaders, type Base64Decoder } from './web';

export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Request bytes kept for a transparent retry. */
const REPLAY_BYTES = 64 * 1024;
const MAX_ATTEMPTS = 3;

export interface GrpcProxyContext {
  pools: UpstreamPools;
  active: { begin(key: string): void; end(key: string): void };
  stats: { record(direction: 'inbound' | 'outbound', status: number, flag?: string): void };
  logger: Logger;
  viaName: string;
}

export interface GrpcPlan {
  target: UpstreamTarget;
  path: string;
  authority: string;
  requestEdits?: HeaderEditor;
  responseEdits?: HeaderEditor;
  /** Another endpoint for a transparent retry; without it the same endpoint is tried again. */
  repick?(): UpstreamTarget | undefined;
  grpc?: GrpcRouteOptions;
  /** The route's timeout: the deadline is the earlier of it and grpc-timeout. */
  timeoutMs?: number;
  /** The route's retry policy: trailers-only responses with a gRPC status it names are retried. */
  retries?: RetryPolicy;
  /** Takes a retry from the destination's budget and limits; false when there is no room. */
  tryRetry?(): boolean;
  /** The outcome of each try at an endpoint, for outlier detection. */
  report?(key: string, outcome: 'success' | 'http-5xx' | 'gateway'): void;
  /** The call's outcome, once: for the route's circuit breaker. */
  done?(success: boolean, ms: number): void;
}

/** A gRPC status as an outlier-detection outcome: UNAVAILABLE is the gateway kind of failure. */
function outcomeOf(code: number): 'success' | 'http-5xx' | 'gateway' {
  if (code === 14) return 'gateway';
  return code === 13 || code === 2 ? 'http-5xx' : 'success';
}

/** What kind of gRPC a request is: 'grpc', 'web', or undefined for anything else. */
export function grpcKind(req: DownstreamRequest, protocol: 'http1' | 'http2'): 'grpc' | 'web' | undefined {
  const ct = protocol === 'http2' ? req.headers['content-type'] : rawContentType(req.rawHeaders);
  if (typeof ct !== 'string') return undefined;
  if (isGrpcWebContentType(ct)) return 'web';
  if (protocol === 'http2' && isGrpcContentType(ct)) return 'grpc';
  return undefined;
}

/** Content-Type from raw HTTP/1.1 headers, without building the header object (hot path). */
function rawContentType(raw: readonly string[]): string | undefined {
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === 12 && n.toLowerCase() === 'content-type') return raw[i + 1];
  }
  return undefined;
}

/**
 * The proxy's local-reply hook: when the request was gRPC or gRPC-Web, answers a mesh-made error as
 * a gRPC status (trailers-only) and returns true; else returns false and the caller answers HTTP.
 */
export function replyGrpcError(res: DownstreamResponse, httpStatus: number, flag: string, text: string): boolean {
  const req = (res as { req?: DownstreamRequest }).req;
  if (!req) return false;
  const protocol = (res as http2.Http2ServerResponse).stream ? 'http2' : 'http1';
  const kind = grpcKind(req, protocol);
  if (!kind) return false;
  const code = FLAG_STATUS[flag as Flag] ?? statusFromHttpFallback(httpStatus);
  const down = kind === 'web' ? new WebDownstream(req, res, undefined) : new NativeDownstream(res as http2.Http2ServerResponse);
  down.fail(code, text, flag);
  return true;
}

function statusFromHttpFallback(s: number): StatusCode {
  return s === 504 ? Status.DEADLINE_EXCEEDED : s === 429 ? Status.RESOURCE_EXHAUSTED : Status.UNAVAILABLE;
}

// ----------------------------------------------------------------------------------- downstream

/** The client side of a gRPC call, native (h2 stream) or gRPC-Web (web.ts). */
export interface GrpcDownstream {
  readonly headersSent: boolean;
  readonly closed: boolean;
  /** Response headers of a call that will send messages. */
  headers(status: number, headers: Record<string, string | string[]>): void;
  /** False: wait for 'drain'. */
  write(chunk: Buffer): boolean;
  /** Ends the response with these trailers (after `headers`). */
  end(trailers: Record<string, string | string[]> | undefined): void;
  /** Ends with a status: trailers-only when nothing was sent yet, else as trailers. */
  fail(code: StatusCode, message: string, flag?: string, extra?: Record<string, string | string[]>): void;
  /** Resets the call with an HTTP/2 error code. */
  reset(rstCode: number): void;
  onDrain(cb: () => void): void;
  onClose(cb: () => void): void;
}

class NativeDownstream implements GrpcDownstream {
  private readonly stream: http2.ServerHttp2Stream;
  constructor(private readonly res: http2.Http2ServerResponse) {
    this.stream = res.stream;
  }
  get headersSent(): boolean {
    return this.stream.headersSent;
  }
  get closed(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }
  headers(status: number, headers: Record<string, string | string[]>): void {
    if (this.closed) return;
    // The compat layer's 'wantTrailers' handler sends what addTrailers() collected.
    this.stream.respond({ ...headers, ':status': status }, { waitForTrailers: true });
  }
  write(chunk: Buffer): boolean {
    if (this.closed) return true;
    return this.stream.write(chunk);
  }
  end(trailers: Record<string, string | string[]> | undefined): void {
    if (this.closed) return;
    if (trailers) {
      try {
        this.res.addTrailers(trailers);
      } catch {
        // an invalid trailer name from upstream: dropped
      }
    }
    this.stream.end();
  }
  fail(code: StatusCode, message: string, flag?: string, extra?: Record<string, string | string[]>): void {
    if (this.closed) return;
    const h = trailersOnlyHeaders(code, message);
    if (!this.stream.headersSent) {
      this.stream.respond({ ...extra, ...h, ...(flag ? { [FLAG_HEADER]: flag } : {}) }, { endStream: true });
      return;
    }
    const { ':status': _s, 'content-type': _c, ...trailers } = h;
    this.end({ ...extra, ...(trailers as Record<string, string>), ...(flag ? { [FLAG_HEADER]: flag } : {}) });
  }
  reset(rstCode: number): void {
    if (!this.stream.closed) this.stream.close(rstCode);
  }
  onDrain(cb: () => void): void {
    this.stream.on('drain', cb);
  }
  onClose(cb: () => void): void {
    this.stream.on('close', cb);
  }
}

// ---------------------------------------------------------------------------------------- forward

function headerOf(req: DownstreamRequest, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? v.join(', ') : undefined;
}

function bodyOf(req: DownstreamRequest, protocol: 'http1' | 'http2'): Readable | null {
  if (protocol === 'http1') return (req as H1Request).body;
  const h2 = req as http2.Http2ServerRequest;
  return h2.stream.endAfterHeaders ? null : h2;
}

/** Upstream response headers or trailers, cleaned for the client: no pseudo or hop-by-hop headers. */
function clean(h: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in h) {
    if (name.charCodeAt(0) === 58 || HOP_BY_HOP.has(name)) continue;
    out[name] = h[name] as string | string[];
  }
  return out;
}

function retriable(err: Error): boolean {
  return err instanceof UpstreamConnectError || refusedUnseen(err);
}

export function forwardGrpc(
  ctx: GrpcProxyContext,
  direction: 'inbound' | 'outbound',
  req: DownstreamRequest,
  res: DownstreamResponse,
  protocol: 'http1' | 'http2',
  plan: GrpcPlan,
): void {
  const started = performance.now();
  const web = grpcKind(req, protocol) === 'web';
  const down: GrpcDownstream = web ? new WebDownstream(req, res, plan.grpc) : new NativeDownstream(res as http2.Http2ServerResponse);
  // The limit is the route's (outbound, where routes are); inbound, the far sidecar has no route
  // and does not second-guess it: the app enforces its own.
  const maxBytes = plan.grpc?.maxMessageBytes ?? (direction === 'outbound' ? DEFAULT_MAX_MESSAGE_BYTES : 0xffffffff);

  let finished = false;
  /** The final gRPC status the upstream sent, or -1. */
  let grpcCode = -1;
  const finish = (status: number, flag?: string): void => {
    if (finished) return;
    finished = true;
    if (timer) clearTimeout(timer);
    ctx.stats.record(direction, status, flag);
    // A client that went away, or sent too much, says nothing about the upstream: not a failure.
    if (plan.done) plan.done(flag === 'DC' || flag === Flags.DownstreamProtocolError || (!flag && status < 500 && outcomeOf(grpcCode) === 'success' && grpcCode !== 4), performance.now() - started);
  };
  let timer: NodeJS.Timeout | undefined;

  // Deadline: the earlier of grpc-timeout and the route's timeout.
  let deadlineMs = plan.timeoutMs;
  const gt = headerOf(req, 'grpc-timeout');
  if (gt !== undefined) {
    const ms = parseGrpcTimeout(gt);
    if (ms instanceof Error) {
      finish(200, Flags.DownstreamProtocolError);
      down.fail(Status.INTERNAL, ms.message, Flags.DownstreamProtocolError);
      return;
    }
    deadlineMs = deadlineMs === undefined ? ms : Math.min(deadlineMs, ms);
  }

  let headers = forwardRequestHeaders(req.rawHeaders, {
    remoteAddress: req.socket?.remoteAddress,
    proto: 'http',
    version: protocol === 'http2' ? '2' : '1.1',
    via: ctx.viaName,
    dropHost: true,
  });
  headers = headers.filter((_, i, a) => i % 2 === 0 ? a[i] !== 'grpc-timeout' : a[i - 1] !== 'grpc-timeout');
  let decoder: Base64Decoder | undefined;
  if (web) ({ headers, decoder } = webRequestHeaders(headers));
  if (plan.requestEdits) headers = editFlat(headers, plan.requestEdits);

  // ---- request body: decode (gRPC-Web text), check sizes, keep for replay, feed the attempt.
  const src = bodyOf(req, protocol);
  const guard = new MessageSizeGuard(maxBytes);
  let replay: Buffer[] | null = [];
  let replayBytes = 0;
  let srcEnded = src === null;
  let body: PassThrough | null = null;
  const feed = (chunk: Buffer): void => {
    const r = guard.push(chunk);
    if (r.out.length > 0) {
      if (replay) {
        replay.push(r.out);
        replayBytes += r.out.length;
        if (replayBytes > REPLAY_BYTES) replay = null;
      }
      if (body && !body.write(r.out)) src?.pause();
    }
    if (r.tooLarge !== undefined) {
      call?.abort();
      finish(200, Flags.DownstreamProtocolError);
      down.fail(Status.RESOURCE_EXHAUSTED, `request message of ${r.tooLarge} bytes is over the limit of ${maxBytes} bytes`, Flags.DownstreamProtocolError);
      src?.destroy();
    }
  };
  if (src) {
    src.on('data', (c: Buffer) => {
      if (finished) return;
      feed(decoder ? decoder.push(c) : c);
    });
    src.on('end', () => {
      if (decoder) {
        const rest = decoder.end();
        if (rest instanceof Error) {
          call?.abort();
          finish(200, Flags.DownstreamProtocolError);
          down.fail(Status.INTERNAL, rest.message, Flags.DownstreamProtocolError);
          return;
        }
        if (rest.length) feed(rest);
      }
      srcEnded = true;
      body?.end();
    });
    src.on('error', () => undefined);
  }

  // ---- attempts
  let call: UpstreamCall | undefined;
  let attempts = 0;
  let responded = false;
  let trailersOnly: Headers | undefined;
  const attempt = (target: UpstreamTarget): void => {
    attempts++;
    const mine = attempts;
    const stale = (): boolean => mine !== attempts || finished;
    let pt: PassThrough | null = null;
    if (src) {
      pt = new PassThrough({ highWaterMark: 64 * 1024 });
      for (const b of replay ?? []) pt.write(b);
      if (srcEnded) pt.end();
      pt.on('drain', () => {
        if (body === pt) src.resume();
      });
      body = pt;
    }
    const out = deadlineMs === undefined ? headers : [...headers, 'grpc-timeout', formatGrpcTimeout(deadlineMs - (performance.now() - started))];
    const respGuard = new MessageSizeGuard(maxBytes);
    ctx.active.begin(target.key);
    let ended = false;
    const endActive = (): void => {
      if (ended) return;
      ended = true;
      ctx.active.end(target.key);
    };
    let httpStatus = 0;
    call = ctx.pools.send(
      target,
      { method: 'POST', path: plan.path, authority: plan.authority, headers: out, body: pt },
      {
        onResponse(status, h) {
          if (stale()) return;
          httpStatus = status;
          if (h['grpc-status'] !== undefined && status === 200) {
            // Trailers-only: nothing went downstream yet, so the call can still be retried.
            trailersOnly = h;
            return;
          }
          responded = true;
          replay = null;
          const o = clean(h);
          if (plan.responseEdits) plan.responseEdits.apply(o);
          down.headers(status, o);
        },
        onData(chunk) {
          if (stale() || trailersOnly) return true;
          const r = respGuard.push(chunk);
          let ok = true;
          if (r.out.length > 0) ok = down.write(r.out);
          if (r.tooLarge !== undefined) {
            call?.abort();
            endActive();
            finish(200, Flags.UpstreamReset);
            down.fail(Status.RESOURCE_EXHAUSTED, `response message of ${r.tooLarge} bytes is over the limit of ${maxBytes} bytes`, Flags.UpstreamReset);
            return true;
          }
          return ok;
        },
        onEnd(trailers) {
          endActive();
          if (stale()) return;
          const st = (trailersOnly ?? trailers)?.['grpc-status'];
          grpcCode = st === undefined ? -1 : Number(st);
          plan.report?.(target.key, outcomeOf(grpcCode));
          let flag: Flag | undefined;
          const r = plan.retries;
          if (trailersOnly && r && retryMatcher(r).status(200, trailersOnly)) {
            if (attempts > r.attempts || replay === null || down.closed) flag = Flags.RetriesExhausted;
            else if (plan.tryRetry && !plan.tryRetry()) flag = Flags.RetryBudgetExhausted;
            else {
              trailersOnly = undefined;
              const next = plan.repick?.() ?? target;
              const t = setTimeout(() => {
                if (!finished) attempt(next);
              }, backoffMs(attempts, r, Math.random));
              t.unref();
              return;
            }
          }
          finish(httpStatus, flag);
          if (trailersOnly) {
            const t = clean(trailersOnly);
            if (plan.responseEdits) plan.responseEdits.apply(t);
            const code = Number(t['grpc-status']) as StatusCode;
            const { 'grpc-status': _s, 'grpc-message': msg, 'content-type': _c, ...rest } = t;
            down.fail(code, decodeMessage(msg), flag, rest);
            return;
          }
          down.end(trailers ? clean(trailers) : undefined);
        },
        onError(err, startedResp) {
          endActive();
          if (stale()) return;
          plan.report?.(target.key, 'gateway');
          if (!startedResp && !responded && replay !== null && attempts < MAX_ATTEMPTS && retriable(err) && !down.closed) {
            ctx.logger.debug({ err, upstream: target.key }, 'gRPC call not seen by the upstream: retrying');
            attempt(plan.repick?.() ?? target);
            return;
          }
          const { rstCode: rst, connectionLost } = err as { rstCode?: number; connectionLost?: boolean };
          if (rst !== undefined && rst !== http2.constants.NGHTTP2_REFUSED_STREAM && !connectionLost) {
            // The upstream reset the stream (it cancelled the call): the client sees the same.
            finish(httpStatus || 502, Flags.UpstreamReset);
            if (web) down.fail(statusFromRstCode(rst), `upstream reset the stream (HTTP/2 error ${rst})`, Flags.UpstreamReset);
            else down.reset(rst);
            return;
          }
          const flag = err instanceof UpstreamConnectError ? Flags.UpstreamConnectFailure : Flags.UpstreamReset;
          ctx.logger.debug({ err, upstream: target.key, direction }, 'gRPC upstream call failed');
          finish(httpStatus || 503, flag);
          down.fail(Status.UNAVAILABLE, err instanceof UpstreamConnectError ? `upstream connect failure: ${err.code}` : `upstream failed: ${err.message}`, flag);
        },
      },
    );
  };

  down.onDrain(() => call?.resume());
  down.onClose(() => {
    if (finished) return;
    // The client cancelled (or went away): cancel upstream too.
    call?.abort(new Error('downstream closed'));
    finish(499, 'DC');
    src?.destroy();
  });
  if (deadlineMs !== undefined) {
    timer = setTimeout(() => {
      if (finished) return;
      call?.abort(new Error('deadline exceeded'));
      finish(200, Flags.UpstreamTimeout);
      down.fail(Status.DEADLINE_EXCEEDED, 'deadline exceeded in the mesh', Flags.UpstreamTimeout);
    }, Math.max(0, deadlineMs));
    timer.unref();
  }
  attempt(plan.target);
}

function decodeMessage(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(', ') : v ?? '';
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

