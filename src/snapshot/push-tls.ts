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

  /** Credentials for a channel to `target` (`host:port`); `credential` is the one about to be sent (its pin counts). */
  async credentials(target: string, credential: string | undefined): Promise<grpc.ChannelCredentials> {
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
    }
    return grpc.credentials.createSsl(Buffer.from(roots), null, null, { checkServerIdentity: controlPlaneIdentity });
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
 * One handshake that does not verify (and sends nothing), to read the chain the push port
 * presents; returns the PEM of the CA certificate in it whose public key matches a pin.
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
      const seen: string[] = [];
      let c: tls.DetailedPeerCertificate | undefined = sock.getPeerCertificate(true);
      for (let i = 0; c && c.raw && i < 10; i++) {
        const x = new X509Certificate(c.raw);
        const pin = caPinOf(x);
        seen.push(pin);
        if (x.ca && pins.includes(pin)) return done(undefined, x.toString());
        if (c.issuerCertificate === c) break;
        c = c.issuerCertificate;
      }
      done(
        new PushTlsError(
          'PUSH_TLS_PIN_MISMATCH',
          `refusing the control plane at ${target}: no CA in the certificate chain it presents has the pinned hash ${pins.join(' or ')} (its chain: ${seen.join(', ') || 'none'}); the token is for another mesh, the CA was rotated since it was made (create a new one), or something else answers on that address`,
        ),
      );
    });
  });
}
