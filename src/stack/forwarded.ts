/**
 * Who the client is, and what the next hop is told about it: `x-forwarded-for` (and RFC 7239
 * `forwarded`, when the request carries one) trimmed to what this proxy can vouch for, after
 * Envoy's `xff_num_trusted_hops`.
 *
 * The front (src/http/headers.ts `forwardRequestHeaders`) has already appended the downstream
 * peer's address to whatever `x-forwarded-for` the request carried. With `trustedHops` N:
 *
 * - N = 0 (the default): nothing the client sent is believed. `x-forwarded-for` becomes the
 *   peer's address alone, a `forwarded` header is dropped; the client is the peer.
 * - N > 0: there are N proxies in front of us (load balancers) that each appended what they saw.
 *   The last N entries the request carried are theirs and are kept, the rest (written by the
 *   client) dropped; the client is the entry N from the right (the peer when fewer came).
 *
 * The client address lands in `call.clientAddress` (IP filters, rate-limit descriptors and the
 * access log read it). A sidecar's outbound side uses this with `--xff-trusted-hops` (default 0:
 * an app cannot forge the address its calls appear to come from); the gateway with its Gateway's
 * `spec.trustedHops`.
 */
import type { Layer } from '../core/layer';

/** Splits a comma-separated header value into trimmed, non-empty elements. */
function elements(v: string): string[] {
  const out: string[] = [];
  for (const p of v.split(',')) {
    const t = p.trim();
    if (t) out.push(t);
  }
  return out;
}

/** Rewrites the call's forwarding headers in place; returns the client address. */
export function trimForwarded(headers: string[], trustedHops: number): string | undefined {
  let client: string | undefined;
  let fwdAt = -1;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (name === 'x-forwarded-for') {
      const v = headers[i + 1] as string;
      // Fast path: only the peer's address (the front appended it), nothing the client sent.
      if (v.indexOf(',') < 0) {
        client = v.trim();
        continue;
      }
      const all = elements(v);
      const peer = all[all.length - 1];
      const sent = all.slice(0, -1);
      const kept = trustedHops > 0 ? sent.slice(-trustedHops) : [];
      client = trustedHops > 0 && kept.length === trustedHops ? kept[0] : peer;
      headers[i + 1] = [...kept, peer].join(', ');
    } else if (name === 'forwarded') fwdAt = i;
  }
  if (fwdAt >= 0) {
    const kept = trustedHops > 0 ? elements(headers[fwdAt + 1] as string).slice(-trustedHops) : [];
    if (kept.length > 0) headers[fwdAt + 1] = kept.join(', ');
    else headers.splice(fwdAt, 2);
  }
  return client;
}

/** The layer: trims the forwarding headers before anything reads them. */
export function forwardedLayer(trustedHops: number): Layer {
  return (next) => (call, sink) => {
    call.clientAddress = trimForwarded(call.headers, trustedHops);
    return next(call, sink);
  };
}
