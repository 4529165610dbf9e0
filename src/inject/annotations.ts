/**
 * The `meshlet.dev/*` annotations a pod (or its namespace) carries to steer injection, parsed
 * and validated at the edge: a wrong value is an error naming the annotation, never a default.
 */
import { fail, ok, type FieldError, type Result } from '../core/result';

export const A = {
  inject: 'meshlet.dev/inject',
  status: 'meshlet.dev/status',
  mode: 'meshlet.dev/sidecar-mode',
  excludeInboundPorts: 'meshlet.dev/exclude-inbound-ports',
  excludeOutboundPorts: 'meshlet.dev/exclude-outbound-ports',
  excludeOutboundCidrs: 'meshlet.dev/exclude-outbound-cidrs',
  proxyCpu: 'meshlet.dev/proxy-cpu',
  proxyMemory: 'meshlet.dev/proxy-memory',
  logLevel: 'meshlet.dev/log-level',
  concurrency: 'meshlet.dev/concurrency',
  appPort: 'meshlet.dev/app-port',
  service: 'meshlet.dev/service',
  inboundLocalhost: 'meshlet.dev/inbound-localhost',
} as const;

const KNOWN = new Set<string>(Object.values(A));

export type SidecarMode = 'native' | 'classic';

/** What a pod's annotations override; absent fields take the injector's defaults. */
export interface PodOverrides {
  inject?: 'enabled' | 'disabled';
  mode?: SidecarMode;
  excludeInboundPorts: number[];
  excludeOutboundPorts: number[];
  excludeOutboundCidrs: string[];
  proxyCpu?: string;
  proxyMemory?: string;
  logLevel?: string;
  concurrency?: number;
  appPort?: number;
  service?: string;
  /** Inbound connections to non-app ports go to 127.0.0.1 (the old behaviour), not the pod's address. */
  inboundLocalhost?: boolean;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
/** Kubernetes resource.Quantity, as its OpenAPI pattern allows (decimal or binary SI suffix, or exponent). */
const QUANTITY = /^[+]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function ports(v: string, path: string, errors: FieldError[]): number[] {
  const out: number[] = [];
  for (const part of v.split(',').map((s) => s.trim())) {
    if (part === '') continue;
    if (!/^\d{1,5}$/.test(part) || Number(part) < 1 || Number(part) > 65535) {
      errors.push({ path, message: `expected comma-separated ports (1-65535), got ${JSON.stringify(part)}` });
      continue;
    }
    if (!out.includes(Number(part))) out.push(Number(part));
  }
  return out;
}

export function isCidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(s);
  if (!m) return false;
  if (m.slice(1, 5).some((o) => Number(o) > 255)) return false;
  return m[5] === undefined || Number(m[5]) <= 32;
}

function cidrs(v: string, path: string, errors: FieldError[]): string[] {
  const out: string[] = [];
  for (const part of v.split(',').map((s) => s.trim())) {
    if (part === '') continue;
    if (!isCidr(part)) {
      errors.push({ path, message: `expected comma-separated IPv4 CIDRs such as 10.0.0.0/8, got ${JSON.stringify(part)}` });
      continue;
    }
    if (!out.includes(part)) out.push(part);
  }
  return out;
}

function injectValue(v: string, path: string, errors: FieldError[]): 'enabled' | 'disabled' | undefined {
  if (v === 'enabled' || v === 'disabled') return v;
  errors.push({ path, message: `expected "enabled" or "disabled", got ${JSON.stringify(v)}` });
  return undefined;
}

/**
 * Reads the pod's annotations. `at` is the field path of the annotations map, for the errors.
 * Unknown `meshlet.dev/` keys are errors too: a typo must not silently do nothing.
 */
export function parseOverrides(annotations: Record<string, unknown>, at: string): Result<PodOverrides> {
  const errors: FieldError[] = [];
  const o: PodOverrides = { excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] };
  for (const [k, raw] of Object.entries(annotations)) {
    if (!k.startsWith('meshlet.dev/')) continue;
    const path = `${at}["${k}"]`;
    if (!KNOWN.has(k)) {
      errors.push({ path, message: `unknown meshlet annotation (known: ${[...KNOWN].sort().join(', ')})` });
      continue;
    }
    if (typeof raw !== 'string') {
      errors.push({ path, message: `annotation values are strings, got ${raw === null ? 'null' : typeof raw}` });
      continue;
    }
    const v = raw.trim();
    switch (k) {
      case A.inject:
        o.inject = injectValue(v, path, errors);
        break;
      case A.status:
        break; // written by the injector; re-read only to be replaced
      case A.mode:
        if (v === 'native' || v === 'classic') o.mode = v;
        else errors.push({ path, message: `expected "native" (init container with restartPolicy: Always, Kubernetes >= 1.29) or "classic", got ${JSON.stringify(v)}` });
        break;
      case A.excludeInboundPorts:
        o.excludeInboundPorts = ports(v, path, errors);
        break;
      case A.excludeOutboundPorts:
        o.excludeOutboundPorts = ports(v, path, errors);
        break;
      case A.excludeOutboundCidrs:
        o.excludeOutboundCidrs = cidrs(v, path, errors);
        break;
      case A.proxyCpu:
      case A.proxyMemory:
        if (!QUANTITY.test(v)) errors.push({ path, message: `expected a Kubernetes quantity such as ${k === A.proxyCpu ? '100m or 0.5' : '64Mi or 1Gi'}, got ${JSON.stringify(v)}` });
        else if (k === A.proxyCpu) o.proxyCpu = v;
        else o.proxyMemory = v;
        break;
      case A.logLevel:
        if (LOG_LEVELS.includes(v)) o.logLevel = v;
        else errors.push({ path, message: `expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(v)}` });
        break;
      case A.concurrency:
        if (/^\d{1,3}$/.test(v) && Number(v) >= 1 && Number(v) <= 128) o.concurrency = Number(v);
        else errors.push({ path, message: `expected an integer from 1 to 128, got ${JSON.stringify(v)}` });
        break;
      case A.appPort:
        if (/^\d{1,5}$/.test(v) && Number(v) >= 1 && Number(v) <= 65535) o.appPort = Number(v);
        else errors.push({ path, message: `expected a port (1-65535), got ${JSON.stringify(v)}` });
        break;
      case A.inboundLocalhost:
        if (v === 'true' || v === 'false') o.inboundLocalhost = v === 'true';
        else errors.push({ path, message: `expected "true" (pass inbound connections for non-app ports to 127.0.0.1, the old behaviour) or "false", got ${JSON.stringify(v)}` });
        break;
      case A.service:
        if (DNS_LABEL.test(v)) o.service = v;
        else errors.push({ path, message: `expected a DNS label (lower-case letters, digits, '-'), got ${JSON.stringify(v)}` });
        break;
    }
  }
  return errors.length ? fail(errors) : ok(o);
}

/** `meshlet.dev/inject` on a namespace, as an annotation or a label (labels are what webhooks select on). */
export function namespaceInject(meta: { labels?: unknown; annotations?: unknown }, at: string): Result<'enabled' | 'disabled' | undefined> {
  const errors: FieldError[] = [];
  let out: 'enabled' | 'disabled' | undefined;
  for (const field of ['labels', 'annotations'] as const) {
    const m = meta[field];
    if (!m || typeof m !== 'object') continue;
    const v = (m as Record<string, unknown>)[A.inject];
    if (v === undefined) continue;
    const r = injectValue(String(v), `${at}.${field}["${A.inject}"]`, errors);
    out = out === 'disabled' ? out : r;
  }
  return errors.length ? fail(errors) : ok(out);
}
