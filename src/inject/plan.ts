/**
 * What injecting the sidecar into one pod template means, computed once from the pod and the
 * injector's options, as data: the same plan is applied to a YAML document by `meshlet inject`
 * (yaml.ts, comments and order kept) and turned into a JSONPatch by the admission webhook
 * (patch.ts). Neither knows what a sidecar looks like; only this file does.
 *
 * Layout (the default, "native", Kubernetes >= 1.29):
 *   initContainers: [meshlet-init (iptables, runs once), meshlet-proxy (restartPolicy: Always,
 *                    startupProbe on /ready), ...the pod's own init containers]
 *   containers:     [...the pod's own containers]
 * Kubernetes starts the app containers only after the proxy's startupProbe passed (the app's
 * traffic is held until the proxy is ready), stops the proxy after the app containers exited
 * (it keeps serving while the app drains), and a Job's pod completes when its app containers do.
 *
 * "classic" for older clusters: the proxy is the first regular container with a postStart hook
 * that waits for /ready (the kubelet starts the next container only when it returns), and a
 * Job's app ends it through the admin endpoint.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';
import { A, parseOverrides, type PodOverrides, type SidecarMode } from './annotations';

export const PROXY_UID = 1337;
/** admin: loopback only (config_dump, logging, quitquitquit, tap, explain); status: the pod address (/metrics /ready /live /stats). */
export const PORTS = { outbound: 15001, inbound: 15006, admin: 15000, status: 15020 } as const;
export const NAMES = { init: 'meshlet-init', proxy: 'meshlet-proxy', tmp: 'meshlet-tmp', token: 'meshlet-token' } as const;
/** Where the proxy reads its projected ServiceAccount token (the kubelet rotates it in place; read at every connect). */
export const TOKEN_DIR = '/var/run/secrets/meshlet';
const OURS = new Set<string>(Object.values(NAMES));

export interface InjectOptions {
  /** The image holding `meshlet` and deploy/meshlet-init.sh. */
  image: string;
  /** The control plane's push address, HOST:PORT. */
  controlPlane: string;
  mode: SidecarMode;
  proxyCpu: string;
  proxyMemory: string;
  logLevel: string;
  /** How long the proxy keeps serving after SIGTERM, out of the mesh already (`--drain-ms`). */
  drainMs: number;
  /** The audience of the projected ServiceAccount token the proxy presents (the control plane's TokenReview checks it). */
  tokenAudience: string;
  /** Its lifetime; the kubelet renews it at 80 % (at least 600 s). */
  tokenExpirationSeconds: number;
  /**
   * The CA hash (`sha256:...`) the proxy verifies the push port with (`--ca-hash`); the webhook
   * sets the control plane's own. Absent: the proxy needs another way (it refuses to connect).
   */
  caHash?: string;
}

export const DEFAULT_OPTIONS: InjectOptions = {
  image: 'ghcr.io/meshlet/meshlet:0.1.0',
  controlPlane: 'meshlet-control-plane.meshlet-system.svc:15010',
  mode: 'native',
  proxyCpu: '100m',
  proxyMemory: '64Mi',
  logLevel: 'info',
  drainMs: 5000,
  tokenAudience: 'meshlet',
  tokenExpirationSeconds: 3600,
};

export type ListName = 'initContainers' | 'containers' | 'volumes';
export const LISTS: readonly ListName[] = ['initContainers', 'containers', 'volumes'];

/** Per list: drop entries named like ours (a previous injection), then put these at the front / back. */
export interface ListEdit {
  prepend: Record<string, unknown>[];
  append: Record<string, unknown>[];
}

export type Plan =
  | { action: 'skip'; reason: string }
  | { action: 'inject'; annotations: Record<string, string>; lists: Record<ListName, ListEdit>; mode: SidecarMode };

export interface PodTemplate {
  metadata?: { name?: unknown; labels?: unknown; annotations?: unknown };
  spec?: unknown;
}

/** True for a list entry the injector owns (by name), so a second injection replaces it. */
export function isOurs(entry: unknown): boolean {
  return !!entry && typeof entry === 'object' && OURS.has(String((entry as { name?: unknown }).name));
}

