import t from 'tap';
import { Authorizer, deniedResponse, validateAuthorizationPolicy, type AuthorizationPolicy, type AuthzRequest } from '../../../src/security/authz';

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
const ADMIN = 'spiffe://cluster.local/ns/ops/sa/admin-tool';
const LOCAL = 'spiffe://mesh.local/svc/frontend';

function req(over: Partial<AuthzRequest> = {}): AuthzRequest {
  return { spiffeId: FRONTEND, method: 'GET', path: '/items', headers: {}, port: 8080, ...over };
}

function policy(name: string, spec: unknown): AuthorizationPolicy {
  const r = validateAuthorizationPolicy(name, spec);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
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
  const cases: { name: string; service?: string; req: Partial<AuthzRequest>; allowed: boolean; by: string; audits?: string[] }[] = [
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
  t.same(a.decide('pricing', req()).by, { policy: 'pricing-allow', rule: 'rules[0]' }, 'unnamed rules are named by index');
  const d = a.decide('pricing', req({ spiffeId: ADMIN }));
  t.equal(d.allowed, false);
  t.same(d.by, { policy: 'pricing-allow', rule: 'defaultAction' });
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
        { name: 'no-delete', action: 'DENY', to: { methods: ['delete'] } },
      ],
    }),
  ]);
  t.same(a.decide('catalog', req()), { allowed: true, by: { policy: 'catalog-lockdown', rule: 'frontend' }, audits: [] });
  const del = a.decide('catalog', req({ method: 'DELETE' }));
  t.equal(del.allowed, true);
  t.same(del.dryRun, { policy: 'catalog-lockdown', rule: 'no-delete' }, 'a DENY rule in dry run');
  const other = a.decide('catalog', req({ spiffeId: ADMIN }));
  t.equal(other.allowed, true);
  t.same(other.dryRun, { policy: 'catalog-lockdown', rule: 'defaultAction' }, 'the default DENY in dry run');
  t.same(a.decide('catalog', req({ spiffeId: LOCAL })).by, { policy: 'catalog-lockdown', rule: 'frontend' }, 'local SPIFFE IDs too');
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

t.test('the denied response: 403 + RBAC, gRPC PERMISSION_DENIED', async (t) => {
  const a = new Authorizer([policy('p', { service: 'catalog', rules: [{ name: 'no', action: 'DENY' }] })]);
  const d = a.decide('catalog', req());
  t.same(deniedResponse(d, false), { status: 403, headers: { 'content-type': 'text/plain', 'x-meshlet-flags': 'RBAC' }, body: 'denied by AuthorizationPolicy p no\n' });
  const g = deniedResponse(d, true);
  t.equal(g.headers['grpc-status'], '7');
  t.equal(decodeURIComponent(g.headers['grpc-message'] as string), 'denied by AuthorizationPolicy p no');
});

t.test('bad specs: every problem with its field path', async (t) => {
  const cases: { name: string; spec: unknown; errors: RegExp[] }[] = [
    { name: 'not an object', spec: 'x', errors: [/^spec: must be an object/] },
    { name: 'unknown field', spec: { rules: [], action: 'ALLOW' }, errors: [/^spec.action: unknown field/] },
    { name: 'bad default', spec: { defaultAction: 'MAYBE', rules: [] }, errors: [/^spec.defaultAction: must be ALLOW or DENY, got "MAYBE"/] },
    { name: 'bad action', spec: { rules: [{ action: 'PERMIT' }] }, errors: [/^spec.rules\[0\].action: must be ALLOW, DENY or AUDIT/] },
    { name: 'bad regex', spec: { rules: [{ action: 'DENY', to: { paths: [{ prefix: '/' }, { regex: '(' }] } }] }, errors: [/^spec.rules\[0\].to.paths\[1\].regex: invalid regular expression/] },
    { name: 'two kinds', spec: { rules: [{ action: 'DENY', to: { paths: [{ prefix: '/', exact: '/' }] } }] }, errors: [/^spec.rules\[0\].to.paths\[0\]: one of exact, prefix, regex; got exact and prefix/] },
    { name: 'bad port', spec: { rules: [{ action: 'DENY', to: { ports: [0] } }] }, errors: [/^spec.rules\[0\].to.ports: must be a list of ports/] },
    { name: 'bad source', spec: { rules: [{ action: 'ALLOW', from: [{ services: [''], principals: ['x'] }] }] }, errors: [/^spec.rules\[0\].from\[0\].principals: unknown field/, /^spec.rules\[0\].from\[0\].services: must be a list of non-empty strings/] },
    { name: 'header without a name', spec: { rules: [{ action: 'ALLOW', to: { headers: [{ exact: 'x' }] } }] }, errors: [/^spec.rules\[0\].to.headers\[0\].name: must be a header name/] },
    { name: 'bad method', spec: { rules: [{ action: 'ALLOW', to: { methods: ['GET /'] } }] }, errors: [/^spec.rules\[0\].to.methods: must be a list of HTTP methods/] },
  ];
  for (const c of cases) {
    const r = validateAuthorizationPolicy('p', c.spec);
    t.notOk(r.ok, c.name);
    if (r.ok) continue;
    const lines = r.errors.map((e) => `${e.path}: ${e.message}`);
    t.equal(lines.length, c.errors.length, `${c.name}: ${lines.join(' | ')}`);
    c.errors.forEach((re, i) => t.match(lines.find((l) => re.test(l)) ?? lines[i], re, c.name));
  }
});
