/** The Gateway kind and Route.spec.gateways: validation, and which routes apply where once compiled. */
import t from 'tap';
import { runCases, type Case } from './cases';
import { parseAll } from '../../../src/policy/parse';
import { compileSnapshot } from '../../../src/snapshot/compile';
import type { GatewayResource } from '../../../src/policy/types';

const gw = (spec: unknown, name = 'edge') => ({ apiVersion: 'meshlet.dev/v1', kind: 'Gateway', metadata: { name }, spec });
const route = (spec: unknown, name = 'web') => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec });
const tlsFiles = { certificates: [{ certFile: '/c.pem', keyFile: '/k.pem' }] };

const cases: Case[] = [
  {
    name: 'a minimal Gateway takes the defaults',
    input: gw({ listeners: [{ name: 'http', port: 8080, protocol: 'HTTP' }] }),
    check: (r) => {
      const g = r as unknown as GatewayResource;
      t.equal(g.spec.trustedHops, 0);
      t.same(g.spec.listeners[0].keepMeshHeaders, []);
      t.match(g.spec.listeners[0].limits, { maxRequestBodyBytes: 10 * 1024 * 1024, maxHeaderBytes: 65536, requestHeadersTimeoutMs: 10_000, idleTimeoutMs: 60_000, maxConnectionsPerClient: 256 });
      t.equal(g.spec.listeners[0].httpsRedirect, false);
    },
  },
  { name: 'HTTPS with TLS, durations as strings', input: gw({ listeners: [{ name: 's', port: 8443, protocol: 'HTTPS', tls: tlsFiles, limits: { idleTimeout: '5s' } }] }), check: (r) => t.equal((r as unknown as GatewayResource).spec.listeners[0].limits.idleTimeoutMs, 5000) },
  { name: 'HTTPS needs tls', input: gw({ listeners: [{ name: 's', port: 8443, protocol: 'HTTPS' }] }), error: { path: 'spec.listeners[0].tls', message: /required for protocol HTTPS/ } },
  { name: 'HTTP with tls', input: gw({ listeners: [{ name: 'h', port: 8080, protocol: 'HTTP', tls: tlsFiles }] }), error: { path: 'spec.listeners[0].tls', message: /HTTPS listeners/ } },
  { name: 'TLS below 1.2 cannot be asked for', input: gw({ listeners: [{ name: 's', port: 8443, protocol: 'HTTPS', tls: { ...tlsFiles, minVersion: 'TLSv1.1' } }] }), error: { path: 'spec.listeners[0].tls.minVersion' } },
  { name: 'duplicate port', input: gw({ listeners: [{ name: 'a', port: 8080, protocol: 'HTTP' }, { name: 'b', port: 8080, protocol: 'HTTP' }] }), error: { path: 'spec.listeners[1].port', message: /already used by listener "a"/ } },
  { name: 'duplicate listener name', input: gw({ listeners: [{ name: 'a', port: 8080, protocol: 'HTTP' }, { name: 'a', port: 8081, protocol: 'HTTP' }] }), error: { path: 'spec.listeners[1].name', message: /duplicate/ } },
  { name: 'redirect without an HTTPS listener', input: gw({ listeners: [{ name: 'a', port: 8080, protocol: 'HTTP', httpsRedirect: true }] }), error: { path: 'spec.listeners[0].httpsRedirect', message: /needs an HTTPS listener/ } },
  { name: '"mesh" is reserved', input: gw({ listeners: [{ name: 'a', port: 8080, protocol: 'HTTP' }] }, 'mesh'), error: { path: 'metadata.name', message: /reserved/ } },
  { name: 'keepMeshHeaders only names x-meshlet-*', input: gw({ listeners: [{ name: 'a', port: 8080, protocol: 'HTTP', keepMeshHeaders: ['server'] }] }), error: { path: 'spec.listeners[0].keepMeshHeaders[0]', message: /x-meshlet-/ } },
  { name: 'trustedHops bounded', input: gw({ trustedHops: 11, listeners: [{ name: 'a', port: 8080, protocol: 'HTTP' }] }), error: { path: 'spec.trustedHops' } },
  { name: 'route gateways duplicate', input: route({ hosts: ['a'], gateways: ['edge', 'edge'], rules: [{ backends: [{ service: 'a' }] }] }), error: { path: 'spec.gateways[1]', message: /duplicate gateway/ } },
];

