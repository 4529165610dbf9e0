/**
 * The push server: one gRPC bidirectional stream per sidecar (PolicyDiscovery.Stream).
 *
 * - A stream's first message names its sidecar (Node); the sidecar is registered in the endpoint
 *   registry and sent the current snapshot with the next flush (within `coalesceMs`): a storm of
 *   sidecars connecting costs one snapshot build per flush, not one per sidecar.
 * - On any change (`notifyChange`), changes are coalesced for `coalesceMs`, then every stream
 *   whose view changed gets it: its scope's view (push-views.ts) is versioned by its own content,
 *   so a stream whose view is the same as before is sent nothing (and answers nothing). It is sent
 *   as a delta from what it was last sent if the sidecar announced delta support, else complete.
 *   Each distinct message is encoded once and the same bytes written to every stream that needs it.
 * - Expected versions: `expectedVersion(service)` is the version of the view a sidecar of that
 *   service should run now; `sidecars()` adds it to the registry's list, so `meshlet status`, the
 *   rollout API and `meshlet describe` tell current from stale per sidecar.
 * - A NACKed delta (a version gap, or one that does not compile) is answered with a complete
 *   snapshot (a resync); a NACKed complete snapshot waits for the next change.
 * - Key material: a gateway stream is sent the TLSCertificates its Gateway uses only when the push
 *   port is TLS and, when this control plane verifies credentials, the gateway proved its name with
 *   one (`Stream.secrets`); else it gets the view a sidecar of its name gets (no keys), and a warning is
 *   logged: its listeners that need them stay as they were, and it NACKs the snapshot saying why.
 * - Size guard: a message over the limit (MAX_MESSAGE_BYTES, or MESHLET_MAX_PUSH_BYTES) is never
 *   written (grpc-js would fail the whole stream); the sidecar's status says why instead.
 * - ACKs and NACKs that echo the latest nonce sent on their stream are recorded in the
 *   registry; stale ones are ignored (as in xDS).
 * - Convergence: from the first change a version includes to the moment every sidecar it was
 *   pushed to (those whose view changed) has answered (ACK or NACK), measured on the real monotonic clock
 *   and logged at info. `lastConvergence()` returns the latest.
 *
 * The coalescing timer and the convergence measurement use real time even when a fake Clock is
 * injected (the Clock drives the registry's grace periods and timestamps), so a test on a fake
 * clock still sees pushes.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import {
  checkNode,
  SERVER_OPTIONS,
  policyDiscoveryService,
  type PolicyDiscoveryHandlers,
  type PolicyDiscoveryStreamCall,
  type ReceivedSidecarMessage,
  maxPushBytes,
} from '../src/proto';
import { PushViews, type Encoded, type View } from './push-views';
import { formatErrors } from '../src/core/result';
import type { Registry, SidecarSession, SidecarStatus } from './registry';
import type { BuiltSnapshot, SnapshotBuilder } from './snapshot-builder';
import type { ControlPlaneMetrics } from './metrics';
import type { NodeMessage } from '../src/proto';
import type { Authenticated, IdentityIssuer } from './identity';
import { JOIN_PREFIX } from './tokens';

export interface PushServerOptions {
  builder: SnapshotBuilder;
  registry: Registry;
  logger?: Logger;
  metrics?: ControlPlaneMetrics;
  /** How long to gather changes before pushing (default 5 ms). */
  coalesceMs?: number;
  /** Verifies sidecars' credentials and signs their CSRs (control-plane/identity.ts); absent: no identities. */
  identity?: IdentityIssuer;
  /** The largest message sent (default: maxPushBytes(), i.e. MAX_MESSAGE_BYTES or MESHLET_MAX_PUSH_BYTES). */
  maxMessageBytes?: number;
}

export interface Convergence {
  version: string;
  /** Change to the last answer, in milliseconds. */
  ms: number;
  /** Sidecars that had to answer. */
  sidecars: number;
  /** How many of them answered NACK. */
  nacked: number;
  /** When it converged (ISO 8601). */
  at: string;
}

