/**
 * What `/config_dump` shows of a workload identity (a sidecar's, the gateway's): the SPIFFE ID,
 * the certificate's public part (the key never leaves the process: this is what `openssl verify`
 * checks), the trust bundle, the last error. Type imports only: a process without a credential
 * never loads the CSR code (@peculiar/x509).
 */
import type { WorkloadIdentity } from './workload-identity';

export function identityDump(identity: WorkloadIdentity): unknown {
  const cert = identity.current();
  return {
    spiffeId: identity.id() ?? null,
    certificate: cert ? { serial: cert.serial, notBefore: new Date(cert.notBefore).toISOString(), notAfter: new Date(cert.notAfter).toISOString(), chainPem: cert.chainPem } : null,
    trustBundlePem: cert?.bundlePem ?? null,
    lastError: identity.lastError ?? null,
  };
}
