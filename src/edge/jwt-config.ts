/**
 * The `jwt` block's config and its validation (field paths), apart from the verifier (jwt.ts) so
 * the policy parser checks a block without loading jose.
 */
import type { JSONWebKeySet } from 'jose';
import { fail, ok, type Result } from '../core/result';
import { Checker, HEADER_NAME, join } from './validate';

/** The asymmetric JWS algorithms we verify (RFC 7518 3.1 + RFC 8037). */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;

// ---------------------------------------------------------------------------------------------
// Config

export interface JwtIssuerConfig {
  /** The `iss` value tokens must carry. */
  issuer: string;
  /** Where the issuer publishes its keys (http or https). Exactly one of jwksUri / jwks. */
  jwksUri?: string;
  /** Keys given inline (`{ keys: [...] }`), public keys only. */
  jwks?: JSONWebKeySet;
  /** Accepted `aud` values (any one must match). Empty: `aud` is not checked. */
  audiences: string[];
  /** Accepted algorithms; a subset of ASYMMETRIC_ALGORITHMS. Default: all of them. */
  algorithms: string[];
}

export interface JwtClaimHeader {
  /** Claim name, or a dotted path into the payload (`realm_access.roles`). */
  claim: string;
  /** Request header the value is forwarded in (lower-cased). */
  header: string;
}

export interface JwtConfig {
  issuers: JwtIssuerConfig[];
  /** false: requests without a token pass (unauthenticated); a token that is present must be good. */
  required: boolean;
  /** Where the token is read: `authorization` with the `Bearer` scheme by default. */
  header: string;
  clockSkewSeconds: number;
  /** Claims that must be present (beyond `exp`, which is required unless `requireExpiry` is false). */
  requiredClaims: string[];
  requireExpiry: boolean;
  /** Scopes the route requires, all of them (from `scope`, space-separated, or `scp`). */
  scopes: string[];
  claimHeaders: JwtClaimHeader[];
  forwardAuthorization: boolean;
  /** Verified tokens kept (LRU); 0 turns the cache off. */
  tokenCacheSize: number;
}

const DEFAULTS = { header: 'authorization', clockSkewSeconds: 60, tokenCacheSize: 10_000 };

/** Validates a raw `jwt` block (from a Route or Gateway) into a JwtConfig, with field paths. */
export function parseJwtConfig(raw: unknown, path = 'jwt'): Result<JwtConfig> {
  const c = new Checker();
  const o = c.obj(raw, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['issuers', 'required', 'header', 'clockSkewSeconds', 'requiredClaims', 'requireExpiry', 'scopes', 'claimHeaders', 'forwardAuthorization', 'tokenCacheSize']);
  const issuers: JwtIssuerConfig[] = [];
  const seen = new Set<string>();
  c.list(o.issuers, join(path, 'issuers'), { min: 1, max: 32 }).forEach((rawIss, i) => {
    const p = `${join(path, 'issuers')}[${i}]`;
    const io = c.obj(rawIss, p);
    if (!io) return;
    c.known(io, p, ['issuer', 'jwksUri', 'jwks', 'audiences', 'algorithms']);
    const issuer = c.str(io.issuer, join(p, 'issuer'));
    if (issuer !== undefined) {
      if (seen.has(issuer)) c.err(join(p, 'issuer'), `duplicate issuer ${JSON.stringify(issuer)}`);
      seen.add(issuer);
    }
    const jwksUri = c.str(io.jwksUri, join(p, 'jwksUri'), { optional: true });
    if (jwksUri !== undefined) {
      let u: URL | undefined;
      try {
        u = new URL(jwksUri);
      } catch {
        u = undefined;
      }
      if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:')) c.err(join(p, 'jwksUri'), 'must be an http(s) URL');
    }
    let jwks: JSONWebKeySet | undefined;
    if (io.jwks !== undefined) {
      const jo = c.obj(io.jwks, join(p, 'jwks'));
      if (jo) {
        const keys = c.list(jo.keys, join(p, 'jwks.keys'), { min: 1 });
        keys.forEach((k, ki) => {
          const kp = `${join(p, 'jwks.keys')}[${ki}]`;
          const ko = c.obj(k, kp);
          if (!ko) return;
          if (!['RSA', 'EC', 'OKP'].includes(ko.kty as string)) c.err(join(kp, 'kty'), 'must be RSA, EC or OKP (public keys only; HMAC secrets are not accepted)');
          if ('d' in ko) c.err(kp, 'is a private key: give the public key only');
        });
        jwks = { keys: keys as JSONWebKeySet['keys'] };
      }
    }
    if ((jwksUri === undefined) === (jwks === undefined)) c.err(p, 'needs exactly one of jwksUri or jwks');
    const audiences = c.strList(io.audiences, join(p, 'audiences'));
    const algorithms = io.algorithms === undefined ? [...ASYMMETRIC_ALGORITHMS] : c.strList(io.algorithms, join(p, 'algorithms'), { min: 1 });
    algorithms.forEach((a, ai) => {
      if (!(ASYMMETRIC_ALGORITHMS as readonly string[]).includes(a))
        c.err(`${join(p, 'algorithms')}[${ai}]`, `${JSON.stringify(a)} is not accepted: use one of ${ASYMMETRIC_ALGORITHMS.join(', ')} (none and HMAC are refused)`);
    });
    if (issuer !== undefined) issuers.push({ issuer, ...(jwksUri ? { jwksUri } : {}), ...(jwks ? { jwks } : {}), audiences, algorithms });
  });
  const header = (c.str(o.header, join(path, 'header'), { optional: true }) ?? DEFAULTS.header).toLowerCase();
  if (!HEADER_NAME.test(header)) c.err(join(path, 'header'), 'must be a header name');
  const claimHeaders: JwtClaimHeader[] = [];
  c.list(o.claimHeaders, join(path, 'claimHeaders'), { max: 64 }).forEach((ch, i) => {
    const p = `${join(path, 'claimHeaders')}[${i}]`;
    const co = c.obj(ch, p);
    if (!co) return;
    c.known(co, p, ['claim', 'header']);
    const claim = c.str(co.claim, join(p, 'claim'));
    const h = c.str(co.header, join(p, 'header'));
    if (h !== undefined && !HEADER_NAME.test(h)) c.err(join(p, 'header'), 'must be a header name');
    if (h !== undefined && ['authorization', 'host', 'content-length', 'transfer-encoding', 'connection'].includes(h.toLowerCase()))
      c.err(join(p, 'header'), `${h} cannot carry a claim`);
    if (claim !== undefined && h !== undefined) claimHeaders.push({ claim, header: h.toLowerCase() });
  });
  const cfg: JwtConfig = {
    issuers,
    required: c.bool(o.required, join(path, 'required'), true),
    header,
    clockSkewSeconds: c.int(o.clockSkewSeconds, join(path, 'clockSkewSeconds'), DEFAULTS.clockSkewSeconds, 0, 3600),
    requiredClaims: c.strList(o.requiredClaims, join(path, 'requiredClaims')),
    requireExpiry: c.bool(o.requireExpiry, join(path, 'requireExpiry'), true),
    scopes: c.strList(o.scopes, join(path, 'scopes')),
    claimHeaders,
    forwardAuthorization: c.bool(o.forwardAuthorization, join(path, 'forwardAuthorization'), false),
    tokenCacheSize: c.int(o.tokenCacheSize, join(path, 'tokenCacheSize'), DEFAULTS.tokenCacheSize, 0, 1_000_000),
  };
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

