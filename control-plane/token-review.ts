/**
 * The Kubernetes bootstrap credential: a pod's projected ServiceAccount token, verified by the
 * API server through the TokenReview API (authentication.k8s.io/v1), as Istio's CA does.
 *
 * The token must be authenticated, be a service account's (`system:serviceaccount:NS:SA`) and,
 * when audiences are configured (default `meshlet`, what the injector projects), be bound to one
 * of them: a token minted for another audience is refused even when Kubernetes accepts it.
 */
import type * as k8s from '@kubernetes/client-node';
import { SecurityError } from '../src/security/errors';

export interface TokenReviewOptions {
  /** Default: KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeConfig?: k8s.KubeConfig;
  /** Audiences the token must carry (default ['meshlet']); empty: the API server's default. */
  audiences?: string[];
}

export interface ReviewedServiceAccount {
  namespace: string;
  serviceAccount: string;
  /** From a bound token: the pod it was issued to. */
  podName?: string;
  podUid?: string;
}

export const DEFAULT_AUDIENCES = ['meshlet'];
const SA_USER = /^system:serviceaccount:([a-z0-9]([-a-z0-9]*[a-z0-9])?):([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/;

export class TokenReviewer {
  private readonly opts: TokenReviewOptions;
  private api: k8s.AuthenticationV1Api | undefined;

  constructor(opts: TokenReviewOptions = {}) {
    this.opts = opts;
  }

  /** Throws a SecurityError: CREDENTIAL_INVALID (refused, not a service account, wrong audience) or the API's failure. */
  async review(token: string): Promise<ReviewedServiceAccount> {
    const api = await this.client();
    const audiences = this.opts.audiences ?? DEFAULT_AUDIENCES;
    let res: k8s.V1TokenReview;
    try {
      res = await api.createTokenReview({
        body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, ...(audiences.length ? { audiences } : {}) } },
      });
    } catch (err) {
      const e = err as { code?: number; body?: unknown; message?: string };
      const detail = typeof e.body === 'string' ? safeMessage(e.body) : e.message;
      throw new SecurityError('CREDENTIAL_INVALID', `the Kubernetes API refused the TokenReview${e.code ? ` (HTTP ${e.code})` : ''}: ${detail ?? 'no answer'}; the control plane's service account needs create on tokenreviews.authentication.k8s.io`, { cause: err });
    }
    const st = res.status;
    if (!st?.authenticated) throw new SecurityError('CREDENTIAL_INVALID', `the ServiceAccount token was not accepted by Kubernetes${st?.error ? `: ${st.error}` : ''}`);
    const user = st.user?.username ?? '';
    const m = SA_USER.exec(user);
    if (!m) throw new SecurityError('CREDENTIAL_INVALID', `the token belongs to ${JSON.stringify(user)}, not a service account`);
    if (audiences.length && !(st.audiences ?? []).some((a) => audiences.includes(a)))
      throw new SecurityError('CREDENTIAL_INVALID', `the token is not bound to the audience ${audiences.join(' or ')} (it has ${(st.audiences ?? []).join(', ') || 'none'})`);
    const extra = st.user?.extra ?? {};
    return {
      namespace: m[1] as string,
      serviceAccount: m[3] as string,
      podName: extra['authentication.kubernetes.io/pod-name']?.[0],
      podUid: extra['authentication.kubernetes.io/pod-uid']?.[0],
    };
  }

  private async client(): Promise<k8s.AuthenticationV1Api> {
    if (this.api) return this.api;
    const lib = await import('@kubernetes/client-node');
    let kc = this.opts.kubeConfig;
    if (!kc) {
      kc = new lib.KubeConfig();
      kc.loadFromDefault();
    }
    this.api = kc.makeApiClient(lib.AuthenticationV1Api);
    return this.api;
  }
}

function safeMessage(body: string): string {
  try {
    const j = JSON.parse(body) as { message?: string };
    return j.message ?? body.slice(0, 200);
  } catch {
    return body.slice(0, 200);
  }
}
