/**
 * Mesh TLS with real node:tls servers and clients, and `openssl s_client` as the outside check:
 * TLS 1.3 only, both certificates verified against the bundle, the callee's SPIFFE ID checked,
 * expired and not-yet-valid certificates refused, garbage survived, rotation without a restart.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { FakeClock } from '../../../src/core/clock';
import { CertificateAuthority } from '../../../src/security/ca';
import { createCsr } from '../../../src/security/csr';
import { generateKeyPair, privateKeyToPem } from '../../../src/security/keys';
import { serviceSpiffeId } from '../../../src/security/spiffe';
import { MeshTls, peerSpiffeId, spiffeIdOf, type MeshTlsMaterial } from '../../../src/security/tls';

const dir = mkdtempSync(path.join(tmpdir(), 'meshlet-tls-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function issue(ca: CertificateAuthority, service: string, ttlMs?: number): Promise<MeshTlsMaterial & { serial: string }> {
  const keys = await generateKeyPair();
  const id = serviceSpiffeId(ca.trustDomain, service);
  const c = await ca.sign(await createCsr(keys, id), id, ttlMs);
  return { keyPem: await privateKeyToPem(keys.privateKey), chainPem: c.chainPem, bundlePem: ca.material.rootPem, serial: c.serial };
}

/** openssl in a child process, asynchronously: the server under test runs in this process's event loop. */
function opensslAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d));
    c.stderr.on('data', (d: Buffer) => (stderr += d));
    // Stdin stays open a moment so the server's first bytes arrive before s_client quits.
    setTimeout(() => c.stdin.end(), 500);
    const kill = setTimeout(() => c.kill(), 10_000);
    c.on('close', (status) => {
      clearTimeout(kill);
      resolve({ status, stdout, stderr });
    });
  });
}

interface Server {
  port: number;
  server: tls.Server;
  seen: { peer?: string; alpn: string | false | null }[];
  tlsErrors: string[];
}

async function serve(t: Test, mesh: MeshTls): Promise<Server> {
  const seen: Server['seen'] = [];
  const tlsErrors: string[] = [];
  const server = tls.createServer(mesh.serverOptions(), (socket) => {
    seen.push({ peer: peerSpiffeId(socket), alpn: socket.alpnProtocol });
    socket.end(`hello ${peerSpiffeId(socket)}\n`);
  });
  server.on('tlsClientError', (err) => tlsErrors.push((err as Error & { code?: string }).code ?? err.message));
  mesh.bindServer(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { port: (server.address() as net.AddressInfo).port, server, seen, tlsErrors };
}

function dial(port: number, opts: tls.ConnectionOptions): Promise<{ text: string; cert?: tls.PeerCertificate; alpn: string | false | null; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...opts }, () => {
      let text = '';
      const cert = s.getPeerCertificate();
      s.on('data', (c: Buffer) => (text += c));
      s.on('end', () => resolve({ text, cert, alpn: s.alpnProtocol, protocol: s.getProtocol() }));
    });
    s.on('error', reject);
    s.on('close', () => reject(new Error('closed before the answer')));
  });
}

t.test('mutual TLS 1.3 between mesh identities', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const catalog = new MeshTls(await issue(ca, 'catalog'));
  const frontend = new MeshTls(await issue(ca, 'frontend'));
  const pricing = new MeshTls(await issue(ca, 'pricing'));
  const srv = await serve(t, catalog);

  const r = await dial(srv.port, frontend.clientOptions('spiffe://mesh.local/svc/catalog'));
  t.equal(r.text, 'hello spiffe://mesh.local/svc/frontend\n', "the callee learns the caller's identity from its certificate");
  t.equal(r.protocol, 'TLSv1.3');
  t.equal(r.alpn, 'h2', 'ALPN: h2 first');
  t.equal(spiffeIdOf(r.cert), 'spiffe://mesh.local/svc/catalog');
  const h1 = await dial(srv.port, { ...frontend.clientOptions('spiffe://mesh.local/svc/catalog'), ALPNProtocols: ['http/1.1'] });
  t.equal(h1.alpn, 'http/1.1');

  // The callee is not who the caller expects: refused by the caller.
  const pricingSrv = await serve(t, pricing);
  await t.rejects(dial(pricingSrv.port, frontend.clientOptions('spiffe://mesh.local/svc/catalog')), { code: 'PEER_WRONG_IDENTITY', message: 'the peer is spiffe://mesh.local/svc/pricing, not spiffe://mesh.local/svc/catalog' });
  // A predicate (any identity of a set).
  const any = await dial(pricingSrv.port, frontend.clientOptions((id) => id.startsWith('spiffe://mesh.local/svc/')));
  t.match(any.text, /hello spiffe:\/\/mesh.local\/svc\/frontend/);

  // No client certificate: the server refuses (TLS 1.3 reports it after the client's Finished).
  const bare = await dial(srv.port, { ca: ca.material.rootPem, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' }).then(
    (r) => (r.text.includes('hello') ? 'answered' : 'closed without an answer'),
    (e: Error & { code?: string }) => e.code ?? e.message,
  );
  t.match(bare, /CERTIFICATE_REQUIRED|ECONNRESET|closed/, `no client certificate: ${bare}`);
  t.notOk(srv.seen.some((s) => s.peer === undefined), 'the server never served an unverified peer');

  // A certificate from another CA, both ways.
  const otherCa = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const impostor = new MeshTls({ ...(await issue(otherCa, 'frontend')), bundlePem: ca.material.rootPem });
  const imp = await dial(srv.port, impostor.clientOptions('spiffe://mesh.local/svc/catalog')).then(
    (r) => (r.text.includes('hello') ? 'answered' : 'closed without an answer'),
    (e: Error & { code?: string }) => e.code ?? e.message,
  );
  t.not(imp, 'answered', `a client certificate from another CA is refused (${imp})`);
  t.notOk(srv.tlsErrors.length === 0, `the server logged the refusals: ${srv.tlsErrors.join(', ')}`);
  const fakeServer = await serve(t, new MeshTls({ ...(await issue(otherCa, 'catalog')), bundlePem: otherCa.material.rootPem }));
  await t.rejects(dial(fakeServer.port, frontend.clientOptions('spiffe://mesh.local/svc/catalog')), { code: /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED/ }, 'a server certificate from another CA is refused');
});