function record(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/**
 * Plans the injection of one pod template. `at` is its field path in the document (for errors),
 * `fallbackName` names the service when the pod has no `app` label (the workload's name).
 */
export function planPod(
  pod: PodTemplate,
  ctx: { at: string; namespaceInject?: 'enabled' | 'disabled'; fallbackName?: string },
  options: InjectOptions,
): Result<Plan> {
  const at = ctx.at ? `${ctx.at}.` : '';
  const meta = record(pod.metadata);
  const annotations = record(meta.annotations);
  const labels = record(meta.labels);
  const spec = record(pod.spec);
  const errors: FieldError[] = [];
  if (!Array.isArray(spec.containers) || spec.containers.length === 0) errors.push({ path: `${at}spec.containers`, message: 'a pod needs at least one container' });
  for (const l of LISTS) {
    if (spec[l] !== undefined && !Array.isArray(spec[l])) errors.push({ path: `${at}spec.${l}`, message: 'expected a list' });
  }
  const parsed = parseOverrides(annotations, `${at}metadata.annotations`);
  if (!parsed.ok) errors.push(...parsed.errors);
  if (errors.length || !parsed.ok) return fail(errors);
  const o = parsed.value;

  // The pod's own choice wins over its namespace's (as Istio's pod label does).
  const decision = o.inject ?? ctx.namespaceInject ?? 'enabled';
  if (decision === 'disabled') return ok({ action: 'skip', reason: o.inject ? `pod annotation ${A.inject}: disabled` : `namespace has ${A.inject}: disabled` });
  if (spec.hostNetwork === true) return ok({ action: 'skip', reason: 'hostNetwork pods share the node\'s network: intercepting would capture the node\'s traffic' });

  const apps = (spec.containers as unknown[]).filter((c) => !isOurs(c)).map(record);
  const service = o.service ?? str(labels.app) ?? str(labels['app.kubernetes.io/name']) ?? str(meta.name) ?? ctx.fallbackName;
  if (!service) return fail([{ path: `${at}metadata.labels`, message: `cannot tell the service: set the "app" label or the ${A.service} annotation` }]);
  const appPort = o.appPort ?? firstPort(apps);
  const mode = o.mode ?? options.mode;

  const proxy = proxyContainer(service, appPort, o, options, mode);
  const init = initContainer(o, options);
  const tmp = { name: NAMES.tmp, emptyDir: { medium: 'Memory', sizeLimit: '16Mi' } };
  // The proxy's bootstrap credential: a token of the pod's ServiceAccount for the control plane's
  // audience only (not the API server's default one), rotated by the kubelet.
  const token = {
    name: NAMES.token,
    projected: { sources: [{ serviceAccountToken: { audience: options.tokenAudience, expirationSeconds: options.tokenExpirationSeconds, path: 'token' } }] },
  };
  const lists: Record<ListName, ListEdit> = {
    initContainers: { prepend: mode === 'native' ? [init, proxy] : [init], append: [] },
    containers: { prepend: mode === 'native' ? [] : [proxy], append: [] },
    volumes: { prepend: [], append: [tmp, token] },
  };
  const status = {
    version: 1,
    mode,
    initContainers: lists.initContainers.prepend.map((c) => c.name),
    containers: lists.containers.prepend.map((c) => c.name),
    volumes: [NAMES.tmp, NAMES.token],
  };
  const out: Record<string, string> = { [A.status]: JSON.stringify(status) };
  // `kubectl logs` and `kubectl exec` pick the app, not the proxy, when no -c is given.
  const firstApp = str(apps[0]?.name);
  if (annotations['kubectl.kubernetes.io/default-container'] === undefined && firstApp) out['kubectl.kubernetes.io/default-container'] = firstApp;
  return ok({ action: 'inject', annotations: out, lists, mode });
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function firstPort(apps: Record<string, unknown>[]): number | undefined {
  for (const c of apps) {
    for (const p of Array.isArray(c.ports) ? c.ports : []) {
      const r = record(p);
      if ((r.protocol === undefined || r.protocol === 'TCP') && typeof r.containerPort === 'number') return r.containerPort;
    }
  }
  return undefined;
}

function proxyContainer(service: string, appPort: number | undefined, o: PodOverrides, options: InjectOptions, mode: SidecarMode): Record<string, unknown> {
  const args = [
    'sidecar',
    '--service', service,
    '--id', '$(POD_NAME).$(POD_NAMESPACE)',
    '--advertise', '$(POD_IP)',
    '--control-plane', options.controlPlane,
    '--inbound', `0.0.0.0:${PORTS.inbound}`,
    '--outbound', `127.0.0.1:${PORTS.outbound}`,
    '--admin', `127.0.0.1:${PORTS.admin}`,
    '--status', `0.0.0.0:${PORTS.status}`,
    '--log-level', o.logLevel ?? options.logLevel,
    '--intercept',
    // On SIGTERM: leave the mesh at once, keep serving while the other sidecars learn of it, then drain.
    '--drain-ms', String(options.drainMs),
    // Who it is: the projected token, read again at every connect (the kubelet rotates it).
    '--credential-file', `${TOKEN_DIR}/token`,
  ];
  if (options.caHash) args.push('--ca-hash', options.caHash);
  if (appPort !== undefined) args.push('--app-port', String(appPort));
  const field = (name: string, path: string) => ({ name, valueFrom: { fieldRef: { fieldPath: path } } });
  const env: Record<string, unknown>[] = [field('POD_NAME', 'metadata.name'), field('POD_NAMESPACE', 'metadata.namespace'), field('POD_IP', 'status.podIP')];
  // N worker processes share the listeners (`meshlet sidecar --concurrency N`), like Envoy's --concurrency.
  if (o.concurrency !== undefined) args.push('--concurrency', String(o.concurrency));
  // Opt-in: inbound connections for non-app ports to 127.0.0.1 instead of the pod's address.
  if (o.inboundLocalhost === true) args.push('--inbound-localhost');
  const probe = { httpGet: { path: '/ready', port: PORTS.status }, periodSeconds: 1, failureThreshold: 60 };
  const c: Record<string, unknown> = {
    name: NAMES.proxy,
    image: options.image,
    args,
    env,
    ports: [
      { name: 'meshlet-status', containerPort: PORTS.status, protocol: 'TCP' },
      { name: 'meshlet-inbound', containerPort: PORTS.inbound, protocol: 'TCP' },
    ],
    resources: { requests: { cpu: o.proxyCpu ?? options.proxyCpu, memory: o.proxyMemory ?? options.proxyMemory } },
    readinessProbe: { httpGet: { path: '/ready', port: PORTS.status }, periodSeconds: 2 },
    securityContext: {
      runAsUser: PROXY_UID,
      runAsGroup: PROXY_UID,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: [
      { name: NAMES.tmp, mountPath: '/tmp' },
      { name: NAMES.token, mountPath: TOKEN_DIR, readOnly: true },
    ],
  };
  if (mode === 'native') {
    c.restartPolicy = 'Always';
    c.startupProbe = probe;
  } else {
    // The kubelet starts the next container only once this hook returns: the app waits for the proxy.
    const wait = `for i in $(seq 1 600); do node -e "require('http').get('http://127.0.0.1:${PORTS.admin}/ready',r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))" && exit 0; sleep 0.1; done; exit 1`;
    c.lifecycle = { postStart: { exec: { command: ['/bin/sh', '-c', wait] } } };
  }
  return c;
}

function initContainer(o: PodOverrides, options: InjectOptions): Record<string, unknown> {
  const args = [
    '--proxy-uid', String(PROXY_UID),
    '--inbound-port', String(PORTS.inbound),
    '--outbound-port', String(PORTS.outbound),
    // The status port answers the kubelet's probes and Prometheus itself.
    '--exclude-inbound-ports', [PORTS.status, ...o.excludeInboundPorts].join(','),
  ];
  if (o.excludeOutboundPorts.length) args.push('--exclude-outbound-ports', o.excludeOutboundPorts.join(','));
  if (o.excludeOutboundCidrs.length) args.push('--exclude-outbound-cidrs', o.excludeOutboundCidrs.join(','));
  return {
    name: NAMES.init,
    image: options.image,
    command: ['/usr/local/bin/meshlet-init.sh'],
    args,
    resources: { requests: { cpu: '10m', memory: '16Mi' } },
    securityContext: {
      runAsUser: 0,
      runAsNonRoot: false,
      allowPrivilegeEscalation: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
}

/** Applies a plan's list edit to a plain array (the webhook's side; yaml.ts does the same on nodes). */
export function editList(list: unknown[] | undefined, edit: ListEdit): unknown[] {
  return [...edit.prepend, ...(list ?? []).filter((e) => !isOurs(e)), ...edit.append];
}
