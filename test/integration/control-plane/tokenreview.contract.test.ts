/**
 * Contract test: ServiceAccount tokens verified through the TokenReview API, against a local
 * HTTPS server answering what the Kubernetes API server answers (no cluster runs here). Both
 * sides: the request the control plane makes (POST authentication.k8s.io/v1 tokenreviews with
 * the token and the `meshlet` audience, the control plane's own bearer token), and what it does
 * with real answers (authenticated, refused, another audience, not a service account, 403).
 */
import t from 'tap';
import { TokenReviewer } from '../../../control-plane/token-review';
import { WorkloadIdentityService } from '../../../control-plane/identity';
import { MeshCa } from '../../../control-plane/ca';
import { TokenStore } from '../../../control-plane/tokens';
import { fakeKubeApi } from '../lib/kube-api';
import { tmpDir } from '../lib/meshlet';

const REVIEW_PATH = '/apis/authentication.k8s.io/v1/tokenreviews';

t.test('TokenReview: the request made, and every answer handled', async (t) => {
  const dir = tmpDir();
  const seen: { method?: string; path?: string; auth?: string; body: { apiVersion: string; kind: string; spec: { token: string; audiences?: string[] } } }[] = [];
  // What the API server answers for each token (the shapes of real responses).
  const answers: Record<string, { code: number; body: unknown }> = {
    'good-token': {
      code: 201,
      body: {
        status: {
          authenticated: true,
          user: {
            username: 'system:serviceaccount:shop:catalog',
            uid: 'b4f4e3a1-0000-4000-8000-000000000001',
            groups: ['system:serviceaccounts', 'system:serviceaccounts:shop', 'system:authenticated'],
            extra: { 'authentication.kubernetes.io/pod-name': ['catalog-7d9f-abcde'], 'authentication.kubernetes.io/pod-uid': ['0c1d-pod'] },
          },
          audiences: ['meshlet'],
        },
      },
    },
    'bad-token': { code: 201, body: { status: { authenticated: false, error: '[invalid bearer token, token has been invalidated]' } } },
    'other-audience': { code: 201, body: { status: { authenticated: true, user: { username: 'system:serviceaccount:shop:catalog' }, audiences: ['vault'] } } },
    'a-person': { code: 201, body: { status: { authenticated: true, user: { username: 'alice@example.com' }, audiences: ['meshlet'] } } },
    forbidden: {
      code: 403,
      body: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:meshlet-system:meshlet" cannot create resource "tokenreviews"', reason: 'Forbidden', code: 403 },
    },
  };
  const kc = await fakeKubeApi(t, (req, text) => {
    const body = JSON.parse(text || '{}');
    seen.push({ method: req.method, path: req.url, auth: req.headers.authorization, body });
    const a = answers[body.spec?.token] ?? answers['bad-token'];
    return { code: a!.code, body: a!.code === 201 ? { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec: body.spec, ...(a!.body as object) } : a!.body };
  });
  const reviewer = new TokenReviewer({ kubeConfig: kc });

  t.same(await reviewer.review('good-token'), { namespace: 'shop', serviceAccount: 'catalog', podName: 'catalog-7d9f-abcde', podUid: '0c1d-pod' });
  t.equal(seen[0]?.method, 'POST');
  t.equal(seen[0]?.path, REVIEW_PATH);
  t.equal(seen[0]?.auth, 'Bearer control-plane-sa-token', "the control plane's own credential");
  t.same(seen[0]?.body, { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token: 'good-token', audiences: ['meshlet'] } });
  await t.rejects(reviewer.review('bad-token'), { code: 'CREDENTIAL_INVALID', message: /not accepted by Kubernetes: \[invalid bearer token/ });
  await t.rejects(reviewer.review('other-audience'), { code: 'CREDENTIAL_INVALID', message: /not bound to the audience meshlet \(it has vault\)/ });
  await t.rejects(reviewer.review('a-person'), { code: 'CREDENTIAL_INVALID', message: /belongs to "alice@example.com", not a service account/ });
  await t.rejects(reviewer.review('forbidden'), { code: 'CREDENTIAL_INVALID', message: /refused the TokenReview \(HTTP 403\).*cannot create resource "tokenreviews".*needs create on tokenreviews/ });

  // Through the identity service: the SPIFFE ID of the service account, its service only.
  const ca = await MeshCa.open({ dataDir: dir, trustDomain: 'cluster.local', pollMs: 0 });
  const ids = new WorkloadIdentityService({ ca, tokens: new TokenStore(dir), tokenReviewer: reviewer });
  const who = await ids.authenticate('good-token', 'catalog');
  t.equal(who.id.uri, 'spiffe://cluster.local/ns/shop/sa/catalog');
  t.equal(who.credential, 'shop/catalog (pod catalog-7d9f-abcde)');
  await t.rejects(ids.authenticate('good-token', 'pricing'), { code: 'CREDENTIAL_WRONG_SERVICE', message: /service account shop\/catalog may register only service catalog, not pricing/ });
  await t.rejects(ids.authenticate('', 'catalog'), { code: 'CREDENTIAL_MISSING' });
  const noK8s = new WorkloadIdentityService({ ca, tokens: new TokenStore(dir) });
  await t.rejects(noK8s.authenticate('good-token', 'catalog'), { code: 'CREDENTIAL_INVALID', message: /does not verify Kubernetes tokens/ });
  t.same(ids.counts, { signed: 0, refused: 0, authenticated: 1, unauthenticated: 2 });
});
