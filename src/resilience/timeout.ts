/** gRPC deadlines on the wire: `grpc-timeout` is 1-8 digits and a unit (H M S m u n). */
const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Milliseconds, or undefined when the value is malformed. */
export function parseGrpcTimeout(v: string): number | undefined {
  if (v.length < 2 || v.length > 9) return undefined;
  const unit = UNIT_MS[v.charAt(v.length - 1)];
  const digits = v.slice(0, -1);
  if (unit === undefined || !/^\d+$/.test(digits)) return undefined;
  return Number(digits) * unit;
}

/** A deadline in milliseconds as a `grpc-timeout` value (whole milliseconds, at most 8 digits). */
export function formatGrpcTimeout(ms: number): string {
  const n = Math.max(0, Math.ceil(ms));
  if (n < 1e8) return `${n}m`;
  const s = Math.ceil(n / 1000);
  if (s < 1e8) return `${s}S`;
  return `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}
