/**
 * A stand-in Kubernetes API server for TokenReview tests: real HTTPS (a self-signed P-256
 * certificate made with openssl for 127.0.0.1), answering each request with what `answer` returns
 * for it, and a KubeConfig that trusts it and sends a bearer token, as a control plane's in-cluster
 * config would.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as k8s from '@kubernetes/client-node';
import type { Test } from 'tap';
import { tmpDir } from './meshlet';

export async function fakeKubeApi(t: Test, answer: (req: IncomingMessage, body: string) => { code: number; body: unknown }): Promise<k8s.KubeConfig> {
  const dir = tmpDir();
  const crt = path.join(dir, 'apiserver.crt');
  const key = path.join(dir, 'apiserver.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', crt], { stdio: 'ignore' });
  const api = https.createServer({ cert: readFileSync(crt), key: readFileSync(key) }, (req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c));
    req.on('end', () => {
      const a = answer(req, text);
      res.writeHead(a.code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    api.closeAllConnections();
    api.close();
  });
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'test', server: `https://127.0.0.1:${(api.address() as AddressInfo).port}`, caFile: crt }],
    users: [{ name: 'meshlet', token: 'control-plane-sa-token' }],
    contexts: [{ name: 'test', cluster: 'test', user: 'meshlet' }],
    currentContext: 'test',
  });
  return kc;
}
