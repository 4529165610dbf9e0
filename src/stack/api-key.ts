/**
 * API keys (src/edge/api-keys.ts): the key is read from the rule's header or query parameter and
 * looked up by its SHA-256 among the consumers' hashed keys. Missing, unknown or expired (by the
 * stack's clock): 401 with
 * `WWW-Authenticate: ApiKey ...`. Known: the key is removed from the forwarded request (unless
 * `hideCredentials: false`), and the consumer's name is forwarded in `consumerHeader` and in
 * `x-meshlet-consumer`, which the destination's rate limits read as the descriptor `consumer`
 * (so limits are per client). A client-sent consumer header never passes (identity.ts removes
 * `x-meshlet-consumer`; the policy removes `consumerHeader`).
 */
import { NOOP_CALL, type Layer } from '../core/layer';
import { compileApiKeys } from '../edge/api-keys';
import type { ApiKeysSpec } from '../policy/types';
import { CONSUMER_HEADER } from '../resilience/rate-limit/identity';
import type { StackContext } from './context';
import { editHeaders, edgeReply } from './edge-common';

export function apiKeyLayer(ctx: Pick<StackContext, 'clock'>, spec: ApiKeysSpec): Layer {
  const r = compileApiKeys(spec, 'apiKeys');
  if (!r.ok) throw new Error(`apiKeys: ${r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`); // validated by the parser already
  const policy = r.value;
  const names = policy.config.from.flatMap((f) => ('header' in f ? [f.header] : []));
  const alsoConsumer = policy.config.consumerHeader !== CONSUMER_HEADER;
  return (next) => (call, sink) => {
    const headers: Record<string, string | undefined> = {};
    for (const n of names) headers[n] = call.header(n);
    const out = policy.authenticate({ path: call.path, headers }, ctx.clock.now());
    if (!out.ok) {
      sink.onError(edgeReply(out.error), false);
      return NOOP_CALL;
    }
    const set = out.consumer !== undefined && alsoConsumer ? [...out.setHeaders, [CONSUMER_HEADER, out.consumer] as const] : out.setHeaders;
    call.headers = editHeaders(call.headers, alsoConsumer ? [...out.removeHeaders, CONSUMER_HEADER] : out.removeHeaders, set);
    if (out.path !== undefined) call.path = out.path;
    return next(call, sink);
  };
}
