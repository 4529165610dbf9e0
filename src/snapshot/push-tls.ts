/**
 * The client side of TLS on the push port: which credentials a sidecar's (or gateway's) gRPC
 * channel to the control plane uses, and how it knows the control plane is the real one before
 * its credential crosses the network (src/security/ca-pin.ts says what is checked).
 *
 * Trust anchors, in order:
 * 1. the CA file (`--ca-file`) and the trust bundle the control plane pushed on an earlier stream
 *    (so a process that joined once follows root rotations without a new file);
 * 2. else a CA pin (`sha256:...`, from the join token or `--ca-hash`): one TLS handshake without
 *    verification fetches the control plane's chain, the CA certificate whose public key has the
 *    pinned hash becomes the root, and the real channel verifies against it. Nothing is sent on
 *    that first connection.
 * Neither, and not `plaintext`: the channel is not opened (PUSH_TLS_NO_TRUST), the sidecar says
 * how to give one.
 *
 * Client certificate: a process holding a workload certificate that has not expired presents it
 * (with its key) on the channel; the control plane then takes it as the stream's credential, so a
 * reconnect works after the join token expired.
 */
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as tls from 'node:tls';
import { caPinOf, CONTROL_PLANE_PATH, pemCertificates, splitJoinToken } from '../security/ca-pin';

export interface PushTlsOptions {
  /** Plain gRPC (`--insecure-push-plaintext`): the credential crosses the network readable. */
  plaintext?: boolean;
  /** PEM roots (`--ca-file`). */
  caPem?: string;
  /** CA pins (`--ca-hash`); a join token's own pin is added at each connect. */
  pins?: string[];
  /** How long the pin discovery handshake may take (default 10 s). */
  discoveryTimeoutMs?: number;
}

/** A workload certificate to present on the push channel (src/security/workload-identity.ts's material). */
export interface ClientCertificate {
  keyPem: string;
  /** Leaf first. */
  chainPem: string;
  /** ms since the epoch. */
  notAfter: number;
}

export type PushTlsErrorCode = 'PUSH_TLS_NO_TRUST' | 'PUSH_TLS_PIN_MISMATCH' | 'PUSH_TLS_NOT_TLS' | 'PUSH_TLS_UNREACHABLE';

export class PushTlsError extends Error {
  readonly code: PushTlsErrorCode;
  constructor(code: PushTlsErrorCode, message: string) {
    super(message);
    this.name = 'PushTlsError';
    this.code = code;
  }
}

export class PushTrust {
  readonly plaintext: boolean;
  private readonly caPem: string | undefined;
  private readonly pins: string[];
  private readonly timeoutMs: number;
  private learned: string | undefined;

  constructor(opts: PushTlsOptions = { plaintext: true }) {
    this.plaintext = opts.plaintext === true;
    this.caPem = opts.caPem && pemCertificates(opts.caPem).length ? opts.caPem : undefined;
    this.pins = [...(opts.pins ?? [])];
    this.timeoutMs = opts.discoveryTimeoutMs ?? 10_000;
  }

  /** A trust bundle the control plane sent; true when it differs from the one known (channels made before are stale). */
  learn(bundlePem: string): boolean {
    if (this.plaintext || !bundlePem || bundlePem === this.learned || pemCertificates(bundlePem).length === 0) return false;
    this.learned = bundlePem;
    return true;
  }

  /** The roots the next channel verifies against (the CA file and the learned bundle), if any. */
  roots(): string | undefined {
    const certs = [...new Set([...pemCertificates(this.caPem ?? ''), ...pemCertificates(this.learned ?? '')])];
    return certs.length ? certs.join('') : undefined;
  }

  /**
   * Credentials for a channel to `target` (`host:port`); `credential` is the one about to be sent
   * (its pin counts); `client`: the workload certificate to present, if any.
   */
  async credentials(target: string, credential: string | undefined, client?: ClientCertificate): Promise<grpc.ChannelCredentials> {
    if (this.plaintext) return grpc.credentials.createInsecure();
    let roots = this.roots();
    if (!roots) {
      const pin = credential ? splitJoinToken(credential).pin : undefined;
      const pins = [...this.pins, ...(pin ? [pin] : [])];
      if (pins.length === 0)
        throw new PushTlsError(
          'PUSH_TLS_NO_TRUST',
          'nothing to verify the control plane with: give --ca-file FILE (the mesh CA: `meshlet ca bundle`), a join token that carries the CA hash (`meshlet token create` prints one), or --ca-hash sha256:...; --insecure-push-plaintext only for a control plane started with it',
        );
      roots = await discoverPinnedRoot(target, pins, this.timeoutMs);
      // The real channel checks the pin again: its chain must pass through a pinned key, not merely end at the root found.
      const pinned = pins;
      return grpc.credentials.createSsl(Buffer.from(roots), client ? Buffer.from(client.keyPem) : null, client ? Buffer.from(client.chainPem) : null, {
        checkServerIdentity: (host, cert) => controlPlaneIdentity(host, cert) ?? pinnedChainError(cert, pinned),
      });
    }
    return grpc.credentials.createSsl(Buffer.from(roots), client ? Buffer.from(client.keyPem) : null, client ? Buffer.from(client.chainPem) : null, { checkServerIdentity: controlPlaneIdentity });
  }
}

/**
 * The certificate names the control plane's SPIFFE ID (issued by the mesh CA) or the host dialled
 * (a certificate of the user's own, for the Service's DNS name).
 */
