import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as admission from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as autoscaling from 'kubernetes-models/autoscaling/v2';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as core from 'kubernetes-models/v1';

const DIR = path.resolve(__dirname, '..', '..', '..', 'deploy', 'kubernetes');
type Ctor = new (data: never) => { validate(): void };
const MODELS: Record<string, Ctor> = {
  'v1/Namespace': core.Namespace,
  'v1/ServiceAccount': core.ServiceAccount,
  'v1/Service': core.Service,
  'apps/v1/Deployment': apps.Deployment,
  'apps/v1/StatefulSet': apps.StatefulSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': rbac.ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': rbac.ClusterRoleBinding,
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': admission.MutatingWebhookConfiguration,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': autoscaling.HorizontalPodAutoscaler,
  'networking.k8s.io/v1/NetworkPolicy': networking.NetworkPolicy,
};

const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
const objects: { file: string; obj: any }[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8')).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
    return { file, obj: d.toJS() };
  }),
);
const find = (kind: string) => objects.filter((o) => o.obj.kind === kind && o.file !== 'gateway.yaml').map((o) => o.obj);
const gateway = (kind: string) => objects.filter((o) => o.obj.kind === kind && o.file === 'gateway.yaml').map((o) => o.obj);

t.test('every manifest passes kubernetes-models validate()', async (t) => {
  t.ok(objects.length >= 9);
  for (const { file, obj } of objects) {
    const Model = MODELS[`${obj.apiVersion}/${obj.kind}`];
    t.ok(Model, `${file}: a model for ${obj.apiVersion}/${obj.kind}`);
    if (Model) t.doesNotThrow(() => new Model(obj as never).validate(), `${file}: ${obj.kind}/${obj.metadata.name} is valid`);
  }
});

t.test('the kustomization lists every manifest but the example', async (t) => {
  const k = parseAllDocuments(readFileSync(path.join(DIR, 'kustomization.yaml'), 'utf8'))[0].toJS();
  t.equal(k.kind, 'Kustomization');
  t.same([...k.resources].sort(), files.filter((f) => !f.endsWith('-example.yaml')).sort());
});

t.test('what the manifests promise', async (t) => {
  const [role] = find('ClusterRole');
  t.same(
    role.rules,
    [
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
    ],
    'least privilege: read EndpointSlices, create TokenReviews, nothing else',
  );
  const [dep] = find('Deployment');
  t.equal(dep.spec.replicas, 2);
  t.equal(dep.spec.template.spec.securityContext.runAsNonRoot, true);
  const c = dep.spec.template.spec.containers[0];
  t.equal(c.securityContext.readOnlyRootFilesystem, true);
  const [svc] = find('Service');
  const [wh] = find('MutatingWebhookConfiguration');
  const cc = wh.webhooks[0].clientConfig.service;
  t.match(cc, { name: svc.metadata.name, namespace: svc.metadata.namespace, path: '/inject' });
  const port = svc.spec.ports.find((p: { port: number }) => p.port === cc.port);
  t.ok(port, 'the webhook port exists on the Service');
  t.ok(c.ports.some((p: { name: string }) => p.name === port.targetPort), 'and reaches the container');
  t.ok(c.args.some((a: string) => a.startsWith('--webhook=')));
  t.same(wh.webhooks[0].admissionReviewVersions, ['v1']);
  t.ok(wh.webhooks[0].namespaceSelector.matchExpressions.some((e: { values: string[] }) => e.values.includes('meshlet-system')), 'never injects its own namespace');
  const [pdb] = find('PodDisruptionBudget');
  t.same(pdb.spec.selector.matchLabels, dep.spec.selector.matchLabels);
  const [ns] = find('Namespace');
  t.equal(ns.metadata.labels['meshlet.dev/inject'], 'disabled');
});

