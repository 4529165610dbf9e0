import t from 'tap';
import { parseResource } from '../../../src/policy/parse';
import { Authorizer, deniedMessage, type AuthorizationPolicy, type AuthzRequest } from '../../../src/security/authz';
import { parseSpiffeId, type SpiffeId } from '../../../src/security/spiffe';

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
const ADMIN = 'spiffe://cluster.local/ns/ops/sa/admin-tool';
const LOCAL = 'spiffe://mesh.local/svc/frontend';

type Req = { spiffeId?: string; method?: string; path?: string; headers?: Record<string, string | string[]>; port?: number };

function id(uri: string): SpiffeId | undefined {
  const r = parseSpiffeId(uri);
  return r.ok ? r.value : undefined;
}

function req(over: Req = {}): AuthzRequest {
  const o = { spiffeId: FRONTEND, method: 'GET', path: '/items', headers: {}, port: 8080, ...over } as Required<Req> & { spiffeId: string | undefined };
  const headers = o.headers;
  return {
    peer: o.spiffeId === undefined ? undefined : id(o.spiffeId),
    method: o.method,
    path: o.path,
    port: o.port,
    header: (n) => {
      const v = headers[n];
      return Array.isArray(v) ? v.join(', ') : v;
    },
  };
}

function policy(name: string, spec: unknown): AuthorizationPolicy {
  const r = parseResource({ apiVersion: 'meshlet.dev/v1', kind: 'AuthorizationPolicy', metadata: { name }, spec });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  if (r.value.kind !== 'AuthorizationPolicy') throw new Error('kind');
  return { name, spec: r.value.spec };
}

const catalogAllow = policy('catalog-allow', {
  service: 'catalog',
  rules: [
    { name: 'frontend-reads', action: 'ALLOW', from: [{ services: ['frontend'] }], to: { methods: ['GET', 'HEAD'], paths: [{ prefix: '/items' }] } },
    { name: 'ops-anything', action: 'ALLOW', from: [{ namespaces: ['ops'] }] },
    { name: 'no-admin-paths', action: 'DENY', to: { paths: [{ regex: '/admin(/.*)?' }] } },
    { name: 'debug-header', action: 'DENY', to: { headers: [{ name: 'X-Debug', present: true }] } },
    { name: 'watch-writes', action: 'AUDIT', to: { methods: ['POST', 'PUT', 'DELETE'] } },
  ],
});
const meshWide = policy('mesh-default', { defaultAction: 'ALLOW', rules: [{ name: 'no-plaintext-to-metrics', action: 'DENY', from: [{ unauthenticated: true }], to: { paths: [{ exact: '/internal/metrics' }] } }] });

t.test('decision table', async (t) => {
  const a = new Authorizer([meshWide, catalogAllow]);
  const cases: { name: string; service?: string; req: Req; allowed: boolean; by: string; audits?: string[] }[] = [
    { name: 'frontend reads items', req: {}, allowed: true, by: 'catalog-allow frontend-reads' },
    { name: 'path prefix holds for sub-paths and ignores the query', req: { path: '/items/42?x=1' }, allowed: true, by: 'catalog-allow frontend-reads' },
    { name: 'method not allowed for frontend: the allow-list default', req: { method: 'POST' }, allowed: true, by: 'mesh-default defaultAction', audits: ['catalog-allow watch-writes'] },
    { name: 'another path', req: { path: '/orders' }, allowed: true, by: 'mesh-default defaultAction' },
    { name: 'DENY before ALLOW: admin paths even from ops', req: { spiffeId: ADMIN, path: '/admin/users' }, allowed: false, by: 'catalog-allow no-admin-paths' },
    { name: 'regex is anchored', req: { spiffeId: ADMIN, path: '/x/admin' }, allowed: true, by: 'catalog-allow ops-anything' },
    { name: 'header present denies', req: { headers: { 'x-debug': '1' } }, allowed: false, by: 'catalog-allow debug-header' },
    { name: 'mesh-wide DENY for plaintext callers', req: { spiffeId: undefined, path: '/internal/metrics' }, allowed: false, by: 'mesh-default no-plaintext-to-metrics' },
    { name: 'mesh-wide DENY does not hit verified callers', req: { path: '/internal/metrics' }, allowed: true, by: 'mesh-default defaultAction' },
    { name: 'another service: only the mesh-wide policy', service: 'pricing', req: { method: 'DELETE' }, allowed: true, by: 'mesh-default defaultAction' },
  ];
  for (const c of cases) {
    const d = a.decide(c.service ?? 'catalog', req(c.req));
    t.equal(d.allowed, c.allowed, `${c.name}: allowed`);
    t.equal(d.by === 'no-policy' ? 'no-policy' : `${d.by.policy} ${d.by.rule}`, c.by, `${c.name}: by`);
    t.same(d.audits.map((x) => `${x.policy} ${x.rule}`), c.audits ?? [], `${c.name}: audits`);
  }
});

