/**
 * The control plane, assembled: the store and endpoint registry (under `dataDir`, or on etcd
 * shared by every replica), the
 * snapshot builder over both, the gRPC push server, and the REST API. Any change to the store or
 * to the endpoint set makes the push server send the new snapshot to every sidecar.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { systemClock, type Clock } from '../src/core/clock';
import { createApiHandler } from './api';
import { MeshHistory } from './history';
import { ControlPlaneMetrics } from './metrics';
import { PushServer } from './push-server';
import { EndpointRegistry, type Registry } from './registry';
import { SnapshotBuilder, type EndpointSource } from './snapshot-builder';
import type { Endpoint } from '../src/policy/types';
import { SidecarAdminClient } from './sidecar-admin';
import { UiApi } from './ui-api';
import { FileStore, type Store } from './store';
import type { EtcdConnection } from './store-etcd';

export const DEFAULT_API = { host: '127.0.0.1', port: 15080 } as const;
export const DEFAULT_PUSH = { host: '127.0.0.1', port: 15010 } as const;

export interface Address {
  host: string;
  port: number;
}

export interface ControlPlaneOptions {
  dataDir: string;
  /** Keep resources and the endpoint registry on etcd (shared by every replica) instead of `dataDir`. */
  etcd?: EtcdConnection & {
    /** This replica's name in `meshlet status` (default: host name and pid). */
    replica?: string;
  };
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
  webhook?: Omit<import('./webhook').WebhookOptions, 'logger' | 'caHash'>;
  /** The dashboard's history: how often the sidecars' `/stats` are sampled (default 3000 ms; 0: off). */
  historyIntervalMs?: number;
  /** Prometheus's base URL: the dashboard links to the same queries there. */
  prometheusUrl?: string;
  /** Also take endpoints from Kubernetes EndpointSlices (list + watch). */
  kubernetes?: Omit<import('./k8s-discovery').EndpointSliceOptions, 'logger'>;
  /** Where the token file is (default `dataDir`; with etcd, tokens live in etcd): replicas given the same one share their tokens. */
  tokensDir?: string;
  /** Workload identity (docs/security.md): the CA, join tokens, TokenReview. On by default. */
  security?: SecurityOptions;
  /**
   * TLS on the REST API: a certificate the built-in CA issues for `hosts` (plus localhost and
   * loopback; re-issued at half life), or the user's own. Absent: plaintext.
   */
  apiTls?: { hosts?: string[] } | { certPem: string; keyPem: string };
  /**
   * TLS on the push port (push-tls.ts): a certificate the built-in CA issues (the control plane's
   * SPIFFE ID, `hosts`, localhost and loopback; re-issued at half life and on rotation), or the
   * user's own. Absent: plaintext (join and ServiceAccount tokens cross the network readable).
   */
  pushTls?: import('./push-tls').PushTlsSettings;
  /**
   * Bearer-token authentication and roles on the REST API (api-auth.ts). Off when absent here (the
   * library's callers decide); `meshlet control-plane` and `meshlet up` turn it on.
   */
  apiAuth?: ApiAuthSettings;
}

export interface ApiAuthSettings {
  /** Write an admin API token to DATA_DIR/admin.token (0600) unless a valid one is there. */
  bootstrapToken?: boolean;
  /** Kubernetes ServiceAccounts (`NS/SA` or `NS/*`) -> role, verified with TokenReview. */
  serviceAccountRoles?: Record<string, import('./tokens').ApiRole>;
}

/** Where a control plane started with `apiAuth.bootstrapToken` keeps its admin token. */
export const ADMIN_TOKEN_FILE = 'admin.token';
/** With TLS from the built-in CA: the roots that verify the API's certificate (for `--certificate-authority`). */
export const API_CA_FILE = 'api-ca.pem';
/** The mesh CA's trust bundle (public), kept current: what `meshlet sidecar --ca-file` takes. */
export const CA_BUNDLE_FILE = 'ca.pem';
/** Lifetime of the API's certificate from the built-in CA (re-issued at half life). */
const API_CERT_TTL_MS = 30 * 86_400_000;

