/**
 * What is generated from the one schema is current: the compiled validators, the JSON Schema in
 * deploy/schema/ and docs/policy-reference.md equal what `npm run build` (scripts/gen-policy.js)
 * writes from src/policy/schema.ts. And the published JSON Schema says what the parser does.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { generateChecks, referenceDoc } from '../../../src/policy/codegen';
import { jsonSchemaText, schemaFileName, jsonSchema } from '../../../src/policy/json-schema';
import { parseResource } from '../../../src/policy/parse';
import { KINDS, LIMITS } from '../../../src/policy/types';

const root = path.resolve(__dirname, '../../..');
const read = (rel: string) => fs.readFileSync(path.join(root, rel), 'utf8');

t.test('the compiled validators are current', async (t) => {
  t.equal(read('src/policy/checks.generated.ts'), generateChecks(), 'src/policy/checks.generated.ts: run npm run build');
});

t.test('deploy/schema/<kind>.json is current for every kind', async (t) => {
  for (const k of KINDS) t.equal(read(`deploy/schema/${schemaFileName(k)}`), jsonSchemaText(k), `deploy/schema/${schemaFileName(k)}: run npm run build`);
  t.same(fs.readdirSync(path.join(root, 'deploy/schema')).sort(), KINDS.map(schemaFileName).sort(), 'one file per kind, no stale ones');
});

t.test('docs/policy-reference.md is current and lists every kind and limit', async (t) => {
  const doc = read('docs/policy-reference.md');
  t.equal(doc, referenceDoc(), 'docs/policy-reference.md: run npm run build');
  for (const k of KINDS) t.match(doc, `## ${k}`);
  for (const [k, v] of Object.entries(LIMITS)) t.match(doc, `| \`${k}\` | ${v} |`);
  t.match(doc, '| `spec.rules[].timeout` | duration |');
});

t.test('the JSON Schema speaks of the wire form users write', async (t) => {
  const route = jsonSchema('Route') as any;
  const rule = route.properties.spec.properties.rules.items;
  t.ok(rule.properties.timeout, 'timeout, not timeoutMs');
  t.notOk(rule.properties.timeoutMs);
  t.equal(rule.properties.timeout.type, 'string');
  t.ok(rule.properties.matches.items.properties.method?.anyOf, 'method: one or a list');
  t.equal(rule.additionalProperties, false);
  t.notOk(JSON.stringify(route).includes('"x-meshlet":'), 'no annotations of ours (the x-meshlet key; header names such as x-meshlet-consumer are values)');
  t.same(route.required, ['apiVersion', 'kind', 'metadata', 'spec']);
  t.equal(route.properties.spec.properties.hosts.maxItems, LIMITS.hostsPerRoute);
  const dp = jsonSchema('DestinationPolicy') as any;
  t.equal(dp.properties.spec.properties.outlierDetection.properties.interval.default, '10s', 'defaults in wire units');
  t.notOk(dp.properties.spec.required.includes('loadBalancer'), 'a field with a default is optional');
});

// ---- bounded input (issue 21): each limit refused with a field-path error naming it
const route = (spec: unknown) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name: 'web' }, spec });
const rule = (extra: object = {}) => ({ backends: [{ service: 'catalog' }], ...extra });
const limitCases: { name: string; input: unknown; path: string; limit: string }[] = [
  { name: 'host too long', input: route({ hosts: ['a'.repeat(250) + '.com'], rules: [rule()] }), path: 'spec.hosts[0]', limit: 'hostLength' },
  { name: 'too many hosts', input: route({ hosts: Array.from({ length: 101 }, (_, i) => `h${i}`), rules: [rule()] }), path: 'spec.hosts', limit: 'hostsPerRoute' },
  { name: 'too many rules', input: route({ hosts: ['a'], rules: Array.from({ length: 201 }, () => rule()) }), path: 'spec.rules', limit: 'rulesPerRoute' },
  { name: 'too many matches', input: route({ hosts: ['a'], rules: [rule({ matches: Array.from({ length: 51 }, () => ({ path: { prefix: '/' } })) })] }), path: 'spec.rules[0].matches', limit: 'matchesPerRule' },
  { name: 'too many backends', input: route({ hosts: ['a'], rules: [{ backends: Array.from({ length: 65 }, () => ({ service: 'a' })) }] }), path: 'spec.rules[0].backends', limit: 'backendsPerRule' },
  { name: 'path prefix too long', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { prefix: '/' + 'a'.repeat(1024) } }] })] }), path: 'spec.rules[0].matches[0].path.prefix', limit: 'matchValueLength' },
  { name: 'path regex too long', input: route({ hosts: ['a'], rules: [rule({ matches: [{ path: { regex: 'a'.repeat(1025) } }] })] }), path: 'spec.rules[0].matches[0].path.regex', limit: 'matchValueLength' },
  { name: 'header value too long', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x-a', exact: 'v'.repeat(1025) }] }] })] }), path: 'spec.rules[0].matches[0].headers[0].exact', limit: 'matchValueLength' },
  { name: 'query value too long', input: route({ hosts: ['a'], rules: [rule({ matches: [{ queryParams: [{ name: 'q', regex: 'v'.repeat(1025) }] }] })] }), path: 'spec.rules[0].matches[0].queryParams[0].regex', limit: 'matchValueLength' },
  { name: 'header name too long', input: route({ hosts: ['a'], rules: [rule({ matches: [{ headers: [{ name: 'x'.repeat(257), present: true }] }] })] }), path: 'spec.rules[0].matches[0].headers[0].name', limit: 'headerNameLength' },
  { name: 'too many header edits', input: route({ hosts: ['a'], rules: [rule({ requestHeaders: { remove: Array.from({ length: 101 }, (_, i) => `x-${i}`) } })] }), path: 'spec.rules[0].requestHeaders.remove', limit: 'headerEdits' },
  {
    name: 'too many header sets',
    input: route({ hosts: ['a'], rules: [rule({ responseHeaders: { set: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-${i}`, 'v'])) } })] }),
    path: 'spec.rules[0].responseHeaders.set',
    limit: 'headerEdits',
  },
  { name: 'resource over 1 MiB', input: route({ hosts: ['a'], rules: [rule({ responseHeaders: { set: { 'x-big': 'v'.repeat(LIMITS.resourceBytes) } } })] }), path: '', limit: 'resourceBytes' },
];
for (const c of limitCases) {
  t.test(`limit: ${c.name}`, async (t) => {
    const r = parseResource(c.input);
    t.notOk(r.ok, 'is refused');
    if (r.ok) return;
    const hit = r.errors.find((e) => e.path === c.path);
    t.ok(hit, `error at ${JSON.stringify(c.path)}; got ${JSON.stringify(r.errors).slice(0, 300)}`);
    t.match(hit?.message, `(limit ${c.limit})`);
  });
}
t.test('limits: at the limit is accepted', async (t) => {
  const r = parseResource(
    route({
      hosts: Array.from({ length: LIMITS.hostsPerRoute }, (_, i) => `h${i}`),
      rules: [rule({ matches: Array.from({ length: LIMITS.matchesPerRule }, () => ({ path: { prefix: '/' + 'a'.repeat(LIMITS.matchValueLength - 1) } })) })],
    }),
  );
  t.ok(r.ok, r.ok ? '' : JSON.stringify(r.errors).slice(0, 300));
});
