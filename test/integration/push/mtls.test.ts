/**
 * mTLS between sidecars, with the real processes: `meshlet control-plane`, two `meshlet sidecar`s
 * with join tokens (they get certificates and talk mTLS without any configuration), and outside
 * checks: `openssl s_client`, plaintext and TLS clients with good, foreign, expired and
 * not-yet-valid certificates, a stranger presenting another service's certificate.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import t from 'tap';
import { Agent, request } from 'undici';
import { cli, eventually, sleep, startControlPlane, tmpDir } from '../lib/meshlet';
import { issue, meshSidecar, metric, sourceApp, type Workload } from '../lib/mtls';

function token(dataDir: string, service: string): string {
  const r = cli(['token', 'create', '--service', service, '--ttl', '1h', '--data-dir', dataDir, '-o', 'json']);
  if (r.code !== 0) throw new Error(r.stderr);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

/** A TLS client holding `w`'s certificate, straight to a sidecar's inbound port (HTTP/1.1). */
function tlsAgent(w: Workload): Agent {
  return new Agent({ connect: { key: w.keyPem, cert: w.chainPem, ca: w.bundlePem, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] } as never });
}

/** Whether a plaintext HTTP request to the port gets any answer (STRICT closes the connection). */
function plaintextAnswer(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n'));
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
  });
}

/** A TLS connection with `opts`; what happened: an HTTP answer, or the error/closure. */
function tlsTry(port: number, opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'], ...opts }, () => s.write('GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n'));
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    s.on('error', (e: Error & { code?: string }) => (got += `error: ${e.code ?? e.message}`));
    s.on('close', () => resolve(got));
    s.setTimeout(5000, () => s.destroy());
  });
}

/** openssl, asynchronously: the app answering through the sidecar lives in this process. */
function openssl(args: string[], input: string, dir: string): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn('openssl', args, { cwd: dir });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    p.stderr.on('data', (d: Buffer) => (out += d.toString('latin1')));
    const timer = setTimeout(() => p.kill(), 10_000);
    p.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    p.stdin.end(input);
  });
}