interface Stream {
  call: PolicyDiscoveryStreamCall;
  id?: string;
  session?: SidecarSession;
  service?: string;
  /** The node is a gateway (Node.kind). */
  gateway?: boolean;
  /** A gateway entitled to its TLSCertificates: TLS push port, and its credential verified when credentials are. */
  secrets?: boolean;
  /** A gateway whose missing TLSCertificates were already warned about on this stream. */
  warnedSecrets?: boolean;
  /** The sidecar applies deltas (Node.accepts_delta). */
  acceptsDelta?: boolean;
  /** The view last written to the stream (what a delta is made against). */
  view?: View;
  /** The next message must be a complete snapshot (after a NACKed delta). */
  resync?: boolean;
  /** The type of the message last written. */
  sentType?: 'full' | 'delta';
  sentVersion?: string;
  sentNonce?: string;
  /** The version this stream last answered for, ACK or NACK. */
  answeredVersion?: string;
  closed: boolean;
  /** The identity the sidecar's credential proved (none: admitted without one, PERMISSIVE). */
  who?: Authenticated;
  /** Messages that arrived while the credential was being verified, handled after. */
  queue?: ReceivedSidecarMessage[];
}

interface Tracking {
  /** The mesh version pushed. */
  version: string;
  since: number;
  waiting: Set<Stream>;
  total: number;
  nacked: number;
}

export class PushServer {
  private readonly builder: SnapshotBuilder;
  private readonly registry: Registry;
  private readonly logger: Logger;
  private readonly metrics?: ControlPlaneMetrics;
  private readonly coalesceMs: number;
  private readonly streams = new Set<Stream>();
  private readonly nonceBase = randomBytes(4).toString('hex');
  private nonceSeq = 0;
  private lastFlushMs = 0;
  private lastFlushEnd = 0;
  private readonly views: PushViews;
  private readonly maxBytes: number;
  private server: grpc.Server | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Real monotonic time of the earliest change not yet pushed. */
  private changeSince: number | undefined;
  private tracking: Tracking | undefined;
  private last: Convergence | undefined;
  private closing = false;
  /** The push port is TLS (set by `listen`): key material may be sent over it. */
  private tls = false;
  /** Gateway ids entitled to their TLSCertificates (`sidecars()` reports their view's version). */
  private readonly withSecrets = new Set<string>();

  constructor(opts: PushServerOptions) {
    this.builder = opts.builder;
    this.registry = opts.registry;
    this.logger = opts.logger ?? pino({ level: 'silent' });
    this.metrics = opts.metrics;
    this.coalesceMs = opts.coalesceMs ?? 5;
    this.identity = opts.identity;
    this.maxBytes = opts.maxMessageBytes ?? maxPushBytes();
    this.views = new PushViews({ nonce: () => `${this.nonceBase}-${++this.nonceSeq}`, onEncode: () => this.metrics?.encoded() });
    // A rotated root: every identified sidecar gets the new bundle (and requests a new certificate).
    this.identity?.onChange(() => {
      for (const st of this.streams) if (st.who) this.sendIdentity(st, { spiffeId: st.who.id.uri });
    });
  }

  private readonly identity?: IdentityIssuer;

  /**
   * Binds the gRPC server; port 0 picks a free one. Resolves to the bound address. `credentials`:
   * TLS (push-tls.ts in control-plane/); absent: plaintext.
   */
  listen(host: string, port: number, credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure()): Promise<{ host: string; port: number }> {
    const server = new grpc.Server(SERVER_OPTIONS);
    const handlers: PolicyDiscoveryHandlers = { Stream: (call) => this.handle(call) };
    server.addService(policyDiscoveryService(), handlers);
    const hostPart = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
    return new Promise((resolve, reject) => {
      server.bindAsync(`${hostPart}:${port}`, credentials, (err, bound) => {
        if (err) {
          server.forceShutdown();
          reject(err);
          return;
        }
        this.server = server;
        this.tls = credentials._isSecure();
        this.logger.info({ address: `${hostPart}:${bound}`, tls: credentials._isSecure() }, 'push server listening');
        resolve({ host, port: bound });
      });
    });
  }

