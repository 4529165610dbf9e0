/**
 * The outbound stack (app -> mesh), assembled once per compiled rule, in the order a request
 * travels. A layer the rule does not need is not in its stack. To add a layer: write its file in
 * src/stack/, add one line here (and in inbound.ts if it applies there), and its policy field.
 *
 *   route match (front, src/stack/front.ts) -> forwarded (x-forwarded-for trust) -> CORS
 *   (preflights answered) -> redirect -> fault -> route breaker -> header edits -> identity
 *   -> observe -> mirror -> edge: IP filter -> JWT -> API key -> cache -> aggregation (answers;
 *   no layer below) -> transcode (JSON -> gRPC) -> gRPC message sizes -> deadline -> retry
 *   -> per try: pick endpoint (outlier-aware, limits, protocol) -> dispatcher (UpstreamPools)
 *
 * The edge layers sit below observe (their refusals are counted, traced and logged on the route)
 * and authentication comes before the cache (an unauthenticated client never gets a cached
 * answer). An aggregation's backend calls are routed again from the top (`routeCall`).
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
import { corsLayer, preflightLayer, redirectLayer } from './route-replies';
import { ipFilterLayer } from './ip-filter';
import { jwtLayer } from './jwt';
import { apiKeyLayer } from './api-key';
import { cacheLayer } from './cache';
import { aggregateLayer, type RouteCall } from './aggregate';
import type { MeshCall } from '../core/layer';
import type { ResponseSink, UpstreamCall } from '../http/upstream-types';

export function outboundRuleStack(ctx: StackContext, rule: CompiledRule): Handler {
  const edge = rule.edge;
  return compose(
    [
      ctx.xffTrustedHops !== undefined ? forwardedLayer(ctx.xffTrustedHops) : undefined,
      edge?.cors ? corsLayer(edge.cors) : rule.grpc?.allowOrigins ? preflightLayer(rule.grpc) : undefined,
      rule.redirect ? redirectLayer(rule.redirect) : undefined,
      rule.fault ? faultLayer(ctx, rule.fault) : undefined,
      rule.breaker ? breakerLayer(ctx, rule) : undefined,
      rule.requestHeaders || rule.responseHeaders ? editsLayer(rule.requestHeaders, rule.responseHeaders) : undefined,
      ctx.service !== undefined ? identityLayer(ctx.service, rule.statName) : undefined,
      observeLayer(ctx, rule),
      rule.mirror ? mirrorLayer(ctx, rule.mirror) : undefined,
      edge?.ipFilter ? ipFilterLayer(edge.ipFilter) : undefined,
      edge?.jwt ? jwtLayer(ctx, edge.jwt) : undefined,
      edge?.apiKeys ? apiKeyLayer(ctx, edge.apiKeys) : undefined,
      edge?.cache ? cacheLayer(ctx, rule, edge.cache) : undefined,
      edge?.aggregate ? aggregateLayer(ctx, edge.aggregate, routeCall(ctx)) : undefined,
      (ctx.snapshot()?.transcoders.size ?? 0) > 0 ? transcodeLayer(ctx) : undefined,
      grpcMessagesLayer(rule.grpc?.maxMessageBytes),
      deadlineLayer(ctx, rule.timeoutMs),
      retryLayer(ctx, rule.retries),
      pickLayer(ctx, rule),
    ],
    dispatcher(ctx),
  );
}

/**
 * A call routed as if the app had sent it (an aggregation's backend call): the rule for its
 * authority and path in the snapshot in force, and that rule's stack. Aggregations do not nest.
 */
function routeCall(ctx: StackContext): RouteCall {
  return (call: MeshCall, sink: ResponseSink): UpstreamCall | undefined => {
    const view = call.view;
    const rule = view ? ctx.snapshot()?.routes.match(view) : undefined;
    if (!rule || !view || rule.edge?.aggregate || rule.redirect) return undefined;
    if (rule.rewritePath) call.path = rule.rewritePath(view);
    if (rule.rewriteHost) call.authority = rule.rewriteHost;
    call.rule = rule;
    call.backend = rule.pickBackend();
    return ruleStack(ctx, rule)(call, sink);
  };
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
