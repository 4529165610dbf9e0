/**
 * TLS on the REST API: by default a certificate from the mesh CA (openssl as the outside check),
 * or the user's own; the CLI verifies it against --certificate-authority or the context's, and a
 * wrong CA is refused with a clear message.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { cli, start, tmpDir } from '../lib/meshlet';

async function tlsControlPlane(t: Test, extra: string[]): Promise<{ api: string; dir: string; token: string; port: string }> {
  const dir = tmpDir();
  const p = start(['control-plane', '--data-dir', dir, '--api', '127.0.0.1:0', '--push', '127.0.0.1:0', ...extra]);
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'control plane started');
  const api = String(l.api);
  return { api, dir, token: readFileSync(path.join(dir, 'admin.token'), 'utf8').trim(), port: api.slice(api.lastIndexOf(':') + 1) };
}

function openssl(args: string[], input = ''): { code: number | null; out: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

t.test('the API over TLS from the mesh CA: openssl verifies the chain; the CLI verifies it, and refuses a wrong CA', async (t) => {
  const cp = await tlsControlPlane(t, ['--api-hostname', 'meshlet-control-plane.meshlet-system.svc']);
  t.match(cp.api, /^https:\/\/127\.0\.0\.1:\d+$/, 'the API is https by default');
  const caFile = path.join(cp.dir, 'api-ca.pem');

  // openssl s_client: the chain verifies against the CA file, and the leaf names the hosts.
  const s = openssl(['s_client', '-connect', `127.0.0.1:${cp.port}`, '-CAfile', caFile, '-verify_return_error', '-verify_ip', '127.0.0.1', '-showcerts'], 'Q\n');
  t.match(s.out, /Verify return code: 0 \(ok\)/, 'openssl verifies the chain to the mesh root');
  t.match(s.out, /i:.*meshlet root CA/, 'issued by the mesh root');
  const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(s.out)?.[0] as string;
  const text = openssl(['x509', '-noout', '-text'], leaf).out;
  t.match(text, /DNS:meshlet-control-plane\.meshlet-system\.svc/, 'the --api-hostname is a SAN');
  t.match(text, /DNS:localhost/);
  t.match(text, /IP Address:127\.0\.0\.1/);
  t.match(text, /TLS Web Server Authentication/);
  const leafFile = path.join(cp.dir, 'leaf.pem');
  writeFileSync(leafFile, leaf);
  t.match(openssl(['verify', '-CAfile', caFile, leafFile]).out, /OK/, 'openssl verify: the leaf chains to the root');
  t.not(openssl(['s_client', '-connect', `127.0.0.1:${cp.port}`, '-verify_return_error'], 'Q\n').code, 0, 'without the mesh CA, openssl refuses it');

  // The CLI: with the CA it works; without, or with another CA, a clear refusal.
  let r = cli(['status', '--certificate-authority', caFile], { server: cp.api, token: cp.token });
  t.equal(r.code, 0, r.stderr);
  r = cli(['status'], { server: cp.api, token: cp.token });
  t.equal(r.code, 1);
  t.match(r.stderr, /refusing the control plane at https:\/\/127\.0\.0\.1:\d+: its certificate is not signed by a CA this system trusts/);
  t.match(r.stderr, /--certificate-authority/);
  const other = await tlsControlPlane(t, ['--api-hostname', 'other.example']);
  const wrongCa = path.join(other.dir, 'api-ca.pem');
  r = cli(['status', '--certificate-authority', wrongCa], { server: cp.api, token: cp.token });
  t.equal(r.code, 1, 'another mesh CA is refused');
  t.match(r.stderr, new RegExp(`not signed by a CA in ${wrongCa.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));

  // The context carries the CA file.
  const config = path.join(cp.dir, 'config.yaml');
  const env = { MESHLET_CONFIG: config };
  const run = (args: string[]) => spawnSync(process.execPath, [path.join(__dirname, '..', '..', '..', 'dist', 'src', 'cli', 'main.js'), ...args], { encoding: 'utf8', env: { ...process.env, ...env, MESHLET_SERVER: '', MESHLET_TOKEN: '' } });
  t.equal(run(['config', 'set-context', 'tls', '--server', cp.api, '--token', cp.token, '--certificate-authority', caFile]).status, 0);
  const st = run(['status']);
  t.equal(st.status, 0, st.stderr);
});

t.test('--api-tls-cert/--api-tls-key: the user\'s certificate', async (t) => {
  const dir = tmpDir();
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  const g = openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=api.example', '-addext', 'subjectAltName=DNS:api.example,IP:127.0.0.1']);
  t.equal(g.code, 0, g.out);
  const cp = await tlsControlPlane(t, ['--api-tls-cert', cert, '--api-tls-key', key]);
  const s = openssl(['s_client', '-connect', `127.0.0.1:${cp.port}`, '-CAfile', cert, '-verify_return_error'], 'Q\n');
  t.match(s.out, /subject=.*CN\s*=\s*api\.example/, 'the given certificate is served');
  const r = cli(['status', '--certificate-authority', cert], { server: cp.api, token: cp.token });
  t.equal(r.code, 0, r.stderr);
});

t.test('plaintext only when asked for', async (t) => {
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', '..', '..', 'dist', 'src', 'cli', 'main.js'), 'control-plane', '--data-dir', tmpDir(), '--no-identity', '--api', '127.0.0.1:0', '--push', '127.0.0.1:0'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(r.status, 2, 'without a CA and without certificate files it does not start in plaintext');
  t.match(r.stderr, /--insecure-plaintext/);
});
