/**
 * Requests to a sidecar's admin paths (`/config_dump`, `/explain`, `/decisions`, `/tap`,
 * `/cache/purge`), for `meshlet proxy-config`, `explain`, `explain --last`, `cache purge` and the
 * dashboard's tap.
 *
 * A sidecar registers one port for the control plane: its loopback admin port (15000, served to
 * anyone who reaches it: a local sidecar) or, with `--status` (injected pods), its status port on
 * the pod address (15020), which serves those paths only over mTLS to the control plane. So a
 * request goes out in plaintext first; a status port answers 404 with `x-meshlet-admin: mtls`,
 * and the request is made again over TLS 1.3 with the control plane's own certificate
 * (`spiffe://TD/meshlet/control-plane`, signed by its CA for itself, renewed at half life and when
 * the CA rotates), requiring the sidecar to prove the SPIFFE ID it was signed for. Sidecars known
 * to need mTLS are asked that way directly next time.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import { ADMIN_MTLS_HEADER } from '../src/observability/admin';
import { createCsr } from '../src/security/csr';
import { generateKeyPair, privateKeyToPem } from '../src/security/keys';
import { controlPlaneSpiffeId } from '../src/security/spiffe';
import { MeshTls } from '../src/security/tls';
import type { MeshCa } from './ca';
import type { SidecarStatus } from './registry';

export interface AdminRequest {
  method?: string;
  path: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string;
  timeoutMs?: number;
}

/** The control plane's client identity for the sidecars' status ports. */
export class SidecarAdminClient {
  private meshTls: MeshTls | undefined;
  private issuing: Promise<MeshTls> | undefined;
  private notAfter = 0;
  private issuedAt = 0;
  /** Sidecars (by id) whose registered port is a status port: asked over mTLS straight away. */
  private readonly mtlsOnly = new Set<string>();

  constructor(
    private readonly ca: MeshCa | undefined,
    private readonly logger?: Logger,
  ) {
    ca?.onChange(() => {
      // A new root or bundle: the next request gets a certificate from the CA as it is now.
      this.notAfter = 0;
    });
  }

  /** The admin reply's response (the caller reads it), or an error saying why the sidecar could not be reached. */
  async request(s: SidecarStatus, r: AdminRequest): Promise<http.IncomingMessage> {
    if (!this.mtlsOnly.has(s.id)) {
      const res = await this.once(s, r, undefined);
      if (res.statusCode !== 404 || res.headers[ADMIN_MTLS_HEADER] !== 'mtls') return res;
      res.resume();
      this.mtlsOnly.add(s.id);
    }
    if (!this.ca) throw new Error(`sidecar ${s.id} serves its admin paths over mTLS only, and this control plane has no CA (--no-identity)`);
    if (!s.spiffeId) throw new Error(`sidecar ${s.id} serves its admin paths over mTLS only, and it has no identity`);
    const meshTls = await this.identity();
    return this.once(s, r, meshTls.clientOptions(s.spiffeId));
  }

  /** Forgets a sidecar that left (its id may come back as a sidecar without a status port). */
  forget(id: string): void {
    this.mtlsOnly.delete(id);
  }

  private once(s: SidecarStatus, r: AdminRequest, secure: tls.ConnectionOptions | undefined): Promise<http.IncomingMessage> {
    const host = s.peerAddress;
    if (!s.adminPort || !host) return Promise.reject(new Error(`sidecar ${s.id} registered no admin port`));
    const timeoutMs = r.timeoutMs ?? 3000;
    return new Promise((resolve, reject) => {
      // The address the push connection came from, never the self-declared one (registry.ts: SSRF).
      const opts: http.RequestOptions = { host, port: s.adminPort, method: r.method ?? 'GET', path: r.path, timeout: timeoutMs, agent: false, headers: r.headers };
      const req = secure ? requestTls(opts, secure, resolve) : http.request(opts, resolve);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => reject(new Error(`sidecar ${s.id} at ${host}:${s.adminPort}${secure ? ' (mTLS)' : ''}: ${err.message}`)));
      req.end(r.body);
    });
  }

  private async identity(): Promise<MeshTls> {
    const now = Date.now();
    if (this.meshTls && now < this.issuedAt + (this.notAfter - this.issuedAt) / 2) return this.meshTls;
    this.issuing ??= this.issue().finally(() => (this.issuing = undefined));
    return this.issuing;
  }

  private async issue(): Promise<MeshTls> {
    const ca = this.ca as MeshCa;
    const keys = await generateKeyPair();
    const id = controlPlaneSpiffeId(ca.trustDomain);
    const c = await ca.sign(await createCsr(keys, id), id);
    const material = { keyPem: await privateKeyToPem(keys.privateKey), chainPem: c.chainPem, bundlePem: ca.bundlePem() };
    this.issuedAt = Date.now();
    this.notAfter = c.notAfter.getTime();
    if (this.meshTls) this.meshTls.update(material);
    else this.meshTls = new MeshTls(material, { alpn: ['http/1.1'] });
    this.logger?.info({ spiffeId: id.uri, notAfter: c.notAfter.toISOString() }, 'control-plane certificate for the sidecars\' status ports issued');
    return this.meshTls;
  }
}

function requestTls(opts: http.RequestOptions, secure: tls.ConnectionOptions, onResponse: (res: http.IncomingMessage) => void): http.ClientRequest {
  return https.request({ ...opts, ...secure } as https.RequestOptions, onResponse);
}
