import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, UnsecuredJWT, exportJWK, exportSPKI, generateKeyPair, type JWK, type CryptoKey } from 'jose';
import { FakeClock } from '../../../src/core/clock';
import { JwksStore, JwtPolicy, compileJwtPolicy, parseJwtConfig, type JwtOutcome } from '../../../src/edge/jwt';
import { edgeErrorResponse } from '../../../src/edge/errors';

const ISS = 'https://idp.test';
const AUD = 'orders-api';

interface Key {
  kid: string;
  priv: CryptoKey;
  jwk: JWK;
  pub: CryptoKey;
}

async function makeKey(kid: string, alg = 'RS256'): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, priv: privateKey, pub: publicKey, jwk };
}

/** A real JWKS server on port 0 whose key list the test can change, counting requests. */
async function jwksServer(t: Test, keys: JWK[]) {
  const state = { keys, hits: 0 };
  const server = http.createServer((_req, res) => {
    state.hits++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  const close = () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r())));
  t.teardown(() => (server.listening ? close() : undefined));
  return { state, url, close };
}

function sign(key: Key, clock: FakeClock, claims: Record<string, unknown> = {}, opts: { exp?: number; nbf?: number; iss?: string; aud?: string | string[] } = {}) {
  const now = Math.floor(clock.now() / 1000);
  const j = new SignJWT({ scope: 'orders:read', ...claims })
    .setProtectedHeader({ alg: key.jwk.alg as string, kid: key.kid })
    .setIssuer(opts.iss ?? ISS)
    .setAudience(opts.aud ?? AUD)
    .setSubject('user-42')
    .setIssuedAt(now)
    .setExpirationTime(opts.exp ?? now + 600);
  if (opts.nbf !== undefined) j.setNotBefore(opts.nbf);
  return j.sign(key.priv);
}

function policy(raw: Record<string, unknown>, clock: FakeClock, store = new JwksStore({ clock })): JwtPolicy {
  const { issuer, ...rest } = raw;
  const r = compileJwtPolicy({ issuers: [{ issuer: ISS, audiences: [AUD], ...(issuer as object) }], ...rest }, 'spec.jwt', { clock, jwks: store });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

function denied(t: Test, out: JwtOutcome, code: string, status = 401) {
  t.equal(out.ok, false, `${code}: refused`);
  if (out.ok) return;
  t.equal(out.error.code, code);
  t.equal(out.error.status, status);
  if (status === 401) t.match(out.error.headers['www-authenticate'], /^Bearer error="invalid_token"/);
}

t.test('a valid token passes; claims are forwarded as headers; Authorization and spoofed claim headers are removed', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const idp = await jwksServer(t, [k1.jwk]);
  const p = policy(
    {
      issuer: { jwksUri: idp.url },
      claimHeaders: [
        { claim: 'sub', header: 'x-user-id' },
        { claim: 'realm.roles', header: 'x-roles' },
        { claim: 'name', header: 'x-name' },
      ],
      scopes: ['orders:read'],
    },
    clock,
  );
  const token = await sign(k1, clock, { realm: { roles: ['admin', 'ops'] }, name: 'Zoë' });
  const out = await p.authenticate({ ...bearer(token), 'x-user-id': 'forged' });
  t.ok(out.ok);
  if (!out.ok) return;
  t.equal(out.claims?.sub, 'user-42');
  t.same(out.setHeaders, [
    ['x-user-id', 'user-42'],
    ['x-roles', 'admin,ops'],
    ['x-name', 'Zo%C3%AB'],
  ]);
  t.same([...out.removeHeaders].sort(), ['authorization', 'x-name', 'x-roles', 'x-user-id']);
  t.equal(out.cached, false);
  const again = await p.authenticate(bearer(token));
  t.ok(again.ok && again.cached, 'the same token is served from the verified-token cache');
  t.equal(idp.state.hits, 1, 'one JWKS fetch');
});

