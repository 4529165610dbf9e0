/**
 * The response headers of a limited request: `retry-after` (RFC 9110, delay-seconds) and the
 * IETF httpapi draft's structured fields (draft-ietf-httpapi-ratelimit-headers-10/-11):
 *
 *   RateLimit-Policy: "<limit>";q=<requests>;w=<window seconds>
 *   RateLimit: "<limit>";r=<remaining>;t=<seconds until quota is available again>
 *
 * The window is rounded up to whole seconds (the draft's `w` is an integer); a limit of
 * 10 per 500ms is advertised as q=10;w=1, which under-states it and so never invites a client
 * to send more than allowed.
 */
export interface LimitInfo {
  name: string;
  requests: number;
  periodMs: number;
}

function sfString(s: string): string {
  return `"${s.replace(/[\\"]/g, '\\$&')}"`;
}

export function policyHeader(l: LimitInfo): string {
  return `${sfString(l.name)};q=${l.requests};w=${Math.max(1, Math.ceil(l.periodMs / 1000))}`;
}

/** Headers for a 429: retry-after, RateLimit-Policy, RateLimit. */
export function limitedHeaders(l: LimitInfo, remaining: number, retryAfterMs: number): Record<string, string> {
  const secs = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return {
    'retry-after': String(secs),
    'ratelimit-policy': policyHeader(l),
    ratelimit: `${sfString(l.name)};r=${Math.max(0, remaining)};t=${secs}`,
  };
}
