/**
 * The edge gateway, assembled: the sidecar's data plane facing clients. It connects to the control
 * plane like a sidecar (the same push stream; its own id and identity; registered as kind
 * `gateway`, so `meshlet status` lists it and no sidecar routes to it), and serves the listeners of
 * the Gateway resource named `--name`: plaintext HTTP (HTTP/1.1, h2c) or HTTPS (TLS 1.2+, HTTP/2
 * by ALPN, certificates by SNI, from files or from the store (TLSCertificate, pushed only to the
 * gateways that use it), reloaded without a restart when a file or the stored resource changes).
 *
 * A request goes through the same front and the same compiled outbound stack as a sidecar's
 * outbound side (src/stack/front.ts, src/stack/outbound.ts): matching, splits, retries, timeouts,
 * faults, mirroring, transcoding, gRPC-Web, WebSocket. The route table is the Routes attached to
 * this gateway (`spec.gateways`), with no implicit route per service: a client reaches only what a
 * Route exposes. At the edge, on top of that: the listener's client limits (body 413, headers 431,
 * 408, per-client connection cap), `x-forwarded-for` trust (`spec.trustedHops`), host names,
 * HTTP -> HTTPS redirect, and `x-meshlet-*` response headers removed (unless kept per listener).
 * The certificates each HTTPS listener serves (names, validity, file) are reported in `/stats`
 * (sampled by the control plane for `meshlet check` MC0017/MC0018) and as a not-after gauge.
 *
 * With a credential (`--join-token`, `--credential-file`) the gateway is a mesh workload like a
 * sidecar: the control plane signs it a certificate for `spiffe://TRUST_DOMAIN/svc/NAME` over the
 * push stream (src/security/workload-identity.ts: renewed at half life, and at once when the trust
 * bundle changes), and it dials mTLS to every endpoint that has an identity, as sidecars do
 * (src/http/upstream.ts): services with PeerAuthentication STRICT are reachable, and their
 * AuthorizationPolicies see the gateway's verified identity. Without one it calls in plaintext.
 *
 * snapshot arrives -> parse + validate -> compile -> listeners reconciled -> ACK (or NACK, keeping
 * the last good snapshot and its listeners).
 *
 * The data plane (listeners, stack, snapshot) is gateway/plane.ts; this file adds what a gateway
 * process has one of: the admin port, the push stream and the workload identity. With
 * `--concurrency N` those stay in a primary and N workers run the data plane (gateway/cluster.ts).
 */
import pino, { type Logger } from 'pino';
import { VERSION } from '../src/core/version';
import { startAdmin, type AdminServer } from '../src/observability/admin';
import { toWire, type CompiledSnapshot, type Snapshot } from '../src/policy';
import { redactResource } from '../src/policy/redact';
import { identityDump } from '../src/security/identity-dump';
// Types only: the CSR code (@peculiar/x509) loads only when the gateway has a credential.
import type { IdentityMaterial, WorkloadIdentity } from '../src/security/workload-identity';
import type { Subscriber } from '../src/snapshot/subscriber';
import { startGatewayPlane, type HostPort } from './plane';

export type { GatewayCertificate, HostPort } from './plane';

export interface GatewayOptions {
  /** The Gateway resource this process serves; also its service name in metrics and registration. */
  name: string;
  /** Unique per replica; default `<name>-<hostname>-<pid>`. */
  id?: string;
  /** The control plane's push address. Exactly one of this and `initial`. */
  controlPlane?: string;
  /** A validated snapshot to serve (`meshlet gateway --config FILE`). */
  initial?: Snapshot;
  /** The address the listeners bind (default 0.0.0.0); ports come from the Gateway resource. */
  listenHost?: string;
  admin?: HostPort;
  logger?: Logger;
  /** Fraction of requests written as access-log lines on stdout (default 1: a gateway logs every request). */
  accessLogSample?: number;
  accessLogger?: Logger;
  /** Percent of new traces sampled (default 1). */
  samplingPercent?: number;
  labels?: Record<string, string>;
  /**
   * The bootstrap credential (join token or ServiceAccount token), read at every connect to the
   * control plane. With it the gateway gets a workload certificate and calls services over mTLS.
   */
  credential?: () => string | undefined;
  /** Bytes all the response caches of this gateway keep together (Route rules' `cache`; default 64 MiB). */
  cacheMaxBytes?: number;
  /** JWT keys: at most one JWKS fetch per URL in this interval (default 30 s). */
  jwksMinRefreshMs?: number;
  /** TLS on the push stream (src/snapshot/push-tls.ts); absent: plaintext. */
  pushTls?: import('../src/snapshot/push-tls').PushTlsOptions;
  /** How often certificate files are polled for changes (default 1000 ms). */
  certPollMs?: number;
  onQuit?: () => void;
}

