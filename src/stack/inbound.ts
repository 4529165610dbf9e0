/**
 * The inbound stack (mesh -> the local app), built once per listener:
 *
 *   rate limit -> observe -> authz (AuthorizationPolicy) -> deadline (grpc-timeout)
 *   -> retry (only what the app never saw) -> dispatcher (UpstreamPools) to the app's endpoint
 *   (set by the front, src/stack/front.ts)
 *
 * Authorization comes after observe so that a denied request is counted with its RBAC flag and
 * has its access-log line; a service without a policy pays one property read.
 */
import { compose, type Handler } from '../core/layer';
import { authzLayer } from './authz';
import type { StackContext } from './context';
import { deadlineLayer } from './deadline';
import { dispatcher } from './dispatch';
import { observeLayer } from './observe';
import { rateLimitLayer } from './rate-limit';
import { retryLayer } from './retry';

export function inboundStack(ctx: StackContext): Handler {
  return compose([rateLimitLayer(ctx, () => ctx.rateLimit), observeLayer(ctx, undefined), authzLayer(() => ctx.authz), deadlineLayer(ctx, undefined), retryLayer(ctx, undefined)], dispatcher(ctx));
}
