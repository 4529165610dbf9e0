/**
 * `meshlet check`'s analysis, table-driven: each case a set of resources (YAML), endpoints and
 * sidecar reports, and the findings expected as `CODE resource field`.
 */
import t from 'tap';
import { analyze } from '../../../src/policy/analyze';
import { parseDocuments, parseEach } from '../../../src/policy/parse';
import type { Endpoint } from '../../../src/policy/types';

const ep = (service: string, labels: Record<string, string> = {}): Endpoint => ({ service, address: '10.0.0.1', port: 8080, labels, weight: 1, meshed: true });
const route = (rules: string, name = 'web', hosts = '[web]'): string => `apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: ${name}}
spec:
  hosts: ${hosts}
  rules:
${rules}
`;
const dp = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: web}
spec: {service: web, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}
`;

const ejected = (endpoint: string, ejectedForMs: number, ejections: number, service = 'web') => ({ service, endpoint, ejectedForMs, ejections, seenBy: ['fe-0'] });

const cases: { name: string; yaml: string; endpoints?: Endpoint[]; sidecars?: Parameters<typeof analyze>[0]['sidecars']; ejections?: Parameters<typeof analyze>[0]['ejections']; expect: string[] }[] = [
  { name: 'a healthy set has no findings', yaml: route('    - backends: [{service: web}]'), endpoints: [ep('web')], expect: [] },
  { name: 'no endpoints (once per service and route)', yaml: route('    - matches: [{path: {prefix: /a}}]\n      backends: [{service: api}]\n    - backends: [{service: api}]'), expect: ['MC0001 Route/web spec.rules[0].backends[0].service'] },
  {
    name: 'a subset that selects no endpoint',
    yaml: dp + '---\n' + route('    - backends: [{service: web, subset: v1, weight: 50}, {service: web, subset: v2, weight: 50}]'),
    endpoints: [ep('web', { version: 'v1' })],
    expect: ['MC0002 Route/web spec.rules[0].backends[1].subset'],
  },
  { name: 'a rule after a catch-all', yaml: route('    - name: all\n      backends: [{service: web}]\n    - name: late\n      matches: [{path: {prefix: /x}}]\n      backends: [{service: web}]'), endpoints: [ep('web')], expect: ['MC0003 Route/web spec.rules[1]'] },
  { name: 'retries longer than the timeout', yaml: route('    - backends: [{service: web}]\n      timeout: 1s\n      retries: {attempts: 3, perTryTimeout: 500ms}'), endpoints: [ep('web')], expect: ['MC0005 Route/web spec.rules[0].retries'] },
  { name: 'retries that fit', yaml: route('    - backends: [{service: web}]\n      timeout: 2s\n      retries: {attempts: 3, perTryTimeout: 500ms}'), endpoints: [ep('web')], expect: [] },
  { name: 'retries without any timeout', yaml: route('    - backends: [{service: web}]\n      retries: {attempts: 2}'), endpoints: [ep('web')], expect: ['MC0006 Route/web spec.rules[0].retries'] },
  {
    name: 'a rate limit on a rule that does not exist',
    yaml: route('    - name: read\n      backends: [{service: web}]') + `---
