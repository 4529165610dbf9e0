/**
 * Who a sidecar is, and the certificate it gets: the push server's identity hook.
 *
 * A sidecar's first push-stream message carries its bootstrap credential:
 * - a join token (`mlj_...`, control-plane/tokens.ts): identity `spiffe://TD/svc/SERVICE`;
 * - a Kubernetes ServiceAccount token (control-plane/token-review.ts): identity
 *   `spiffe://TD/ns/NS/sa/SA`, for the service named like the service account.
 * The service the sidecar registers must be the one its credential proves (a process cannot
 * register as another service), and it gets certificates for that identity only.
 *
 * A reconnect may instead authenticate with the workload certificate the process already holds:
 * the push port asks for a TLS client certificate (control-plane/push-tls.ts) and verifies it
 * against the trust bundle in the handshake; a certificate that verified, has not expired and
 * names a workload of this trust domain proves its service (`serviceOf`), as a token would. So a
 * process whose join token expired keeps coming back for as long as it renews its certificate
 * (as Istio's and Linkerd's proxies renew with their current certificate). A certificate for
 * service A never registers B.
 *
 * Mode: `strict` (the default) refuses a sidecar without a credential; `permissive` (an explicit
 * opt-out, for development and migration) admits it, with no identity and no certificate, under
 * whatever service name it gives. A credential that is presented and wrong is refused in both.
 */
import type { Logger } from 'pino';
import pino from 'pino';
import { systemClock, type Clock } from '../src/core/clock';
import { SecurityError } from '../src/security/errors';
import { k8sSpiffeId, parseSpiffeId, serviceOf, serviceSpiffeId, type SpiffeId } from '../src/security/spiffe';
import type { MeshCa } from './ca';
import type { TokenReviewer } from './token-review';
import { JOIN_PREFIX, type TokenStore } from './tokens';

export type SidecarAuthMode = 'permissive' | 'strict';

export interface Authenticated {
  id: SpiffeId;
  service: string;
  via: 'join-token' | 'kubernetes' | 'certificate';
  /** The join token's id, the service account `ns/sa` (pod name when bound), or the certificate's serial. */
  credential: string;
}

/** What the push server needs (an interface so its tests can fake it). */
export interface IdentityIssuer {
  readonly mode: SidecarAuthMode;
  /** Throws a SecurityError (CREDENTIAL_*) when the credential does not prove `service`. */
  authenticate(credential: string, service: string): Promise<Authenticated>;
  /**
   * The identity a TLS client certificate proves (one the handshake verified against the trust
   * bundle); throws a SecurityError (CREDENTIAL_EXPIRED, CREDENTIAL_INVALID, CREDENTIAL_WRONG_SERVICE).
   */
  authenticateCertificate(peer: PeerCertificateInfo, service: string): Authenticated;
  /** Signs a CSR for the authenticated identity; throws a SecurityError (CSR_*). */
  sign(csrPem: string, who: Authenticated): Promise<{ chainPem: string; notAfter: Date; serial: string }>;
  bundlePem(): string;
  /** The bundle or the signing root changed: every sidecar should get the bundle, and renew. */
  onChange(fn: () => void): void;
}

/** The fields of node:tls's PeerCertificate read here. */
export interface PeerCertificateInfo {
  subjectaltname?: string;
  valid_from: string;
  valid_to: string;
  serialNumber: string;
}

export interface WorkloadIdentityOptions {
  ca: MeshCa;
  mode?: SidecarAuthMode;
  tokens?: TokenStore;
  tokenReviewer?: TokenReviewer;
  logger?: Logger;
  clock?: Clock;
}

export class WorkloadIdentityService implements IdentityIssuer {
  readonly mode: SidecarAuthMode;
  private readonly ca: MeshCa;
  private readonly tokens?: TokenStore;
  private readonly reviewer?: TokenReviewer;
  private readonly logger: Logger;
  private readonly clock: Clock;
  /** Certificates signed, by outcome (for metrics and tests). */
  readonly counts = { signed: 0, refused: 0, authenticated: 0, unauthenticated: 0 };

  constructor(opts: WorkloadIdentityOptions) {
    this.ca = opts.ca;
    this.mode = opts.mode ?? 'strict';
    this.tokens = opts.tokens;
    this.reviewer = opts.tokenReviewer;
    this.logger = opts.logger ?? pino({ level: 'silent' });
    this.clock = opts.clock ?? systemClock;
  }

  async authenticate(credential: string, service: string): Promise<Authenticated> {
    try {
      const who = await this.resolve(credential.trim(), service);
      this.counts.authenticated++;
      return who;
    } catch (err) {
      this.counts.unauthenticated++;
      throw err;
    }
  }

