#!/usr/bin/env node
'use strict';
/**
 * JWT verification cost per request, on its own (no HTTP): the edge JwtPolicy's `authenticate`
 * with the verified-token cache (the same token again: a SHA-256 + an LRU lookup) and without it
 * (a signature check every time), for RS256 and ES256, next to a reference measured in the same
 * run: Node's own `crypto.verify` of the same signature (the floor any verifier pays).
 *
 *   node bench/jwt.js            # 2 s per scenario
 *   node bench/jwt.js --quick    # 0.5 s per scenario
 *
 * Needs `npm run build` first (it loads dist/). Numbers are noisy on a shared machine.
 */
const path = require('node:path');
const crypto = require('node:crypto');
const { parseArgs } = require('node:util');

const dist = path.join(__dirname, '..', 'dist', 'src');
const { JwtPolicy, JwksStore, parseJwtConfig } = require(path.join(dist, 'edge', 'jwt'));
const { systemClock } = require(path.join(dist, 'core', 'clock'));
const jose = require('jose');

const { values: cli } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const MS = cli.quick ? 500 : 2000;

async function measure(fn) {
  // Warm up, then run batches until MS have passed.
  for (let i = 0; i < 200; i++) await fn();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < MS) {
    for (let i = 0; i < 100; i++) await fn();
    n += 100;
  }
  return ((performance.now() - t0) * 1000) / n; // us per op
}

async function scenario(alg) {
  const { privateKey, publicKey } = await jose.generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await jose.exportJWK(publicKey)), kid: 'k1', alg };
  const token = await new jose.SignJWT({ scope: 'orders:read', sub: 'user-42' })
    .setProtectedHeader({ alg, kid: 'k1' })
    .setIssuer('https://idp.bench')
    .setAudience('api')
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(privateKey);
  const base = {
    issuers: [{ issuer: 'https://idp.bench', jwks: { keys: [jwk] }, audiences: ['api'] }],
    scopes: ['orders:read'],
    claimHeaders: [{ claim: 'sub', header: 'x-user-id' }],
  };
  const deps = { clock: systemClock, jwks: new JwksStore({ clock: systemClock }) };
  const cached = new JwtPolicy(parseJwtConfig(base).value, deps);
  const uncached = new JwtPolicy(parseJwtConfig({ ...base, tokenCacheSize: 0 }).value, deps);
  const headers = { authorization: `Bearer ${token}` };
  const check = async (p) => {
    const r = await p.authenticate(headers);
    if (!r.ok) throw new Error(r.error.message);
  };

  // Reference: node:crypto verifying the same JWS signature with a KeyObject.
  const [h, pl, sig] = token.split('.');
  const data = Buffer.from(`${h}.${pl}`);
  const sigBuf = Buffer.from(sig, 'base64url');
  const keyObj = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  const ref = alg === 'ES256' ? () => crypto.verify('sha256', data, { key: keyObj, dsaEncoding: 'ieee-p1363' }, sigBuf) : () => crypto.verify('sha256', data, keyObj, sigBuf);
  const refUs = await measure(async () => {
    if (!ref()) throw new Error('reference verify failed');
  });
  const uncachedUs = await measure(() => check(uncached));
  const cachedUs = await measure(() => check(cached));
  return { alg, refUs, uncachedUs, cachedUs };
}

(async () => {
  const rows = [];
  for (const alg of ['RS256', 'ES256']) rows.push(await scenario(alg));
  console.log('JWT verification per request (us/op; lower is better)');
  console.log('alg    node:crypto.verify  policy uncached  (ratio)  policy cached  (ratio to uncached)');
  for (const r of rows) {
    console.log(
      `${r.alg.padEnd(6)} ${r.refUs.toFixed(2).padStart(18)}  ${r.uncachedUs.toFixed(2).padStart(15)}  ${(r.uncachedUs / r.refUs).toFixed(2).padStart(6)}x  ${r.cachedUs.toFixed(2).padStart(13)}  ${(r.cachedUs / r.uncachedUs).toFixed(3).padStart(6)}x`,
    );
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
