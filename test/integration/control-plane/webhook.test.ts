import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Agent, request } from 'undici';
import { parse } from 'yaml';
import { DEFAULT_OPTIONS, injectYaml } from '../../../src/inject';
import { validate } from '../../unit/inject/k8s';
import { cli, portOf, start, tmpDir } from '../lib/meshlet';

/** A self-signed certificate for 127.0.0.1, as `deploy/` makes one for the webhook's Service name. */
function certificate(dir: string): { cert: string; key: string } {
  const cert = path.join(dir, 'tls.crt');
  const key = path.join(dir, 'tls.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=meshlet-webhook', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

const pod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' }, annotations: { team: 'a' } },
  spec: { containers: [{ name: 'app', image: 'example/app:1', ports: [{ containerPort: 8080 }] }] },
};
const reviewOf = (object: unknown, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'shop', object, ...extra },
});

function applyPatch(doc: unknown, ops: { op: string; path: string; value: unknown }[]): any {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of ops) {
    const parts = op.path.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    let node = out as Record<string, unknown>;
    for (const p of parts.slice(0, -1)) node = node[p] as Record<string, unknown>;
    node[parts[parts.length - 1]] = op.value;
  }
  return out;
}

t.test('the injector webhook over HTTPS', async (t) => {
  const dir = tmpDir();
  const tls = certificate(dir);
  const cp = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', '--webhook', '127.0.0.1:0', '--tls-cert', tls.cert, '--tls-key', tls.key, '--inject-image', 'registry.local/meshlet:dev']);
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'webhook started');
  const url = `https://127.0.0.1:${portOf(String(l.webhook).replace(/\/inject$/, ''))}`;
  const dispatcher = new Agent({ connect: { ca: readFileSync(tls.cert) } });
  t.teardown(() => dispatcher.close());
  const post = async (body: unknown, p = '/inject', method: 'POST' | 'GET' = 'POST') => {
    const res = await request(url + p, { method, dispatcher, body: method === 'POST' ? (typeof body === 'string' ? body : JSON.stringify(body)) : undefined, headers: { 'content-type': 'application/json' } });
    return { status: res.statusCode, body: (await res.body.json()) as any };
  };

  const ok = await post(reviewOf(pod));
  t.equal(ok.status, 200);
  t.match(ok.body, { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: 'u-1', allowed: true, patchType: 'JSONPatch' } });
  const patched = applyPatch(pod, JSON.parse(Buffer.from(ok.body.response.patch, 'base64').toString('utf8')));
  t.doesNotThrow(() => validate(patched), 'the patched pod passes kubernetes-models validate()');
  t.same(patched.spec.initContainers.map((c: { name: string }) => c.name), ['meshlet-init', 'meshlet-proxy']);
  t.equal(patched.spec.initContainers[1].image, 'registry.local/meshlet:dev');
  t.equal(patched.metadata.annotations.team, 'a', 'existing annotations kept');
  // The same code as the CLI: `meshlet inject` on the same pod gives the same pod.
  const viaCli = injectYaml(JSON.stringify(pod), { ...DEFAULT_OPTIONS, image: 'registry.local/meshlet:dev' });
  t.same(patched, viaCli.ok ? parse(viaCli.value.text) : undefined, 'webhook patch == meshlet inject');

  const disabled = await post(reviewOf({ ...pod, metadata: { ...pod.metadata, annotations: { 'meshlet.dev/inject': 'disabled' } } }));
  t.same(disabled.body.response, { uid: 'u-1', allowed: true }, 'opted out: allowed, unchanged');

  const deployment = await post(reviewOf({}, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }));
  t.match(deployment.body.response, { allowed: true, warnings: [/Pods on CREATE only/] });
  t.notOk(deployment.body.response.patch);

  const bad = await post(reviewOf({ ...pod, metadata: { ...pod.metadata, annotations: { 'meshlet.dev/proxy-cpu': 'lots' } } }));
  t.equal(bad.status, 200);
  t.match(bad.body.response, { uid: 'u-1', allowed: false, status: { code: 400, message: /meshlet cannot inject this pod:\nmetadata\.annotations\["meshlet\.dev\/proxy-cpu"\]: expected a Kubernetes quantity/ } });

  // Malformed reviews: a clear 4xx, and the webhook keeps serving.
  for (const [body, re] of [
    ['{not json', /not JSON/],
    [[1, 2], /expected a JSON object/],
    [{ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }, /expected apiVersion admission\.k8s\.io\/v1 and kind AdmissionReview/],
    [{ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, /request: expected an object/],
    [{ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { kind: { kind: 'Pod', group: '' } } }, /request\.uid: expected a non-empty string/],
  ] as [unknown, RegExp][]) {
    const r = await post(body);
    t.equal(r.status, 400);
    t.match(r.body, { code: 'MALFORMED_REVIEW', message: re });
  }
  const noObject = await post(reviewOf(null));
  t.match(noObject.body.response, { allowed: false, status: { code: 400, message: /request\.object/ } });
  t.equal((await post(undefined, '/inject', 'GET')).status, 405);
  t.equal((await post({}, '/other')).status, 404);
  t.same((await post(undefined, '/healthz', 'GET')).body, { ok: true }, 'still serving');
});

t.test('webhook flags', async (t) => {
  const r = cli(['control-plane', '--webhook', '127.0.0.1:0']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--webhook needs --tls-cert and --tls-key/);
  const r2 = cli(['control-plane', '--inject-mode', 'classic']);
  t.equal(r2.code, 2);
  t.match(r2.stderr, /go with --webhook/);
});