t.test('allow-list default: DENY once any ALLOW rule applies (no defaultAction)', async (t) => {
  const a = new Authorizer([
    policy('pricing-allow', { service: 'pricing', rules: [{ action: 'ALLOW', from: [{ spiffeIds: ['spiffe://cluster.local/ns/shop/*'] }] }] }),
    policy('orders-audit', { service: 'orders', rules: [{ action: 'AUDIT', from: [{ services: ['*'] }] }] }),
  ]);
  t.has(a.decide('pricing', req()).by, { policy: 'pricing-allow', rule: 'rules[0]' }, 'unnamed rules are named by index');
  const d = a.decide('pricing', req({ spiffeId: ADMIN }));
  t.equal(d.allowed, false);
  t.has(d.by, { policy: 'pricing-allow', rule: 'defaultAction' });
  t.equal(a.decide('pricing', req({ spiffeId: undefined })).allowed, false, 'plaintext callers match no SPIFFE ID');
  t.equal(a.decide('pricing', req({ spiffeId: 'not a spiffe id' })).allowed, false);
  const o = a.decide('orders', req());
  t.equal(o.allowed, true, 'AUDIT rules alone deny nothing');
  t.equal(o.audits.length, 1);
  t.equal(a.decide('orders', req({ spiffeId: undefined })).audits.length, 0, 'a plaintext caller has no service');
  t.same(a.decide('nothing', req()), { allowed: true, by: 'no-policy', audits: [] });
  t.notOk(a.applies('nothing'));
  t.ok(a.applies('pricing'));
});

t.test('dryRun: reports what would be denied, denies nothing', async (t) => {
  const a = new Authorizer([
    policy('catalog-lockdown', {
      service: 'catalog',
      dryRun: true,
      defaultAction: 'DENY',
      rules: [
        { name: 'frontend', action: 'ALLOW', from: [{ spiffeIds: [FRONTEND, LOCAL] }] },
        { name: 'no-delete', action: 'DENY', to: { methods: ['DELETE'] } },
      ],
    }),
  ]);
  t.has(a.decide('catalog', req()), { allowed: true, by: { policy: 'catalog-lockdown', rule: 'frontend' }, audits: [] });
  const del = a.decide('catalog', req({ method: 'DELETE' }));
  t.equal(del.allowed, true);
  t.has(del.dryRun, { policy: 'catalog-lockdown', rule: 'no-delete' }, 'a DENY rule in dry run');
  const other = a.decide('catalog', req({ spiffeId: ADMIN }));
  t.equal(other.allowed, true);
  t.has(other.dryRun, { policy: 'catalog-lockdown', rule: 'defaultAction' }, 'the default DENY in dry run');
  t.has(a.decide('catalog', req({ spiffeId: LOCAL })).by, { policy: 'catalog-lockdown', rule: 'frontend' }, 'local SPIFFE IDs too');
  // Enforced: the same policy without dryRun.
  const enforced = new Authorizer([policy('catalog-lockdown', { service: 'catalog', defaultAction: 'DENY', rules: [{ action: 'ALLOW', from: [{ services: ['frontend'] }] }] })]);
  t.equal(enforced.decide('catalog', req({ spiffeId: ADMIN })).allowed, false);
});

t.test('header, port and multi-source matching', async (t) => {
  const a = new Authorizer([
    policy('p', {
      service: 'catalog',
      defaultAction: 'DENY',
      rules: [
        { name: 'canary', action: 'ALLOW', to: { headers: [{ name: 'x-canary', exact: 'true' }, { name: 'x-user', regex: 'u[0-9]+' }] } },
        { name: 'grpc-port', action: 'ALLOW', from: [{ services: ['cat*'] }, { namespaces: ['ops'] }], to: { ports: [9090] } },
        { name: 'no-token', action: 'ALLOW', to: { headers: [{ name: 'authorization', present: false }, { name: 'x-tenant', prefix: 'acme-' }] } },
      ],
    }),
  ]);
  t.equal(a.decide('catalog', req({ headers: { 'x-canary': 'true', 'x-user': 'u42' } })).allowed, true);
  t.equal(a.decide('catalog', req({ headers: { 'x-canary': 'true', 'x-user': 'u42x' } })).allowed, false, 'regex anchored');
  t.equal(a.decide('catalog', req({ headers: { 'x-canary': ['false', 'true'], 'x-user': 'u1' } })).allowed, true, 'any value of a repeated header');
  t.equal(a.decide('catalog', req({ spiffeId: 'spiffe://mesh.local/svc/catalog', port: 9090 })).allowed, true);
  t.equal(a.decide('catalog', req({ spiffeId: ADMIN, port: 9090 })).allowed, true, 'second source');
  t.equal(a.decide('catalog', req({ port: 9090 })).allowed, false);
  t.equal(a.decide('catalog', req({ headers: { 'x-tenant': 'acme-1' } })).allowed, true);
  t.equal(a.decide('catalog', req({ headers: { 'x-tenant': 'acme-1', authorization: 'Bearer x' } })).allowed, false, 'present: false');
});

t.test('the denied message names the policy and rule', async (t) => {
  const a = new Authorizer([policy('p', { service: 'catalog', rules: [{ name: 'no', action: 'DENY' }] })]);
  t.equal(deniedMessage(a.decide('catalog', req())), 'denied by AuthorizationPolicy p rule no');
});
