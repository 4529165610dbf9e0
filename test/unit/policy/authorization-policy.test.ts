/**
 * AuthorizationPolicy in the policy model: the same field-path errors reach the API's 400,
 * `meshlet apply` and a sidecar's NACK (all run parseResource / parseAll).
 */
import t from 'tap';
import { parseAll, parseResource, toWire } from '../../../src/policy/parse';

const doc = (spec: unknown, name = 'p') => ({ apiVersion: 'meshlet.dev/v1', kind: 'AuthorizationPolicy', metadata: { name }, spec });

t.test('valid policies parse, with defaults, and round-trip through the wire form', async (t) => {
  const r = parseResource(
    doc({
      service: 'catalog',
      defaultAction: 'DENY',
      rules: [
        { name: 'frontend-reads', action: 'ALLOW', from: [{ services: ['frontend'] }, { spiffeIds: ['spiffe://cluster.local/ns/ops/*'] }, { namespaces: ['ops'] }], to: { methods: ['GET'], paths: [{ prefix: '/items' }, { regex: '/v[0-9]+/items' }], headers: [{ name: 'X-Canary', exact: 'true' }, { name: 'authorization', present: false }], ports: [8080] } },
        { action: 'DENY', to: { paths: [{ exact: '/admin' }] } },
        { action: 'AUDIT', from: [{ unauthenticated: true }] },
      ],
    }),
  );
  t.ok(r.ok, JSON.stringify(r));
  if (!r.ok || r.value.kind !== 'AuthorizationPolicy') return;
  t.equal(r.value.spec.dryRun, false, 'dryRun defaults to false');
  t.equal(r.value.spec.rules[0]?.to?.headers?.[0]?.name, 'x-canary', 'header names lower-cased');
  const again = parseResource(toWire(r.value));
  t.same(again.ok && again.value, r.value, 'toWire -> parse gives the same resource');
  const empty = parseResource(doc({ defaultAction: 'DENY' }));
  t.ok(empty.ok && empty.value.kind === 'AuthorizationPolicy' && empty.value.spec.rules.length === 0, 'a mesh-wide default without rules');
});