t.test('rejections: each with its code, 401 + invalid_token (403 + insufficient_scope for scopes)', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const other = await makeKey('k1'); // same kid, different key: a forgery
  const idp = await jwksServer(t, [k1.jwk]);
  const p = policy({ issuer: { jwksUri: idp.url }, scopes: ['orders:read'], requiredClaims: ['sub'] }, clock);
  const now = Math.floor(clock.now() / 1000);

  denied(t, await p.authenticate({}), 'EDGE_JWT_MISSING');
  denied(t, await p.authenticate({ authorization: 'Basic dXNlcjpwYXNz' }), 'EDGE_JWT_MALFORMED');
  denied(t, await p.authenticate(bearer('not.a.jwt')), 'EDGE_JWT_MALFORMED');
  denied(t, await p.authenticate(bearer(await sign(k1, clock, {}, { exp: now - 3600 }))), 'EDGE_JWT_EXPIRED');
  denied(t, await p.authenticate(bearer(await sign(k1, clock, {}, { nbf: now + 3600 }))), 'EDGE_JWT_NOT_YET_VALID');
  denied(t, await p.authenticate(bearer(await sign(k1, clock, {}, { iss: 'https://evil.test' }))), 'EDGE_JWT_UNKNOWN_ISSUER');
  denied(t, await p.authenticate(bearer(await sign(k1, clock, {}, { aud: 'billing-api' }))), 'EDGE_JWT_CLAIM_INVALID');
  denied(t, await p.authenticate(bearer(await sign(other, clock))), 'EDGE_JWT_BAD_SIGNATURE');
  // alg: none
  const none = new UnsecuredJWT({ scope: 'orders:read', sub: 'x' }).setIssuer(ISS).setAudience(AUD).setExpirationTime(now + 600).encode();
  denied(t, await p.authenticate(bearer(none)), 'EDGE_JWT_ALG_NOT_ALLOWED');
  // HS256 signed with the RSA public key as the HMAC secret (the key-confusion attack)
  const pem = new TextEncoder().encode(await exportSPKI(k1.pub));
  const hs = await new SignJWT({ scope: 'orders:read', sub: 'x' })
    .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setExpirationTime(now + 600)
    .sign(pem);
  denied(t, await p.authenticate(bearer(hs)), 'EDGE_JWT_ALG_NOT_ALLOWED');
  // Missing required claim (sub): sign without it.
  const noSub = await new SignJWT({ scope: 'orders:read' })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
    .setIssuer(ISS)
    .setAudience(AUD)
    .setExpirationTime(now + 600)
    .sign(k1.priv);
  denied(t, await p.authenticate(bearer(noSub)), 'EDGE_JWT_CLAIM_INVALID');
  // No exp at all: refused by default.
  const noExp = await new SignJWT({ scope: 'orders:read', sub: 'x' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(ISS).setAudience(AUD).sign(k1.priv);
  denied(t, await p.authenticate(bearer(noExp)), 'EDGE_JWT_CLAIM_INVALID');
  // Good token, missing scope: 403.
  const weak = await sign(k1, clock, { scope: 'profile' });
  const out = await p.authenticate(bearer(weak));
  denied(t, out, 'EDGE_JWT_INSUFFICIENT_SCOPE', 403);
  if (!out.ok) t.match(out.error.headers['www-authenticate'], /^Bearer error="insufficient_scope".*scope="orders:read"/);
  // scp as a list counts too.
  t.ok((await p.authenticate(bearer(await sign(k1, clock, { scope: undefined, scp: ['orders:read'] })))).ok);
});

t.test('clock skew, token cache expiry and the fake clock', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1', 'ES256');
  const now = Math.floor(clock.now() / 1000);
  const inline = { jwks: { keys: [k1.jwk] } };
  const strict = policy({ issuer: inline, clockSkewSeconds: 0 }, clock);
  const lenient = policy({ issuer: inline, clockSkewSeconds: 60 }, clock);
  const justExpired = await sign(k1, clock, {}, { exp: now - 30 });
  denied(t, await strict.authenticate(bearer(justExpired)), 'EDGE_JWT_EXPIRED');
  t.ok((await lenient.authenticate(bearer(justExpired))).ok, 'within 60 s of skew');
  const notYet = await sign(k1, clock, {}, { nbf: now + 30 });
  t.ok((await lenient.authenticate(bearer(notYet))).ok, 'nbf within skew');

  const tok = await sign(k1, clock, {}, { exp: now + 120 });
  t.ok((await strict.authenticate(bearer(tok))).ok);
  const hit = await strict.authenticate(bearer(tok));
  t.ok(hit.ok && hit.cached);
  clock.advance(121_000);
  denied(t, await strict.authenticate(bearer(tok)), 'EDGE_JWT_EXPIRED');
});

