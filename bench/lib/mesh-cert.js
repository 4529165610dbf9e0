'use strict';
/** node bench/lib/mesh-cert.js DATA_DIR SERVICE OUT_DIR: a workload key and certificate from a control plane's CA (for openssl s_time against a sidecar). */
const fs = require('node:fs');
const path = require('node:path');
const D = path.join(__dirname, '..', '..', 'dist', 'src', 'security');
const { CertificateAuthority } = require(path.join(D, 'ca'));
const { createCsr } = require(path.join(D, 'csr'));
const { generateKeyPair, privateKeyToPem } = require(path.join(D, 'keys'));
const { serviceSpiffeId } = require(path.join(D, 'spiffe'));

(async () => {
  const [dataDir, service, out] = process.argv.slice(2);
  const st = JSON.parse(fs.readFileSync(path.join(dataDir, 'ca', 'ca.json'), 'utf8'));
  const ca = await CertificateAuthority.load(st.material);
  const keys = await generateKeyPair();
  const id = serviceSpiffeId(st.material.trustDomain, service);
  const c = await ca.sign(await createCsr(keys, id), id);
  fs.writeFileSync(path.join(out, 'key.pem'), await privateKeyToPem(keys.privateKey));
  fs.writeFileSync(path.join(out, 'cert.pem'), c.chainPem);
  fs.writeFileSync(path.join(out, 'ca.pem'), st.bundle.map((b) => b.pem).join(''));
})().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
