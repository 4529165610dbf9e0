import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { DEFAULT_OPTIONS, injectYaml, jsonPatch, planPod, type InjectOptions, type PatchOp } from '../../../src/inject';
import { validate } from './k8s';

const podSpec = `
      containers:
        - name: app
          image: example/app:1
          ports:
            - containerPort: 8080`;

function workload(kind: string, apiVersion: string, extra = ''): string {
  const template = `
    metadata:
      labels:
        app: web${extra}
    spec:${podSpec.replace(/\n/g, '\n')}`;
  switch (kind) {
    case 'Pod':
      return `apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web${extra.replace(/\n      /g, '\n  ')}\nspec:${podSpec.replace(/\n    /g, '\n')}\n`;
    case 'CronJob':
      return `apiVersion: ${apiVersion}\nkind: CronJob\nmetadata:\n  name: web\nspec:\n  schedule: "*/5 * * * *"\n  jobTemplate:\n    spec:\n      template:${template.replace(/\n/g, '\n    ')}\n          restartPolicy: Never\n`;
    case 'Job':
      return `apiVersion: ${apiVersion}\nkind: Job\nmetadata:\n  name: web\nspec:\n  template:${template}\n      restartPolicy: Never\n`;
    default: {
      const selector = kind === 'ReplicationController' ? '  selector:\n    app: web\n' : '  selector:\n    matchLabels:\n      app: web\n';
      const svc = kind === 'StatefulSet' ? '  serviceName: web\n' : '';
      return `apiVersion: ${apiVersion}\nkind: ${kind}\nmetadata:\n  name: web\nspec:\n${selector}${svc}  template:${template}\n`;
    }
  }
}

const KINDS: [string, string][] = [
  ['Pod', 'v1'],
  ['ReplicationController', 'v1'],
  ['Deployment', 'apps/v1'],
  ['StatefulSet', 'apps/v1'],
  ['DaemonSet', 'apps/v1'],
  ['ReplicaSet', 'apps/v1'],
  ['Job', 'batch/v1'],
  ['CronJob', 'batch/v1'],
];

