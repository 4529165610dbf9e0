/**
 * The control plane, assembled: the file store and endpoint registry under `dataDir`, the
 * snapshot builder over both, the gRPC push server, and the REST API. Any change to the store or
 * to the endpoint set makes the push server send the new snapshot to every sidecar.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { systemClock, type Clock } from '../src/core/clock';
import { createApiHandler } from './api';
import { ControlPlaneMetrics } from './metrics';
import { PushServer } from './push-server';
import { EndpointRegistry } from './registry';
import { SnapshotBuilder } from './snapshot-builder';
import { FileStore } from './store';

export const DEFAULT_API = { host: '127.0.0.1', port: 15080 } as const;
export const DEFAULT_PUSH = { host: '127.0.0.1', port: 15010 } as const;

export interface Address {
  host: string;
  port: number;
}

export interface ControlPlaneOptions {
  dataDir: string;
  /** Resources in a snapshot, in bytes of JSON; a write over it is refused (default 48 MiB: api.ts). */
  maxSnapshotBytes?: number;
  /** Open a damaged store by setting its damaged files aside (`--repair`); else refuse to start. */
  repair?: boolean;
  /** The REST API; port 0 picks a free one. Default 127.0.0.1:15080. */
  api?: Partial<Address>;
  /** The gRPC push server; port 0 picks a free one. Default 127.0.0.1:15010. */
  push?: Partial<Address>;
  /** How long a disconnected sidecar's endpoint stays in the mesh. */
  graceMs?: number;
  logger?: Logger;
  clock?: Clock;
  /** How long the push server gathers changes before pushing (default 5 ms). */
  coalesceMs?: number;
  /** The sidecar injector webhook (HTTPS), if wanted. */
  webhook?: Omit<import('./webhook').WebhookOptions, 'logger'>;
  /** Also take endpoints from Kubernetes EndpointSlices (list + watch). */
  kubernetes?: Omit<import('./k8s-discovery').EndpointSliceOptions, 'logger'>;
}

export interface ControlPlane {
  readonly apiAddress: Address;
  readonly pushAddress: Address;
  readonly store: FileStore;
  readonly registry: EndpointRegistry;
  readonly push: PushServer;
  readonly metrics: ControlPlaneMetrics;
  readonly webhookAddress?: Address;
  /** Stops the API (idle keep-alive connections included), the push server, then the registry and store. Idempotent. */
  close(): Promise<void>;
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const clock = opts.clock ?? systemClock;
  const cleanup: (() => Promise<void>)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const f of cleanup.splice(0).reverse()) {
      try {
        await f();
      } catch (err) {
        logger.warn({ err }, 'control plane shutdown step failed');
      }
    }
  };
  try {
    const store = await FileStore.open(opts.dataDir, { clock, logger: logger.child({ component: 'store' }), repair: opts.repair });
    cleanup.push(() => store.close());
    const registry = await EndpointRegistry.open(opts.dataDir, { clock, graceMs: opts.graceMs, logger: logger.child({ component: 'registry' }) });
    cleanup.push(() => registry.close());

    const metrics = new ControlPlaneMetrics();
    let endpoints: { endpoints(): import('../src/policy/types').Endpoint[] } = registry;
    let k8s: import('./k8s-discovery').EndpointSliceSource | undefined;
    if (opts.kubernetes) {
      const d = await import('./k8s-discovery');
      const source = new d.EndpointSliceSource({ ...opts.kubernetes, logger: logger.child({ component: 'kubernetes' }) });
      k8s = source;
      endpoints = { endpoints: () => d.mergeEndpoints(registry.endpoints(), source.endpoints()) };
    }
    const builder = new SnapshotBuilder(store, endpoints, () => clock.now());
    const push = new PushServer({ builder, registry, metrics, logger: logger.child({ component: 'push' }), coalesceMs: opts.coalesceMs });
    store.onChange(() => push.notifyChange());
    registry.onChange(() => push.notifyChange());
    if (k8s) {
      const source = k8s;
      source.onChange(() => push.notifyChange());
      cleanup.push(() => source.stop());
      await source.start();
    }
    metrics.gauges = {
      connectedSidecars: () => registry.connectedCount(),
      knownSidecars: () => registry.sidecars().length,
      storeRevision: () => store.revision,
      lastConvergenceMs: () => push.lastConvergence()?.ms,
    };

    const pushAddress = await push.listen(opts.push?.host ?? DEFAULT_PUSH.host, opts.push?.port ?? DEFAULT_PUSH.port);
    cleanup.push(() => push.close());

    const server = http.createServer(createApiHandler({ store, registry, push, metrics, logger: logger.child({ component: 'api' }), maxSnapshotBytes: opts.maxSnapshotBytes }));
    const apiAddress = await listen(server, opts.api?.host ?? DEFAULT_API.host, opts.api?.port ?? DEFAULT_API.port);
    cleanup.push(() => closeServer(server));
    let webhookAddress: Address | undefined;
    if (opts.webhook) {
      const { startWebhook } = await import('./webhook');
      const wh = await startWebhook({ ...opts.webhook, logger: logger.child({ component: 'webhook' }) });
      cleanup.push(() => wh.close());
      webhookAddress = wh.address;
    }
    logger.info({ api: `http://${apiAddress.host}:${apiAddress.port}`, push: `${pushAddress.host}:${pushAddress.port}`, dataDir: opts.dataDir, revision: store.revision }, 'control plane started');
    if (webhookAddress) logger.info({ webhook: `https://${webhookAddress.host}:${webhookAddress.port}/inject` }, 'webhook started');

    let closing: Promise<void> | undefined;
    return {
      apiAddress,
      pushAddress,
      store,
      registry,
      push,
      metrics,
      webhookAddress,
      close: () => (closing ??= closeAll().then(() => logger.info('control plane stopped'))),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

function listen(server: http.Server, host: string, port: number): Promise<Address> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve({ host, port: (server.address() as AddressInfo).port });
    });
  });
}

/** Stops accepting, closes idle keep-alive connections now and busy ones after `graceMs`. */
function closeServer(server: http.Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => server.closeAllConnections(), graceMs);
    force.unref();
    server.close(() => {
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}