t.test('bad policies: every problem with its field path', async (t) => {
  const cases: { name: string; spec: unknown; errors: RegExp[] }[] = [
    { name: 'not an object', spec: 'x', errors: [/^spec: must be an object/] },
    { name: 'unknown field', spec: { rules: [], action: 'ALLOW' }, errors: [/^spec.action: unknown field/] },
    { name: 'bad default', spec: { defaultAction: 'MAYBE' }, errors: [/^spec.defaultAction: must be one of ALLOW, DENY; got "MAYBE"/] },
    { name: 'bad action', spec: { rules: [{ action: 'PERMIT' }] }, errors: [/^spec.rules\[0\].action: must be one of ALLOW, DENY, AUDIT; got "PERMIT"/] },
    { name: 'action missing', spec: { rules: [{ name: 'x' }] }, errors: [/^spec.rules\[0\].action: is required/] },
    { name: 'bad regex', spec: { rules: [{ action: 'DENY', to: { paths: [{ prefix: '/' }, { regex: '(' }] } }] }, errors: [/^spec.rules\[0\].to.paths\[1\].regex: invalid regular expression/] },
    { name: 'backtracking regex refused (linear-time engine)', spec: { rules: [{ action: 'DENY', to: { headers: [{ name: 'x-a', regex: '(a)\\1' }] } }] }, errors: [/^spec.rules\[0\].to.headers\[0\].regex: .*backreference/] },
    { name: 'two path kinds', spec: { rules: [{ action: 'DENY', to: { paths: [{ prefix: '/', exact: '/' }] } }] }, errors: [/^spec.rules\[0\].to.paths\[0\]: set exactly one of exact, prefix, regex/] },
    { name: 'path without a slash', spec: { rules: [{ action: 'DENY', to: { paths: [{ prefix: 'admin' }] } }] }, errors: [/^spec.rules\[0\].to.paths\[0\].prefix: .*must start with "\/"/] },
    { name: 'bad port', spec: { rules: [{ action: 'DENY', to: { ports: [0] } }] }, errors: [/^spec.rules\[0\].to.ports\[0\]: must be at least 1|between 1 and 65535/] },
    { name: 'unknown source field', spec: { rules: [{ action: 'ALLOW', from: [{ principals: ['x'] }] }] }, errors: [/^spec.rules\[0\].from\[0\].principals: unknown field/] },
    { name: 'empty service name', spec: { rules: [{ action: 'ALLOW', from: [{ services: [''] }] }] }, errors: [/^spec.rules\[0\].from\[0\].services\[0\]: /] },
    { name: 'empty source', spec: { rules: [{ action: 'ALLOW', from: [{}] }] }, errors: [/^spec.rules\[0\].from\[0\]: set at least one of spiffeIds, services, namespaces, unauthenticated/] },
    { name: 'plaintext with identity', spec: { rules: [{ action: 'ALLOW', from: [{ unauthenticated: true, services: ['a'] }] }] }, errors: [/^spec.rules\[0\].from\[0\].unauthenticated: a plaintext caller has no identity/] },
    { name: 'not a SPIFFE ID', spec: { rules: [{ action: 'ALLOW', from: [{ spiffeIds: ['frontend'] }] }] }, errors: [/^spec.rules\[0\].from\[0\].spiffeIds\[0\]: must be a SPIFFE ID/] },
    { name: 'header without a name', spec: { rules: [{ action: 'ALLOW', to: { headers: [{ exact: 'x' }] } }] }, errors: [/^spec.rules\[0\].to.headers\[0\].name: is required/] },
    { name: 'two header values', spec: { rules: [{ action: 'ALLOW', to: { headers: [{ name: 'a', exact: 'x', prefix: 'y' }] } }] }, errors: [/^spec.rules\[0\].to.headers\[0\]: set at most one of exact, prefix, regex; got exact and prefix/] },
    { name: 'absent with a value', spec: { rules: [{ action: 'ALLOW', to: { headers: [{ name: 'a', exact: 'x', present: false }] } }] }, errors: [/^spec.rules\[0\].to.headers\[0\].present: present: false/] },
    { name: 'lower-case method', spec: { rules: [{ action: 'ALLOW', to: { methods: ['get'] } }] }, errors: [/^spec.rules\[0\].to.methods\[0\]: invalid value "get": must be an upper-case HTTP method/] },
    { name: 'empty to', spec: { rules: [{ action: 'ALLOW', to: {} }] }, errors: [/^spec.rules\[0\].to: set at least one of methods, paths, headers, ports/] },
    { name: 'duplicate rule names', spec: { rules: [{ name: 'a', action: 'ALLOW' }, { name: 'a', action: 'DENY' }] }, errors: [/^spec.rules\[1\].name: duplicate rule name "a"/] },
    { name: 'bad service name', spec: { service: 'Catalog!' }, errors: [/^spec.service: invalid value "Catalog!"/] },
    { name: 'too many sources', spec: { rules: [{ action: 'ALLOW', from: Array.from({ length: 101 }, () => ({ services: ['a'] })) }] }, errors: [/^spec.rules\[0\].from: .*(100|authzValuesPerList)/] },
    { name: 'dryRun not a boolean', spec: { dryRun: 'yes' }, errors: [/^spec.dryRun: must be true or false/] },
  ];
  for (const c of cases) {
    const r = parseResource(doc(c.spec));
    t.notOk(r.ok, c.name);
    if (r.ok) continue;
    const lines = r.errors.map((e) => `${e.path}: ${e.message}`);
    t.equal(lines.length, c.errors.length, `${c.name}: ${lines.join(' | ')}`);
    c.errors.forEach((re, i) => t.match(lines.find((l) => re.test(l)) ?? lines[i], re, c.name));
  }
});

t.test('one defaultAction per service and one mesh-wide', async (t) => {
  const r = parseAll([doc({ service: 'a', defaultAction: 'DENY' }, 'one'), doc({ service: 'a', defaultAction: 'ALLOW' }, 'two'), doc({ defaultAction: 'DENY' }, 'mesh'), doc({ defaultAction: 'ALLOW' }, 'mesh2'), doc({ service: 'a', rules: [{ action: 'DENY' }] }, 'three')]);
  t.notOk(r.ok);
  if (r.ok) return;
  t.same(
    r.errors.map((e) => `${e.path}: ${e.message}`),
    [
      'AuthorizationPolicy/two: spec.defaultAction: service "a" already has a defaultAction, in AuthorizationPolicy "one": set it in one policy only',
      'AuthorizationPolicy/mesh2: spec.defaultAction: the mesh-wide default already has a defaultAction, in AuthorizationPolicy "mesh": set it in one policy only',
    ],
  );
});