runCases(cases);

t.test('a host is owned per place a route applies', async (t) => {
  const r = (name: string, gateways?: string[]) => route({ hosts: ['shop.example.com'], ...(gateways ? { gateways } : {}), rules: [{ backends: [{ service: 'web' }] }] }, name);
  t.ok(parseAll([r('in-mesh'), r('at-edge', ['edge'])]).ok, 'the same host in the mesh and at a gateway');
  const both = parseAll([r('at-edge', ['edge']), r('again', ['other', 'edge'])]);
  t.notOk(both.ok);
  if (!both.ok) t.match(both.errors[0].message, /already served by Route "at-edge" at gateway "edge"/);
});

t.test('compiled: which routes apply in the mesh and at each gateway', async (t) => {
  const parsed = parseAll([
    route({ hosts: ['mesh-only'], rules: [{ backends: [{ service: 'web' }] }] }, 'a'),
    route({ hosts: ['edge-only'], gateways: ['edge'], rules: [{ backends: [{ service: 'web' }] }] }, 'b'),
    route({ hosts: ['both'], gateways: ['edge', 'mesh'], rules: [{ backends: [{ service: 'web' }] }] }, 'c'),
    gw({ listeners: [{ name: 'http', port: 8080, protocol: 'HTTP' }] }),
  ]);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const snap = compileSnapshot({ version: '1', resources: parsed.value, endpoints: [] });
  const view = (authority: string) => ({ method: 'GET', path: '/', query: '', authority, header: () => undefined });
  const at = (table: typeof snap.routes, host: string) => table.match(view(host))?.statName;
  t.ok(at(snap.routes, 'mesh-only'));
  t.equal(at(snap.routes, 'edge-only'), undefined, 'a gateway-only route is not in the mesh');
  t.ok(at(snap.routes, 'both'), '`mesh` in gateways: in the mesh too');
  t.ok(at(snap.routes, 'web'), 'the mesh has implicit routes per service');
  const edge = snap.gatewayRoutes('edge');
  t.equal(at(edge, 'mesh-only'), undefined, 'a mesh route is not at the gateway');
  t.ok(at(edge, 'edge-only'));
  t.ok(at(edge, 'both'));
  t.equal(at(edge, 'web'), undefined, 'no implicit routes at the gateway');
  t.equal(snap.gatewayRoutes('edge'), edge, 'compiled once');
  t.equal(snap.gateways.get('edge')?.listeners[0].port, 8080);
});

t.test('certificates from the store: secret, or certFile and keyFile', async (t) => {
  const { parseResource } = await import('../../../src/policy/parse');
  const listener = (certificates: unknown[]) => gw({ listeners: [{ name: 's', port: 8443, protocol: 'HTTPS', tls: { certificates } }] });
  const errs = (x: unknown) => {
    const r = parseResource(x);
    return r.ok ? [] : r.errors.map((e) => `${e.path}: ${e.message}`);
  };
  t.same(errs(listener([{ secret: 'a' }, { certFile: '/c', keyFile: '/k' }])), [], 'both kinds side by side');
  t.match(errs(listener([{ secret: 'a', certFile: '/c', keyFile: '/k' }])), [/^spec.listeners\[0\].tls.certificates\[0\]: set either secret .* not both/]);
  t.match(errs(listener([{}])), [/^spec.listeners\[0\].tls.certificates\[0\]: set secret .*, or certFile and keyFile/]);
  t.match(errs(listener([{ certFile: '/c' }])), [/set keyFile too/]);
  t.match(errs(listener([{ secret: 'a' }, { secret: 'a' }])), [/certificates\[1\].secret: TLSCertificate "a" is listed twice/]);
  t.match(errs(listener([{ secret: 'Not_A_Name' }])), [/certificates\[0\].secret/]);
  // References: the API refuses a Gateway naming a TLSCertificate that does not exist; a pushed
  // snapshot (secretsWithheld) does not, as the control plane sends them only to gateways.
  const parsed = parseAll([listener([{ secret: 'missing' }])]);
  t.notOk(parsed.ok);
  if (!parsed.ok) t.match(parsed.errors[0], { path: 'Gateway/edge: spec.listeners[0].tls.certificates[0].secret', message: /names TLSCertificate "missing", which does not exist/ });
  t.ok(parseAll([listener([{ secret: 'missing' }])], { secretsWithheld: true }).ok);
});
