/**
 * How protocols differ inside the one stack: a small profile per call kind. HTTP and gRPC calls go
 * through the same layers; only these answers change (linkerd2-proxy's `Http<T>` / `Grpc<T>`
 * routes).
 *
 * - outcome: what a response means to outlier detection (an HTTP 502/503/504 or gRPC UNAVAILABLE
 *   is a gateway failure; a 5xx or INTERNAL/UNKNOWN a server error);
 * - succeeded: what it means to the route's circuit breaker;
 * - retryable statuses are the retry policy's matcher (src/resilience/retry.ts), which reads both
 *   the HTTP status and a trailers-only `grpc-status`.
 */
import { Flags } from '../core/errors';
import type { CallKind } from '../core/layer';
import type { Headers } from '../http/upstream-types';

export type Outcome = 'success' | 'http-5xx' | 'gateway';

/** True for the kinds answered as gRPC (a trailers-only status, grpc-status trailers). */
export function isGrpcKind(kind: CallKind): boolean {
  return kind === 'grpc' || kind === 'grpc-web' || kind === 'transcode';
}

/** A gRPC status as an outlier-detection outcome: UNAVAILABLE is the gateway kind of failure. */
export function grpcOutcome(code: number): Outcome {
  if (code === 14) return 'gateway';
  return code === 13 || code === 2 ? 'http-5xx' : 'success';
}

export function httpOutcome(status: number): Outcome {
  return status < 500 ? 'success' : status === 502 || status === 503 || status === 504 ? 'gateway' : 'http-5xx';
}

/** The grpc-status of headers or trailers, or -1. */
export function grpcStatusOf(h: Headers | undefined): number {
  const v = h?.['grpc-status'];
  return v === undefined ? -1 : Number(v);
}

/**
 * The route breaker's view of a finished call. HTTP: any status under 500. gRPC: a call the client
 * ended (DC) or sent wrong (DPE) says nothing about the upstream; otherwise an OK-ish status that
 * is not DEADLINE_EXCEEDED.
 */
export function callSucceeded(kind: CallKind, status: number, flag: string | undefined, grpcCode: number): boolean {
  if (!isGrpcKind(kind)) return status < 500;
  if (flag === Flags.DownstreamClosed || flag === Flags.DownstreamProtocolError) return true;
  return !flag && status < 500 && grpcOutcome(grpcCode) === 'success' && grpcCode !== 4;
}

/** The abort reason of a try cut by its per-try timeout (the endpoint's failure, for outlier detection). */
export const PER_TRY_TIMEOUT: Error = Object.freeze(new Error('per-try timeout')) as Error;
