/**
 * The sidecar's end of the push stream: registers the sidecar, receives snapshots, answers each
 * with an ACK or a NACK (with the reason), and reconnects with jittered exponential backoff when
 * the control plane goes away. Traffic never depends on it: the last good snapshot stays in force.
 *
 * Several control-plane replicas: `target` may list them (`a:15010,b:15010`); each reconnect
 * goes to the next one, with the same sidecar id, so a replica's death moves its sidecars to the
 * others after one backoff.
 *
 * Deltas: the node announces `acceptsDelta`; after a complete snapshot, the control plane sends
 * only what changed. A delta is applied to the last good snapshot (applyDelta in src/proto) and
 * the result validated and compiled as a complete one; a delta that does not start from the last
 * good snapshot (a gap) or does not compile is NACKed, and the control plane resyncs. A DNS name resolving to several addresses works too: grpc-js
 * resolves every address and connects to one that answers.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { formatErrors, type Result } from '../core/result';
import {
  applyDelta,
  createPolicyDiscoveryClient,
  decodeSnapshot,
  isDelta,
  type NodeMessage,
  type PolicyDiscoveryClient,
  type PolicyDiscoveryClientStream,
  type IdentityMessage,
  type SnapshotMessage,
} from '../proto';
import type { WireSnapshot } from '../policy';
import { splitJoinToken } from '../security/ca-pin';
import { PushTrust, type ClientCertificate, type PushTlsOptions } from './push-tls';

export interface SubscriberOptions {
  /** The control plane's push address, `host:port`, or several, comma-separated (tried in turn). */
  target: string;
  node: NodeMessage;
  /** Validates, compiles and swaps in a snapshot; errors become the NACK reason. */
  apply(snapshot: WireSnapshot): Result<void>;
  logger: Logger;
  /** First reconnect delay (default 200 ms); doubles up to `maxBackoffMs` (default 5 s), with full jitter. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
  /** The bootstrap credential, read at every (re)connect (a projected token rotates); undefined: none. */
  credential?: () => string | undefined;
  /** Identity messages (sidecar/identity.ts): the SPIFFE ID and bundle, a signed certificate, or why not. */
  onIdentity?: (msg: IdentityMessage) => void;
  /** Announce delta support (default true); false: complete snapshots only, as older sidecars. */
  deltas?: boolean;
  /**
   * TLS on the push port (push-tls.ts): how the control plane is verified. Absent: plaintext (the
   * library's default; `meshlet sidecar` and `meshlet gateway` default to TLS).
   */
  tls?: PushTlsOptions;
  /**
   * The workload certificate this process holds now (read at every (re)connect): presented on the
   * push channel while it is valid, so the control plane accepts a reconnect after the bootstrap
   * credential (a join token) expired. A new certificate makes the next reconnect open a new channel.
   */
  clientCertificate?: () => ClientCertificate | undefined;
  /** Now, in ms (default Date.now): when a client certificate counts as expired. */
  now?: () => number;
}

export class Subscriber {
  private readonly opts: SubscriberOptions;
  private client: PolicyDiscoveryClient | undefined;
  private call: PolicyDiscoveryClientStream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private closed = false;
  private readonly targets: string[];
  private current = 0;
  private readonly trust: PushTrust;
  /** The trust anchors changed since the channel was made: the next (re)connect makes a new one. */
  private stale = false;
  /** The client certificate the current channel presents ('' none). */
  private channelCert = '';
  /** The last snapshot applied (what the next delta must start from). */
  private lastGood: WireSnapshot | undefined;
  /** Messages received, and how many were deltas. */
  readonly received = { full: 0, delta: 0 };
  /** Whether a stream is open and has delivered at least one snapshot. */
  connected = false;
  lastError: string | undefined;

  constructor(opts: SubscriberOptions) {
    this.opts = opts;
    this.targets = opts.target.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (this.targets.length === 0) this.targets = [opts.target];
    this.trust = new PushTrust(opts.tls ?? { plaintext: true });
  }

  /** The control-plane address the current (or next) stream uses. */
  get target(): string {
    return this.targets[this.current] as string;
  }

  start(): void {
    this.open();
  }

  /** After a lost stream: the next replica in the list (a new channel), if there are several. */
  private rotate(): void {
    if (this.targets.length < 2 || this.closed) return;
    this.current = (this.current + 1) % this.targets.length;
    this.client?.close();
    this.client = undefined;
  }

  /** Asks the control plane to take this sidecar's endpoint out now (graceful shutdown), then closes. */
  leave(): void {
    const call = this.call;
    if (call && this.connected) {
      call.write({ leave: {} });
      call.end();
      this.closed = true;
      if (this.timer) clearTimeout(this.timer);
      this.call = undefined;
      // The client goes once the half-closed stream has flushed and finished.
      call.on('status', () => this.client?.close());
      return;
    }
    this.close();
  }

  /** Sends a CSR on the open stream; false when there is none (the identity asks again after the reconnect). */
  requestCertificate(csrPem: string): boolean {
    if (!this.call || this.closed) return false;
    this.call.write({ csr: { csrPem } });
    return true;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.call?.cancel();
    this.call = undefined;
    this.client?.close();
  }