export interface SecurityOptions {
  /** false: no CA, sidecars get no certificates (the behaviour before identities). */
  enabled?: boolean;
  trustDomain?: string;
  /** Sign with an intermediate under this root (PEM cert or chain, and key). */
  userRoot?: { certPem: string; keyPem: string };
  workloadTtlMs?: number;
  /** strict (default): a sidecar without a credential is refused; permissive: it connects, without an identity (development). */
  mode?: import('./identity').SidecarAuthMode;
  /** Verify Kubernetes ServiceAccount tokens with TokenReview (on with `kubernetes`). */
  tokenReview?: import('./token-review').TokenReviewOptions;
}

export interface ControlPlane {
  readonly apiAddress: Address;
  readonly pushAddress: Address;
  readonly store: Store;
  readonly registry: Registry;
  readonly push: PushServer;
  readonly metrics: ControlPlaneMetrics;
  readonly webhookAddress?: Address;
  /** The CA and join tokens, when security is on. */
  readonly ca?: import('./ca').MeshCa;
  readonly tokens?: import('./tokens').TokenStore;
  readonly identity?: import('./identity').WorkloadIdentityService;
  /** With TLS from the built-in CA: the file holding the roots that verify the API (DATA_DIR/api-ca.pem). */
  readonly apiCaFile?: string;
  /** With the CA: its trust bundle (DATA_DIR/ca.pem), for sidecars' `--ca-file`. */
  readonly caFile?: string;
  /** Whether the push port is served over TLS. */
  readonly pushTls: boolean;
  /** With `apiAuth.bootstrapToken`: the file holding the admin token. */
  readonly adminTokenFile?: string;
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
    let store: Store;
    let registry: Registry;
    let secrets: { ca: import('./secrets').SecretDoc; tokens: import('./secrets').SecretDoc } | undefined;
    if (opts.etcd) {
      const { connectEtcd, EtcdStore, DEFAULT_ETCD_PREFIX } = await import('./store-etcd');
      const { EtcdRegistry } = await import('./registry-etcd');
      const client = connectEtcd(opts.etcd);
      // The CA and the tokens live in etcd too: every replica signs with one CA and knows every token.
      const { EtcdSecret, secretKeys } = await import('./secrets');
      const keys = secretKeys(opts.etcd.prefix ?? DEFAULT_ETCD_PREFIX);
      secrets = { ca: new EtcdSecret(client, keys.ca), tokens: new EtcdSecret(client, keys.tokens) };
      cleanup.push(async () => client.close());
      const etcdStore = await EtcdStore.open(client, { prefix: opts.etcd.prefix, clock, logger: logger.child({ component: 'store' }) });
      store = etcdStore;
      cleanup.push(() => etcdStore.close());
      const etcdRegistry = await EtcdRegistry.open(client, {
        prefix: opts.etcd.prefix,
        replica: opts.etcd.replica,
        graceMs: opts.graceMs,
        clock,
        logger: logger.child({ component: 'registry' }),
      });
      registry = etcdRegistry;
      cleanup.push(() => etcdRegistry.close());
      logger.info({ etcd: opts.etcd.endpoints, replica: etcdRegistry.replica, revision: store.revision }, 'using the etcd store');
    } else {
      const fileStore = await FileStore.open(opts.dataDir, { clock, logger: logger.child({ component: 'store' }), repair: opts.repair });
      store = fileStore;
      cleanup.push(() => fileStore.close());
      const fileRegistry = await EndpointRegistry.open(opts.dataDir, { clock, graceMs: opts.graceMs, logger: logger.child({ component: 'registry' }) });
      registry = fileRegistry;
      cleanup.push(() => fileRegistry.close());
    }

