/**
 * A PEM chain and key as a TLSCertificate holds them: each failure with its code (material made
 * by openssl, as users make it), the leaf described, and validity judged against a given time.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { checkTlsMaterial, checkValidity, describeLeaf } from '../../../src/security/tls-material';
import { parseResource } from '../../../src/policy/parse';
import { REDACTED, redactResource } from '../../../src/policy/redact';

const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-tls-material-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'ignore'] });
const read = (f: string) => readFileSync(path.join(dir, f), 'utf8');

/** A self-signed certificate (`-newkey` as given) for `name`; its cert and key PEM. */
function selfSigned(file: string, name: string, newkey: string[] = ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256']): { cert: string; key: string } {
  ssl('req', '-x509', '-newkey', ...newkey, '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name},DNS:www.${name}`, '-keyout', path.join(dir, `${file}.key`), '-out', path.join(dir, `${file}.crt`));
  return { cert: read(`${file}.crt`), key: read(`${file}.key`) };
}

const a = selfSigned('a', 'a.example.com');
const b = selfSigned('b', 'b.example.com');

t.test('a good pair: the leaf described', async (t) => {
  const r = checkTlsMaterial(a.cert, a.key);
  t.ok(r.ok);
  if (!r.ok) return;
  t.same(r.leaf.names, ['a.example.com', 'www.a.example.com']);
  t.equal(r.leaf.chainLength, 1);
  t.ok(r.leaf.notAfter > Date.now() && r.leaf.notBefore <= Date.now());
  t.same(describeLeaf(a.cert), r.leaf);
});

t.test('each failure has its code and field', async (t) => {
  const codes = (cert: string, key: string) => {
    const r = checkTlsMaterial(cert, key);
    return r.ok ? [] : r.errors.map((e) => `${e.field} ${e.code}`);
  };
  t.same(codes('hello', a.key), ['certificate TLS_CERT_INVALID']);
  t.same(codes(a.cert.replace('MII', 'XXX'), a.key), ['certificate TLS_CERT_INVALID'], 'a damaged certificate');
  t.same(codes(a.cert + a.key, a.key), ['certificate TLS_CERT_HAS_KEY'], 'the key pasted into the chain');
  t.same(codes(a.cert, b.key), ['privateKey TLS_KEY_MISMATCH']);
  t.same(codes(a.cert, 'nope'), ['privateKey TLS_KEY_INVALID']);
  t.same(codes(a.cert, REDACTED), ['privateKey TLS_KEY_REDACTED'], 'a key read back from the API');
  ssl('pkey', '-in', path.join(dir, 'a.key'), '-aes256', '-passout', 'pass:secret', '-out', path.join(dir, 'a-enc.key'));
  t.same(codes(a.cert, read('a-enc.key')), ['privateKey TLS_KEY_ENCRYPTED']);
  const weak = selfSigned('weak', 'weak.example.com', ['rsa:1024']);
  t.same(codes(weak.cert, weak.key), ['privateKey TLS_KEY_WEAK']);
  const rsa = selfSigned('rsa', 'rsa.example.com', ['rsa:2048']);
  t.same(codes(rsa.cert, rsa.key), [], 'RSA 2048 is fine');
  // A leaf signed by a CA, the chain given CA first.
  ssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=leaf.example.com', '-keyout', path.join(dir, 'leaf.key'), '-out', path.join(dir, 'leaf.csr'));
  ssl('x509', '-req', '-in', path.join(dir, 'leaf.csr'), '-CA', path.join(dir, 'b.crt'), '-CAkey', path.join(dir, 'b.key'), '-set_serial', '7', '-days', '1', '-out', path.join(dir, 'leaf.crt'));
  const leaf = read('leaf.crt');
  t.same(codes(leaf + b.cert, read('leaf.key')), [], 'leaf first, then its issuer');
  t.same(codes(b.cert + leaf, read('leaf.key')), ['certificate TLS_CHAIN_ORDER'], 'issuer first');
  const m = checkTlsMaterial(a.cert, b.key);
  if (!m.ok) t.match(m.errors[0]?.message, /is not the key of the certificate \(a\.example\.com, www\.a\.example\.com\)/);
});

t.test('validity at a given time', async (t) => {
  const leaf = describeLeaf(a.cert)!;
  t.equal(checkValidity(leaf, Date.now()), undefined);
  t.match(checkValidity(leaf, leaf.notAfter + 1), { field: 'certificate', code: 'TLS_CERT_EXPIRED', message: /^expired at .* \(a\.example\.com/ });
  t.match(checkValidity(leaf, leaf.notBefore - 1000), { code: 'TLS_CERT_NOT_YET_VALID' });
});

t.test('the TLSCertificate kind: checked at parse, with codes; redacted for display', async (t) => {
  const res = (spec: unknown) => ({ apiVersion: 'meshlet.dev/v1', kind: 'TLSCertificate', metadata: { name: 'a' }, spec });
  const ok = parseResource(res({ certificate: a.cert, privateKey: a.key }));
  t.ok(ok.ok);
  const bad = parseResource(res({ certificate: a.cert, privateKey: b.key }));
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.errors, [{ path: 'spec.privateKey', code: 'TLS_KEY_MISMATCH' }]);
  const missing = parseResource(res({ certificate: a.cert }));
  t.notOk(missing.ok);
  if (!missing.ok) t.match(missing.errors, [{ path: 'spec.privateKey' }]);
  const r = res({ certificate: a.cert, privateKey: a.key }) as { kind: string; spec: { certificate: string; privateKey: string } };
  const red = redactResource(r);
  t.equal(red.spec.privateKey, REDACTED);
  t.equal(red.spec.certificate, a.cert);
  t.equal(r.spec.privateKey, a.key, 'the original is not changed');
  const route = { kind: 'Route', spec: { privateKey: 'x' } };
  t.equal(redactResource(route), route, 'other kinds pass as they are');
});