apiVersion: meshlet.dev/v1
kind: RateLimitPolicy
metadata: {name: web}
spec: {service: web, limits: [{name: l, routes: [web/write, gone], requests: 1, per: 1s}]}
`,
    endpoints: [ep('web')],
    expect: ['MC0007 RateLimitPolicy/web spec.limits[0].routes[0]', 'MC0007 RateLimitPolicy/web spec.limits[0].routes[1]'],
  },
  {
    name: 'a NACKing sidecar (a later ACK clears it)',
    yaml: route('    - backends: [{service: web}]'),
    endpoints: [ep('web')],
    sidecars: [
      { id: 'a', service: 'web', connected: true, ackedVersion: 'v1', ackedAt: '2026-01-01T00:00:00Z', nackVersion: 'v2', nackedAt: '2026-01-01T00:01:00Z', nackReason: 'bad' },
      { id: 'b', service: 'web', connected: true, ackedVersion: 'v3', ackedAt: '2026-01-01T00:02:00Z', nackVersion: 'v2', nackedAt: '2026-01-01T00:01:00Z', nackReason: 'bad' },
    ],
    expect: ['MC0008 sidecar/a'],
  },
  { name: 'a mirror to a service without endpoints', yaml: route('    - backends: [{service: web}]\n      mirror: {service: shadow, percent: 10}'), endpoints: [ep('web')], expect: ['MC0009 Route/web spec.rules[0].mirror.service'] },
  {
    name: 'an endpoint ejected for long (on its DestinationPolicy), one ejected again and again (no policy: on the service), short ones not',
    yaml: dp + '---\n' + route('    - backends: [{service: web}]'),
    endpoints: [ep('web'), ep('api')],
    ejections: [ejected('10.0.0.1:8080', 6 * 60_000, 1), ejected('10.0.0.2:8080', 0, 4, 'api'), ejected('10.0.0.3:8080', 60_000, 2), ejected('10.0.0.4:8080', 0, 1)],
    expect: ['MC0015 DestinationPolicy/web spec.outlierDetection', 'MC0016 service/api'],
  },
  { name: 'two Routes on one host', yaml: route('    - backends: [{service: web}]') + '---\n' + route('    - backends: [{service: web}]', 'web2'), endpoints: [ep('web')], expect: ['MC0010 Route/web2 spec.hosts[0]'] },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const docs = parseDocuments(c.yaml);
    if (!docs.ok) throw new Error(JSON.stringify(docs.errors));
    const res = parseEach(docs.value);
    if (!res.ok) throw new Error(JSON.stringify(res.errors));
    const got = analyze({ resources: res.value, endpoints: c.endpoints ?? [], sidecars: c.sidecars, ejections: c.ejections });
    t.same(got.map((f) => `${f.code} ${f.resource}${f.field ? ' ' + f.field : ''}`).sort(), [...c.expect].sort());
    for (const f of got) t.ok(f.message && f.fix, `${f.code} has a message and a fix`);
  });
}

t.test('ejection thresholds are the caller\'s; the messages say how long and by whom', async (t) => {
  const got = analyze({ resources: [], endpoints: [], ejections: [ejected('10.0.0.1:8080', 95_000, 1), ejected('10.0.0.2:8080', 0, 2)], ejectedForMs: 90_000, repeatedEjections: 2, ejectionWindowMs: 600_000 });
  t.same(got.map((f) => f.message), ['endpoint 10.0.0.1:8080 of web has been ejected for 95s (by fe-0)', 'endpoint 10.0.0.2:8080 of web was ejected 2 times in the last 10m (by fe-0)']);
});

t.test('gateway certificates: expired is an error, expiring within the threshold a warning, per listener and file', async (t) => {
  const docs = parseDocuments(`apiVersion: meshlet.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners:
    - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{certFile: /c/a.crt, keyFile: /c/a.key}, {certFile: /c/b.crt, keyFile: /c/b.key}, {certFile: /c/c.crt, keyFile: /c/c.key}]}}
`);
  if (!docs.ok) throw new Error(JSON.stringify(docs.errors));
  const res = parseEach(docs.value);
  if (!res.ok) throw new Error(JSON.stringify(res.errors));
  const now = Date.parse('2026-06-01T00:00:00Z');
  const day = 86_400_000;
  const cert = (gateway: string, file: string, notAfter: number, notBefore = now - 30 * day, service = 'edge', listener = 'https') => ({
    gateway,
    service,
    listener,
    file,
    subject: `CN=${path(file)}.example.com`,
    names: [`${path(file)}.example.com`],
    notBefore: new Date(notBefore).toISOString(),
    notAfter: new Date(notAfter).toISOString(),
  });
  const path = (f: string) => f.slice(f.lastIndexOf('/') + 1, f.lastIndexOf('.'));
  const certificates = [
    cert('edge-0', '/c/a.crt', now - 2 * day - 3_600_000), // expired
    cert('edge-1', '/c/a.crt', now - 2 * day - 3_600_000), // the same file on a second replica: one finding
    cert('edge-0', '/c/b.crt', now + 3 * day + 4 * 3_600_000), // within 14d
    cert('edge-0', '/c/c.crt', now + 60 * day), // fine
    cert('edge-0', '/c/d.crt', now + 90 * day, now + day), // not valid yet
    cert('other-0', '/x/o.crt', now + day, now - day, 'other', 'tls'), // a gateway whose resource is gone
  ];
  const got = analyze({ resources: res.value, endpoints: [], certificates, now });
  t.same(
    got.map((f) => `${f.severity} ${f.code} ${f.resource}${f.field ? ' ' + f.field : ''}`),
    [
      'error MC0018 Gateway/edge spec.listeners[0].tls',
      'error MC0018 Gateway/edge spec.listeners[0].tls.certificates[0].certFile',
      'warning MC0017 Gateway/edge spec.listeners[0].tls.certificates[1].certFile',
      'warning MC0017 gateway/other-0',
    ],
  );
  const byFile = (file: string) => got.find((f) => f.message.startsWith(`certificate ${file} `))!;
  t.equal(byFile('/c/a.crt').message, `certificate /c/a.crt (a.example.com) of listener https expired 2d 1h ago, at ${new Date(now - 2 * day - 3_600_000).toISOString()}: clients refuse the handshake (served by edge-0, edge-1)`);
  t.equal(byFile('/c/b.crt').message, `certificate /c/b.crt (b.example.com) of listener https expires in 3d 4h, at ${new Date(now + 3 * day + 4 * 3_600_000).toISOString()} (served by edge-0)`);
  t.match(byFile('/c/d.crt').message, /is not valid until .* \(in 1d\)/);
  t.match(byFile('/c/a.crt').fix, /renew \/c\/a\.crt .* reloads changed files without a restart/);
  t.same(
    analyze({ resources: res.value, endpoints: [], certificates, now, certExpiryMs: 2 * day }).map((f) => f.code),
    ['MC0018', 'MC0018', 'MC0017'],
    'a shorter threshold: b (3d) is no longer a finding, the other gateway (1d) still is',
  );
  t.same(analyze({ resources: res.value, endpoints: [], certificates: [cert('edge-0', '/c/c.crt', now + 60 * day)], now }), [], 'a certificate far from expiry: nothing');
});

t.test('stored certificates (TLSCertificate): reported by a gateway, or judged from the store', async (t) => {
  const docs = parseDocuments(`apiVersion: meshlet.dev/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners:
    - {name: https, port: 8443, protocol: HTTPS, tls: {certificates: [{secret: shop}, {certFile: /c/a.crt, keyFile: /c/a.key}]}}