    const metrics = new ControlPlaneMetrics();
    let endpoints: EndpointSource = registry;
    let k8s: import('./k8s-discovery').EndpointSliceSource | undefined;
    if (opts.kubernetes) {
      const d = await import('./k8s-discovery');
      const source = new d.EndpointSliceSource({ ...opts.kubernetes, logger: logger.child({ component: 'kubernetes' }) });
      k8s = source;
      // The same merged array until either side changes: the snapshot builder serialises an array once.
      let generation = 0;
      source.onChange(() => generation++);
      let last: { registered: Endpoint[]; generation: number; merged: Endpoint[] } | undefined;
      endpoints = {
        endpoints: () => {
          const registered = registry.endpoints();
          if (!last || last.registered !== registered || last.generation !== generation)
            last = { registered, generation, merged: d.mergeEndpoints(registered, source.endpoints()) };
          return last.merged;
        },
      };
    }
    const builder = new SnapshotBuilder(store, endpoints, () => clock.now());
    const sec = await startSecurity(opts, clock, logger, secrets);
    if (sec) cleanup.push(async () => sec.ca.close());
    const tokens = sec?.tokens ?? (opts.apiAuth ? new (await import('./tokens')).TokenStore(secrets?.tokens ?? opts.tokensDir ?? opts.dataDir, clock) : undefined);
    let auth: import('./api-auth').ApiAuthenticator | undefined;
    let adminTokenFile: string | undefined;
    if (opts.apiAuth && tokens) {
      const { ApiAuthenticator } = await import('./api-auth');
      const saRoles = opts.apiAuth.serviceAccountRoles ?? {};
      const reviewer = Object.keys(saRoles).length ? new (await import('./token-review')).TokenReviewer(opts.security?.tokenReview ?? {}) : undefined;
      auth = new ApiAuthenticator({ tokens, tokenReviewer: reviewer, serviceAccountRoles: saRoles, logger });
      if (opts.apiAuth.bootstrapToken) adminTokenFile = await bootstrapAdminToken(opts.dataDir, tokens, logger);
    } else logger.warn('the REST API is not authenticated: anyone who reaches it can read and change every policy');
    const push = new PushServer({ builder, registry, metrics, logger: logger.child({ component: 'push' }), coalesceMs: opts.coalesceMs, identity: sec?.identity });
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

    const pushHost = opts.push?.host ?? DEFAULT_PUSH.host;
    let pushCreds: import('@grpc/grpc-js').ServerCredentials | undefined;
    if (opts.pushTls) {
      const { pushTlsCredentials } = await import('./push-tls');
      const t = await pushTlsCredentials(opts.pushTls, pushHost, sec?.ca, logger.child({ component: 'push' }));
      cleanup.push(async () => t.stop());
      pushCreds = t.credentials;
    } else logger.warn('the push port is served in plaintext (--insecure-push-plaintext): join and ServiceAccount tokens cross the network readable');
    const pushAddress = await push.listen(pushHost, opts.push?.port ?? DEFAULT_PUSH.port, pushCreds);
    cleanup.push(() => push.close());
    let caFile: string | undefined;
    if (sec) {
      const { atomicWriteFile, ensureDir } = await import('./fsutil');
      const file = (await import('node:path')).join(opts.dataDir, CA_BUNDLE_FILE);
      const ca = sec.ca;
      // With the etcd store nothing else may have made the data dir.
      await ensureDir(opts.dataDir);
      await atomicWriteFile(file, ca.bundlePem(), 0o644);
      ca.onChange(() => void atomicWriteFile(file, ca.bundlePem(), 0o644).catch((err) => logger.warn({ err, file }, 'could not write the trust bundle')));
      caFile = file;
    }