export function controlPlaneIdentity(hostname: string, cert: tls.PeerCertificate): Error | undefined {
  const sans = (cert.subjectaltname ?? '').split(/,\s*/);
  if (sans.some((s) => /^URI:spiffe:\/\/[^/]+$/.test(s.slice(0, s.length - CONTROL_PLANE_PATH.length)) && s.endsWith(CONTROL_PLANE_PATH))) return undefined;
  const err = tls.checkServerIdentity(hostname, cert);
  if (!err) return undefined;
  return new Error(`the push port's certificate names neither the control plane's SPIFFE ID (spiffe://TD${CONTROL_PLANE_PATH}) nor ${hostname} (${cert.subjectaltname ?? 'no SAN'})`);
}

function splitTarget(target: string): { host: string; port: number } {
  const t = target.replace(/^dns:(\/\/[^/]*\/)?/, '');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(t) ?? /^([^:]+):(\d+)$/.exec(t);
  if (!m) throw new PushTlsError('PUSH_TLS_UNREACHABLE', `${target}: expected HOST:PORT`);
  return { host: m[1] as string, port: Number(m[2]) };
}

/**
 * The certificates of a peer's chain as node:tls links them (leaf first), each checked to be
 * signed by the next one. Stops at a self-signed certificate, a missing issuer or a bad signature
 * (`broken`: where the signatures stop holding).
 */
function linkedChain(peer: tls.PeerCertificate | tls.DetailedPeerCertificate): { certs: X509Certificate[]; broken: boolean } {
  const certs: X509Certificate[] = [];
  let c: tls.DetailedPeerCertificate | undefined = peer as tls.DetailedPeerCertificate;
  for (let i = 0; c && c.raw && i < 10; i++) {
    const x = new X509Certificate(c.raw);
    const prev = certs[certs.length - 1];
    if (prev && !(prev.checkIssued(x) && prev.verify(x.publicKey))) return { certs, broken: true };
    certs.push(x);
    if (c.issuerCertificate === c || !c.issuerCertificate) break;
    c = c.issuerCertificate;
  }
  return { certs, broken: false };
}

/** The first CA in `certs` (after the leaf) whose public key is pinned, or undefined. */
function pinnedCa(certs: readonly X509Certificate[], pins: readonly string[]): X509Certificate | undefined {
  return certs.slice(1).find((x) => x.ca && pins.includes(caPinOf(x)));
}

/**
 * For the real channel (whose chain OpenSSL verified against the root `discoverPinnedRoot`
 * found): undefined when a pinned CA key signed the way down to the leaf, else why not.
 */
export function pinnedChainError(cert: tls.PeerCertificate, pins: readonly string[]): Error | undefined {
  const { certs } = linkedChain(cert);
  if (pinnedCa(certs, pins)) return undefined;
  return new Error(`the push port's certificate chain passes through no CA with the pinned hash ${pins.join(' or ')}`);
}

/**
 * One handshake that does not verify (and sends nothing), to read the chain the push port
 * presents. A CA in it must have a pinned public key, and signatures must hold from the leaf up
 * to it and on to the chain's self-signed root, which is returned (PEM) as the root to verify the
 * real channel with. Usually the pinned CA is that root; during a root rotation's overlap the
 * chain is `leaf <- new root's cross-certificate <- previous root`, and a token pinning the new
 * root finds its key in the cross-certificate, one pinning the previous root finds that root.
 */
export function discoverPinnedRoot(target: string, pins: readonly string[], timeoutMs: number): Promise<string> {
  const { host, port } = splitTarget(target);
  return new Promise((resolve, reject) => {
    const sock = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'], ...(isIP(host) ? {} : { servername: host }) });
    const done = (err: Error | undefined, pem?: string): void => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      sock.on('error', () => undefined);
      sock.destroy();
      if (err) reject(err);
      else resolve(pem as string);
    };
    const timer = setTimeout(() => done(new PushTlsError('PUSH_TLS_UNREACHABLE', `the control plane at ${target} did not finish a TLS handshake in ${timeoutMs} ms`)), timeoutMs);
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const notTls = /wrong version number|packet length too long|unexpected eof|ECONNRESET|http request/i.test(`${err.code ?? ''} ${err.message}`);
      done(
        notTls
          ? new PushTlsError('PUSH_TLS_NOT_TLS', `the control plane at ${target} does not speak TLS on its push port (${err.message}); if it was started with --insecure-push-plaintext, so must this process be`)
          : new PushTlsError('PUSH_TLS_UNREACHABLE', `cannot reach the control plane at ${target}: ${err.message}`),
      );
    });
    sock.once('secureConnect', () => {
      const { certs, broken } = linkedChain(sock.getPeerCertificate(true));
      const top = certs[certs.length - 1];
      const selfSigned = !!top && certs.length > 1 && top.checkIssued(top) && top.verify(top.publicKey);
      const pinned = pinnedCa(certs, pins);
      const now = Date.now();
      // Dates too, from the leaf up to the pinned CA: a rotation's cross-certificate ends with its overlap.
      const current = pinned !== undefined && certs.slice(0, certs.indexOf(pinned) + 1).every((x) => Date.parse(x.validFrom) <= now && now < Date.parse(x.validTo));
      if (pinned && current && !broken && selfSigned) return done(undefined, (top as X509Certificate).toString());
      const seen = certs.slice(1).map((x) => caPinOf(x));
      done(
        new PushTlsError(
          'PUSH_TLS_PIN_MISMATCH',
          `refusing the control plane at ${target}: no CA in the certificate chain it presents has the pinned hash ${pins.join(' or ')} (its chain: ${seen.join(', ') || 'none'}${broken ? ', whose signatures do not hold' : pinned && !current ? ', expired on the way to the pinned one' : ''}); if this is a join token made before the mesh's CA was rotated, the rotation's overlap has ended: create a new one (\`meshlet token create --service NAME\`); otherwise the token is for another mesh, or something else answers on that address`,
        ),
      );
    });
  });
}