  authenticateCertificate(peer: PeerCertificateInfo, service: string): Authenticated {
    try {
      const who = this.fromCertificate(peer, service);
      this.counts.authenticated++;
      return who;
    } catch (err) {
      this.counts.unauthenticated++;
      throw err;
    }
  }

  private fromCertificate(peer: PeerCertificateInfo, service: string): Authenticated {
    const now = this.clock.now();
    const notAfter = Date.parse(peer.valid_to);
    // The handshake checked the dates, but a connection outlives it: a stream opened later on it must not ride an expired certificate.
    if (!(notAfter > now)) throw new SecurityError('CREDENTIAL_EXPIRED', `the workload certificate (serial ${peer.serialNumber}) expired at ${new Date(notAfter).toISOString()}`);
    if (!(Date.parse(peer.valid_from) <= now)) throw new SecurityError('CREDENTIAL_INVALID', `the workload certificate (serial ${peer.serialNumber}) is not valid before ${peer.valid_from}`);
    const uris = (peer.subjectaltname ?? '')
      .split(/,\s*/)
      .filter((s) => s.startsWith('URI:'))
      .map((s) => s.slice(4));
    if (uris.length !== 1) throw new SecurityError('CREDENTIAL_INVALID', `the client certificate (serial ${peer.serialNumber}) names ${uris.length} URIs; a workload certificate names exactly one SPIFFE ID`);
    const parsed = parseSpiffeId(uris[0] as string);
    if (!parsed.ok) throw new SecurityError('CREDENTIAL_INVALID', `the client certificate's URI is not a SPIFFE ID: ${parsed.errors[0]?.message}`);
    const id = parsed.value;
    const svc = serviceOf(id);
    if (id.trustDomain !== this.ca.trustDomain || svc === undefined)
      throw new SecurityError('CREDENTIAL_INVALID', `the client certificate names ${id.uri}, not a workload of trust domain ${this.ca.trustDomain}`);
    if (svc !== service) throw new SecurityError('CREDENTIAL_WRONG_SERVICE', `the workload certificate of ${id.uri} may register only service ${svc}, not ${service}`);
    return { id, service, via: 'certificate', credential: `certificate ${peer.serialNumber}` };
  }

  async sign(csrPem: string, who: Authenticated): Promise<{ chainPem: string; notAfter: Date; serial: string }> {
    try {
      const c = await this.ca.sign(csrPem, who.id);
      this.counts.signed++;
      this.logger.info({ spiffeId: who.id.uri, serial: c.serial, notAfter: c.notAfter.toISOString(), via: who.via, credential: who.credential }, 'workload certificate signed');
      return c;
    } catch (err) {
      this.counts.refused++;
      throw err;
    }
  }

  bundlePem(): string {
    return this.ca.bundlePem();
  }

  onChange(fn: () => void): void {
    this.ca.onChange(fn);
  }

  private async resolve(credential: string, service: string): Promise<Authenticated> {
    if (credential === '')
      throw new SecurityError(
        'CREDENTIAL_MISSING',
        `no credential: this control plane registers only sidecars that prove their service; start the sidecar with MESHLET_JOIN_TOKEN from \`meshlet token create --service ${service}\` (on Kubernetes: --credential-file with its projected ServiceAccount token), or, for development only, the control plane with --sidecar-auth permissive`,
      );
    if (credential.startsWith(JOIN_PREFIX)) {
      if (!this.tokens) throw new SecurityError('CREDENTIAL_INVALID', 'this control plane does not accept join tokens');
      const t = await this.tokens.verify(credential);
      if (t.service !== service) throw new SecurityError('CREDENTIAL_WRONG_SERVICE', `join token ${t.id} is for service ${t.service}, not ${service}`);
      return { id: serviceSpiffeId(this.ca.trustDomain, t.service), service: t.service, via: 'join-token', credential: t.id };
    }
    if (!this.reviewer) throw new SecurityError('CREDENTIAL_INVALID', 'not a join token (mlj_...), and this control plane does not verify Kubernetes tokens (--kubernetes)');
    const sa = await this.reviewer.review(credential);
    if (sa.serviceAccount !== service)
      throw new SecurityError('CREDENTIAL_WRONG_SERVICE', `service account ${sa.namespace}/${sa.serviceAccount} may register only service ${sa.serviceAccount}, not ${service} (meshlet's convention: one service account per service, named after it)`);
    return { id: k8sSpiffeId(this.ca.trustDomain, sa.namespace, sa.serviceAccount), service, via: 'kubernetes', credential: `${sa.namespace}/${sa.serviceAccount}${sa.podName ? ` (pod ${sa.podName})` : ''}` };
  }
}
