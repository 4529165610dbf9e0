/**
 * The inbound stack (mesh -> the local app), built once per listener:
 *
 *   rate limit -> observe -> deadline (grpc-timeout) -> retry (only what the app never saw)
 *   -> dispatcher (UpstreamPools) to the app's endpoint (set by the front, src/stack/front.ts)
 *
 * (Space for authorization: between rate limit and observe.)
 */
import { compose, type Handler } from '../core/layer';
import type { StackContext } from './context';
import { deadlineLayer } from './deadline';
import { dispatcher } from './dispatch';
import { observeLayer } from './observe';
import { rateLimitLayer } from './rate-limit';
import { retryLayer } from './retry';

export function inboundStack(ctx: StackContext): Handler {
  return compose([rateLimitLayer(ctx, () => ctx.rateLimit), observeLayer(ctx, undefined), deadlineLayer(ctx, undefined), retryLayer(ctx, undefined)], dispatcher(ctx));
}