t.test('key rotation: a new kid is fetched once; unknown kids cannot make us hammer the JWKS host', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const k2 = await makeKey('k2');
  const idp = await jwksServer(t, [k1.jwk]);
  const store = new JwksStore({ clock, minRefreshIntervalMs: 30_000 });
  const p = policy({ issuer: { jwksUri: idp.url } }, clock, store);
  t.ok((await p.authenticate(bearer(await sign(k1, clock)))).ok);
  t.equal(idp.state.hits, 1);

  // The IdP rotates: k2 published, k1 kept for a while.
  idp.state.keys = [k1.jwk, k2.jwk];
  clock.advance(31_000);
  const t2 = await sign(k2, clock);
  t.ok((await p.authenticate(bearer(t2))).ok, 'the new kid triggered a refresh');
  t.equal(idp.state.hits, 2);

  // Forged kids right after: no new fetch inside the interval.
  const rogue = await makeKey('rogue');
  for (let i = 0; i < 10; i++) denied(t, await p.authenticate(bearer(await sign(rogue, clock, { n: i }))), 'EDGE_JWT_UNKNOWN_KEY');
  t.equal(idp.state.hits, 2, 'refresh rate bounded');
  clock.advance(30_000);
  denied(t, await p.authenticate(bearer(await sign(rogue, clock))), 'EDGE_JWT_UNKNOWN_KEY');
  t.equal(idp.state.hits, 3, 'one more fetch once the interval has passed');
  t.equal(store.source(idp.url).stats().keys, 2);
});

t.test('JWKS host down: cached keys keep working (served stale); a policy that never got keys says so', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const idp = await jwksServer(t, [k1.jwk]);
  const store = new JwksStore({ clock, maxAgeMs: 60_000, minRefreshIntervalMs: 1_000 });
  const p = policy({ issuer: { jwksUri: idp.url }, tokenCacheSize: 0 }, clock, store);
  t.ok((await p.authenticate(bearer(await sign(k1, clock)))).ok);
  await idp.close();
  clock.advance(10 * 60_000); // keys are now 10 min old, far past maxAge
  for (let i = 0; i < 3; i++) {
    const out = await p.authenticate(bearer(await sign(k1, clock, { n: i })));
    t.ok(out.ok, `token ${i} verified with the stale keys`);
    await new Promise((r) => setTimeout(r, 20)); // let the background refresh fail
    clock.advance(1_000);
  }
  const st = store.source(idp.url).stats();
  t.ok(st.failures >= 1, 'refreshes were tried and failed');
  t.match(st.lastError, /fetch failed|ECONNREFUSED/);
  t.equal(st.keys, 1);

  // A URL that never answered: 401 with a clear code, and no second fetch inside the interval.
  const p2 = policy({ issuer: { jwksUri: idp.url.replace('/.well-known', '/other') } }, clock, store);
  await new Promise((r) => setTimeout(r, 50));
  denied(t, await p2.authenticate(bearer(await sign(k1, clock))), 'EDGE_JWT_JWKS_UNAVAILABLE');
});

t.test('a JWKS host that starts answering garbage: the keys it gave before keep serving', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const idp = await jwksServer(t, [k1.jwk]);
  const store = new JwksStore({ clock, minRefreshIntervalMs: 1_000 });
  const p = policy({ issuer: { jwksUri: idp.url }, tokenCacheSize: 0 }, clock, store);
  t.ok((await p.authenticate(bearer(await sign(k1, clock)))).ok);
  idp.state.keys = [{ kty: 'nonsense' } as JWK, 'x' as unknown as JWK];
  clock.advance(2_000);
  const rogue = await makeKey('k9');
  denied(t, await p.authenticate(bearer(await sign(rogue, clock))), 'EDGE_JWT_UNKNOWN_KEY');
  t.equal(idp.state.hits, 2, 'the unknown kid made it look again');
  t.ok((await p.authenticate(bearer(await sign(k1, clock, { n: 2 })))).ok, 'k1 still verifies');
  t.match(store.source(idp.url).stats(), { failures: 1, keys: 1 });
});