function inject(text: string, options: Partial<InjectOptions> = {}) {
  const r = injectYaml(text, { ...DEFAULT_OPTIONS, ...options });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function podOf(obj: Record<string, any>): Record<string, any> {
  if (obj.kind === 'Pod') return obj;
  if (obj.kind === 'CronJob') return obj.spec.jobTemplate.spec.template;
  return obj.spec.template;
}

t.test('every workload kind: injected in the native layout, valid for Kubernetes, idempotent', async (t) => {
  for (const mode of ['native', 'classic'] as const) {
    for (const [kind, apiVersion] of KINDS) {
      const input = workload(kind, apiVersion);
      t.doesNotThrow(() => validate(parse(input)), `${kind} fixture is valid`);
      const once = inject(input, { mode });
      const obj = parse(once.text);
      t.doesNotThrow(() => validate(obj), `${mode} ${kind}: output passes kubernetes-models validate()`);
      const pod = podOf(obj);
      const init = pod.spec.initContainers.map((c: { name: string }) => c.name);
      const containers = pod.spec.containers.map((c: { name: string }) => c.name);
      if (mode === 'native') {
        t.same(init, ['meshlet-init', 'meshlet-proxy'], `${kind}: init + native sidecar`);
        t.same(containers, ['app'], `${kind}: app containers untouched`);
        t.equal(pod.spec.initContainers[1].restartPolicy, 'Always');
        t.ok(pod.spec.initContainers[1].startupProbe, 'the startup probe holds the app until the proxy is ready');
      } else {
        t.same(init, ['meshlet-init']);
        t.same(containers, ['meshlet-proxy', 'app'], `${kind}: classic: proxy first`);
        t.ok(pod.spec.containers[0].lifecycle.postStart, 'postStart holds the app until the proxy is ready');
      }
      t.same(pod.spec.volumes.map((v: { name: string }) => v.name), ['meshlet-tmp', 'meshlet-token']);
      t.equal(JSON.parse(pod.metadata.annotations['meshlet.dev/status']).mode, mode);
      t.equal(pod.metadata.annotations['kubectl.kubernetes.io/default-container'], 'app');
      t.match(once.reports, [{ where: `document 1, ${kind}/web`, action: "injected", detail: mode === "classic" && /Job/.test(kind) ? /quitquitquit/ : `${mode} sidecar` }]);
      t.equal(inject(once.text, { mode }).text, once.text, `${mode} ${kind}: injecting twice = once`);
    }
  }
});

t.test('the proxy container: uid 1337, service from the app label, app port from the first containerPort', async (t) => {
  const pod = parse(inject(workload('Pod', 'v1')).text);
  const proxy = pod.spec.initContainers[1];
  t.equal(proxy.securityContext.runAsUser, 1337);
  t.equal(proxy.securityContext.runAsNonRoot, true);
  const args: string[] = proxy.args;
  t.equal(args[args.indexOf('--service') + 1], 'web');
  t.equal(args[args.indexOf('--app-port') + 1], '8080');
  t.equal(args[args.indexOf('--inbound') + 1], '0.0.0.0:15006');
  t.equal(args[args.indexOf('--outbound') + 1], '127.0.0.1:15001');
  t.notOk(args.includes('--inbound-localhost'), 'by default non-app inbound ports go to the pod address');
  t.same(proxy.resources.requests, { cpu: '100m', memory: '64Mi' });
  const init = pod.spec.initContainers[0];
  t.same(init.securityContext.capabilities.add, ['NET_ADMIN', 'NET_RAW']);
  t.same(init.args, ['--proxy-uid', '1337', '--inbound-port', '15006', '--outbound-port', '15001', '--exclude-inbound-ports', '15020']);
});

t.test("the proxy's credential: a projected ServiceAccount token for the control plane's audience, read from a file", async (t) => {
  const pod = parse(inject(workload('Pod', 'v1')).text);
  const proxy = pod.spec.initContainers[1];
  const args: string[] = proxy.args;
  t.equal(args[args.indexOf('--credential-file') + 1], '/var/run/secrets/meshlet/token');
  t.notOk(args.includes('--join-token'), 'never a token in argv');
  t.notOk(args.includes('--ca-hash'), 'no CA hash unless one is given');
  t.same(pod.spec.volumes.find((v: { name: string }) => v.name === 'meshlet-token'), {
    name: 'meshlet-token',
    projected: { sources: [{ serviceAccountToken: { audience: 'meshlet', expirationSeconds: 3600, path: 'token' } }] },
  });
  t.same(
    proxy.volumeMounts.find((m: { name: string }) => m.name === 'meshlet-token'),
    { name: 'meshlet-token', mountPath: '/var/run/secrets/meshlet', readOnly: true },
    'mounted read-only where --credential-file reads',
  );
  t.notOk(pod.spec.containers[0].volumeMounts?.some((m: { name: string }) => m.name === 'meshlet-token'), 'the app does not get it');
  const hash = 'sha256:' + 'ab'.repeat(32);
  const pinned = parse(inject(workload('Pod', 'v1'), { caHash: hash, tokenAudience: 'mesh.example' }).text);
  const pargs: string[] = pinned.spec.initContainers[1].args;
  t.equal(pargs[pargs.indexOf('--ca-hash') + 1], hash, 'the push port is verified with the CA hash given (the webhook gives its own)');
  t.equal(pinned.spec.volumes.find((v: { name: string }) => v.name === 'meshlet-token').projected.sources[0].serviceAccountToken.audience, 'mesh.example');
});

t.test('per-pod overrides by annotation', async (t) => {
  const ann = `
      annotations:
        meshlet.dev/exclude-inbound-ports: "9090, 9091"
        meshlet.dev/exclude-outbound-ports: "5432"
        meshlet.dev/exclude-outbound-cidrs: "10.96.0.0/12,169.254.169.254/32"
        meshlet.dev/proxy-cpu: "250m"
        meshlet.dev/proxy-memory: "128Mi"
        meshlet.dev/log-level: debug
        meshlet.dev/concurrency: "4"
        meshlet.dev/app-port: "9000"
        meshlet.dev/service: catalog
        meshlet.dev/inbound-localhost: "true"
        meshlet.dev/sidecar-mode: classic`;
  const obj = parse(inject(workload('Deployment', 'apps/v1', ann)).text);
  t.doesNotThrow(() => validate(obj));
  const pod = obj.spec.template;
  const init = pod.spec.initContainers[0];
  t.same(init.args.slice(6), ['--exclude-inbound-ports', '15020,9090,9091', '--exclude-outbound-ports', '5432', '--exclude-outbound-cidrs', '10.96.0.0/12,169.254.169.254/32']);
  const proxy = pod.spec.containers[0];
  t.equal(proxy.name, 'meshlet-proxy', 'per-pod classic layout');
  t.same(proxy.resources.requests, { cpu: '250m', memory: '128Mi' });
  const args: string[] = proxy.args;
  t.equal(args[args.indexOf('--log-level') + 1], 'debug');
  t.equal(args[args.indexOf('--app-port') + 1], '9000');
  t.equal(args[args.indexOf('--service') + 1], 'catalog');
  t.equal(args[args.indexOf('--concurrency') + 1], '4', 'concurrency: the sidecar runs 4 workers');
  t.ok(args.includes('--inbound-localhost'), 'inbound-localhost: non-app ports to 127.0.0.1, the old behaviour');
  t.notOk(proxy.env.find((e: { name: string }) => e.name === 'UV_THREADPOOL_SIZE'), 'no libuv pool sizing any more');
});

t.test('meshlet.dev/inject on pods and namespaces', async (t) => {
  const ns = (name: string, v: string, where: 'labels' | 'annotations') => `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${name}\n  ${where}:\n    meshlet.dev/inject: ${v}\n`;
  const dep = (namespace: string, podInject?: string) =>
    workload('Deployment', 'apps/v1', podInject ? `\n      annotations:\n        meshlet.dev/inject: ${podInject}` : '').replace('  name: web\n', `  name: web\n  namespace: ${namespace}\n`);
  const input = [ns('off', 'disabled', 'labels'), ns('on', 'enabled', 'annotations'), dep('off'), dep('off', 'enabled'), dep('on', 'disabled'), dep('on')].join('---\n');
  const out = inject(input);
  t.same(
    out.reports.map((r) => `${r.where}: ${r.action}`),
    ['document 3, Deployment/web: skipped', 'document 4, Deployment/web: injected', 'document 5, Deployment/web: skipped', 'document 6, Deployment/web: injected'],
  );
  t.match(out.reports[0].detail, /namespace/);
  t.match(out.reports[2].detail, /pod annotation/);
  const docs = parseAllDocuments(out.text).map((d) => d.toJS());
  t.notOk(docs[2].spec.template.spec.initContainers, 'skipped: untouched');
  t.equal(docs[3].spec.template.spec.initContainers.length, 2, 'the pod enables itself in a disabled namespace');
  t.notOk(docs[4].spec.template.spec.initContainers);
  t.equal(out.text.split('---\n')[2], input.split('---\n')[2], 'a skipped document is copied byte for byte');
  const hostNet = inject(workload('Pod', 'v1').replace('spec:\n', 'spec:\n  hostNetwork: true\n'));
  t.match(hostNet.reports[0], { action: 'skipped', detail: /hostNetwork/ });
});

t.test('multi-document files and List; other kinds and comments kept', async (t) => {
  const input = `# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}   # flow style, kept as written
data:
  k: v
---
apiVersion: v1
kind: List
items:
  - ${workload('Pod', 'v1').trim().replace(/\n/g, '\n    ')}
  - apiVersion: v1
    kind: Service
    metadata:
      name: web
    spec:
      ports: [{port: 80}]
---
# the job
${workload('Job', 'batch/v1').replace('  template:', '  # pod template below\n  template:').replace('        - name: app', '        # the app\n        - name: app')}`;
  const out = inject(input);
  t.same(out.reports.map((r) => r.where), ['document 2, items[0], Pod/web', 'document 3, Job/web']);
  const parts = out.text.split(/^---$/m);
  t.equal(parts[0], input.split(/^---$/m)[0], 'a document with nothing to inject is copied byte for byte');
  t.match(parts[2], /^# the job$/m);
  t.match(parts[2], /^  # pod template below$/m);
  t.match(parts[2], /# the app\n\s+- name: app/, 'a comment above the app container stays with it');
  const docs = parseAllDocuments(out.text).map((d) => d.toJS());
  t.equal(docs.length, 3);
  for (const d of docs.slice(1)) t.doesNotThrow(() => validate(d), `${d.kind} valid`);
  t.same(docs[1].items[0].spec.initContainers.map((c: { name: string }) => c.name), ['meshlet-init', 'meshlet-proxy']);
  t.same(docs[1].items[1], { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web' }, spec: { ports: [{ port: 80 }] } });
  t.equal(inject(out.text).text, out.text, 'idempotent across documents');
  // The native layout to classic and back: the previous injection is replaced, not stacked.
  const classic = inject(out.text, { mode: 'classic' });
  const c = parseAllDocuments(classic.text).map((d) => d.toJS());
  t.same(c[2].spec.template.spec.initContainers.map((x: { name: string }) => x.name), ['meshlet-init']);
  t.same(c[2].spec.template.spec.containers.map((x: { name: string }) => x.name), ['meshlet-proxy', 'app']);
  t.equal(inject(classic.text).text, out.text, 'back to native gives the native output again');
});

t.test('clear errors naming the document; nothing returned', async (t) => {
  const cases: { name: string; input: string; error: RegExp }[] = [
    { name: 'invalid YAML', input: `${workload('Pod', 'v1')}---\nkind: Pod\n  bad: [\n`, error: /^document 2: invalid YAML \(line \d+, column \d+\)/ },
    { name: 'duplicate key', input: `${workload('Pod', 'v1')}---\nkind: Pod\nkind: Job\n`, error: /^document 2: invalid YAML/ },
    { name: 'not an object', input: `- a\n- b\n`, error: /^document 1: expected a Kubernetes object/ },
    { name: 'no kind', input: `metadata: {name: x}\n`, error: /^document 1, \(no kind\)\/x: not a Kubernetes object/ },
    { name: 'unknown kind with a pod', input: `apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec:\n  template: {}\n`, error: /^document 1, Rollout\/r: kind Rollout \(argoproj.io\/v1alpha1\) carries a pod/ },
    { name: 'old apiVersion', input: workload('Deployment', 'extensions/v1beta1'), error: /apiVersion extensions\/v1beta1 of Deployment is not supported: use apps\/v1/ },
    { name: 'no template', input: `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n`, error: /Deployment\/d: spec\.template: missing pod template/ },
    { name: 'no containers', input: `apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n`, error: /Pod\/p: spec\.containers: a pod needs at least one container/ },
    { name: 'bad port', input: workload('Deployment', 'apps/v1', '\n      annotations:\n        meshlet.dev/exclude-inbound-ports: "80,99999"'), error: /document 1, Deployment\/web: spec\.template\.metadata\.annotations\["meshlet\.dev\/exclude-inbound-ports"\]: expected comma-separated ports \(1-65535\), got "99999"/ },
    { name: 'bad cidr', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/exclude-outbound-cidrs: "10.0.0.0/33"'), error: /exclude-outbound-cidrs"\]: expected comma-separated IPv4 CIDRs/ },
    { name: 'bad quantity', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/proxy-cpu: "lots"'), error: /proxy-cpu"\]: expected a Kubernetes quantity/ },
    { name: 'bad level', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/log-level: loud'), error: /log-level"\]: expected one of trace, debug/ },
    { name: 'bad concurrency', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/concurrency: "0"'), error: /concurrency"\]: expected an integer from 1 to 128/ },
    { name: 'bad inbound-localhost', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/inbound-localhost: "yes"'), error: /inbound-localhost"\]: expected "true" \(pass inbound connections for non-app ports to 127\.0\.0\.1/ },
    { name: 'bad inject', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/inject: "yes"'), error: /inject"\]: expected "enabled" or "disabled"/ },
    { name: 'typo', input: workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/exclude-inbound-port: "80"'), error: /exclude-inbound-port"\]: unknown meshlet annotation/ },
    { name: 'bad namespace label', input: `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels: {meshlet.dev/inject: maybe}\n`, error: /document 1, Namespace\/n: metadata\.labels\["meshlet\.dev\/inject"\]: expected "enabled"/ },
    { name: 'empty', input: `# nothing\n`, error: /no documents found/ },
  ];
  for (const c of cases) {
    const r = injectYaml(c.input, DEFAULT_OPTIONS);
    t.equal(r.ok, false, `${c.name}: fails`);
    if (!r.ok) t.match(`${r.errors[0].path}: ${r.errors[0].message}`, c.error, c.name);
  }
  const both = injectYaml(`${workload('Pod', 'v1', '\n      annotations:\n        meshlet.dev/log-level: x')}---\n${workload('Job', 'extensions/v1')}`, DEFAULT_OPTIONS);
  t.equal(both.ok ? 0 : both.errors.length, 2, 'every error is reported, not just the first');
});

/** RFC 6902 add/replace, enough to check the webhook's patch does what the CLI does. */
function applyPatch(doc: unknown, ops: PatchOp[]): unknown {
  const out = structuredClone(doc) as Record<string, unknown>;
  for (const op of ops) {
    const parts = op.path.slice(1).split('/').map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    let node = out as Record<string, unknown>;
    for (const p of parts.slice(0, -1)) node = node[p] as Record<string, unknown>;
    const last = parts[parts.length - 1];
    if (op.op === 'replace' && !(last in node)) throw new Error(`replace of missing ${op.path}`);
    node[last] = op.value;
  }
  return out;
}

t.test('the JSONPatch (webhook) and the YAML (CLI) give the same pod', async (t) => {
  for (const extra of ['', '\n      annotations:\n        a: b\n        meshlet.dev/sidecar-mode: classic']) {
    const pod = parse(workload('Pod', 'v1', extra.replace(/\n      /g, '\n  ')));
    const viaYaml = parse(inject(workload('Pod', 'v1', extra.replace(/\n      /g, '\n  '))).text);
    const plan = planPod(pod, { at: '' }, DEFAULT_OPTIONS);
    if (!plan.ok || plan.value.action !== 'inject') throw new Error('expected a plan');
    const patch = jsonPatch(pod, plan.value);
    t.ok(patch.some((op) => op.path === '/metadata/annotations/meshlet.dev~1status' || op.path === '/metadata/annotations'), 'annotation keys are escaped');
    t.same(applyPatch(pod, patch), viaYaml);
    // Patching the already injected pod changes nothing.
    t.same(applyPatch(viaYaml, jsonPatch(viaYaml, plan.value)), viaYaml);
  }
});
