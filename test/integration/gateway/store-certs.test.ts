/**
 * Gateway certificates from the control plane's store (TLSCertificate), with the real processes:
 * `meshlet control-plane` (push port over TLS), `meshlet gateway` joined with its join token, and
 * `openssl s_client -servername` as the outside check of what is served. A stored certificate is
 * served beside a file one (SNI across both); it is updated without a restart while an open
 * connection keeps working; its private key is never returned (API, CLI, config dumps) and never
 * pushed to a sidecar or to a gateway that did not prove its name; only the admin role reads or
 * writes it; bad, mismatched, expired or redacted material is refused at apply with a code; a
 * referenced one cannot be deleted; `meshlet check` reports its expiry (MC0017); a plaintext push
 * port never carries a key.
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { apiRequest, cli, eventually, portOf, sleep, start, startControlPlane, tmpDir, type Proc } from '../lib/meshlet';
import { FakeSidecar } from '../lib/fake-sidecar';
import { h1Upstream, service } from '../sidecar/helpers';
import { closedPort, HOST, keepAliveGetter, makeCert, makeCertBetween, metric, within } from './helpers';

const run = promisify(execFile);
const API = 'meshlet.dev/v1';

/** The subject CN and serial openssl s_client sees for an SNI name ('' when the handshake fails). */
async function peerCert(port: number, servername: string): Promise<{ cn: string; serial: string }> {
  const { stdout } = await run('sh', ['-c', `echo | openssl s_client -connect ${HOST}:${port} -servername ${servername} 2>/dev/null | openssl x509 -noout -subject -serial 2>/dev/null || true`]);
  return { cn: /CN\s*=\s*([^\s,]+)/.exec(stdout)?.[1] ?? '', serial: (/serial=(\w+)/.exec(stdout)?.[1] ?? '').replace(/^0+/, '') };
}

const pemOf = (files: { certFile: string; keyFile: string }) => ({ certificate: readFileSync(files.certFile, 'utf8'), privateKey: readFileSync(files.keyFile, 'utf8') });
const tlsCert = (name: string, spec: { certificate: string; privateKey: string }) => ({ apiVersion: API, kind: 'TLSCertificate', metadata: { name }, spec });
/** The base64 body of a PEM key: what must never show anywhere but the store and the gateway. */
const keyBody = (pem: string) => pem.split('\n').filter((l) => l && !l.startsWith('-----')).join('').slice(0, 40);

