/**
 * `meshlet check` on AuthorizationPolicies: policies for services that do not exist, ALLOW
 * sources that never match, deny-all on a service with callers, dryRun policies that would deny.
 */
import t from 'tap';
import { analyze, type AuthzCount } from '../../../src/policy/analyze';
import { parseDocuments, parseEach } from '../../../src/policy/parse';
import type { Endpoint } from '../../../src/policy/types';

const ep = (service: string): Endpoint => ({ service, address: '10.0.0.1', port: 8080, labels: {}, weight: 1, meshed: true });
const ROUTE = `apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: web}
spec: {hosts: [web], rules: [{backends: [{service: web}]}]}
`;
const authz = (name: string, spec: string) => `---
apiVersion: meshlet.dev/v1
kind: AuthorizationPolicy
metadata: {name: ${name}}
spec: ${spec}
`;

function findings(yaml: string, endpoints: Endpoint[], counts?: AuthzCount[]): string[] {
  const docs = parseDocuments(yaml);
  if (!docs.ok) throw new Error(JSON.stringify(docs.errors));
  const rs = parseEach(docs.value);
  if (!rs.ok) throw new Error(JSON.stringify(rs.errors));
  return analyze({ resources: rs.value, endpoints, ...(counts ? { authz: counts } : {}) }).map((f) => `${f.code} ${f.resource} ${f.field ?? ''}`.trim());
}

t.test('findings', async (t) => {
  const eps = [ep('web'), ep('frontend')];
  const cases: { name: string; yaml: string; counts?: AuthzCount[]; expect: string[] }[] = [
    { name: 'a sound allow-list', yaml: ROUTE + authz('web', '{service: web, rules: [{action: ALLOW, from: [{services: [frontend, "ops-*"]}]}]}'), expect: [] },
    { name: 'a policy for a service nobody runs', yaml: ROUTE + authz('ghost', '{service: ghost, rules: [{action: DENY}]}'), expect: ['MC0011 AuthorizationPolicy/ghost spec.service'] },
    { name: 'an ALLOW source naming an unknown caller', yaml: ROUTE + authz('web', '{service: web, rules: [{action: ALLOW, from: [{services: [frontend]}, {services: [fronted]}]}]}'), expect: ['MC0012 AuthorizationPolicy/web spec.rules[0].from[1].services[0]'] },
    { name: 'deny-all on a service a Route sends to', yaml: ROUTE + authz('web', '{service: web, defaultAction: DENY}'), expect: ['MC0013 AuthorizationPolicy/web spec.defaultAction'] },
    { name: 'a mesh-wide deny-all', yaml: ROUTE + authz('mesh', '{defaultAction: DENY}'), expect: ['MC0013 AuthorizationPolicy/mesh spec.defaultAction'] },
    { name: 'deny-all in dryRun is the safe way in', yaml: ROUTE + authz('web', '{service: web, defaultAction: DENY, dryRun: true}'), expect: [] },
    {
      name: 'a dryRun policy that would have denied',
      yaml: ROUTE + authz('web', '{service: web, dryRun: true, rules: [{name: no-admin, action: DENY, to: {paths: [{prefix: /admin}]}}]}'),
      counts: [
        { service: 'web', policy: 'web', rule: 'no-admin', result: 'would_deny', count: 3 },
        { service: 'web', policy: 'web', rule: 'defaultAction', result: 'allow', count: 10 },
      ],
      expect: ['MC0014 AuthorizationPolicy/web spec.dryRun'],
    },
    {
      name: 'counts of an enforced policy are not a finding',
      yaml: ROUTE + authz('web', '{service: web, rules: [{name: no-admin, action: DENY, to: {paths: [{prefix: /admin}]}}]}'),
      counts: [{ service: 'web', policy: 'web', rule: 'no-admin', result: 'would_deny', count: 3 }],
      expect: [],
    },
  ];
  for (const c of cases) t.same(findings(c.yaml, eps, c.counts), c.expect, c.name);
});
