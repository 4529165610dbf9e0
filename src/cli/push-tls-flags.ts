import { readFileSync } from 'node:fs';
import { UsageError } from './common';

/** The push-port TLS flags of `meshlet sidecar` and `meshlet gateway`. */
export const PUSH_TLS_USAGE = `  --ca-file FILE          verify the control plane's push port against these CA certificates (PEM; the
                          mesh CA: \`meshlet ca bundle\`, or the control plane's DATA_DIR/ca.pem)
  --ca-hash sha256:HEX    or against the CA whose public key has this hash (a join token from
                          \`meshlet token create\` carries it: then nothing else is needed)
  --insecure-push-plaintext  talk to a control plane started with --insecure-push-plaintext (the
                          credential crosses the network readable)`;

export const PUSH_TLS_FLAGS = {
  'ca-file': { type: 'string' },
  'ca-hash': { type: 'string', multiple: true },
  'insecure-push-plaintext': { type: 'boolean' },
} as const;

/** `--ca-file`, `--ca-hash`, `--insecure-push-plaintext`, checked: the push stream's TLS (src/snapshot/push-tls.ts). */
export function pushTlsFlags(v: { 'ca-file'?: string; 'ca-hash'?: string[]; 'insecure-push-plaintext'?: boolean }, staticConfig: boolean): import('../snapshot/push-tls').PushTlsOptions | undefined {
  const given = v['ca-file'] !== undefined || (v['ca-hash']?.length ?? 0) > 0;
  if (staticConfig) {
    if (given || v['insecure-push-plaintext']) throw new UsageError('--ca-file, --ca-hash and --insecure-push-plaintext go with --control-plane, not --config');
    return undefined;
  }
  if (v['insecure-push-plaintext']) {
    if (given) throw new UsageError('--insecure-push-plaintext goes with neither --ca-file nor --ca-hash');
    return { plaintext: true };
  }
  let caPem: string | undefined;
  if (v['ca-file'] !== undefined) {
    try {
      caPem = readFileSync(v['ca-file'], 'utf8');
    } catch (e) {
      throw new UsageError(`--ca-file: cannot read ${v['ca-file']}: ${(e as Error).message}`);
    }
    if (!/-----BEGIN CERTIFICATE-----/.test(caPem)) throw new UsageError(`--ca-file: ${v['ca-file']} holds no PEM certificate`);
  }
  const pins: string[] = [];
  for (const h of v['ca-hash'] ?? []) {
    if (!/^sha256:[0-9a-fA-F]{64}$/.test(h.trim())) throw new UsageError(`--ca-hash: expected sha256: and 64 hex digits, got ${JSON.stringify(h)}`);
    pins.push(h.trim().toLowerCase());
  }
  return { caPem, pins };
}