async function call(api: string, method: string, p: string, body?: unknown, token?: string): Promise<{ status: number; json: any; text: string }> {
  const r = await apiRequest(`${api}${p}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) } } : token ? { headers: { authorization: `Bearer ${token}` } } : {}) });
  const text = await r.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, json, text };
}

function token(dir: string, args: string[]): string {
  const r = cli(['token', 'create', ...args, '--data-dir', dir]);
  if (r.code !== 0) throw new Error(r.stderr);
  return r.stdout.trim();
}

t.test('TLSCertificate: certificates kept in the store, served by the gateways that use them', async (t) => {
  const dir = tmpDir('meshlet-gateway-store-certs-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = makeCert(dir, 'a', ['a.example.com'], 11);
  const b = makeCert(dir, 'b', ['b.example.com'], 22);
  const other = makeCert(dir, 'other', ['other.example.com'], 33);
  const up = await h1Upstream(t, (req, res) => res.end(`hello ${req.headers.host}`));

  const cp = start(['control-plane', '--data-dir', dir, '--api', `${HOST}:0`, '--push', `${HOST}:0`, '--push-hostname', 'localhost', '--history-interval', '500'], {}, { pushTls: true });
  t.teardown(() => cp.stop());
  const started = await cp.waitFor((l) => l.msg === 'control plane started', 30_000);
  const api = String(started.api);
  const push = portOf(started.push);
  await sleep(100); // the admin token is read by the helpers once the line is seen
  const httpsPort = await closedPort();
  const gateway = (name: string, port: number, certificates: unknown[]) => ({ apiVersion: API, kind: 'Gateway', metadata: { name }, spec: { listeners: [{ name: 'https', port, protocol: 'HTTPS', tls: { certificates } }] } });
  const applied = await call(api, 'POST', '/v1/apply', {
    items: [
      service('web', [{ port: up.port }], 'http1'),
      { apiVersion: API, kind: 'Route', metadata: { name: 'web' }, spec: { hosts: ['a.example.com', 'b.example.com'], gateways: ['edge'], rules: [{ backends: [{ service: 'web' }] }] } },
      tlsCert('a', pemOf(a)),
      gateway('edge', httpsPort, [{ secret: 'a' }, b]),
    ],
  });
  t.equal(applied.status, 200, `applied: ${applied.text}`);

  const gw = start(['gateway', '--name', 'edge', '--control-plane', `${HOST}:${push}`, '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0'], { MESHLET_JOIN_TOKEN: token(dir, ['--service', 'edge']) }, { pushTls: true });
  t.teardown(() => gw.stop());
  const admin = portOf((await gw.waitFor((l) => l.msg === 'gateway started', 30_000)).admin);
  await eventually('the HTTPS listener', async () => ((await peerCert(httpsPort, 'a.example.com')).cn === 'a.example.com' ? true : undefined), 20_000);

  t.test('served: SNI picks the stored certificate or the file one (openssl s_client)', async (t) => {
    t.same(await peerCert(httpsPort, 'a.example.com'), { cn: 'a.example.com', serial: 'B' }, 'the TLSCertificate a');
    t.same(await peerCert(httpsPort, 'b.example.com'), { cn: 'b.example.com', serial: '16' }, 'the file certificate');
    t.equal((await peerCert(httpsPort, 'unknown.test')).cn, 'a.example.com', 'no match: the first (the stored one)');
    const { stdout } = await run('curl', ['-sk', '--http2', '-w', '\n%{http_version} %{http_code}', '--resolve', `a.example.com:${httpsPort}:${HOST}`, `https://a.example.com:${httpsPort}/`]);
    t.match(stdout, /^hello a\.example\.com(:\d+)?\n2 200$/, 'a request through it reaches the app, over h2');
  });

  t.test('the private key is never returned', async (t) => {
    const secret = keyBody(pemOf(a).privateKey);
    const one = await call(api, 'GET', '/v1/tlscertificates/a');
    t.equal(one.status, 200);
    t.equal(one.json.spec.privateKey, '(redacted)');
    t.equal(one.json.spec.certificate, pemOf(a).certificate, 'the certificate (public) is shown');
    const texts = [
      one.text,
      (await call(api, 'GET', '/v1/tlscertificates')).text,
      (await call(api, 'GET', '/v1/snapshot')).text,
      (await call(api, 'GET', '/v1/rollout')).text,
      cli(['get', 'tlscertificate', 'a', '-o', 'yaml'], { server: api }).stdout,
      cli(['get', 'all', '-o', 'json'], { server: api }).stdout,
      cli(['describe', 'tlscertificate', 'a'], { server: api }).stdout,
      await (await fetch(`http://${HOST}:${admin}/config_dump`)).text(),
    ];
    const status = await call(api, 'GET', '/v1/status');
    const gwId = (status.json.sidecars as { id: string; service: string }[]).find((s) => s.service === 'edge')?.id as string;
    const dump = await call(api, 'GET', `/v1/sidecars/${encodeURIComponent(gwId)}/config_dump`);
    t.equal(dump.status, 200);
    t.ok(dump.json.resources.some((r: { kind: string }) => r.kind === 'TLSCertificate'), 'the gateway holds the TLSCertificate');
    texts.push(dump.text);
    texts.forEach((x, i) => {
      t.ok(x.length > 0, `answer ${i} is not empty`);
      t.notOk(x.includes(secret), `answer ${i} does not carry the key`);
      t.notOk(x.includes('PRIVATE KEY'), `answer ${i} has no PEM key`);
    });
    t.match(cli(['get', 'tlscertificate', 'a'], { server: api }).stdout, /names=a\.example\.com notAfter=\S+ privateKey=\(redacted\)/, 'meshlet get summarises it');
  });

  t.test('only the admin role reads or writes it', async (t) => {
    const edit = token(dir, ['--role', 'edit']);
    t.equal((await call(api, 'GET', '/v1/tlscertificates/a', undefined, edit)).status, 403);
    const r = await call(api, 'POST', '/v1/apply', { items: [tlsCert('x', pemOf(other))] }, edit);
    t.equal(r.status, 403, 'an apply carrying one needs admin');
    t.equal(r.json.code, 'forbidden');
    t.equal((await call(api, 'GET', '/v1/tlscert%69ficates', undefined, edit)).status, 403, 'an encoded name too');
    t.equal((await call(api, 'GET', '/v1/routes', undefined, edit)).status, 200, 'the rest is as before');
    const all = cli(['get', 'all'], { server: api, token: edit });
    t.equal(all.code, 0, `get all works below admin, without them: ${all.stderr}`);
    t.notMatch(all.stdout, /tlscertificate/);
    t.match(cli(['describe', 'gateway', 'edge'], { server: api, token: edit }).stdout, /TLSCertificate\/a {2}\(spec\.listeners\[0\]\.tls\.certificates\[0\]\.secret\) {2}\(not listed: needs the admin role\)/, 'describe does not call it missing');
    t.match(cli(['describe', 'gateway', 'edge'], { server: api }).stdout, /TLSCertificate\/a {2}\(spec\.listeners\[0\]\.tls\.certificates\[0\]\.secret\)\n/, 'as admin: present');
    t.match(cli(['describe', 'tlscertificate', 'a'], { server: api }).stdout, /Referred to by:[\s\S]*Gateway\/edge/, 'and what uses it');
  });

  t.test('bad material is refused at apply, with a code', async (t) => {
    const cases: [string, { certificate: string; privateKey: string }, string, string][] = [
      ['not PEM', { certificate: 'hello', privateKey: pemOf(a).privateKey }, 'spec.certificate', 'TLS_CERT_INVALID'],
      ['a key for another certificate', { certificate: pemOf(a).certificate, privateKey: pemOf(b).privateKey }, 'spec.privateKey', 'TLS_KEY_MISMATCH'],
      ['not a key', { certificate: pemOf(a).certificate, privateKey: 'nope' }, 'spec.privateKey', 'TLS_KEY_INVALID'],
      ['the redacted key read back', { certificate: pemOf(a).certificate, privateKey: '(redacted)' }, 'spec.privateKey', 'TLS_KEY_REDACTED'],
    ];
    for (const [what, spec, field, code] of cases) {
      const r = await call(api, 'PUT', '/v1/tlscertificates/bad', tlsCert('bad', spec));
      t.equal(r.status, 400, what);
      t.equal(r.json.code, 'invalid', what);
      t.ok((r.json.errors as { path: string; code?: string }[]).some((e) => e.path === field && e.code === code), `${what}: ${code} at ${field} (${r.text})`);
    }
    const expired = makeCertBetween(dir, 'expired', ['old.example.com'], new Date(Date.now() - 10 * 86_400_000), new Date(Date.now() - 86_400_000));
    const r = await call(api, 'POST', '/v1/apply', { items: [tlsCert('old', pemOf(expired))] });
    t.equal(r.status, 400, 'expired');
    t.ok((r.json.errors as { path: string; code?: string }[]).some((e) => e.path === 'TLSCertificate/old: spec.certificate' && e.code === 'TLS_CERT_EXPIRED'), r.text);
    const cliApply = cli(['apply', '-f', '-'], { server: api, input: JSON.stringify(tlsCert('bad', { certificate: pemOf(a).certificate, privateKey: pemOf(b).privateKey })) });
    t.not(cliApply.code, 0);
    t.match(cliApply.stderr, /spec\.privateKey: is not the key of the certificate \(a\.example\.com\).*\[TLS_KEY_MISMATCH\]/, 'meshlet apply prints the field, the message and the code');
    t.equal((await call(api, 'GET', '/v1/tlscertificates/bad')).status, 404, 'nothing written');
  });

  t.test('a referenced one cannot be deleted', async (t) => {
    const r = await call(api, 'DELETE', '/v1/tlscertificates/a');
    t.equal(r.status, 400);
    t.match(r.json.message, /TLSCertificate\/a cannot be deleted/);
    t.ok((r.json.errors as { path: string; message: string }[]).some((e) => e.path === 'Gateway/edge: spec.listeners[0].tls.certificates[0].secret' && /names TLSCertificate "a", which does not exist/.test(e.message)), r.text);
    t.equal((await peerCert(httpsPort, 'a.example.com')).serial, 'B', 'still served');
  });

  t.test('pushed only to the gateway that uses it, never to a sidecar', async (t) => {
    const ca = readFileSync(path.join(dir, 'ca.pem'));
    const sc = new FakeSidecar(`${HOST}:${push}`, { id: 'inventory-fake', service: 'inventory' }, { ca, joinToken: token(dir, ['--service', 'inventory']) });
    t.teardown(() => sc.close());
    let m = await sc.next();
    while (!m.resourcesJson) m = await sc.next(); // the identity message first
    t.ok(m.resourcesJson.includes('"kind":"Gateway"'), 'the sidecar gets the mesh, Gateways included');
    t.notOk(m.resourcesJson.includes('TLSCertificate"'), 'but no TLSCertificate');
    sc.ack(m);
    const before = (await call(api, 'GET', '/v1/status')).json.version;
    // An update: the gateway swaps it (below); the sidecar is sent nothing.
    const next = makeCert(dir, 'a2', ['a.example.com'], 4242);
    const get = keepAliveGetter(t, httpsPort, 'a.example.com');
    const first = await get();
    t.match(first.body, /^hello a\.example\.com/);
    const reloads = await metric(admin, 'meshlet_gateway_certificate_reloads_total', { listener: 'https', result: 'ok' });
    const u = await call(api, 'PUT', '/v1/tlscertificates/a', tlsCert('a', pemOf(next)));
    t.equal(u.status, 200, u.text);
    t.equal(u.json.spec.privateKey, '(redacted)', 'the answer to a write is redacted too');
    await eventually('the new certificate on new handshakes', async () => ((await peerCert(httpsPort, 'a.example.com')).serial === (4242).toString(16).toUpperCase() ? true : undefined), 15_000);
    t.equal(await metric(admin, 'meshlet_gateway_certificate_reloads_total', { listener: 'https', result: 'ok' }), reloads + 1, 'swapped in place (a reload, no listener restart)');
    const again = await get();
    t.equal(again.body, first.body, 'the open connection still answers');
    t.ok(again.reused, 'on the same connection');
    t.equal(again.serial, first.serial, 'which keeps the certificate it was opened with');
    t.equal((await peerCert(httpsPort, 'b.example.com')).serial, '16', 'the file certificate stays');
    t.equal((await call(api, 'GET', '/v1/status')).json.version, before, "the mesh version did not move: sidecars' views are unchanged");
    await t.rejects(sc.next(1500), /no snapshot/, 'the sidecar was sent nothing');
  });

  t.test('a gateway without a credential is not sent the key, and says why', async (t) => {
    const r = await call(api, 'POST', '/v1/apply', { items: [tlsCert('c', pemOf(other)), gateway('anon', await closedPort(), [{ secret: 'c' }])] });
    t.equal(r.status, 200, r.text);
    const anon: Proc = start(['gateway', '--name', 'anon', '--control-plane', `${HOST}:${push}`, '--ca-file', path.join(dir, 'ca.pem'), '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0']);
    t.teardown(() => anon.stop());
    const nack = await eventually('the NACK', async () => {
      const st = (await call(api, 'GET', '/v1/status')).json as { sidecars: { service: string; nackReason?: string }[] };
      return st.sidecars.find((s) => s.service === 'anon' && s.nackReason)?.nackReason;
    });
    t.match(nack, /spec\.listeners\[0\]\.tls\.certificates\[0\]\.secret: TLSCertificate "c" was not pushed to this gateway/);
    await cp.waitFor((l) => l.msg === 'TLSCertificates withheld from this gateway: it connected without a credential: start it with a join token for "anon" (`meshlet token create --service anon`)');
  });

  t.test('meshlet check: MC0017 for a stored certificate expiring soon', async (t) => {
    const r = await within(
      eventually('the gateway-reported finding', async () => {
        const c = cli(['check', '--cert-expiry', '30d', '-o', 'json'], { server: api });
        const f = (JSON.parse(c.stdout) as { findings: { code: string; resource: string; field?: string; message: string }[] }).findings;
        return f.some((x) => x.resource === 'TLSCertificate/a' && /of listener https of Gateway edge/.test(x.message)) ? f : undefined;
      }),
      20_000,
      'check',
    );
    const mine = r.filter((x) => x.resource === 'TLSCertificate/a');
    t.equal(mine.length, 1, 'one finding for it (the store and the gateway agree)');
    t.match(mine[0], { code: 'MC0017', field: 'spec.certificate' });
    t.ok(r.some((x) => x.code === 'MC0017' && x.resource === 'TLSCertificate/c' && /certificate of TLSCertificate c/.test(x.message)), 'one no gateway serves: from the store');
  });
});