t.test('every control-plane replica uses the one 3-member etcd cluster', async (t) => {
  const [dep] = find('Deployment');
  const [sts] = find('StatefulSet');
  t.equal(sts.spec.replicas, 3, 'three members: one may be down');
  const headless = find('Service').find((s) => s.metadata.name === sts.spec.serviceName);
  t.equal(headless?.spec.clusterIP, 'None', 'members have stable DNS names');
  const store = (dep.spec.template.spec.containers[0].args as string[]).find((a) => a.startsWith('--store='));
  const members = [0, 1, 2].map((i) => `${sts.metadata.name}-${i}.${sts.spec.serviceName}.${sts.metadata.namespace}.svc:2379`);
  t.equal(store, `--store=etcd://${members.join(',')}`, 'the Deployment lists every member');
  const cmd = sts.spec.template.spec.containers[0].command as string[];
  t.ok(cmd.includes(`--initial-cluster=${members.map((m, i) => `${sts.metadata.name}-${i}=http://${m.replace(':2379', ':2380')}`).join(',')}`), 'the members know each other');
  const etcdPdb = find('PodDisruptionBudget').find((p) => p.metadata.name === 'meshlet-etcd');
  t.equal(etcdPdb?.spec.minAvailable, 2, 'drains keep a quorum');
});

t.test('make-webhook-cert.sh makes a CA and a serving certificate the CA verifies', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-cert-'));
  execFileSync('sh', [path.join(DIR, 'make-webhook-cert.sh'), dir], { env: { ...process.env, DRY_RUN: '1' }, stdio: 'ignore' });
  const verify = execFileSync('openssl', ['verify', '-CAfile', path.join(dir, 'ca.crt'), path.join(dir, 'tls.crt')], { encoding: 'utf8' });
  t.match(verify, /tls\.crt: OK/);
  const text = execFileSync('openssl', ['x509', '-in', path.join(dir, 'tls.crt'), '-noout', '-ext', 'subjectAltName'], { encoding: 'utf8' });
  t.match(text, /DNS:meshlet-control-plane\.meshlet-system\.svc/);
});

t.test('the Dockerfile: multi-stage on node:20-slim, running as non-root', async (t) => {
  const df = readFileSync(path.resolve(DIR, '..', 'Dockerfile'), 'utf8');
  const froms = df.match(/^FROM .*/gm) ?? [];
  t.equal(froms.length, 2);
  for (const f of froms) t.match(f, /^FROM node:20-slim\b/);
  t.match(df, /^USER 1337:1337$/m);
  t.match(df, /COPY deploy\/meshlet-init\.sh \/usr\/local\/bin\/meshlet-init\.sh/, 'the path the injected init container runs');
});

t.test('the control plane\'s doors: ClusterIP only, API over TLS, API callers by ServiceAccount', async (t) => {
  for (const svc of find('Service')) t.equal(svc.spec.type ?? 'ClusterIP', 'ClusterIP', `${svc.metadata.name}: not exposed outside the cluster`);
  const dep = find('Deployment').find((d) => d.metadata.name === 'meshlet-control-plane');
  const c = dep.spec.template.spec.containers[0];
  t.ok(c.args.some((a: string) => a.startsWith('--api-tls-cert=')), 'the API is served over TLS');
  t.notOk(c.args.includes('--insecure-plaintext'));
  t.ok(c.args.some((a: string) => a.startsWith('--api-sa-role=')), 'API callers are ServiceAccounts with a role');
  t.equal(c.readinessProbe.httpGet.scheme, 'HTTPS');
  const role = find('ClusterRole').find((r) => r.metadata.name === 'meshlet-control-plane');
  t.ok(role.rules.some((r: { resources: string[]; verbs: string[] }) => r.resources.includes('tokenreviews') && r.verbs.includes('create')), 'TokenReview allowed');
});

t.test('the edge gateway: Deployment, LoadBalancer Service, PDB, HPA', async (t) => {
  const [dep] = gateway('Deployment');
  const [svc] = gateway('Service');
  const [pdb] = gateway('PodDisruptionBudget');
  const [hpa] = gateway('HorizontalPodAutoscaler');
  const [sa] = gateway('ServiceAccount');
  t.ok(dep && svc && pdb && hpa && sa, 'all there');
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  t.equal(c.args[0], 'gateway', 'runs `meshlet gateway`');
  t.ok(c.args.includes('--name=gateway'));
  t.ok(c.args.some((a: string) => a.startsWith('--control-plane=meshlet-control-plane.meshlet-system.svc:')), 'connects to the control plane Service');
  t.equal(pod.serviceAccountName, sa.metadata.name, 'its own identity');
  const tokenVol = pod.volumes.find((v: any) => v.projected)?.projected.sources[0].serviceAccountToken;
  t.equal(tokenVol?.audience, 'meshlet', 'a projected meshlet-audience token as its credential');
  t.ok(c.args.includes('--credential-file=/var/run/secrets/meshlet/token'));
  t.equal(dep.spec.template.metadata.annotations['meshlet.dev/inject'], 'disabled', 'no sidecar in front of the gateway');
  t.equal(pod.securityContext.runAsNonRoot, true);
  t.equal(c.securityContext.readOnlyRootFilesystem, true);
  t.equal(svc.spec.type, 'LoadBalancer');
  t.same(svc.spec.selector, dep.spec.selector.matchLabels, 'the Service selects the gateway pods');
  for (const p of svc.spec.ports) t.ok(c.ports.some((cp: { name: string }) => cp.name === p.targetPort), `Service port ${p.port} reaches a container port`);
  t.same(pdb.spec.selector.matchLabels, dep.spec.selector.matchLabels);
  t.match(hpa.spec.scaleTargetRef, { kind: 'Deployment', name: dep.metadata.name });
  t.ok(hpa.spec.minReplicas >= 2 && hpa.spec.minReplicas <= dep.spec.replicas, 'never below the PDB\u2019s floor plus one');
  t.ok(c.readinessProbe.httpGet.path === '/ready' && c.ports.some((p: { name: string; containerPort: number }) => p.name === c.readinessProbe.httpGet.port), 'ready once a snapshot is applied');
});
