/**
 * The snapshot version is the content hash of the canonical JSON of every resource and endpoint;
 * the builder makes it from parts (each resource's canonical JSON once per stored object, each
 * endpoint's by a serialiser that knows its fields), which must give the very same text.
 */
import { createHash } from 'node:crypto';
import t from 'tap';
import { canonicalJson } from '../../../control-plane/fsutil';
import { SnapshotBuilder, endpointJson } from '../../../control-plane/snapshot-builder';
import type { WireResource } from '../../../control-plane/store';
import type { Endpoint } from '../../../src/policy/types';

const M = 'meshlet.dev/v1';

t.test('endpointJson is canonicalJson, whatever the fields', async (t) => {
  const eps: Endpoint[] = [
    { service: 'web', address: '10.0.0.1', port: 80, labels: {}, weight: 1, meshed: true, id: 'web-0' },
    { service: 'web', address: '10.0.0.2', port: 80, labels: { zone: 'b', app: 'web "x"' }, weight: 3, meshed: true, id: 'web-1', identity: 'spiffe://mesh/ns/default/sa/web' },
    { service: 'db', address: 'db.example.com', port: 5432, labels: { z: '1' }, weight: 1, meshed: false },
    { service: 'odd', address: '::1', port: 1, labels: {}, weight: 1, meshed: false, extra: { b: 1, a: [2, { d: 1, c: 0 }] } } as unknown as Endpoint,
    { service: 'odd', address: '::1', port: 2, labels: {}, weight: 1, meshed: false, id: undefined },
  ];
  for (const e of eps) t.equal(endpointJson(e), canonicalJson(e), `${e.service} ${e.address}:${e.port}`);
});

t.test('the version is the SHA-256 of the canonical JSON of { resources, endpoints }', async (t) => {
  const resources = [
    { apiVersion: M, kind: 'Route', metadata: { name: 'r', labels: { b: '1', a: '2' } }, spec: { rules: [{ backends: [{ weight: 1, service: 's' }] }], hosts: ['r'] } },
    { kind: 'Service', apiVersion: M, metadata: { name: 's' }, spec: { dependencies: ['r'] } },
  ] as unknown as WireResource[];
  const endpoints: Endpoint[] = [
    { service: 'a', address: '10.0.0.1', port: 80, labels: { y: '1', x: '2' }, weight: 1, meshed: true, id: 'a-0' },
    { service: 'b', address: '10.0.0.2', port: 80, labels: {}, weight: 1, meshed: true, id: 'b-0' },
    { service: 'b', address: '10.0.0.3', port: 80, labels: {}, weight: 1, meshed: true, id: 'b-1' },
  ];
  const b = new SnapshotBuilder({ all: () => resources, revision: 7 } as never, { endpoints: () => endpoints }).build();
  t.equal(b.version, createHash('sha256').update(canonicalJson({ resources, endpoints })).digest('hex').slice(0, 12));
  t.same([...(b.endpointsByService ?? new Map()).entries()], [
    ['a', canonicalJson([endpoints[0]])],
    ['b', canonicalJson([endpoints[1], endpoints[2]])],
  ], 'endpoints by service, canonical, in service order');
});
