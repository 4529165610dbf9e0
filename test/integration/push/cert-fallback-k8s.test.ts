/**
 * On Kubernetes the ServiceAccount token decides, even beside a valid workload certificate: a
 * token TokenReview refuses (its pod was deleted) is not rescued by the certificate the pod held.
 * A control plane in this process with TLS on the push port and TokenReview against a local
 * HTTPS server answering as the API server does; a raw gRPC client presents the certificate.
 */
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { startControlPlane } from '../../../control-plane';
import { k8sSpiffeId } from '../../../src/security/spiffe';
import { fakeKubeApi } from '../lib/kube-api';
import { tmpDir } from '../lib/meshlet';
import { firstPushMessage, issue, type Workload } from '../lib/mtls';

t.test('a ServiceAccount token TokenReview refuses is final; no token at all lets the certificate decide', async (t) => {
  const kc = await fakeKubeApi(t, (_req, text) => {
    const spec = (JSON.parse(text || '{}') as { spec?: { token?: string } }).spec ?? {};
    const status =
      spec.token === 'live-pod-token'
        ? { authenticated: true, user: { username: 'system:serviceaccount:shop:catalog', extra: { 'authentication.kubernetes.io/pod-name': ['catalog-1'] } }, audiences: ['meshlet'] }
        : { authenticated: false, error: '[invalid bearer token, pod "catalog-1" not found]' };
    return { code: 201, body: { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: {}, spec, status } };
  });
  const dataDir = tmpDir();
  const cp = await startControlPlane({ dataDir, api: { port: 0 }, push: { port: 0 }, pushTls: { hosts: ['localhost'] }, security: { tokenReview: { kubeConfig: kc } } });
  t.teardown(() => cp.close());
  const cert = await issue(dataDir, 'catalog', { spiffeId: (td) => k8sSpiffeId(td, 'shop', 'catalog') });

  const register = (w: Workload, credential: string) =>
    firstPushMessage(cp.pushAddress.port, grpc.credentials.createSsl(Buffer.from(w.bundlePem), Buffer.from(w.keyPem), Buffer.from(w.chainPem)), { id: `catalog-${credential.length}`, service: 'catalog', credential });

  const gone = await register(cert, 'gone-pod-token');
  t.equal(gone.error?.code, grpc.status.UNAUTHENTICATED, 'the deleted pod does not come back on its certificate');
  t.match(gone.error?.details, /pod "catalog-1" not found/);

  const live = await register(cert, 'live-pod-token');
  t.equal(live.msg?.identity?.spiffeId, 'spiffe://cluster.local/ns/shop/sa/catalog', 'a live pod: its token decides');

  const certOnly = await register(cert, '');
  t.equal(certOnly.msg?.identity?.spiffeId, 'spiffe://cluster.local/ns/shop/sa/catalog', 'no token: the certificate proves ns/shop/sa/catalog, for service catalog');
});
