/**
 * Which HTTP/2 framing a process runs on, server side (listener.ts) and client side
 * (upstream.ts) alike: meshlet's own layer in this folder (`meshlet`, the default) or node:http2
 * (`node`, kept as a fallback), chosen by the `MESHLET_H2_FRAMING` environment variable or per
 * listener / pool.
 */
/** The HTTP/2 framings (`ListenerOptions.h2Framing`, `UpstreamPoolOptions.h2Framing`). */
export const H2_FRAMINGS = ['node', 'meshlet'] as const;
export type H2Framing = (typeof H2_FRAMINGS)[number];

/** The framing used where the options name none: `MESHLET_H2_FRAMING`, else `meshlet`; any other value throws. */
export function defaultH2Framing(env: NodeJS.ProcessEnv = process.env): H2Framing {
  const v = env.MESHLET_H2_FRAMING;
  if (v === undefined || v === '') return 'meshlet';
  if ((H2_FRAMINGS as readonly string[]).includes(v)) return v as H2Framing;
  throw Object.assign(new Error(`MESHLET_H2_FRAMING=${v}: expected one of ${H2_FRAMINGS.join(', ')}`), { code: 'ERR_MESHLET_H2_FRAMING' });
}
