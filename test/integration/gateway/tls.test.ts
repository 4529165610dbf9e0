/**
 * `meshlet gateway` terminating TLS, checked from outside with openssl and curl: the certificate
 * chosen by SNI, HTTP/2 by ALPN, TLS 1.1 refused, HTTP -> HTTPS redirect, and a certificate
 * replaced on disk picked up by new handshakes while an open keep-alive connection keeps working.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, renameSync } from 'node:fs';
import * as http from 'node:http';
import * as tls from 'node:tls';
import * as path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { h1Upstream, route, service } from '../sidecar/helpers';
import { closedPort, gatewayResource, HOST, keepAliveGetter, makeCert, metric, startGateway, tempDir, within } from './helpers';

const run = promisify(execFile);

/** The subject CN and serial openssl s_client sees for an SNI name. */
async function peerCert(port: number, servername: string): Promise<{ cn: string; serial: string }> {
  const { stdout } = await run('sh', ['-c', `echo | openssl s_client -connect ${HOST}:${port} -servername ${servername} 2>/dev/null | openssl x509 -noout -subject -serial`]);
  return { cn: /CN\s*=\s*([^\s,]+)/.exec(stdout)?.[1] ?? '', serial: /serial=(\w+)/.exec(stdout)?.[1] ?? '' };
}

t.test('TLS termination at the gateway', async (t) => {
  const dir = tempDir(t);
  const a = makeCert(dir, 'a', ['a.example.com']);
  const b = makeCert(dir, 'b', ['b.example.com', '*.b.example.com']);
  const up = await h1Upstream(t, (req, res) => res.end(`hello ${req.headers['x-forwarded-proto']}`));
  const [httpsPort, httpPort] = [await closedPort(), await closedPort()];
  const g = await startGateway(
    t,
    'edge',
    [
      service('web', [{ port: up.port }], 'http1'),
      { ...route('web', ['a.example.com', 'b.example.com', 'x.b.example.com'], [{ backends: [{ service: 'web' }] }]), spec: { hosts: ['a.example.com', 'b.example.com', 'x.b.example.com'], gateways: ['edge'], rules: [{ backends: [{ service: 'web' }] }] } },
      gatewayResource('edge', {
        listeners: [
          { name: 'https', port: httpsPort, protocol: 'HTTPS', tls: { certificates: [a, b] } },
          { name: 'http', port: httpPort, protocol: 'HTTP', httpsRedirect: true },
        ],
      }),
    ],
    dir,
    ['--access-log', '0'],
  );

  t.test('SNI picks the certificate (openssl s_client -servername)', async (t) => {
    t.equal((await peerCert(httpsPort, 'a.example.com')).cn, 'a.example.com');
    t.equal((await peerCert(httpsPort, 'b.example.com')).cn, 'b.example.com');
    t.equal((await peerCert(httpsPort, 'x.b.example.com')).cn, 'b.example.com', 'a wildcard name');
    t.equal((await peerCert(httpsPort, 'unknown.test')).cn, 'a.example.com', 'no match: the first certificate');
  });

  t.test('HTTP/2 by ALPN (curl --http2)', async (t) => {
    const { stdout } = await run('curl', ['-sk', '--http2', '-w', '\n%{http_version} %{http_code}', '--resolve', `b.example.com:${httpsPort}:${HOST}`, `https://b.example.com:${httpsPort}/`]);
    t.equal(stdout, 'hello https\n2 200', 'h2 negotiated, the app reached, x-forwarded-proto https');
    const h1 = await run('curl', ['-sk', '--http1.1', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '--resolve', `a.example.com:${httpsPort}:${HOST}`, `https://a.example.com:${httpsPort}/`]);
    t.equal(h1.stdout, '1.1 200', 'HTTP/1.1 over TLS too');
  });

  t.test('TLS 1.1 is refused, TLS 1.2 accepted', async (t) => {
    const attempt = (v: tls.SecureVersion) =>
      new Promise<string>((resolve) => {
        const s = tls.connect({ host: HOST, port: httpsPort, servername: 'a.example.com', rejectUnauthorized: false, minVersion: v, maxVersion: v, ciphers: 'DEFAULT:@SECLEVEL=0' }, () => {
          resolve(`ok ${s.getProtocol()}`);
          s.end();
        });
        s.on('error', (err: Error & { code?: string }) => resolve(err.code ?? err.message));
      });
    t.equal(await attempt('TLSv1.1'), 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'the server answers a protocol_version alert');
    t.equal(await attempt('TLSv1.2'), 'ok TLSv1.2');
    t.ok((await metric(g.admin, 'meshlet_gateway_tls_handshakes_total', { listener: 'https', result: 'ok' })) >= 1, 'handshakes counted');
  });

  t.test('HTTP -> HTTPS redirect', async (t) => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ host: HOST, port: httpPort, path: '/p?q=1', headers: { host: `a.example.com:${httpPort}` } }, resolve).on('error', reject));
    res.resume();
    t.equal(res.statusCode, 301);
    t.equal(res.headers.location, `https://a.example.com:${httpsPort}/p?q=1`);
  });

  t.test('a replaced certificate is picked up without dropping an open keep-alive connection', async (t) => {
    const get = keepAliveGetter(t, httpsPort, 'a.example.com');
    const first = await get();
    t.equal(first.body, 'hello https');
    const before = (await peerCert(httpsPort, 'a.example.com')).serial;
    // As a Secret volume update does: the new files are written aside and moved into place.
    const next = makeCert(dir, 'a-next', ['a.example.com'], 4242);
    copyFileSync(next.keyFile, path.join(dir, 'a.key.tmp'));
    copyFileSync(next.certFile, path.join(dir, 'a.crt.tmp'));
    renameSync(path.join(dir, 'a.key.tmp'), a.keyFile);
    renameSync(path.join(dir, 'a.crt.tmp'), a.certFile);
    await within(
      (async () => {
        while ((await metric(g.admin, 'meshlet_gateway_certificate_reloads_total', { listener: 'https', result: 'ok' })) < 1) await new Promise((r) => setTimeout(r, 100));
      })(),
      15_000,
      'the certificate reload',
    );
    const after = await peerCert(httpsPort, 'a.example.com');
    t.not(after.serial, before, 'a new handshake gets the new certificate');
    t.equal(after.serial.replace(/^0+/, ''), (4242).toString(16).toUpperCase(), 'the one written to disk');
    const again = await get();
    t.equal(again.body, 'hello https', 'the open connection still answers');
    t.ok(again.reused, 'on the same connection');
    t.equal(again.serial, first.serial, 'which keeps the certificate it was opened with');
  });
});
