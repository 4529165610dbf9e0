/**
 * SPIFFE IDs, the mesh's names for workloads (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md):
 *
 *   spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICEACCOUNT   on Kubernetes (as Istio names them)
 *   spiffe://TRUST_DOMAIN/svc/SERVICE                      locally (`meshlet up`, join tokens)
 *
 * Parsing follows the standard's rules: a lowercase trust domain of [a-z0-9.-_], path segments of
 * [A-Za-z0-9.-_] that are neither empty, `.` nor `..`, no query, fragment, port or user info,
 * at most 2048 bytes.
 */
import { fail, ok, type Result } from '../core/result';

export interface SpiffeId {
  /** The whole URI, `spiffe://td/path`. */
  readonly uri: string;
  readonly trustDomain: string;
  /** The path with its leading slash, e.g. `/ns/shop/sa/catalog`. */
  readonly path: string;
  /** Kubernetes form: the namespace and service account. */
  readonly namespace?: string;
  readonly serviceAccount?: string;
  /** Local form: the service. */
  readonly service?: string;
}

const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const SEGMENT = /^[A-Za-z0-9._-]+$/;
export const MAX_SPIFFE_ID_BYTES = 2048;

export function checkTrustDomain(td: string): string | undefined {
  if (!td) return 'the trust domain must not be empty';
  if (!TRUST_DOMAIN.test(td)) return `the trust domain ${JSON.stringify(td)} may hold only lowercase letters, digits, '.', '-' and '_'`;
  if (td.length > 255) return 'the trust domain is longer than 255 characters';
  return undefined;
}

export function parseSpiffeId(uri: string): Result<SpiffeId> {
  const bad = (message: string) => fail<SpiffeId>([{ path: '', message: `${JSON.stringify(uri.slice(0, 100))}: ${message}` }]);
  if (typeof uri !== 'string' || uri === '') return bad('a SPIFFE ID must not be empty');
  if (Buffer.byteLength(uri) > MAX_SPIFFE_ID_BYTES) return bad(`longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (!uri.startsWith('spiffe://')) return bad("a SPIFFE ID starts with 'spiffe://'");
  const rest = uri.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  const td = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  if (/[?#]/.test(rest)) return bad('a SPIFFE ID has no query or fragment');
  if (/[@:]/.test(td)) return bad('the trust domain has no port or user info');
  const tdErr = checkTrustDomain(td);
  if (tdErr) return bad(tdErr);
  if (path === '') return bad('a workload SPIFFE ID has a path');
  const segs = path.slice(1).split('/');
  for (const s of segs) {
    if (s === '') return bad('path segments must not be empty (no trailing or double slash)');
    if (s === '.' || s === '..') return bad("path segments must not be '.' or '..'");
    if (!SEGMENT.test(s)) return bad(`path segment ${JSON.stringify(s)} may hold only letters, digits, '.', '-' and '_'`);
  }
  const id: { -readonly [K in keyof SpiffeId]: SpiffeId[K] } = { uri, trustDomain: td, path };
  if (segs.length === 4 && segs[0] === 'ns' && segs[2] === 'sa') {
    id.namespace = segs[1];
    id.serviceAccount = segs[3];
  } else if (segs.length === 2 && segs[0] === 'svc') {
    id.service = segs[1];
  }
  return ok(Object.freeze(id));
}

/** `spiffe://TD/svc/SERVICE`: the identity of a local (non-Kubernetes) service. Throws on a bad name. */
export function serviceSpiffeId(trustDomain: string, service: string): SpiffeId {
  return must(parseSpiffeId(`spiffe://${trustDomain}/svc/${service}`));
}

/**
 * `spiffe://TD/meshlet/control-plane`: the control plane's own identity, which it signs for itself
 * to reach the sidecars' status ports (the admin paths over mTLS). No workload can hold it: the
 * control plane signs workloads only `svc/NAME` or `ns/NS/sa/SA` IDs, the ones their credential proves.
 */
export function controlPlaneSpiffeId(trustDomain: string): SpiffeId {
  return must(parseSpiffeId(`spiffe://${trustDomain}/meshlet/control-plane`));
}

/** `spiffe://TD/ns/NS/sa/SA`: the identity of a Kubernetes service account. Throws on a bad name. */
export function k8sSpiffeId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  return must(parseSpiffeId(`spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`));
}

/**
 * The mesh service an identity may register endpoints for: the service of a local ID, the
 * service account's name of a Kubernetes ID (meshlet's convention: one service account per
 * service, named after it, as Istio's and Linkerd's samples do).
 */
export function serviceOf(id: SpiffeId): string | undefined {
  return id.service ?? id.serviceAccount;
}

function must(r: Result<SpiffeId>): SpiffeId {
  if (!r.ok) throw new Error(`invalid SPIFFE ID: ${r.errors[0]?.message}`);
  return r.value;
}
