/**
 * The CA, checked from outside with openssl: certificates chain to the root (`openssl verify`),
 * carry the SPIFFE ID as their URI SAN and the right key usages (`openssl x509 -text`), and
 * every refused CSR says why.
 */
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { FakeClock } from '../../../src/core/clock';
import { CertificateAuthority, DEFAULT_WORKLOAD_TTL_MS } from '../../../src/security/ca';
import { createCsr, MAX_CSR_BYTES } from '../../../src/security/csr';
import { generateKeyPair } from '../../../src/security/keys';
import { k8sSpiffeId, serviceSpiffeId } from '../../../src/security/spiffe';
import { TrustBundle } from '../../../src/security/bundle';

const dir = mkdtempSync(path.join(tmpdir(), 'meshlet-ca-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(content: string): string {
  const f = path.join(dir, `f${n++}.pem`);
  writeFileSync(f, content);
  return f;
}
function openssl(args: string[]): { code: number; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}
/** `openssl verify` of a leaf with its intermediates (untrusted) against the roots. */
function verify(rootsPem: string, chainPem: string, extra: string[] = []): { code: number; out: string } {
  const certs = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
  const args = ['verify', '-CAfile', file(rootsPem), ...extra];
  if (certs.length > 1) args.push('-untrusted', file(certs.slice(1).join('')));
  args.push(file(certs[0] as string));
  return openssl(args);
}

t.test('root CA: a workload certificate chains to it and carries the SPIFFE ID', async (t) => {
  const clock = new FakeClock(Date.now());
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local', clock });
  const keys = await generateKeyPair();
  const id = serviceSpiffeId('mesh.local', 'catalog');
  const issued = await ca.sign(await createCsr(keys, id), id);
  const v = verify(ca.material.rootPem, issued.chainPem, ['-purpose', 'sslclient']);
  t.equal(v.code, 0, v.out);
  t.equal(verify(ca.material.rootPem, issued.chainPem, ['-purpose', 'sslserver']).code, 0, 'good for both ends of a TLS hop');
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file(issued.certPem)], { encoding: 'utf8' });
  t.match(text, /X509v3 Subject Alternative Name: \n\s+URI:spiffe:\/\/mesh\.local\/svc\/catalog\n/, 'exactly one SAN: the SPIFFE ID');
  t.match(text, /CA:FALSE/);
  t.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
  t.match(text, /Public Key Algorithm: id-ecPublicKey[\s\S]+NIST CURVE: P-256/);
  t.equal(issued.notAfter.getTime() - clock.now(), DEFAULT_WORKLOAD_TTL_MS, '24 h by default');
  t.equal(issued.spiffeId, 'spiffe://mesh.local/svc/catalog');
  const root = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file(ca.material.rootPem)], { encoding: 'utf8' });
  t.match(root, /CA:TRUE, pathlen:1/);
  t.match(root, /Certificate Sign, CRL Sign/);

  const short = await ca.sign(await createCsr(keys, id), id, 3600_000);
  t.equal(short.notAfter.getTime() - clock.now(), 3600_000, 'the TTL is configurable');
  t.equal(short.notBefore.getTime(), clock.now() - 60_000, 'backdated a minute for clock skew');
  const k8s = k8sSpiffeId('mesh.local', 'shop', 'catalog');
  const kc = await ca.sign(await createCsr(keys, k8s), k8s);
  t.match(execFileSync('openssl', ['x509', '-noout', '-ext', 'subjectAltName', '-in', file(kc.certPem)], { encoding: 'utf8' }), 'URI:spiffe://mesh.local/ns/shop/sa/catalog');

  // Loaded back from its stored material, it signs the same way and the old certificates still chain.
  const again = await CertificateAuthority.load(JSON.parse(JSON.stringify(ca.material)), clock);
  const later = await again.sign(await createCsr(keys, id), id);
  t.equal(verify(ca.material.rootPem, later.chainPem).code, 0);
  t.rejects(CertificateAuthority.load({ ...ca.material, keyPem: (await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' })).material.keyPem }), { code: 'CA_INVALID', message: /does not belong/ });

  // Another root does not trust it.
  const other = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  t.not(verify(other.material.rootPem, issued.chainPem).code, 0, 'another root refuses it');
  // Past its notAfter openssl refuses it.
  const expired = verify(ca.material.rootPem, issued.chainPem, ['-attime', String(Math.floor(issued.notAfter.getTime() / 1000) + 10)]);
  t.not(expired.code, 0);
  t.match(expired.out, /certificate has expired/);
});

t.test('intermediate under a root the user brings (openssl-made, EC and RSA)', async (t) => {
  for (const kind of ['ec', 'rsa'] as const) {
    const key = path.join(dir, `user-${kind}.key`);
    const crt = path.join(dir, `user-${kind}.crt`);
    const newkey = kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048'];
    execFileSync('openssl', ['req', '-x509', ...newkey, '-nodes', '-days', '30', '-subj', '/O=ACME/CN=ACME root', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', key, '-out', crt], { stdio: 'ignore' });
    const ca = await CertificateAuthority.createIntermediate(readFileSync(crt, 'utf8'), readFileSync(key, 'utf8'), { trustDomain: 'acme.corp' });
    t.not(ca.material.certPem, ca.material.rootPem);
    t.ok(ca.notAfter.getTime() <= Date.now() + 31 * 86400_000, 'never outlives the user root');
    const keys = await generateKeyPair();
    const id = serviceSpiffeId('acme.corp', 'pricing');
    const issued = await ca.sign(await createCsr(keys, id), id);
    t.equal((issued.chainPem.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'leaf + intermediate');
    const v = verify(readFileSync(crt, 'utf8'), issued.chainPem);
    t.equal(v.code, 0, `${kind}: ${v.out}`);
    const inter = execFileSync('openssl', ['x509', '-noout', '-text', '-in', file(ca.material.certPem)], { encoding: 'utf8' });
    t.match(inter, /CA:TRUE, pathlen:0/);
    t.match(inter, /Issuer: O\s?=\s?ACME, CN\s?=\s?ACME root/);
  }
  // Wrong inputs, each with its reason.
  const ecKey = readFileSync(path.join(dir, 'user-ec.key'), 'utf8');
  const ecCrt = readFileSync(path.join(dir, 'user-ec.crt'), 'utf8');
  const rsaKey = readFileSync(path.join(dir, 'user-rsa.key'), 'utf8');
  await t.rejects(CertificateAuthority.createIntermediate(ecCrt, rsaKey, { trustDomain: 'acme.corp' }), { code: 'CA_INVALID', message: /does not belong/ });
  await t.rejects(CertificateAuthority.createIntermediate('nothing here', ecKey, { trustDomain: 'acme.corp' }), { code: 'CA_INVALID', message: /no PEM certificate/ });
  await t.rejects(CertificateAuthority.createIntermediate(ecCrt, 'junk', { trustDomain: 'acme.corp' }), { code: 'CA_INVALID', message: /not a PEM private key/ });
  await t.rejects(CertificateAuthority.createIntermediate(ecCrt, ecKey, { trustDomain: 'Bad Domain' }), { code: 'CA_INVALID', message: /lowercase/ });
  const leafKey = path.join(dir, 'leaf.key');
  const leafCrt = path.join(dir, 'leaf.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=not a ca', '-addext', 'basicConstraints=critical,CA:FALSE', '-keyout', leafKey, '-out', leafCrt], { stdio: 'ignore' });
  await t.rejects(CertificateAuthority.createIntermediate(readFileSync(leafCrt, 'utf8'), readFileSync(leafKey, 'utf8'), { trustDomain: 'acme.corp' }), { code: 'CA_INVALID', message: /not a CA/ });
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  await t.rejects(CertificateAuthority.createIntermediate(ecCrt, ed, { trustDomain: 'acme.corp' }), { code: 'CA_INVALID', message: /must be ECDSA P-256\/P-384 or RSA.*ed25519/ });
});

t.test('CSRs refused, each with a clear error', async (t) => {
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const id = serviceSpiffeId('mesh.local', 'catalog');
  const keys = await generateKeyPair();
  const good = await createCsr(keys, id);
  const cases: { name: string; csr: string | Promise<string>; code: string; message: RegExp }[] = [
    { name: 'empty', csr: '', code: 'CSR_MALFORMED', message: /empty/ },
    { name: 'not PEM', csr: 'hello', code: 'CSR_MALFORMED', message: /BEGIN CERTIFICATE REQUEST/ },
    { name: 'garbage inside PEM', csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAAAAAA\n-----END CERTIFICATE REQUEST-----\n', code: 'CSR_MALFORMED', message: /does not parse/ },
    { name: 'oversized', csr: good + 'x'.repeat(MAX_CSR_BYTES), code: 'CSR_TOO_LARGE', message: /at most 8192/ },
    { name: 'another service', csr: createCsr(keys, serviceSpiffeId('mesh.local', 'pricing')), code: 'CSR_WRONG_IDENTITY', message: /asks for URI:spiffe:\/\/mesh.local\/svc\/pricing; its credential proves only spiffe:\/\/mesh.local\/svc\/catalog/ },
    { name: 'another trust domain', csr: createCsr(keys, serviceSpiffeId('evil.org', 'catalog')), code: 'CSR_WRONG_IDENTITY', message: /evil.org/ },
    { name: 'tampered (signature no longer verifies)', csr: tamper(good), code: 'CSR_BAD_SIGNATURE', message: /proof of possession/ },
    { name: 'RSA key', csr: opensslCsr(['-newkey', 'rsa:2048'], `URI:${id.uri}`), code: 'CSR_KEY_TYPE', message: /must be ECDSA P-256, got rsa 2048-bit/ },
    { name: 'P-384 key', csr: opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], `URI:${id.uri}`), code: 'CSR_KEY_TYPE', message: /got ec secp384r1/ },
    { name: 'no SAN', csr: opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']), code: 'CSR_NO_IDENTITY', message: /names no SPIFFE ID/ },
    { name: 'extra DNS name', csr: opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], `URI:${id.uri},DNS:bank.example`), code: 'CSR_WRONG_IDENTITY', message: /DNS:bank.example/ },
    { name: 'two URIs', csr: opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], `URI:${id.uri},URI:spiffe://mesh.local/svc/admin`), code: 'CSR_WRONG_IDENTITY', message: /svc\/admin/ },
  ];
  for (const c of cases) await t.rejects(ca.sign(await c.csr, id), { code: c.code, message: c.message }, c.name);
  // An openssl-made P-256 CSR with the right SAN is fine: nothing meshlet-specific is required.
  const ok = await ca.sign(opensslCsr(['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], `URI:${id.uri}`), id);
  t.equal(verify(ca.material.rootPem, ok.chainPem).code, 0);
});

t.test('trust bundle: two roots during a rotation, the old one dropped after the overlap', async (t) => {
  const oldCa = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const newCa = await CertificateAuthority.createRoot({ trustDomain: 'mesh.local' });
  const id = serviceSpiffeId('mesh.local', 'catalog');
  const keys = await generateKeyPair();
  const oldLeaf = await oldCa.sign(await createCsr(keys, id), id);
  const newLeaf = await newCa.sign(await createCsr(keys, id), id);
  const now = Date.now();
  const bundle = new TrustBundle([{ pem: oldCa.material.rootPem }]).withNewRoot(newCa.material.rootPem, now + 3600_000);
  t.equal(bundle.active(now).length, 2);
  t.equal(verify(bundle.pem(now), oldLeaf.chainPem).code, 0, 'old leaf trusted during the overlap');
  t.equal(verify(bundle.pem(now), newLeaf.chainPem).code, 0, 'new leaf trusted');
  const after = bundle.pruned(now + 3600_001);
  t.equal(after.roots.length, 1);
  t.not(verify(after.pem(now + 3600_001), oldLeaf.chainPem).code, 0, 'old leaf refused after the overlap');
  t.equal(bundle.info()[1]?.until, new Date(now + 3600_000).toISOString());
  t.equal(TrustBundle.fromPem(oldCa.material.rootPem + newCa.material.rootPem).roots.length, 2);
  t.throws(() => TrustBundle.fromPem('x'), /no PEM certificate/);
});

function tamper(pem: string): string {
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  // Flip a bit in the subject's organisation (inside the signed part).
  const i = der.indexOf(Buffer.from('mesh.local'));
  der[i] = (der[i] as number) ^ 0x01;
  return `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
}

function opensslCsr(newkey: string[], san?: string): string {
  const out = path.join(dir, `csr${n++}.pem`);
  execFileSync('openssl', ['req', '-new', ...newkey, '-nodes', '-keyout', path.join(dir, `k${n++}.pem`), '-subj', '/O=x', ...(san ? ['-addext', `subjectAltName=${san}`] : []), '-out', out], { stdio: 'ignore' });
  return readFileSync(out, 'utf8');
}