t.test('expired and not-yet-valid certificates are refused, both ends', async (t) => {
  const now = Date.now();
  const past = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local', clock: new FakeClock(now - 10 * 86_400_000) });
  const future = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local', clock: new FakeClock(now + 10 * 86_400_000) });
  const good = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const bundle = past.material.rootPem + future.material.rootPem + good.material.rootPem;
  const expired = new MeshTls({ ...(await issue(past, 'catalog', 3600_000)), bundlePem: bundle });
  const notYet = new MeshTls({ ...(await issue(future, 'catalog')), bundlePem: bundle });
  const client = new MeshTls({ ...(await issue(good, 'frontend')), bundlePem: bundle });
  const e1 = await serve(t, expired);
  await t.rejects(dial(e1.port, client.clientOptions('spiffe://mesh.local/svc/catalog')), { code: 'CERT_HAS_EXPIRED' });
  const e2 = await serve(t, notYet);
  await t.rejects(dial(e2.port, client.clientOptions('spiffe://mesh.local/svc/catalog')), { code: 'CERT_NOT_YET_VALID' });
  const ok = await serve(t, new MeshTls({ ...(await issue(good, 'catalog')), bundlePem: bundle }));
  const asExpired = await dial(ok.port, expired.clientOptions('spiffe://mesh.local/svc/catalog')).then(
    (r) => (r.text.includes('hello') ? 'answered' : 'closed without an answer'),
    (e: Error & { code?: string }) => e.code ?? e.message,
  );
  t.not(asExpired, 'answered', `an expired client certificate is refused (${asExpired})`);
  t.equal(ok.seen.length, 0);
});

t.test('garbage on the TLS port, TLS 1.2, and openssl s_client', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const cat = await issue(ca, 'catalog');
  const srv = await serve(t, new MeshTls(cat));
  for (const junk of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.alloc(4096, 0x16), Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01])]) {
    await new Promise<void>((resolve) => {
      const s = net.connect(srv.port, '127.0.0.1', () => s.write(junk));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
      setTimeout(() => s.destroy(), 2000);
    });
  }
  t.ok(srv.tlsErrors.length >= 2, `handshake errors counted, not thrown: ${srv.tlsErrors.join(', ')}`);
  const fe = await issue(ca, 'frontend');
  const after = await dial(srv.port, new MeshTls(fe).clientOptions('spiffe://mesh.local/svc/catalog'));
  t.match(after.text, /hello spiffe:\/\/mesh.local\/svc\/frontend/, 'still serving');

  const f = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const args = ['s_client', '-connect', `127.0.0.1:${srv.port}`, '-CAfile', f('ca.pem', ca.material.rootPem), '-verify_return_error', '-cert', f('fe.pem', fe.chainPem), '-key', f('fe.key', fe.keyPem)];
  const good = await opensslAsync(args);
  t.match(good.stdout, /Protocol\s*: TLSv1.3|New, TLSv1.3/, 'openssl: TLS 1.3');
  t.match(good.stdout, /Verify return code: 0 \(ok\)/, "openssl verifies the server's chain against the root");
  t.match(good.stdout, /hello spiffe:\/\/mesh.local\/svc\/frontend/);
  const old = await opensslAsync([...args, '-tls1_2']);
  t.not(old.status, 0, 'TLS 1.2 refused');
  t.match(old.stdout + old.stderr, /protocol version|no protocols available|alert/);
  const noCert = await opensslAsync(args.slice(0, 6));
  t.match(noCert.stdout + noCert.stderr, /certificate required/, 'no client certificate: alert certificate required');
  t.notMatch(noCert.stdout, /hello/);
});

t.test('rotation: new connections get the new certificate, open ones keep theirs', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const first = await issue(ca, 'catalog');
  const mesh = new MeshTls(first);
  const client = new MeshTls(await issue(ca, 'frontend'));
  const opened: tls.TLSSocket[] = [];
  const server = tls.createServer(mesh.serverOptions(), (s) => {
    opened.push(s);
    s.on('data', (d: Buffer) => s.write(d));
  });
  mesh.bindServer(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const connect = () =>
    new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ...client.clientOptions('spiffe://mesh.local/svc/catalog') }, () => resolve(s));
      s.on('error', reject);
    });
  const a = await connect();
  t.equal(a.getPeerCertificate().serialNumber.toLowerCase(), first.serial);
  const second = await issue(ca, 'catalog');
  mesh.update(second);
  const b = await connect();
  t.equal(b.getPeerCertificate().serialNumber.toLowerCase(), second.serial, 'a new connection: the new certificate');
  const echo = await new Promise<string>((resolve) => {
    a.once('data', (d: Buffer) => resolve(d.toString()));
    a.write('still here');
  });
  t.equal(echo, 'still here', 'the open connection keeps working');
  a.destroy();
  b.destroy();
  for (const s of opened) s.destroy();
});
