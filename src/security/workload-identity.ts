/**
 * A workload's identity (a sidecar's or the edge gateway's): its private key (made here, never
 * sent anywhere), its certificate (signed by the control plane's CA over the push stream), and the
 * trust bundle. Both processes bootstrap it the same way: a credential (join token or
 * ServiceAccount token) on the push stream proves the service, the control plane answers with the
 * SPIFFE ID it may have, and the process asks for a certificate for it.
 *
 *   control plane: Identity{spiffe_id, bundle}   -> make a P-256 key, send a CSR for spiffe_id
 *   control plane: Identity{chain, bundle}       -> check the chain (our key, our ID, the bundle), swap it in
 *   at half the certificate's life               -> a new key and CSR; the old pair serves until the new one arrives
 *                                                   (counted from its arrival: notBefore is backdated for skew)
 *   a new bundle (root rotation)                 -> renew now, so the new root's certificate is in use early
 *
 * A refused CSR is retried with backoff (1 s doubling to 60 s). Consumers (TLS contexts,
 * src/security/tls.ts) read `current()` and subscribe with `onChange`: a rotation never restarts
 * anything; new connections use the new certificate, open ones keep theirs.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { Logger } from 'pino';
import { systemClock, type Clock, type Timer } from '../core/clock';
import type { IdentityMessage } from '../proto';
import { createCsr } from './csr';
import { generateKeyPair, privateKeyToPem, type KeyPair } from './keys';
import { parseSpiffeId } from './spiffe';
import { splitPem } from './ca';

export interface IdentityMaterial {
  spiffeId: string;
  /** PKCS#8 PEM; stays in this process. */
  keyPem: string;
  /** Leaf first, then intermediates. */
  chainPem: string;
  bundlePem: string;
  notBefore: number;
  notAfter: number;
  serial: string;
  /** When it arrived here (our clock): half life is counted from then, not from the backdated notBefore. */
  receivedAt: number;
}

export interface WorkloadIdentityOptions {
  /** Sends a CSR to the control plane; false when the stream is down (asked again on reconnect). */
  request(csrPem: string): boolean;
  logger: Logger;
  clock?: Clock;
  /** Renew at this fraction of the certificate's life (default 0.5). */
  renewAt?: number;
}

export class WorkloadIdentity {
  private readonly opts: WorkloadIdentityOptions;
  private readonly clock: Clock;
  private spiffeId: string | undefined;
  private bundle = '';
  private material: IdentityMaterial | undefined;
  private pending: { keys: KeyPair; spiffeId: string } | undefined;
  private renewTimer: Timer | undefined;
  private retryMs = 1000;
  private readonly listeners: ((m: IdentityMaterial) => void)[] = [];
  lastError: string | undefined;
  closed = false;

  constructor(opts: WorkloadIdentityOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
  }

  current(): IdentityMaterial | undefined {
    return this.material;
  }

  /** The SPIFFE ID the control plane says this workload has (before any certificate arrives too). */
  id(): string | undefined {
    return this.spiffeId;
  }

  onChange(fn: (m: IdentityMaterial) => void): void {
    this.listeners.push(fn);
  }

  /** Handles an Identity message from the push stream. */
  handle(msg: IdentityMessage): void {
    if (this.closed) return;
    const log = this.opts.logger;
    const bundleChanged = !!msg.trustBundlePem && msg.trustBundlePem !== this.bundle;
    if (msg.trustBundlePem) this.bundle = msg.trustBundlePem;
    if (msg.spiffeId) this.spiffeId = msg.spiffeId;
    if (msg.error) {
      this.lastError = msg.error;
      this.pending = undefined;
      log.warn({ spiffeId: this.spiffeId, reason: msg.error, retryInMs: this.retryMs }, 'certificate request refused');
      this.schedule(this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 60_000);
      return;
    }
    if (msg.certificateChainPem) {
      this.install(msg.certificateChainPem);
      return;
    }
    // The stream is (re)established or the bundle changed: ask for a certificate when we have none, it is due, or the roots changed.
    if (this.material && bundleChanged && this.material.bundlePem !== this.bundle) {
      this.material = { ...this.material, bundlePem: this.bundle };
      this.emit();
      log.info('trust bundle updated; renewing the certificate');
      void this.renew();
      return;
    }
    if (!this.material || this.due() || this.material.spiffeId !== this.spiffeId) void this.renew();
  }

