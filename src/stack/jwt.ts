/**
 * JWT authentication (src/edge/jwt.ts, on jose): the bearer token is verified against the rule's
 * issuers (JWKS from a URL, cached per process and kept across snapshots, or inline keys); a
 * verified token is cached by its hash until it expires. Refusals are answered here: 401 with
 * `WWW-Authenticate: Bearer error="invalid_token"` (missing, malformed, expired, not yet valid,
 * forged, `alg: none` or HMAC, wrong issuer or audience), 403 `insufficient_scope`. On success the
 * claim headers the rule names are set (client-sent copies removed first) and `Authorization` is
 * removed unless `forwardAuthorization`.
 *
 * jose is loaded when the first rule with a `jwt` block builds its stack, not by every sidecar.
 */
import { LocalReply, NOOP_CALL, type Layer } from '../core/layer';
import type { JwtPolicy } from '../edge/jwt';
import type { JwtSpec } from '../policy/types';
import type { UpstreamCall } from '../http/upstream-types';
import type { StackContext } from './context';
import { editHeaders, edgeReply } from './edge-common';

export function jwtLayer(ctx: StackContext, spec: JwtSpec): Layer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const jose = require('../edge/jwt') as typeof import('../edge/jwt');
  const jwks = ctx.edge?.jwks() ?? new jose.JwksStore({ clock: ctx.clock });
  const r = jose.compileJwtPolicy(spec, 'jwt', { clock: ctx.clock, jwks });
  const policy: JwtPolicy | undefined = r.ok ? r.value : undefined;
  const header = spec.header;
  return (next) => (call, sink) => {
    if (!policy) {
      sink.onError(new LocalReply(500, 'UAEX', 'the rule\u2019s jwt block did not compile'), false);
      return NOOP_CALL;
    }
    let gone = false;
    let inner: UpstreamCall | undefined;
    void policy.authenticate({ [header]: call.header(header) }).then((out) => {
      if (gone) return;
      if (!out.ok) return sink.onError(edgeReply(out.error), false);
      call.headers = editHeaders(call.headers, out.removeHeaders, out.setHeaders);
      inner = next(call, sink);
    });
    return {
      abort(reason?: Error) {
        if (gone) return;
        gone = true;
        inner?.abort(reason);
      },
      resume() {
        inner?.resume();
      },
    };
  };
}