  /** Opens a stream, on a new channel when there is none or the trust anchors changed. */
  private open(): void {
    if (this.closed) return;
    const cert = this.trust.plaintext ? undefined : this.validCertificate();
    // A renewed certificate (or one that expired) is presented only by a new channel: the handshake is where it goes.
    if ((this.stale || (cert?.chainPem ?? '') !== this.channelCert) && this.client) {
      this.client.close();
      this.client = undefined;
    }
    if (this.client) return this.openOn(this.client);
    const credential = this.opts.credential?.();
    if (this.trust.plaintext) {
      this.client = createPolicyDiscoveryClient(this.target);
      return this.openOn(this.client);
    }
    const target = this.target;
    this.stale = false;
    this.channelCert = cert?.chainPem ?? '';
    this.trust.credentials(target, credential, cert).then(
      (creds) => {
        if (this.closed) return;
        this.client = createPolicyDiscoveryClient(target, creds);
        this.openOn(this.client);
      },
      (err: Error) => {
        if (this.closed) return;
        this.lastError = err.message;
        const delay = this.backoff();
        // The operator's to fix (no trust anchor, a wrong CA hash, a plaintext port): loudly, every time.
        this.opts.logger.error({ controlPlane: target, code: (err as { code?: string }).code, reason: err.message, retryInMs: delay }, 'cannot verify the control plane; not sending the credential');
        this.timer = setTimeout(() => {
          this.rotate();
          this.open();
        }, delay);
      },
    );
  }

  /** The workload certificate to present, when there is one that has not expired (with 10 s to spare for the handshake and clock skew). */
  private validCertificate(): ClientCertificate | undefined {
    const c = this.opts.clientCertificate?.();
    return c && c.notAfter - 10_000 > (this.opts.now ?? Date.now)() ? c : undefined;
  }

  private openOn(client: PolicyDiscoveryClient): void {
    const log = this.opts.logger;
    const call = client.Stream();
    this.call = call;
    let ended = false;
    const lost = (why: string, code?: number): void => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      const was = this.connected;
      this.connected = false;
      if (this.closed) return;
      this.lastError = why;
      const delay = this.backoff();
      if (!was && code === grpc.status.UNAVAILABLE && !this.trust.plaintext && /certificate|ssl|tls|handshake|self.signed|verify/i.test(why)) {
        // A push port whose certificate does not verify (wrong --ca-file, another mesh): said loudly.
        log.error({ controlPlane: this.target, reason: why, retryInMs: delay }, 'cannot verify the control plane; not sending the credential');
        this.stale = true;
        this.timer = setTimeout(() => {
          this.rotate();
          this.open();
        }, delay);
        return;
      }
      if (code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED) {
        // A refused credential is the operator's to fix: say so loudly, every time.
        log.error({ controlPlane: this.target, reason: why, retryInMs: delay }, 'the control plane refused this sidecar (credential)');
        this.timer = setTimeout(() => {
          this.rotate();
          this.open();
        }, delay);
        return;
      }
      (was ? log.warn.bind(log) : log.debug.bind(log))(
        { controlPlane: this.target, reason: why, retryInMs: delay },
        'control plane stream lost; routing on the last good snapshot',
      );
      this.timer = setTimeout(() => {
        this.rotate();
        this.open();
      }, delay);
    };
    call.on('data', (msg: SnapshotMessage) => {
      if (msg.identity) {
        // The bundle verifies the push port at the next connect too (root rotation needs no new file).
        if (msg.identity.trustBundlePem && this.trust.learn(msg.identity.trustBundlePem)) this.stale = true;
        this.opts.onIdentity?.(msg.identity);
      }
      // An identity-only message has no version and is not answered.
      if (!msg.version && msg.identity) return;
      if (!this.connected) log.info({ controlPlane: this.target }, 'connected to the control plane');
      this.connected = true;
      this.attempt = 0;
      this.onSnapshot(call, msg);
    });
    call.on('error', (err: grpc.ServiceError) => lost(err.details || err.message, err.code));
    call.on('end', () => lost('stream ended by the control plane'));
    call.on('status', (s: grpc.StatusObject) => {
      if (s.code !== grpc.status.OK) lost(s.details || `status ${s.code}`);
    });
    const credential = this.opts.credential?.();
    // A join token's CA pin is ours (it chose the channel's root); the control plane verifies the rest.
    call.write({ node: { ...this.opts.node, credential: credential ? splitJoinToken(credential).credential : '', acceptsDelta: this.opts.deltas !== false } });
  }

  private onSnapshot(call: PolicyDiscoveryClientStream, msg: SnapshotMessage): void {
    const log = this.opts.logger;
    const delta = isDelta(msg);
    if (delta) this.received.delta++;
    else this.received.full++;
    const decoded: Result<WireSnapshot> = !delta
      ? decodeSnapshot(msg)
      : this.lastGood
        ? applyDelta(this.lastGood, msg)
        : { ok: false, errors: [{ path: 'base_version', message: `version gap: a delta from ${msg.baseVersion ?? ''} but no snapshot applied yet; a complete snapshot is needed` }] };
    const result: Result<void> = decoded.ok ? this.opts.apply(decoded.value) : decoded;
    if (result.ok) {
      if (decoded.ok) this.lastGood = decoded.value;
      call.write({ ack: { version: msg.version, nonce: msg.nonce } });
      return;
    }
    const reason = formatErrors(result.errors);
    log.warn({ version: msg.version, reason }, 'snapshot rejected (NACK); keeping the last good one');
    call.write({ nack: { version: msg.version, nonce: msg.nonce, reason } });
  }

  private backoff(): number {
    const base = this.opts.baseBackoffMs ?? 200;
    const max = this.opts.maxBackoffMs ?? 5000;
    const ceiling = Math.min(max, base * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    // Full jitter (AWS architecture blog), with a floor so a fleet never hammers in lockstep at 0.
    return Math.round(base / 2 + (this.opts.random ?? Math.random)() * (ceiling - base / 2));
  }
}