    const history = new MeshHistory({
      // Asked at the address their push connection came from (as `meshlet stat` does), so a
      // gateway (which declares no address) is sampled too.
      sidecars: () => registry.sidecars().filter((s) => s.connected).map((s) => ({ ...s, address: s.peerAddress ?? s.address })),
      intervalMs: opts.historyIntervalMs,
      clock,
      logger: logger.child({ component: 'history' }),
    });
    history.start();
    cleanup.push(() => history.stop());
    // The sidecars' admin paths: plaintext to a loopback admin port, mTLS (our own certificate) to a status port.
    const admin = new SidecarAdminClient(sec?.ca, logger.child({ component: 'sidecar-admin' }));
    const ui = new UiApi({ store, registry, push, history, prometheusUrl: opts.prometheusUrl, admin });
    const handler = createApiHandler({ store, registry, push, metrics, ui, history, logger: logger.child({ component: 'api' }), dataDir: opts.dataDir, maxSnapshotBytes: opts.maxSnapshotBytes, auth, tokens, ca: sec?.ca, admin });
    const apiHost = opts.api?.host ?? DEFAULT_API.host;
    let server: http.Server;
    let apiCaFile: string | undefined;
    if (opts.apiTls) {
      const https = await import('node:https');
      const t = opts.apiTls;
      if ('certPem' in t) server = https.createServer({ cert: t.certPem, key: t.keyPem, minVersion: 'TLSv1.2' }, handler) as unknown as http.Server;
      else {
        if (!sec) throw new Error('TLS on the API from the built-in CA needs the CA (no --no-identity), or give --api-tls-cert and --api-tls-key');
        const ca = sec.ca;
        const hosts = [...new Set([...(t.hosts ?? []), 'localhost', '127.0.0.1', '::1', ...(apiHost === '0.0.0.0' || apiHost === '::' ? [] : [apiHost])])];
        const issue = async () => ca.issueServing(hosts, API_CERT_TTL_MS);
        const first = await issue();
        const tlsServer = https.createServer({ cert: first.chainPem, key: first.keyPem, minVersion: 'TLSv1.2' }, handler);
        server = tlsServer as unknown as http.Server;
        const { atomicWriteFile } = await import('./fsutil');
        apiCaFile = (await import('node:path')).join(opts.dataDir, API_CA_FILE);
        await atomicWriteFile(apiCaFile, ca.bundlePem(), 0o644);
        // Re-issued at half life, and when the CA rotates (the bundle file follows).
        const renew = async (): Promise<void> => {
          const c = await issue();
          tlsServer.setSecureContext({ cert: c.chainPem, key: c.keyPem, minVersion: 'TLSv1.2' });
          await atomicWriteFile(apiCaFile as string, ca.bundlePem(), 0o644);
          logger.info({ hosts, notAfter: c.notAfter.toISOString() }, 'API certificate renewed');
        };
        const timer = setInterval(() => void renew().catch((err) => logger.warn({ err }, 'could not renew the API certificate')), API_CERT_TTL_MS / 2);
        timer.unref();
        cleanup.push(async () => clearInterval(timer));
        ca.onChange(() => void renew().catch((err) => logger.warn({ err }, 'could not renew the API certificate')));
        logger.info({ hosts, caFile: apiCaFile, notAfter: first.notAfter.toISOString() }, 'API certificate issued by the mesh CA (clients verify it with --certificate-authority CAFILE)');
      }
    } else {
      server = http.createServer(handler);
      logger.warn('the REST API is served in plaintext (--insecure-plaintext): tokens cross the network readable');
    }
    const apiAddress = await listen(server, apiHost, opts.api?.port ?? DEFAULT_API.port);
    cleanup.push(() => closeServer(server));
    let webhookAddress: Address | undefined;
    if (opts.webhook) {
      const { startWebhook } = await import('./webhook');
      const { caPinOf } = await import('../src/security/ca-pin');
      const ownPushCert = opts.pushTls && !('certPem' in opts.pushTls) ? sec?.ca : undefined;
      const wh = await startWebhook({ ...opts.webhook, caHash: ownPushCert ? () => caPinOf(ownPushCert.rootPem()) : undefined, logger: logger.child({ component: 'webhook' }) });
      cleanup.push(() => wh.close());
      webhookAddress = wh.address;
    }
    logger.info({ api: `${opts.apiTls ? 'https' : 'http'}://${hostForUrl(apiAddress.host)}:${apiAddress.port}`, push: `${pushAddress.host}:${pushAddress.port}`, pushTls: !!opts.pushTls, caFile, dataDir: opts.dataDir, revision: store.revision }, 'control plane started');
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
      ca: sec?.ca,
      tokens: sec?.tokens,
      identity: sec?.identity,
      adminTokenFile,
      apiCaFile,
      caFile,
      pushTls: !!opts.pushTls,
      close: () => (closing ??= closeAll().then(() => logger.info('control plane stopped'))),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * The CA (DATA_DIR/ca, or etcd), the join tokens (DATA_DIR/tokens.json, or etcd) and, with
 * Kubernetes, TokenReview.
 */
async function startSecurity(opts: ControlPlaneOptions, clock: Clock, logger: Logger, secrets?: { ca: import('./secrets').SecretDoc; tokens: import('./secrets').SecretDoc }) {
  const o = opts.security ?? {};
  if (o.enabled === false) return undefined;
  const [{ MeshCa, CA_DIR, CA_FILE }, { TokenStore, TOKENS_FILE }, { WorkloadIdentityService }] = await Promise.all([import('./ca'), import('./tokens'), import('./identity')]);
  const log = logger.child({ component: 'identity' });
  if (secrets) {
    // Moving from the file store: the CA and tokens of this data dir go to etcd (when it has none yet).
    const { seedFromFile } = await import('./secrets');
    const path = await import('node:path');
    if (await seedFromFile(secrets.ca, path.join(opts.dataDir, CA_DIR, CA_FILE))) log.info({ where: secrets.ca.where }, 'the CA of the data dir moved to etcd');
    if (await seedFromFile(secrets.tokens, path.join(opts.tokensDir ?? opts.dataDir, TOKENS_FILE))) log.info({ where: secrets.tokens.where }, 'the tokens of the data dir moved to etcd');
  }
  const ca = await MeshCa.open({ dataDir: opts.dataDir, trustDomain: o.trustDomain, userRoot: o.userRoot, workloadTtlMs: o.workloadTtlMs, clock, logger: log, doc: secrets?.ca });
  const { caPinOf } = await import('../src/security/ca-pin');
  // Join tokens carry the hash of the root that signs the push port's certificate (when it is ours).
  const tokens = new TokenStore(secrets?.tokens ?? opts.tokensDir ?? opts.dataDir, clock, () => (opts.pushTls && !('certPem' in opts.pushTls) ? caPinOf(ca.rootPem()) : undefined));
  const tokenReviewer = o.tokenReview || opts.kubernetes ? new (await import('./token-review')).TokenReviewer(o.tokenReview ?? {}) : undefined;
  const identity = new WorkloadIdentityService({ ca, mode: o.mode, tokens, tokenReviewer, logger: log });
  log.info({ trustDomain: ca.trustDomain, mode: identity.mode, roots: ca.trustBundle().info().length, where: secrets?.ca.where ?? 'data dir' }, 'workload identity: CA ready');
  return { ca, tokens, identity };
}

/**
 * DATA_DIR/admin.token (0600): an admin API token for whoever can read the data dir, made on the
 * first start and again whenever the one there no longer verifies (revoked, expired). Its path is
 * logged, never its contents.
 */
async function bootstrapAdminToken(dataDir: string, tokens: import('./tokens').TokenStore, logger: Logger): Promise<string> {
  const { promises: fsp } = await import('node:fs');
  const path = await import('node:path');
  const { atomicWriteFile, ensureDir } = await import('./fsutil');
  const file = path.join(dataDir, ADMIN_TOKEN_FILE);
  const existing = await fsp.readFile(file, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    const ok = await tokens.verifyApi(existing.trim()).then(
      (t) => t.role === 'admin',
      () => false,
    );
    if (ok) {
      logger.info({ file }, 'API admin token: using the one in the data dir (send it as Authorization: Bearer, or MESHLET_TOKEN for the CLI)');
      return file;
    }
  }
  const t = await tokens.create({ role: 'admin', ttlMs: 365 * 86_400_000, description: 'bootstrap admin token (control-plane start)' });
  await ensureDir(dataDir);
  await atomicWriteFile(file, t.token + '\n', 0o600);
  logger.info({ file, id: t.info.id, expiresAt: t.info.expiresAt }, 'API admin token written (MESHLET_TOKEN=$(cat FILE) meshlet status); make narrower ones with `meshlet token create --role view`');
  return file;
}

function hostForUrl(h: string): string {
  return h.includes(':') ? `[${h}]` : h;
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
