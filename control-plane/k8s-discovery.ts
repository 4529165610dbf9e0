/**
 * Service discovery from Kubernetes: the endpoints of every Service, from its EndpointSlices
 * (discovery.k8s.io/v1), listed then watched through @kubernetes/client-node's informer, beside
 * the endpoints the sidecars register themselves.
 *
 * An EndpointSlice endpoint becomes a mesh endpoint `{service, address, port, meshed: false}`:
 * the Service's name (namespaces are flattened, as the mesh's names are: `catalog.shop.svc` ->
 * `catalog`), each ready address, and the slice's port named `http` (else its first TCP port).
 * Traffic to it goes to the pod's app port; a meshed pod's interception hands it to its sidecar.
 * Where a sidecar registered itself for the same service and pod address, its own endpoint
 * (meshed, to its inbound port) wins.
 *
 * The informer re-lists and re-watches after an error (with backoff); until then the last known
 * endpoints stay, as routing stays on the last good snapshot.
 */
import type * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Endpoint } from '../src/policy/types';

export interface EndpointSliceOptions {
  /** Only this namespace (default: all). */
  namespace?: string;
  /** Default: KUBECONFIG, ~/.kube/config, or the in-cluster service account. */
  kubeConfig?: k8s.KubeConfig;
  logger: Logger;
  /** Re-list/re-watch delay after an error (doubles up to 30 s). */
  retryMs?: number;
}

type Slice = k8s.V1EndpointSlice;

/** The mesh endpoints of one EndpointSlice. Pure: the contract test and the informer share it. */
export function sliceEndpoints(slice: Slice): Endpoint[] {
  const service = slice.metadata?.labels?.['kubernetes.io/service-name'];
  if (!service || (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6')) return [];
  const ports = (slice.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP' && typeof p.port === 'number');
  const port = (ports.find((p) => p.name === 'http') ?? ports[0])?.port;
  if (port === undefined) return [];
  const out: Endpoint[] = [];
  for (const e of slice.endpoints ?? []) {
    if (e.conditions?.ready === false) continue;
    const labels: Record<string, string> = {};
    if (e.zone) labels['topology.kubernetes.io/zone'] = e.zone;
    if (e.nodeName) labels['kubernetes.io/hostname'] = e.nodeName;
    for (const address of e.addresses ?? []) out.push({ service, address, port, labels, weight: 1, meshed: false });
  }
  return out;
}

/** Registered sidecars first; a Kubernetes endpoint at a pod a sidecar already stands for is dropped. */
export function mergeEndpoints(registered: readonly Endpoint[], fromK8s: readonly Endpoint[]): Endpoint[] {
  const taken = new Set(registered.map((e) => `${e.service}\0${e.address}`));
  const seen = new Set<string>();
  const out = [...registered];
  for (const e of fromK8s) {
    const k = `${e.service}\0${e.address}\0${e.port}`;
    if (taken.has(`${e.service}\0${e.address}`) || seen.has(k)) continue;
    seen.add(k);
    out.push(e);
  }
  return out.sort((a, b) => (a.service + a.address + a.port < b.service + b.address + b.port ? -1 : 1));
}

export class EndpointSliceSource {
  private readonly slices = new Map<string, Endpoint[]>();
  private readonly listeners = new Set<() => void>();
  private informer: k8s.Informer<Slice> | undefined;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private delay: number;
  lastError: string | undefined;

  constructor(private readonly opts: EndpointSliceOptions) {
    this.delay = opts.retryMs ?? 1000;
  }

  endpoints(): Endpoint[] {
    return [...this.slices.values()].flat();
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async start(): Promise<void> {
    // ESM-only package, loaded on demand (Node >= 20.19 requires ESM from CommonJS).
    const lib = await import('@kubernetes/client-node');
    let kc = this.opts.kubeConfig;
    if (!kc) {
      kc = new lib.KubeConfig();
      kc.loadFromDefault();
    }
    const api = kc.makeApiClient(lib.DiscoveryV1Api);
    const ns = this.opts.namespace;
    const path = ns ? `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices` : '/apis/discovery.k8s.io/v1/endpointslices';
    const list = () => (ns ? api.listNamespacedEndpointSlice({ namespace: ns }) : api.listEndpointSliceForAllNamespaces());
    const informer = lib.makeInformer<Slice>(kc, path, list);
    this.informer = informer;
    const key = (s: Slice) => `${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`;
    const put = (s: Slice) => {
      this.delay = this.opts.retryMs ?? 1000; // data flows again: the next failure starts over
      this.slices.set(key(s), sliceEndpoints(s));
      this.changed();
    };
    informer.on('add', put);
    informer.on('update', put);
    informer.on('delete', (s) => {
      if (this.slices.delete(key(s))) this.changed();
    });
    informer.on('connect', () => {
      this.lastError = undefined;
      this.opts.logger.debug({ path }, 'listing and watching EndpointSlices');
    });
    informer.on('error', (err) => {
      this.lastError = (err as Error)?.message ?? String(err);
      if (this.stopped) return;
      this.opts.logger.warn({ err: this.lastError, retryInMs: this.delay }, 'EndpointSlice watch failed; keeping the last endpoints, retrying');
      if (this.retry) clearTimeout(this.retry);
      this.retry = setTimeout(() => {
        this.retry = undefined;
        if (!this.stopped) informer.start().catch(() => undefined);
      }, this.delay);
      this.delay = Math.min(this.delay * 2, 30_000);
    });
    await informer.start().catch((err: Error) => {
      // The informer reports it through 'error' too, which schedules the retry.
      this.lastError = err.message;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    await this.informer?.stop().catch(() => undefined);
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }
}
