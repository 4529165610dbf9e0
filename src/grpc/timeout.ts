/**
 * The `grpc-timeout` header (PROTOCOL-HTTP2.md): `TimeoutValue TimeoutUnit`, at most 8 ASCII digits
 * and one of H M S m u n. Parsed to milliseconds; formatted back with the finest unit that fits,
 * so a propagated deadline loses no precision.
 */

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Milliseconds (possibly fractional), or an Error saying what is wrong with the value. */
export function parseGrpcTimeout(v: string): number | Error {
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return new Error(`invalid grpc-timeout ${JSON.stringify(v)}: expected 1-8 digits and a unit (H, M, S, m, u, n)`);
  return Number(m[1]) * (UNIT_MS[m[2] as string] as number);
}

const MAX = 99_999_999;

/** A grpc-timeout value for `ms` milliseconds (at least 1 ns; rounded up, never to 0). */
export function formatGrpcTimeout(ms: number): string {
  const ns = Math.ceil(Math.max(ms, 0.000001) * 1_000_000);
  if (ns <= MAX) return `${ns}n`;
  const us = Math.ceil(ms * 1000);
  if (us <= MAX) return `${us}u`;
  const whole = Math.ceil(ms);
  if (whole <= MAX) return `${whole}m`;
  const s = Math.ceil(ms / 1000);
  if (s <= MAX) return `${s}S`;
  const min = Math.ceil(ms / 60_000);
  if (min <= MAX) return `${min}M`;
  return `${Math.min(Math.ceil(ms / 3_600_000), MAX)}H`;
}