t.test('two sidecars through a control plane talk mTLS without any configuration; STRICT, spoofing, bad certificates, a stranger', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const app = await sourceApp();
  t.teardown(() => app.close());
  const catalog = await meshSidecar(cp.pushPort, 'catalog', token(dir, 'catalog'), ['--app-port', String(app.port)]);
  t.teardown(() => catalog.stop());
  const frontend = await meshSidecar(cp.pushPort, 'frontend', token(dir, 'frontend'));
  t.teardown(() => frontend.stop());
  await catalog.waitFor((l) => l.msg === 'workload certificate installed');
  await frontend.waitFor((l) => l.msg === 'workload certificate installed');
  const CATALOG_ID = 'spiffe://cluster.local/svc/catalog';
  await eventually('the catalog endpoint carries its identity at the frontend', async () => {
    const d = (await (await request(`http://127.0.0.1:${frontend.admin}/config_dump`)).body.json()) as { services: { name: string; endpoints: { identity?: string }[] }[] };
    return d.services.find((s) => s.name === 'catalog')?.endpoints[0]?.identity === CATALOG_ID ? true : undefined;
  });

  const call = async (headers: Record<string, string> = {}) => {
    const r = await request(`http://127.0.0.1:${frontend.outbound}/items`, { headers: { host: 'catalog', ...headers } });
    return { status: r.statusCode, flags: r.headers['x-meshlet-flags'], text: await r.body.text() };
  };

  await t.test('the hop is mTLS: the callee counts a verified TLS connection, the app sees the caller the certificate names', async (t) => {
    const r = await call({ 'x-meshlet-source': 'admin' });
    t.equal(r.status, 200, r.text);
    t.same(JSON.parse(r.text), { source: 'frontend' });
    t.ok((await metric(catalog.admin, 'meshlet_inbound_connections_total', { security: 'tls' })) >= 1, 'the inbound connection was TLS');
    t.equal(await metric(catalog.admin, 'meshlet_inbound_connections_total', { security: 'plaintext' }), 0, 'and none was plaintext');
    t.ok((await metric(catalog.admin, 'meshlet_tls_handshakes_total', { direction: 'inbound', result: 'ok' })) >= 1);
    t.ok((await metric(frontend.admin, 'meshlet_tls_handshakes_total', { direction: 'outbound', result: 'ok' })) >= 1);
    const dump = (await (await request(`http://127.0.0.1:${catalog.admin}/config_dump`)).body.json()) as { mtls: unknown };
    t.same(dump.mtls, { mode: { mode: 'PERMISSIVE' }, certificate: true }, 'config_dump shows the mTLS state');
  });

  await t.test('PERMISSIVE (the default) still takes plaintext; s_client with a certificate gets an answer', async (t) => {
    t.match(await plaintextAnswer(catalog.inbound), /^HTTP\/1\.1 200/);
    const fe = await issue(dir, 'frontend');
    writeFileSync(path.join(dir, 'fe.key'), fe.keyPem);
    writeFileSync(path.join(dir, 'fe.pem'), fe.chainPem);
    writeFileSync(path.join(dir, 'bundle.pem'), fe.bundlePem);
    const out = await openssl(['s_client', '-connect', `127.0.0.1:${catalog.inbound}`, '-tls1_3', '-alpn', 'http/1.1', '-cert', 'fe.pem', '-key', 'fe.key', '-CAfile', 'bundle.pem', '-quiet', '-ign_eof'], 'GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n', dir);
    t.match(out, /HTTP\/1\.1 200/, 'openssl s_client with a mesh certificate is served');
  });

  await t.test('garbage, a foreign CA, expired and not-yet-valid client certificates are refused; the sidecar goes on', async (t) => {
    const before = await metric(catalog.admin, 'meshlet_tls_handshakes_total', { direction: 'inbound', result: 'failed' });
    const garbage = await new Promise<string>((resolve) => {
      const s = net.connect(catalog.inbound, '127.0.0.1', () => s.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x20]), Buffer.alloc(64, 0xab)])));
      let got = '';
      s.on('data', (d) => (got += d.toString('hex')));
      s.on('error', () => undefined);
      s.on('close', () => resolve(got));
    });
    t.notMatch(garbage, /485454502f/, 'no HTTP answer to garbage'); // "HTTP/"
    const expired = await issue(dir, 'frontend', { offsetMs: -3 * 3600_000, ttlMs: 3600_000 });
    const future = await issue(dir, 'frontend', { offsetMs: 3 * 3600_000 });
    for (const [name, w] of [['expired', expired], ['not yet valid', future]] as const) {
      const r = await tlsTry(catalog.inbound, { key: w.keyPem, cert: w.chainPem, ca: w.bundlePem });
      t.notMatch(r, /HTTP\/1\.1 200/, `${name}: no answer`);
    }
    const self = selfSigned();
    const rs = await tlsTry(catalog.inbound, { key: self.key, cert: self.cert, ca: expired.bundlePem });
    t.notMatch(rs, /HTTP\/1\.1 200/, 'a certificate from outside the trust bundle: no answer');
    const none = await tlsTry(catalog.inbound, { ca: expired.bundlePem });
    t.notMatch(none, /HTTP\/1\.1 200/, 'no client certificate: no answer');
    await eventually('the failed handshakes are counted', async () => ((await metric(catalog.admin, 'meshlet_tls_handshakes_total', { direction: 'inbound', result: 'failed' })) >= before + 4 ? true : undefined));
    t.equal((await call()).status, 200, 'the sidecar still serves');
  });

  await t.test('a spoofed x-meshlet-source over mTLS is ignored: the rate limit counts the certificate', async (t) => {
    const rl = path.join(dir, 'rl.yaml');
    writeFileSync(
      rl,
      `apiVersion: meshlet.dev/v1
kind: RateLimitPolicy
metadata: {name: catalog}
spec:
  service: catalog
  limits:
    - {name: per-caller, descriptors: [source-service], requests: 3, per: 1h}
`,
    );
    t.equal(cli(['apply', '-f', rl], { server: cp.api }).code, 0);
    await eventually('the limit is in force at the catalog', async () => {
      const d = (await (await request(`http://127.0.0.1:${catalog.admin}/config_dump`)).body.json()) as { resources: { kind: string }[] };
      return d.resources.some((r) => r.kind === 'RateLimitPolicy') ? true : undefined;
    });
    const fe = await issue(dir, 'frontend');
    const agent = tlsAgent(fe);
    t.teardown(() => agent.close());
    const statuses: number[] = [];
    for (const who of ['admin', 'billing', 'search']) {
      const r = await request(`https://127.0.0.1:${catalog.inbound}/x`, { dispatcher: agent, headers: { 'x-meshlet-source': who } });
      const body = await r.body.text();
      statuses.push(r.statusCode);
      if (r.statusCode === 200) t.same(JSON.parse(body), { source: 'frontend' }, `claimed ${who}: the app is told frontend`);
    }
    t.same(statuses, [200, 200, 200], 'three requests, each claiming another caller');
    const fourth = await request(`https://127.0.0.1:${catalog.inbound}/x`, { dispatcher: agent, headers: { 'x-meshlet-source': 'yet-another' } });
    await fourth.body.text();
    t.equal(fourth.statusCode, 429, 'the fourth is limited: one bucket, the certificate\u2019s (frontend)');
    const viaSidecar = await call();
    t.equal(viaSidecar.status, 429, 'the real frontend sidecar shares that bucket');
    t.equal(cli(['delete', 'ratelimitpolicy', 'catalog'], { server: cp.api }).code, 0);
    await eventually('the limit is gone', async () => ((await call()).status === 200 ? true : undefined));
  });

  await t.test('STRICT: plaintext and certificate-less clients refused, the mesh hop still works', async (t) => {
    const pa = path.join(dir, 'pa.yaml');
    writeFileSync(pa, 'apiVersion: meshlet.dev/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mode: STRICT}\n');
    t.equal(cli(['apply', '-f', pa], { server: cp.api }).code, 0);
    await eventually('STRICT at the catalog', async () => ((await plaintextAnswer(catalog.inbound)) === '' ? true : undefined));
    t.ok((await metric(catalog.admin, 'meshlet_mtls_refused_total', { reason: 'plaintext_refused' })) >= 1, 'counted');
    t.ok(catalog.lines.some((l) => l.msg === 'connection refused (mTLS)' && /STRICT/.test(String(l.reason))), 'logged with the reason');
    const out = await openssl(['s_client', '-connect', `127.0.0.1:${catalog.inbound}`, '-tls1_3', '-alpn', 'http/1.1', '-CAfile', 'bundle.pem', '-quiet', '-ign_eof'], 'GET / HTTP/1.1\r\nhost: catalog\r\nconnection: close\r\n\r\n', dir);
    t.notMatch(out, /HTTP\/1\.1/, 'openssl s_client without a client certificate gets no answer');
    t.match(out, /alert|error|certificate required/i, out);
    const r = await call();
    t.equal(r.status, 200, 'sidecar to sidecar is mTLS: unaffected');
    const dump = (await (await request(`http://127.0.0.1:${catalog.admin}/config_dump`)).body.json()) as { mtls: unknown };
    t.same(dump.mtls, { mode: { mode: 'STRICT', policy: 'default' }, certificate: true });
  });

  await t.test('a stranger at the catalog address with another service\u2019s certificate: the caller refuses it (UF)', async (t) => {
    const port = catalog.inbound;
    await catalog.stop('SIGKILL'); // no goodbye: the endpoint (and its identity) stays in the snapshot for the grace period
    const pricing = await issue(dir, 'pricing');
    const stranger = tls.createServer({ key: pricing.keyPem, cert: pricing.chainPem, ca: pricing.bundlePem, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2', 'http/1.1'], minVersion: 'TLSv1.3' }, (s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nstolen'));
    await new Promise<void>((resolve) => stranger.listen(port, '127.0.0.1', resolve));
    t.teardown(() => new Promise<void>((r) => stranger.close(() => r())));
    await sleep(100);
    const r = await eventually('a new connection meets the stranger', async () => {
      const x = await call();
      return x.status === 503 ? x : undefined;
    });
    t.equal(r.flags, 'UF');
    t.match(r.text, /PEER_WRONG_IDENTITY: the peer is spiffe:\/\/cluster\.local\/svc\/pricing, not spiffe:\/\/cluster\.local\/svc\/catalog/);
    t.notMatch(r.text, /stolen/);
    t.ok((await metric(frontend.admin, 'meshlet_tls_handshakes_total', { direction: 'outbound', result: 'wrong_identity' })) >= 1, 'counted');
  });
});

/** A self-signed certificate with a SPIFFE ID, made by openssl: not from the mesh's CA. */
function selfSigned(): { key: string; cert: string } {
  const dir = tmpDir('meshlet-self-');
  const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'k.pem', '-out', 'c.pem', '-days', '1', '-subj', '/CN=intruder', '-addext', 'subjectAltName=URI:spiffe://cluster.local/svc/frontend'], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return { key: readFileSync(path.join(dir, 'k.pem'), 'utf8'), cert: readFileSync(path.join(dir, 'c.pem'), 'utf8') };
}