t.test('optional tokens, forwardAuthorization, custom header', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const p = policy({ issuer: { jwks: { keys: [k1.jwk] } }, required: false, forwardAuthorization: true, claimHeaders: [{ claim: 'sub', header: 'X-Sub' }] }, clock);
  const anon = await p.authenticate({ 'x-sub': 'forged' });
  t.ok(anon.ok && anon.claims === undefined);
  if (anon.ok) t.same(anon.removeHeaders, ['x-sub'], 'spoofed claim header removed even without a token; authorization kept');
  denied(t, await p.authenticate(bearer('garbage')), 'EDGE_JWT_MALFORMED');
  const q = policy({ issuer: { jwks: { keys: [k1.jwk] } }, header: 'X-Token' }, clock);
  t.ok((await q.authenticate({ 'x-token': `bearer ${await sign(k1, clock)}` })).ok, 'scheme is case-insensitive');
});

t.test('config errors name the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{}, /^spec\.jwt\.issuers: is required/],
    [{ issuers: [{ issuer: 'a' }] }, /spec\.jwt\.issuers\[0\]: needs exactly one of jwksUri or jwks/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'ftp://x' }] }, /spec\.jwt\.issuers\[0\]\.jwksUri: must be an http\(s\) URL/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'http://x', algorithms: ['HS256'] }] }, /issuers\[0\]\.algorithms\[0\]: "HS256" is not accepted/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'http://x', algorithms: ['none'] }] }, /algorithms\[0\]/],
    [{ issuers: [{ issuer: 'a', jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] } }] }, /jwks\.keys\[0\]\.kty/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'http://x' }], clockSkewSeconds: -1 }, /spec\.jwt\.clockSkewSeconds/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'http://x' }], claimHeaders: [{ claim: 'sub', header: 'bad header' }] }, /claimHeaders\[0\]\.header: must be a header name/],
    [{ issuers: [{ issuer: 'a', jwksUri: 'http://x' }], scope: ['x'] }, /spec\.jwt\.scope: unknown field/],
  ];
  for (const [input, re] of cases) {
    const r = parseJwtConfig(input, 'spec.jwt');
    t.notOk(r.ok, JSON.stringify(input));
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
});

t.test('over real HTTP: a server guarded by the policy answers 401/403/200 as a client sees them', async (t) => {
  const clock = new FakeClock(Date.now());
  const k1 = await makeKey('k1');
  const idp = await jwksServer(t, [k1.jwk]);
  const p = policy({ issuer: { jwksUri: idp.url }, scopes: ['orders:read'], claimHeaders: [{ claim: 'sub', header: 'x-user-id' }] }, clock);
  const server = http.createServer(async (req, res) => {
    const out = await p.authenticate(req.headers);
    if (!out.ok) {
      const r = edgeErrorResponse(out.error);
      res.writeHead(r.status, r.headers).end(r.body);
      return;
    }
    const fwd = { ...req.headers };
    for (const h of out.removeHeaders) delete fwd[h];
    for (const [h, v] of out.setHeaders) fwd[h] = v;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(fwd));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/orders`;

  const missing = await fetch(base);
  t.equal(missing.status, 401);
  t.match(missing.headers.get('www-authenticate'), /^Bearer error="invalid_token"/);
  t.equal(missing.headers.get('x-meshlet-flags'), 'UAEX');
  t.match(await missing.json(), { error: 'EDGE_JWT_MISSING' });

  const weak = await fetch(base, { headers: bearer(await sign(k1, clock, { scope: 'profile' })) });
  t.equal(weak.status, 403);
  t.match(weak.headers.get('www-authenticate'), /insufficient_scope/);
  await weak.arrayBuffer();

  const good = await fetch(base, { headers: { ...bearer(await sign(k1, clock)), 'x-user-id': 'admin' } });
  t.equal(good.status, 200);
  const seen = (await good.json()) as Record<string, string>;
  t.equal(seen['x-user-id'], 'user-42', 'the claim, not the forged header');
  t.notOk('authorization' in seen, 'Authorization stripped');
});