export interface RunningGateway {
  readonly id: string;
  admin: HostPort;
  /** The listeners serving now, by name. */
  listeners(): Map<string, HostPort>;
  current(): CompiledSnapshot | undefined;
  /** The workload identity (key, certificate, bundle), once the control plane signed one. */
  identity(): IdentityMaterial | undefined;
  /** Resolves once the listeners of the snapshot in force are bound (tests, `meshlet up`). */
  settled(): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  if (!opts.controlPlane === !opts.initial) throw new Error('a gateway needs exactly one of --control-plane and --config');
  const logger = opts.logger ?? pino({ level: 'info' });
  const plane = await startGatewayPlane({ ...opts, logger });
  const { id, log } = plane;

  let subscriber: Subscriber | undefined;
  let closed = false;
  const identity: WorkloadIdentity | undefined =
    opts.controlPlane && opts.credential
      ? new (await import('../src/security/workload-identity')).WorkloadIdentity({ request: (csr) => subscriber?.requestCertificate(csr) ?? false, logger: log })
      : undefined;
  // Every certificate the control plane signs (the first, renewals, a new trust bundle) goes to the
  // outbound pools: new connections use it, open ones keep theirs.
  identity?.onChange((mat) => plane.setIdentity(mat));
  const a = opts.admin ?? { host: '127.0.0.1', port: 15000 };
  let admin: AdminServer;
  try {
    admin = await startAdmin(
      a.host,
      a.port,
      {
        // With a credential, ready only once it holds its certificate: before that it would call
        // services in plaintext, which STRICT services refuse (a load balancer waits for ready).
        ready: () => plane.current() !== undefined && !closed && (identity === undefined || plane.hasIdentity()),
        configDump: () => ({
          id,
          gateway: opts.name,
          controlPlane: subscriber ? { connected: subscriber.connected, target: subscriber.target, lastError: subscriber.lastError ?? null } : undefined,
          identity: identity ? identityDump(identity) : undefined,
          mtls: { certificate: plane.hasIdentity() },
          version: plane.current()?.version ?? null,
          listeners: plane.listenerDump(),
          // Private keys are never shown (src/policy/redact.ts).
          resources: plane.current()?.resources.map((r) => redactResource(toWire(r))) ?? [],
        }),
        metrics: (format) => plane.metrics(format),
        stats: () => plane.stats(),
        tap: plane.tap,
        purgeCache: (sel) => ({ purged: plane.purgeCache(sel) }),
        logLevel: () => log.level,
        setLogLevel: (level) => plane.setLogLevel(level),
        quit: opts.onQuit,
      },
      log,
    );
  } catch (err) {
    await plane.close(0);
    throw err;
  }

  if (opts.controlPlane) subscriber = await subscribeGateway(opts, id, admin.address().port, plane.apply, log, identity);

  let closing: Promise<void> | undefined;
  return {
    id,
    admin: admin.address(),
    listeners: () => plane.listeners(),
    current: () => plane.current(),
    identity: () => identity?.current(),
    settled: () => plane.settled(),
    close(graceMs = 5000) {
      closing ??= (async () => {
        closed = true;
        identity?.close();
        subscriber?.close();
        await plane.close(graceMs);
        await admin.close();
      })();
      return closing;
    },
  };
}

/** Registers with the control plane as kind `gateway` (so no sidecar routes to it) and starts taking snapshots. */
export async function subscribeGateway(
  opts: Pick<GatewayOptions, 'name' | 'controlPlane' | 'labels' | 'credential' | 'pushTls'>,
  id: string,
  adminPort: number,
  apply: (w: import('../src/policy').WireSnapshot) => import('../src/core/result').Result<void>,
  log: Logger,
  identity: WorkloadIdentity | undefined,
): Promise<Subscriber> {
  const { Subscriber: Sub } = await import('../src/snapshot/subscriber');
  const subscriber = new Sub({
    target: opts.controlPlane as string,
    node: { id, service: opts.name, address: '', inboundPort: adminPort, labels: opts.labels ?? {}, buildVersion: VERSION, adminPort, kind: 'gateway' },
    apply,
    logger: log,
    credential: opts.credential,
    onIdentity: identity ? (msg) => identity.handle(msg) : undefined,
    tls: opts.pushTls,
    // A reconnect presents the workload certificate: it outlives a join token that expired.
    clientCertificate: identity ? () => identity.current() : undefined,
  });
  subscriber.start();
  return subscriber;
}
