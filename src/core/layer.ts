/**
 * The request stack: every request the mesh forwards, whatever its protocol (HTTP/1.1, HTTP/2,
 * gRPC, gRPC-Web, JSON transcoded to gRPC, WebSocket upgrades), passes through one ordered stack of
 * small layers, in the order the request travels, down to the dispatcher (the connection pools).
 * This is undici's `compose()` of `dispatch => dispatch` interceptors, Caddy's
 * `func(Handler) Handler`, linkerd2-proxy's `.push(layer)` stacks.
 *
 * The contract (read it before writing a layer):
 *
 * - A `Handler` takes a `MeshCall` (the per-request context, like Envoy's StreamInfo) and a
 *   `ResponseSink` (the response callbacks of the layer above), and returns an `UpstreamCall`
 *   (`abort`, `resume`) the layer above uses to cancel the request or to lift backpressure.
 * - A `Layer` wraps the next handler: `(next) => (call, sink) => ...`. It may change the call on
 *   the way down (headers, body, path, target, deadline), wrap the sink to see the response on the
 *   way up (status, data, trailers, the outcome), call `next` once, many times (retries), later
 *   (delays, backoff), or not at all (a mesh-made answer).
 * - A layer that answers itself calls `sink.onError(reply, false)` with a `MeshError` or a
 *   `LocalReply`, and returns `NOOP_CALL` (or a call it keeps). Layers never write to the client:
 *   the front adapter of each protocol (src/stack/respond-*.ts) is the one place that turns a
 *   mesh error into bytes: an HTTP status with `x-meshlet-flags`, or a trailers-only gRPC status
 *   carrying the same flag (for gRPC-Web, its trailer frame).
 * - Upstream errors reach the layers above as they came from the pools until the retry layer,
 *   which classifies them into a `MeshError` (code, status, flag; `cause` is the original).
 * - Every sink gets exactly one of `onEnd` / `onError`, once. After `abort()`, a handler delivers
 *   nothing more to its sink: an aborting layer accounts for the request itself.
 * - Flags a layer earns (DI for an injected delay, URX when retries ran out, ...) are appended to
 *   `call.flags` (`addFlag`); the front adapter writes them on the response head.
 * - No layer throws on the data plane, reads `Date`/`performance.now()` or calls `setTimeout`
 *   directly: time comes from the injectable Clock.
 *
 * Stacks are assembled once per compiled rule (per snapshot), not per request (src/stack/outbound.ts,
 * inbound.ts): a layer a rule does not need (no fault, no retries, no timeout) is not in its stack.
 */
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { DownstreamRequest } from '../http/listener';
import type { ResponseSink, UpstreamCall, UpstreamTarget } from '../http/upstream-types';
import type { CompiledBackend, CompiledRule, HeaderEditor, RequestView } from '../policy/compiled';
import type { Decision } from '../observability/decisions';
import type { ObservedRequest } from '../observability/observer';
import type { ServiceState } from '../resilience/state';
import type { SpiffeId } from '../security/spiffe';
import type { Flag } from './errors';

export type { ResponseSink, UpstreamCall } from '../http/upstream-types';

export type Handler = (call: MeshCall, sink: ResponseSink) => UpstreamCall;
export type Layer = (next: Handler) => Handler;

/**
 * `compose([a, b, c], bottom)` is `a(b(c(bottom)))`: the first layer is the outermost, the one a
 * request meets first. Absent layers (undefined) are skipped, so a stack reads as one list.
 */
export function compose(layers: readonly (Layer | undefined)[], bottom: Handler): Handler {
  let h = bottom;
  for (let i = layers.length - 1; i >= 0; i--) {
    const l = layers[i];
    if (l) h = l(h);
  }
  return h;
}

export type CallKind = 'http' | 'grpc' | 'grpc-web' | 'transcode' | 'websocket';
export type Direction = 'inbound' | 'outbound';

