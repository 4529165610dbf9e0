/**
 * With the user's own push-port certificate (`--push-tls-cert/--push-tls-key`), the port still
 * asks for workload certificates and verifies them against the mesh's trust bundle: a client
 * presenting one registers its service without a token; one from another CA proves nothing.
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { startControlPlane } from '../../../control-plane';
import { tmpDir } from '../lib/meshlet';
import { firstPushMessage, issue, type Workload } from '../lib/mtls';

t.test("the user's own push-port certificate: workload certificates are still asked for and verified", async (t) => {
  const dir = tmpDir();
  const crt = path.join(dir, 'push.crt');
  const key = path.join(dir, 'push.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', key, '-out', crt], { stdio: 'ignore' });
  const dataDir = tmpDir();
  const cp = await startControlPlane({ dataDir, api: { port: 0 }, push: { port: 0 }, pushTls: { certPem: readFileSync(crt, 'utf8'), keyPem: readFileSync(key, 'utf8') } });
  t.teardown(() => cp.close());
  const otherDir = tmpDir();
  const other = await startControlPlane({ dataDir: otherDir, api: { port: 0 }, push: { port: 0 } });
  t.teardown(() => other.close());

  const register = (w: Workload) =>
    firstPushMessage(cp.pushAddress.port, grpc.credentials.createSsl(readFileSync(crt), Buffer.from(w.keyPem), Buffer.from(w.chainPem)), { id: 'catalog-1', service: 'catalog', credential: '' });

  const ours = await register(await issue(dataDir, 'catalog'));
  t.equal(ours.msg?.identity?.spiffeId, 'spiffe://cluster.local/svc/catalog', 'admitted on its workload certificate');
  const foreign = await register(await issue(otherDir, 'catalog'));
  t.equal(foreign.error?.code, grpc.status.UNAUTHENTICATED, "another mesh's certificate does not verify");
  t.match(foreign.error?.details, /^no credential: /);
});
