/**
 * The outbound stack (app -> mesh), assembled once per compiled rule, in the order a request
 * travels. A layer the rule does not need is not in its stack. To add a layer: write its file in
 * src/stack/, add one line here (and in inbound.ts if it applies there), and its policy field.
 *
 *   route match (front, src/stack/front.ts) -> forwarded (x-forwarded-for trust) -> CORS preflight -> redirect -> fault -> route breaker
 *   -> header edits -> identity -> observe -> mirror -> transcode (JSON -> gRPC) -> gRPC message
 *   sizes -> deadline -> retry
 *   -> per try: pick endpoint (outlier-aware, limits, protocol) -> dispatcher (UpstreamPools)
 *
 * Preflight, redirect, fault and breaker answers are counted by the front adapter on the
 * direction's unrouted handle (as before observe existed for them); everything below observe is
 * counted, traced and logged on the route's handle.
 */
import { compose, type Handler } from '../core/layer';
import type { CompiledRule } from '../policy/compiled';
import { breakerLayer } from './breaker';
import type { StackContext } from './context';
import { deadlineLayer } from './deadline';
import { dispatcher } from './dispatch';
import { editsLayer } from './edits';
import { faultLayer } from './fault';
import { forwardedLayer } from './forwarded';
import { grpcMessagesLayer } from './grpc-messages';
import { identityLayer } from './identity';
import { mirrorLayer } from './mirror';
import { observeLayer } from './observe';
import { pickLayer } from './pick';
import { retryLayer } from './retry';
import { transcodeLayer } from './transcode';
import { preflightLayer, redirectLayer } from './route-replies';

export function outboundRuleStack(ctx: StackContext, rule: CompiledRule): Handler {
  return compose(
    [
      ctx.xffTrustedHops !== undefined ? forwardedLayer(ctx.xffTrustedHops) : undefined,
      rule.grpc?.allowOrigins ? preflightLayer(rule.grpc) : undefined,
      rule.redirect ? redirectLayer(rule.redirect) : undefined,
      rule.fault ? faultLayer(ctx, rule.fault) : undefined,
      rule.breaker ? breakerLayer(ctx, rule) : undefined,
      rule.requestHeaders || rule.responseHeaders ? editsLayer(rule.requestHeaders, rule.responseHeaders) : undefined,
      ctx.service !== undefined ? identityLayer(ctx.service, rule.statName) : undefined,
      observeLayer(ctx, rule),
      rule.mirror ? mirrorLayer(ctx, rule.mirror) : undefined,
      (ctx.snapshot()?.transcoders.size ?? 0) > 0 ? transcodeLayer(ctx) : undefined,
      grpcMessagesLayer(rule.grpc?.maxMessageBytes),
      deadlineLayer(ctx, rule.timeoutMs),
      retryLayer(ctx, rule.retries),
      pickLayer(ctx, rule),
    ],
    dispatcher(ctx),
  );
}

const stacks = new WeakMap<CompiledRule, Handler>();

/** The rule's stack, built on first use and kept as long as the rule (one snapshot). */
export function ruleStack(ctx: StackContext, rule: CompiledRule): Handler {
  let h = stacks.get(rule);
  if (!h) {
    h = outboundRuleStack(ctx, rule);
    stacks.set(rule, h);
  }
  return h;
}