  /** Makes a new key and sends a CSR for it. */
  async renew(): Promise<void> {
    if (this.closed || !this.spiffeId) return;
    const parsed = parseSpiffeId(this.spiffeId);
    if (!parsed.ok) {
      this.opts.logger.error({ spiffeId: this.spiffeId }, 'the control plane sent an invalid SPIFFE ID');
      return;
    }
    const keys = await generateKeyPair();
    const csr = await createCsr(keys, parsed.value);
    if (this.closed) return;
    this.pending = { keys, spiffeId: parsed.value.uri };
    if (!this.opts.request(csr)) this.opts.logger.debug('CSR not sent: no control-plane stream; asking again once reconnected');
  }

  close(): void {
    this.closed = true;
    this.renewTimer?.cancel();
  }

  private due(): boolean {
    const m = this.material;
    if (!m) return true;
    return this.clock.now() >= this.renewTime(m);
  }

  private renewTime(m: IdentityMaterial): number {
    return m.receivedAt + (m.notAfter - m.receivedAt) * (this.opts.renewAt ?? 0.5);
  }

  private install(chainPem: string): void {
    const log = this.opts.logger;
    const p = this.pending;
    if (!p) {
      log.warn('a certificate arrived that was not asked for; ignored');
      return;
    }
    void (async () => {
      let leaf: X509Certificate;
      try {
        const certs = splitPem(chainPem);
        leaf = new X509Certificate(certs[0] ?? '');
        const keyPem = await privateKeyToPem(p.keys.privateKey);
        if (!leaf.checkPrivateKey(createPrivateKey(keyPem))) throw new Error('the certificate is not for our key');
        const san = leaf.subjectAltName ?? '';
        if (san !== `URI:${p.spiffeId}`) throw new Error(`the certificate names ${san || 'nothing'}, not URI:${p.spiffeId}`);
        for (let i = 1; i < certs.length; i++)
          if (!new X509Certificate(certs[i - 1] as string).checkIssued(new X509Certificate(certs[i] as string))) throw new Error('the chain is out of order');
        if (this.pending !== p || this.closed) return;
        this.pending = undefined;
        this.material = {
          spiffeId: p.spiffeId,
          keyPem,
          chainPem,
          bundlePem: this.bundle,
          notBefore: new Date(leaf.validFrom).getTime(),
          notAfter: new Date(leaf.validTo).getTime(),
          serial: leaf.serialNumber,
          receivedAt: this.clock.now(),
        };
      } catch (err) {
        this.lastError = (err as Error).message;
        log.error({ reason: this.lastError }, 'the signed certificate is unusable; asking again');
        this.pending = undefined;
        this.schedule(this.retryMs);
        return;
      }
      this.lastError = undefined;
      this.retryMs = 1000;
      const m = this.material;
      log.info({ spiffeId: m.spiffeId, serial: m.serial, notAfter: new Date(m.notAfter).toISOString() }, 'workload certificate installed');
      this.emit();
      this.schedule(Math.max(1000, this.renewTime(m) - this.clock.now()));
    })();
  }

  private schedule(ms: number): void {
    this.renewTimer?.cancel();
    this.renewTimer = this.clock.setTimeout(() => void this.renew(), ms);
  }

  private emit(): void {
    const m = this.material;
    if (!m) return;
    for (const fn of this.listeners) {
      try {
        fn(m);
      } catch (err) {
        this.opts.logger.warn({ err }, 'identity listener failed');
      }
    }
  }
}