  /** Something changed (store or endpoints): push soon, coalescing changes close together. */
  notifyChange(): void {
    this.builder.invalidate();
    if (this.closing) return;
    if (this.changeSince === undefined) this.changeSince = performance.now();
    if (this.timer) return;
    // Under a storm of changes (sidecars connecting by the thousand), leave at least as long as the
    // last flush took between its end and the next one: pushing never takes more than about half of
    // the event loop. A change after a quiet spell is pushed after `coalesceMs`.
    const gap = Math.min(this.lastFlushMs, 1000) - (performance.now() - this.lastFlushEnd);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const t0 = performance.now();
      this.flush();
      this.lastFlushEnd = performance.now();
      this.lastFlushMs = this.lastFlushEnd - t0;
    }, Math.max(this.coalesceMs, gap));
  }

  /** The snapshot currently in force. */
  snapshot(): BuiltSnapshot {
    return this.builder.current();
  }

  /** The version of the view a sidecar of `service` should run now (its scope's, at the snapshot in force). */
  expectedVersion(service: string, withSecrets = false): string {
    const b = this.builder.current();
    return this.views.view(b, this.views.scopeOf(b, service, withSecrets)).version;
  }

  /** The registry's sidecars, each with the version it should run (`expectedVersion`). */
  sidecars(): (SidecarStatus & { expectedVersion: string })[] {
    const b = this.builder.current();
    const byService = new Map<string, string>();
    return this.registry.sidecars().map((s) => {
      const secrets = this.withSecrets.has(s.id);
      const key = `${secrets ? 'gateway:' : ''}${s.service}`;
      let v = byService.get(key);
      if (v === undefined) byService.set(key, (v = this.views.view(b, this.views.scopeOf(b, s.service, secrets)).version));
      return { ...s, expectedVersion: v };
    });
  }

  /** The latest completed convergence, if any change has been pushed to connected sidecars. */
  lastConvergence(): Convergence | undefined {
    return this.last;
  }

  /** Open streams that have identified their sidecar. */
  streamCount(): number {
    let n = 0;
    for (const s of this.streams) if (s.id) n++;
    return n;
  }

  /** Ends every stream (sidecars see a clean end and reconnect elsewhere), then stops. */
  async close(timeoutMs = 2000): Promise<void> {
    this.closing = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const s of [...this.streams]) {
      this.drop(s);
      try {
        s.call.end();
      } catch {
        // already gone
      }
    }
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, timeoutMs);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  // ------------------------------------------------------------------------------ internals

  private handle(call: PolicyDiscoveryStreamCall): void {
    if (this.closing) {
      call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
      return;
    }
    const s: Stream = { call, closed: false };
    this.streams.add(s);
    call.on('data', (msg: ReceivedSidecarMessage) => {
      try {
        this.onMessage(s, msg);
      } catch (err) {
        this.logger.error({ err, sidecar: s.id }, 'push stream message failed');
      }
    });
    call.on('end', () => {
      this.drop(s);
      try {
        call.end();
      } catch {
        // already ended
      }
    });
    call.on('cancelled', () => this.drop(s));
    call.on('error', (err) => {
      this.logger.debug({ err, sidecar: s.id }, 'push stream error');
      this.drop(s);
    });
    call.on('close', () => this.drop(s));
  }

  private onMessage(s: Stream, msg: ReceivedSidecarMessage): void {
    if (s.closed) return;
    if (s.queue) {
      s.queue.push(msg);
      return;
    }
    const kind = msg.kind ?? (msg.node ? 'node' : msg.ack ? 'ack' : msg.nack ? 'nack' : undefined);
    if (!s.id) {
      const node = checkNode(kind === 'node' ? msg.node : undefined);
      if (!node.ok) {
        this.logger.warn({ peer: s.call.getPeer(), reason: formatErrors(node.errors) }, 'push stream refused');
        this.drop(s);
        s.call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: formatErrors(node.errors) });
        return;
      }
      if (this.identity) {
        this.admit(s, node.value);
        return;
      }
      this.connect(s, node.value);
      return;
    }
    if (kind === 'csr') {
      this.onCsr(s, msg.csr?.csrPem ?? '');
      return;
    }
    this.onAnswer(s, kind, msg);
  }

  // ------------------------------------------------------------- identity (control-plane/identity.ts)

  /** Verifies the node's credential (async: TokenReview), then connects it; messages meanwhile wait in `queue`. */
  private admit(s: Stream, n: NodeMessage): void {
    const identity = this.identity as IdentityIssuer;
    const credential = n.credential ?? '';
    // A workload certificate on the connection, verified by the TLS handshake against the trust bundle (push-tls.ts).
    const peer = s.call.getAuthContext()?.sslPeerCertificate;
    if (credential === '' && identity.mode === 'permissive' && !peer) {
      this.logger.info({ sidecar: n.id, service: n.service }, 'sidecar without a credential admitted (PERMISSIVE): no identity, no certificate');
      this.connect(s, n);
      return;
    }
    s.queue = [];
    const done = (who: Authenticated | undefined, err?: Error & { code?: string }): void => {
      const queued = s.queue ?? [];
      s.queue = undefined;
      if (err) return this.refuse(s, n, err);
      if (s.closed) return;
      if (who) return this.admitted(s, n, who, queued);
      this.logger.info({ sidecar: n.id, service: n.service }, 'sidecar without a credential admitted (PERMISSIVE): no identity, no certificate');
      this.connect(s, n);
      for (const m of queued) this.onMessage(s, m);
    };
    // The bootstrap credential first (it is what `token revoke` and TokenReview act on); when a join
    // token no longer proves anything (expired, forgotten) the certificate it earned does, for as
    // long as the process keeps it renewed. A revoked token or a credential for another service is final.
    // A ServiceAccount token is re-read at every connect and bound to its pod: one that TokenReview
    // refuses (the pod is gone) is final too, so only join tokens (or none) fall back to the certificate.
    const serviceAccountToken = credential.trim() !== '' && !credential.trim().startsWith(JOIN_PREFIX);
    const viaCertificate = (tokenErr: Error & { code?: string }): void => {
      if (!peer || serviceAccountToken || tokenErr.code === 'CREDENTIAL_REVOKED' || tokenErr.code === 'CREDENTIAL_WRONG_SERVICE') return done(undefined, tokenErr);
      let who: Authenticated;
      try {
        who = identity.authenticateCertificate(peer, n.service);
      } catch (e) {
        const certErr = e as Error & { code?: string };
        if (certErr.code === 'CREDENTIAL_WRONG_SERVICE') return done(undefined, certErr);
        // PERMISSIVE admits a sidecar without a credential; an unusable certificate does not change that.
        if (credential === '' && identity.mode === 'permissive') return done(undefined);
        // Both failed: say why the certificate did not do either (it expired while the process was cut off, say).
        tokenErr.message = `${tokenErr.message}; its workload certificate was not accepted either: ${certErr.message}`;
        return done(undefined, tokenErr);
      }
      done(who);
    };
    identity.authenticate(credential, n.service).then((who) => done(who), viaCertificate);
  }

  private admitted(s: Stream, n: NodeMessage, who: Authenticated, queued: ReceivedSidecarMessage[]): void {
    s.who = who;
    this.logger.info({ sidecar: n.id, spiffeId: who.id.uri, via: who.via, credential: who.credential }, 'sidecar authenticated');
    this.sendIdentity(s, { spiffeId: who.id.uri });
    this.connect(s, n);
    for (const m of queued) this.onMessage(s, m);
  }

  private refuse(s: Stream, n: NodeMessage, err: Error & { code?: string }): void {
    this.logger.warn({ sidecar: n.id, service: n.service, peer: s.call.getPeer(), code: err.code, reason: err.message }, 'push stream refused: credential not accepted');
    if (s.closed) return;
    this.drop(s);
    const code = err.code === 'CREDENTIAL_WRONG_SERVICE' ? grpc.status.PERMISSION_DENIED : grpc.status.UNAUTHENTICATED;
    s.call.emit('error', { code, details: err.message });
  }

  private onCsr(s: Stream, csrPem: string): void {
    const who = s.who;
    if (!who || !this.identity) {
      this.sendIdentity(s, { error: 'no certificate without a credential: start the sidecar with --join-token (or its ServiceAccount token on Kubernetes)' });
      return;
    }
    this.identity.sign(csrPem, who).then(
      (c) => {
        this.sendIdentity(s, { spiffeId: who.id.uri, certificateChainPem: c.chainPem });
        // From now on callers dial this sidecar over mTLS, expecting this identity.
        s.session?.certified(who.id.uri);
      },
      (err: Error & { code?: string }) => {
        this.logger.warn({ sidecar: s.id, spiffeId: who.id.uri, code: err.code, reason: err.message }, 'CSR refused');
        this.sendIdentity(s, { spiffeId: who.id.uri, error: `${err.code ?? 'CSR_REFUSED'}: ${err.message}` });
      },
    );
  }

  private sendIdentity(s: Stream, m: { spiffeId?: string; certificateChainPem?: string; error?: string }): void {
    if (s.closed || !this.identity) return;
    try {
      s.call.write({
        version: '',
        nonce: '',
        resourcesJson: '',
        endpointsJson: '',
        identity: { spiffeId: m.spiffeId ?? '', certificateChainPem: m.certificateChainPem ?? '', trustBundlePem: this.identity.bundlePem(), error: m.error ?? '' },
      });
    } catch (err) {
      this.logger.warn({ err, sidecar: s.id }, 'identity message not sent');
    }
  }

  // ---------------------------------------------------------------------------------------------

  private connect(s: Stream, n: NodeMessage): void {
    s.id = n.id;
    s.service = n.service;
    s.acceptsDelta = n.acceptsDelta === true;
    // Private keys travel only over TLS, to a gateway that proved its name (when names are proved here).
    s.gateway = n.kind === 'gateway';
    s.secrets = s.gateway && this.tls && (this.identity === undefined || s.who !== undefined);
    if (s.secrets) this.withSecrets.add(n.id);
    else this.withSecrets.delete(n.id);
    s.session = this.registry.connect({
      id: n.id,
      service: n.service,
      address: n.address || peerHost(s.call.getPeer()),
      port: n.inboundPort,
      labels: n.labels,
      buildVersion: n.buildVersion,
      adminPort: n.adminPort,
      ...(n.kind === 'gateway' ? { kind: 'gateway' as const } : {}),
      peerAddress: peerHost(s.call.getPeer()),
    });
    // The registry change (if any) invalidated the snapshot: this sidecar gets one with itself in
    // it at the next flush. A reconnect that changed nothing (same endpoint) is sent it now.
    if (this.timer) return;
    this.send(s, this.builder.current());
  }

  private onAnswer(s: Stream, kind: string | undefined, msg: ReceivedSidecarMessage): void {
    if (!s.id) return;
    if (kind === 'ack' && msg.ack) {
      if (msg.ack.nonce !== s.sentNonce) {
        this.logger.debug({ sidecar: s.id, nonce: msg.ack.nonce }, 'stale ACK ignored');
        return;
      }
      if (this.metrics) this.metrics.acks++;
      if (s.sentType === 'full') s.resync = false;
      this.registry.recordAck(s.id, msg.ack.version);
      this.logger.debug({ sidecar: s.id, version: msg.ack.version }, 'snapshot ACKed');
      this.answered(s, msg.ack.version, false);
    } else if (kind === 'nack' && msg.nack) {
      if (msg.nack.nonce !== s.sentNonce) {
        this.logger.debug({ sidecar: s.id, nonce: msg.nack.nonce }, 'stale NACK ignored');
        return;
      }
      if (this.metrics) this.metrics.nacks++;
      this.registry.recordNack(s.id, msg.nack.version, msg.nack.reason);
      this.logger.warn({ sidecar: s.id, version: msg.nack.version, reason: msg.nack.reason, delta: s.sentType === 'delta' }, 'snapshot rejected (NACK)');
      this.answered(s, msg.nack.version, true);
      // A NACKed delta (a gap, or it did not compile on top of the last good): resync now with the
      // complete snapshot. A NACKed complete snapshot waits for the next change.
      if (s.sentType === 'delta') {
        s.resync = true;
        const v = s.view;
        s.sentVersion = undefined;
        if (v) this.write(s, v, this.views.full(v));
      } else s.resync = true;
    } else if (kind === 'leave') {
      this.logger.info({ sidecar: s.id }, 'sidecar leaving');
      s.session?.leave();
    } else {
      this.logger.warn({ sidecar: s.id, kind }, 'unexpected message on push stream ignored');
    }
  }

  /** The view this stream's sidecar should run at snapshot `b`. */
  private viewOf(s: Stream, b: BuiltSnapshot): View {
    const service = s.service ?? '';
    if (s.gateway && !s.secrets && !s.warnedSecrets && this.views.secretsOf(b, service).length > 0) this.warnSecrets(s, b);
    return this.views.view(b, this.views.scopeOf(b, service, s.secrets === true));
  }

  /** Once per stream: a gateway that needs TLSCertificates is not sent them, and why. */
  private warnSecrets(s: Stream, b: BuiltSnapshot): void {
    s.warnedSecrets = true;
    const why = !this.tls
      ? 'the push port is plaintext (--insecure-push-plaintext): private keys are never sent over it'
      : `it connected without a credential: start it with a join token for ${JSON.stringify(s.service)} (\`meshlet token create --service ${s.service}\`)`;
    this.logger.warn({ gateway: s.id, service: s.service, secrets: this.views.secretsOf(b, s.service ?? '') }, `TLSCertificates withheld from this gateway: ${why}`);
  }

  private send(s: Stream, b: BuiltSnapshot, v: View = this.viewOf(s, b)): void {
    if (s.closed || !s.id || s.sentVersion === v.version) return;
    const delta = s.acceptsDelta && !s.resync && s.view !== undefined && s.view.scope === v.scope && s.sentType !== undefined;
    if (!delta) {
      this.write(s, v, this.views.full(v));
      return;
    }
    const d = this.views.delta(s.view as View, v);
    if (d.bytes.length <= this.maxBytes) {
      this.write(s, v, d);
      return;
    }
    // A delta over the limit (one change larger than a message may be, or one that replaces most
    // of the view): the complete snapshot instead, if that fits; else neither is sent (write says why).
    const f = this.views.full(v);
    this.write(s, v, f.bytes.length <= this.maxBytes ? f : d, f.bytes.length);
  }

  /** `fullBytes`: the size of the complete snapshot, when a delta is refused because neither fits. */
  private write(s: Stream, v: View, e: Encoded, fullBytes?: number): void {
    if (s.closed || !s.id) return;
    const bytes = e.bytes.length;
    // Never send what the sidecar cannot take (grpc-js would fail the whole stream): say why instead,
    // in `meshlet status`, and keep the stream for the next message that fits.
    if (bytes > this.maxBytes) {
      const what = e.type === 'delta' ? `delta is ${bytes} bytes${fullBytes !== undefined ? ` (the complete snapshot ${fullBytes})` : ''}` : `complete snapshot is ${bytes} bytes`;
      const reason = `snapshot ${v.version} not sent: the ${what}, over the ${this.maxBytes}-byte push message limit`;
      if (s.sentVersion !== `unsent:${v.version}`) {
        this.logger.error({ sidecar: s.id, version: v.version, bytes, limit: this.maxBytes, type: e.type }, 'snapshot too large to push');
        this.registry.recordNack(s.id, v.version, reason);
        this.metrics?.refused();
      }
      s.sentVersion = `unsent:${v.version}`;
      // What the sidecar has is unknown from here on: the next message that fits is complete.
      s.resync = true;
      return;
    }
    s.sentVersion = v.version;
    s.sentNonce = e.nonce;
    s.sentType = e.type;
    s.view = v;
    s.answeredVersion = undefined;
    try {
      s.call.write(e.bytes);
    } catch (err) {
      this.logger.warn({ err, sidecar: s.id }, 'push failed');
      return;
    }
    if (this.metrics) {
      this.metrics.pushes++;
      this.metrics.pushed(e.type, bytes);
    }
    this.registry.recordSent(s.id, v.version);
  }

  private flush(): void {
    if (this.closing) return;
    const b = this.builder.current();
    const since = Math.min(this.changeSince ?? performance.now(), this.tracking?.since ?? Infinity);
    this.changeSince = undefined;
    const waiting = new Set<Stream>();
    for (const s of this.streams) {
      if (!s.id || s.closed) continue;
      // Only streams whose view changed are sent anything (and waited for).
      const v = this.viewOf(s, b);
      if (s.sentVersion !== v.version) this.send(s, b, v);
      // A stream the snapshot could not be sent to (size guard) is not waited for.
      if (s.answeredVersion !== v.version && s.sentVersion === v.version) waiting.add(s);
    }
    if (waiting.size === 0) {
      // Nobody to wait for: either no sidecars, or all of them already have it.
      this.tracking = undefined;
      return;
    }
    this.tracking = { version: b.version, since, waiting, total: waiting.size, nacked: 0 };
  }

  private answered(s: Stream, version: string, nack: boolean): void {
    s.answeredVersion = version;
    const t = this.tracking;
    // The nonce matched: this answers the latest message written to the stream.
    if (!t || s.sentVersion !== version || !t.waiting.delete(s)) return;
    if (nack) t.nacked++;
    this.maybeConverged();
  }

  private maybeConverged(): void {
    const t = this.tracking;
    if (!t || t.waiting.size > 0) return;
    this.tracking = undefined;
    const ms = Math.round((performance.now() - t.since) * 1000) / 1000;
    this.last = { version: t.version, ms, sidecars: t.total, nacked: t.nacked, at: new Date().toISOString() };
    this.metrics?.converged(ms);
    this.logger.info(
      { version: t.version, convergenceMs: ms, sidecars: t.total, nacked: t.nacked },
      t.nacked > 0 ? 'snapshot pushed; some sidecars rejected it' : 'snapshot converged',
    );
  }

  private drop(s: Stream): void {
    if (s.closed) return;
    s.closed = true;
    this.streams.delete(s);
    s.session?.disconnect();
    if (this.tracking?.waiting.delete(s)) this.maybeConverged();
  }
}

/** The host of a grpc-js peer string: `ipv4:1.2.3.4:5`, `1.2.3.4:5`, `[::1]:5`, `ipv6:[::1]:5`. */
function peerHost(peer: string): string {
  let p = peer.replace(/^(ipv4|ipv6|unix):/, '');
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(p);
  if (bracket) return bracket[1] as string;
  const i = p.lastIndexOf(':');
  if (i > 0 && p.indexOf(':') === i) p = p.slice(0, i);
  return p;
}