/** Per-request context, shared by every layer of the stack (one object per request). */
export class MeshCall {
  /** Flags earned so far, comma-separated ('' for none). */
  flags = '';
  rule: CompiledRule | undefined = undefined;
  /** Outbound: the backend of the current try (the first one is picked with the route). */
  backend: CompiledBackend | undefined = undefined;
  /** The endpoint of the current try (set by the pick layer, or fixed inbound). */
  target: UpstreamTarget | undefined = undefined;
  /** The destination service's state of the current try (limits, budget, outlier detection). */
  svc: ServiceState | undefined = undefined;
  /** The destination service's name, once picked ('' before). */
  destination = '';
  /** Response header edits the front adapter applies (the rule's responseHeaders). */
  responseEdits: HeaderEditor | undefined = undefined;
  /** Metrics, span and access-log line of this request (set by the observe layer). */
  obs: ObservedRequest | undefined = undefined;
  /** Monotonic ms by which the call must be answered (0: none); set by the deadline layer. */
  deadline = 0;
  /** Index of the grpc-timeout value in `headers` (rewritten per try), or -1. */
  grpcTimeoutAt = -1;
  /** The call's final gRPC status when a layer knows it better than the response does (transcoding), or -1. */
  grpcStatus = -1;
  /** Tries sent so far (the retry layer counts them). */
  tries = 0;
  /** HTTP/1.1 sent multiplexed over HTTP/2 to another sidecar on the current try. */
  mux = false;
  /** The caller identity stamped on the request (source service, route), when known. */
  identity: { readonly source: string | undefined; readonly route: string } | undefined = undefined;
  /**
   * Inbound: the caller's identity as proven by its verified TLS client certificate (mTLS), or
   * undefined for a plaintext or unverified caller. Authorization and the `source-identity`
   * rate-limit descriptor read this, never a header.
   */
  peer: SpiffeId | undefined = undefined;
  /**
   * This request's slot in the sidecar's ring of recent decisions (`meshlet explain --last`), and
   * the sequence number every write to it checks (src/observability/decisions.ts).
   */
  decision: Decision | undefined = undefined;
  decisionSeq = 0;
  /**
   * The client's IP address as far as this proxy can vouch for it (src/stack/forwarded.ts: the
   * downstream peer, or the entry `trustedHops` from the right of `x-forwarded-for`); undefined
   * before that layer ran. IP filters and client-keyed limits read this, never the raw header.
   */
  clientAddress: string | undefined = undefined;

  /**
   * An upgrade (WebSocket): its `Upgrade` protocol, and the front adapter's hook that takes the
   * upstream socket once the answer head came (`end` ends the call when the tunnel closes);
   * `acceptStatus`: what the client is answered for a 101 (200 over HTTP/2, RFC 8441).
   */
  upgrade: { protocol: string; acceptStatus?: number; onHead(upstream: Socket, head: Buffer, status: number, end: () => void): void } | undefined = undefined;
  /** The downstream request (body byte counts, the HTTP/1.1 upgrade socket). */
  downstream: DownstreamRequest | undefined = undefined;

  constructor(
    readonly direction: Direction,
    public kind: CallKind,
    /** The protocol the request arrived in. */
    readonly protocol: 'http1' | 'http2',
    public method: string,
    /** Path with query, as it goes upstream. */
    public path: string,
    /** The authority as it goes upstream. */
    public authority: string,
    /** Matching view of the downstream request (method, path, query, authority, headers). */
    readonly view: RequestView | undefined,
    /** Flat, lower-cased `[name, value, ...]` forwarded request headers. */
    public headers: string[],
    public body: Readable | null,
    /** The downstream HTTP/1.x version ('1.0' | '1.1'), or '2'. */
    readonly version: string,
  ) {}

  addFlag(f: string): void {
    this.flags = this.flags ? `${this.flags},${f}` : f;
  }

  /** The first value of a header in the forwarded list. */
  header(name: string): string | undefined {
    const h = this.headers;
    for (let i = 0; i < h.length; i += 2) if (h[i] === name) return h[i + 1];
    return undefined;
  }
}

/**
 * A response the mesh makes itself that is not one of the coded MeshErrors: a redirect, a CORS
 * preflight answer, a fault abort, a gRPC status. The front adapter writes it.
 */
export class LocalReply extends Error {
  constructor(
    readonly status: number,
    /** The response flag (also written as `x-meshlet-flags`), if any. */
    readonly flag: Flag | string | undefined,
    text: string,
    readonly extra?: {
      /** Extra response headers. */
      headers?: Record<string, string>;
      /** The gRPC status for gRPC clients (else derived from the flag or HTTP status). */
      grpcStatus?: number;
      /** No body (a redirect, a preflight answer). */
      empty?: boolean;
      /** The body to send instead of the plain-text message (its content-type in `headers`). */
      body?: string;
      /** Counted without its flag (a 403 to a CORS preflight). */
      uncountedFlag?: boolean;
    },
  ) {
    super(text);
    this.name = 'LocalReply';
  }
}

export const NOOP_CALL: UpstreamCall = { abort() {}, resume() {} };

/** A sink that ignores everything (the mirror's). */
export const DISCARD_SINK: ResponseSink = { onResponse() {}, onData: () => true, onEnd() {}, onError() {} };
