/**
 * JWT at the edge through a real sidecar: a JWKS server the test starts (real HTTP), tokens signed
 * with jose. Valid tokens pass with claims forwarded; each refusal with its status and
 * WWW-Authenticate; a rotated key (new kid) is picked up; with the JWKS host down, the keys
 * already fetched keep working.
 */
import t from 'tap';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type JWK } from 'jose';

type Key = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
import { echo, h1Upstream, request, route, service, startSidecar } from '../sidecar/helpers';

const ISS = 'https://idp.test';
const AUD = 'orders-api';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('JWT: claims forwarded, every refusal, key rotation, JWKS host down', async (t) => {
  const k1 = await generateKeyPair('RS256', { extractable: true });
  const k2 = await generateKeyPair('RS256', { extractable: true });
  const other = await generateKeyPair('RS256', { extractable: true });
  const jwk = async (k: Key, kid: string): Promise<JWK> => ({ ...(await exportJWK(k)), kid, alg: 'RS256', use: 'sig' });
  let keys: JWK[] = [await jwk(k1.publicKey, 'k1')];
  let fetches = 0;
  const jwksServer = http.createServer((_req, res) => {
    fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  const jwksPort = (jwksServer.address() as AddressInfo).port;
  let jwksUp = true;
  const stopJwks = () =>
    new Promise<void>((r) => {
      jwksUp = false;
      jwksServer.close(() => r());
      jwksServer.closeAllConnections();
    });
  t.teardown(() => (jwksUp ? stopJwks() : undefined));

  const app = await h1Upstream(t, echo('orders'));
  const sc = await startSidecar(
    t,
    [
      service('orders', [{ port: app.port }]),
      route('orders', ['orders'], [
        {
          name: 'admin',
          matches: [{ path: { prefix: '/admin' } }],
          backends: [{ service: 'orders' }],
          jwt: { issuers: [{ issuer: ISS, jwksUri: `http://127.0.0.1:${jwksPort}/jwks`, audiences: [AUD] }], scopes: ['orders:admin'] },
        },
        {
          name: 'read',
          backends: [{ service: 'orders' }],
          jwt: {
            issuers: [{ issuer: ISS, jwksUri: `http://127.0.0.1:${jwksPort}/jwks`, audiences: [AUD] }],
            clockSkewSeconds: 0,
            claimHeaders: [
              { claim: 'sub', header: 'x-user' },
              { claim: 'org.id', header: 'x-org' },
            ],
          },
        },
      ]),
    ],
    { args: ['--jwks-refresh-ms', '300'] },
  );
  const now = Math.floor(Date.now() / 1000);
  const sign = (key: Key, kid: string, claims: Record<string, unknown> = {}, opts: { iss?: string; aud?: string; exp?: number; nbf?: number } = {}) => {
    const j = new SignJWT({ sub: 'alice', scope: 'orders:read', org: { id: 'o-7' }, ...claims }).setProtectedHeader({ alg: 'RS256', kid }).setIssuer(opts.iss ?? ISS).setAudience(opts.aud ?? AUD).setIssuedAt(now - 10).setExpirationTime(opts.exp ?? now + 600);
    if (opts.nbf !== undefined) j.setNotBefore(opts.nbf);
    return j.sign(key);
  };
  const call = (token: string | undefined, path = '/orders', extra: Record<string, string> = {}) =>
    request({ port: sc.outbound, path, headers: { host: 'orders', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }), ...extra } });

  const good = await call(await sign(k1.privateKey, 'k1'), '/orders', { 'x-user': 'mallory' });
  t.equal(good.status, 200, 'a valid token passes');
  const seen = good.json().headers;
  t.equal(seen['x-user'], 'alice', 'sub forwarded as x-user (the client-sent x-user replaced)');
  t.equal(seen['x-org'], 'o-7', 'a nested claim forwarded');
  t.equal(seen.authorization, undefined, 'Authorization stripped before the service');

  const refused = async (what: string, token: string | undefined, status = 401, error = 'invalid_token', path = '/orders') => {
    const r = await call(token, path);
    t.equal(r.status, status, `${what}: ${status}`);
    t.match(r.headers['www-authenticate'], new RegExp(`^Bearer error="${error}"`), `${what}: WWW-Authenticate Bearer error="${error}"`);
    t.equal(r.headers['x-meshlet-flags'], 'UAEX', `${what}: flag UAEX`);
    return r;
  };
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const payload = { sub: 'alice', iss: ISS, aud: AUD, exp: now + 600 };
  await refused('missing token', undefined);
  t.match((await call(undefined)).json(), { error: 'EDGE_JWT_MISSING' }, 'the JSON body names the code');
  await refused('expired', await sign(k1.privateKey, 'k1', {}, { exp: now - 60 }));
  await refused('not yet valid', await sign(k1.privateKey, 'k1', {}, { nbf: now + 3600 }));
  await refused('forged (signed by another key under kid k1)', await sign(other.privateKey, 'k1'));
  await refused('alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`);
  const pem = await exportSPKI(k1.publicKey);
  const hmac = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256', kid: 'k1' }).sign(new TextEncoder().encode(pem));
  await refused('HMAC token against the RSA key (public key as secret)', hmac);
  await refused('wrong issuer', await sign(k1.privateKey, 'k1', {}, { iss: 'https://evil.test' }));
  await refused('wrong audience', await sign(k1.privateKey, 'k1', {}, { aud: 'other-api' }));
  await refused('not a JWT', 'abc.def');
  await refused('missing scope', await sign(k1.privateKey, 'k1'), 403, 'insufficient_scope', '/admin');
  t.equal((await call(await sign(k1.privateKey, 'k1', { scope: 'orders:read orders:admin' }), '/admin')).status, 200, 'with the scope: 200');

  // Rotation: the IdP publishes k2; a token signed with it is accepted after one refresh.
  keys = [await jwk(k1.publicKey, 'k1'), await jwk(k2.publicKey, 'k2')];
  await sleep(400);
  const before = fetches;
  t.equal((await call(await sign(k2.privateKey, 'k2'))).status, 200, 'a token with the new kid passes');
  t.equal(fetches, before + 1, 'after one JWKS refresh');

  // The JWKS host goes away: keys already fetched keep working (new tokens, not the token cache).
  await stopJwks();
  await sleep(400);
  t.equal((await call(await sign(k1.privateKey, 'k1', { sub: 'bob' }))).json().headers['x-user'], 'bob', 'JWKS host down: k1 still verifies');
  t.equal((await call(await sign(k2.privateKey, 'k2', { sub: 'carol' }))).status, 200, 'and k2');
  await refused('JWKS host down: an unknown kid is still refused', await sign(other.privateKey, 'k3'));
});
