/**
 * Wire snapshots (what the control plane pushes) -> validated snapshots. The sidecar runs exactly
 * the parser the API runs, so a NACK carries the same field-path messages as a 400.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';
import { Checker } from './validate';
import { parseAll } from './parse';
import type { Endpoint, Snapshot, WireSnapshot } from './types';

export function parseSnapshot(w: unknown): Result<Snapshot> {
  const c = new Checker();
  const o = c.object(w, '', ['version', 'resources', 'endpoints']);
  if (!o) return fail(c.errors);
  const version = c.string(o.version, 'version');
  const raws = c.array(o.resources ?? [], 'resources') ?? [];
  const endpoints: Endpoint[] = [];
  c.array(o.endpoints ?? [], 'endpoints')?.forEach((x, i) => {
    const e = parseEndpoint(c, x, `endpoints[${i}]`);
    if (e) endpoints.push(e);
  });
  const errors: FieldError[] = [...c.errors];
  // TLSCertificates reach only the gateways that use them (the gateway checks its own).
  const parsed = parseAll(raws, { secretsWithheld: true });
  if (!parsed.ok) errors.push(...parsed.errors);
  if (errors.length > 0 || !parsed.ok || version === undefined) return fail(errors);
  return ok(Object.freeze({ version, resources: Object.freeze(parsed.value), endpoints: Object.freeze(endpoints) }));
}

function parseEndpoint(c: Checker, v: unknown, path: string): Endpoint | undefined {
  const o = c.object(v, path, ['service', 'address', 'port', 'labels', 'weight', 'meshed', 'id', 'identity']);
  if (!o) return undefined;
  const service = c.string(o.service, `${path}.service`);
  const address = c.string(o.address, `${path}.address`);
  const port = c.integer(o.port, `${path}.port`, 1, 65535);
  const labels = o.labels === undefined ? {} : c.stringMap(o.labels, `${path}.labels`);
  const weight = o.weight === undefined ? 1 : c.integer(o.weight, `${path}.weight`, 1, 1000);
  const meshed = o.meshed === undefined ? true : c.boolean(o.meshed, `${path}.meshed`);
  const id = o.id === undefined ? undefined : c.string(o.id, `${path}.id`);
  const identity = o.identity === undefined ? undefined : c.string(o.identity, `${path}.identity`);
  if (identity !== undefined && (!identity.startsWith('spiffe://') || identity.length > 2048)) c.errors.push({ path: `${path}.identity`, message: 'must be a SPIFFE ID (spiffe://...)' });
  if (!service || !address || !port || !labels || !weight || meshed === undefined) return undefined;
  const e: Endpoint = { service, address, port, labels: Object.freeze(labels), weight, meshed };
  if (id) e.id = id;
  if (identity) e.identity = identity;
  return Object.freeze(e);
}

export type { WireSnapshot };