`);
  if (!docs.ok) throw new Error(JSON.stringify(docs.errors));
  const res = parseEach(docs.value);
  if (!res.ok) throw new Error(JSON.stringify(res.errors));
  const now = Date.parse('2026-06-01T00:00:00Z');
  const day = 86_400_000;
  const iso = (ms: number) => new Date(ms).toISOString();
  const served = { gateway: 'edge-0', service: 'edge', listener: 'https', file: 'TLSCertificate/shop', secret: 'shop', subject: 'CN=shop.example.com', names: ['shop.example.com'], notBefore: iso(now - day), notAfter: iso(now + 3 * day) };
  const stored = (name: string, notAfter: number, notBefore = now - day) => ({ name, subject: `CN=${name}.example.com`, names: [`${name}.example.com`], notBefore: iso(notBefore), notAfter: iso(notAfter) });
  const got = analyze({ resources: res.value, endpoints: [], certificates: [served], storedCertificates: [stored('shop', now + 3 * day), stored('old', now - day), stored('fine', now + 60 * day)], now });
  t.same(
    got.map((f) => `${f.severity} ${f.code} ${f.resource} ${f.field}`),
    ['error MC0018 TLSCertificate/old spec.certificate', 'warning MC0017 TLSCertificate/shop spec.certificate'],
    'one finding for a certificate both served and stored; one no gateway serves, from the store',
  );
  const shop = got.find((f) => f.resource === 'TLSCertificate/shop')!;
  t.match(shop.message, /^certificate TLSCertificate\/shop \(shop\.example\.com\) of listener https of Gateway edge expires in 3d/);
  t.match(shop.fix, /apply a renewed certificate and its key to TLSCertificate shop/);
  t.match(got[0]!.message, /^certificate of TLSCertificate old \(old\.example\.com\) expired 1d ago/);
});

t.test('MC0019: consumerRefs naming an ApiConsumer that does not exist', async (t) => {
  const docs = parseDocuments(`apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: api}
spec:
  hosts: [api]
  rules: [{backends: [{service: api}], apiKeys: {consumerRefs: [alice, gone]}}]
---
apiVersion: meshlet.dev/v1
kind: ApiConsumer
metadata: {name: alice}
spec: {keys: []}
`);
  if (!docs.ok) throw new Error(JSON.stringify(docs.errors));
  const res = parseEach(docs.value);
  if (!res.ok) throw new Error(JSON.stringify(res.errors));
  const got = analyze({ resources: res.value, endpoints: [] }).filter((f) => f.code === 'MC0019');
  t.same(got.map((f) => `${f.resource} ${f.field}`), ['Route/api spec.rules[0].apiKeys.consumerRefs[1]']);
});