t.test('a plaintext push port never carries a private key', async (t) => {
  const dir = tmpDir('meshlet-gateway-store-certs-plain-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = makeCert(dir, 'a', ['a.example.com'], 11);
  const cp = await startControlPlane(dir); // --insecure-push-plaintext (the test helpers' default)
  t.teardown(() => cp.stop());
  const r = await call(cp.api, 'POST', '/v1/apply', {
    items: [tlsCert('a', pemOf(a)), { apiVersion: API, kind: 'Gateway', metadata: { name: 'edge' }, spec: { listeners: [{ name: 'https', port: await closedPort(), protocol: 'HTTPS', tls: { certificates: [{ secret: 'a' }] } }] } }],
  });
  t.equal(r.status, 200, r.text);
  const gw = start(['gateway', '--name', 'edge', '--control-plane', `${HOST}:${cp.pushPort}`, '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0']);
  t.teardown(() => gw.stop());
  const nack = await eventually('the NACK', async () => {
    const st = (await call(cp.api, 'GET', '/v1/status')).json as { sidecars: { service: string; nackReason?: string }[] };
    return st.sidecars.find((s) => s.service === 'edge' && s.nackReason)?.nackReason;
  });
  t.match(nack, /TLSCertificate "a" was not pushed to this gateway: the control plane sends private keys only over its TLS push port/);
  await cp.waitFor((l) => l.msg === 'TLSCertificates withheld from this gateway: the push port is plaintext (--insecure-push-plaintext): private keys are never sent over it');
});
