/** GrpcTranscoding parsing, table-driven like parse.test.ts: every field, with its field-path errors. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { runCases, type Case } from './cases';
import { embedProtoFiles } from '../../../src/grpc/transcode/embed';
import { compileSnapshot } from '../../../src/snapshot/compile';
import { parseAll } from '../../../src/policy/parse';
import type { GrpcTranscodingResource, Resource } from '../../../src/policy/types';

const PROTO = `syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";
service Greeter {
  rpc Hello(HelloRequest) returns (HelloReply) { option (google.api.http) = { get: "/v1/hello/{name}" }; }
}
message HelloRequest { string name = 1; }
message HelloReply { string text = 1; }
`;
const gt = (spec: Record<string, unknown>, name = 'greeter') => ({ apiVersion: 'meshlet.dev/v1', kind: 'GrpcTranscoding', metadata: { name }, spec });
const good = (extra: Record<string, unknown> = {}) => ({ service: 'greeter', protos: [{ name: 'greeter.proto', source: PROTO }], services: ['demo.v1.Greeter'], ...extra });
const spec = (r: Resource) => (r as GrpcTranscodingResource).spec;

const cases: Case[] = [
  {
    name: 'minimal, with defaults',
    input: gt(good()),
    check: (r) => t.match(spec(r), { service: 'greeter', unknownMethods: 'reject', ignoreUnknownQueryParameters: false, emitDefaults: false, maxRequestBytes: 4194304, maxResponseBytes: 4194304 }),
  },
  { name: 'unknown spec field', input: gt(good({ protoFiles: [] })), error: { path: 'spec.protoFiles', message: /unknown field/ } },
  // service
  { name: 'service required', input: gt({ ...good(), service: undefined }), error: { path: 'spec.service', message: /required/ } },
  { name: 'service bad name', input: gt(good({ service: 'Greeter_1' })), error: { path: 'spec.service', message: /lower-case/ } },
  // protos
  { name: 'protos required', input: gt({ ...good(), protos: undefined }), error: { path: 'spec.protos', message: /required/ } },
  { name: 'protos empty', input: gt(good({ protos: [] })), error: { path: 'spec.protos', message: /at least 1/ } },
  { name: 'proto not an object', input: gt(good({ protos: ['x.proto'] })), error: { path: 'spec.protos[0]', message: /must be an object/ } },
  { name: 'proto unknown field', input: gt(good({ protos: [{ name: 'a.proto', source: PROTO, path: 'x' }] })), error: { path: 'spec.protos[0].path', message: /unknown field/ } },
  { name: 'proto name required', input: gt(good({ protos: [{ source: PROTO }] })), error: { path: 'spec.protos[0].name', message: /required/ } },
  { name: 'proto name must end in .proto', input: gt(good({ protos: [{ name: 'greeter', source: PROTO }] })), error: { path: 'spec.protos[0].name', message: /\.proto/ } },
  { name: 'proto source required', input: gt(good({ protos: [{ name: 'a.proto' }] })), error: { path: 'spec.protos[0].source', message: /required/ } },
  { name: 'proto source not a string', input: gt(good({ protos: [{ name: 'a.proto', source: 3 }] })), error: { path: 'spec.protos[0].source', message: /must be a string/ } },
  { name: 'proto file not embedded', input: gt(good({ protos: [{ file: 'greeter.proto' }] })), error: { path: 'spec.protos[0].file', message: /meshlet apply -f/ } },
  { name: 'proto file and source', input: gt(good({ protos: [{ name: 'a.proto', file: 'a.proto', source: PROTO }] })), error: { path: 'spec.protos[0].file', message: /not both/ } },
  { name: 'duplicate proto name', input: gt(good({ protos: [{ name: 'a.proto', source: PROTO }, { name: 'a.proto', source: PROTO }] })), error: { path: 'spec.protos[1].name', message: /duplicate/ } },
  { name: 'proto syntax error', input: gt(good({ protos: [{ name: 'a.proto', source: 'syntax = "proto3"; message {' }] })), error: { path: 'spec.protos[0].source', message: /illegal/ } },
  { name: 'proto missing import', input: gt(good({ protos: [{ name: 'a.proto', source: 'syntax = "proto3"; import "other.proto";' }] })), error: { path: 'spec.protos[0].source', message: /imports "other\.proto", which is not one of/ } },
  { name: 'proto unresolved type', input: gt(good({ protos: [{ name: 'a.proto', source: 'syntax = "proto3"; package p; message A { Missing m = 1; }' }], services: ['p.S'] })), error: { path: 'spec.protos', message: /Missing/ } },
  {
    name: 'bad path template',
    input: gt(good({ protos: [{ name: 'a.proto', source: PROTO.replace('/v1/hello/{name}', 'v1/{name}') }] })),
    error: { path: 'spec.services[0]', message: /\/demo\.v1\.Greeter\/Hello: invalid path template "v1\/\{name\}": must start with "\/"/ },
  },
  {
    name: 'path variable not a field',
    input: gt(good({ protos: [{ name: 'a.proto', source: PROTO.replace('/v1/hello/{name}', '/v1/hello/{nom}') }] })),
    error: { path: 'spec.services[0]', message: /has no field "nom"/ },
  },
  {
    name: 'body field not a field',
    input: gt(good({ protos: [{ name: 'a.proto', source: PROTO.replace('get: "/v1/hello/{name}"', 'post: "/v1/hello" body: "greeting"') }] })),
    error: { path: 'spec.services[0]', message: /body "greeting": demo\.v1\.HelloRequest has no field/ },
  },
  // services
  { name: 'services required', input: gt({ ...good(), services: undefined }), error: { path: 'spec.services', message: /required/ } },
  { name: 'services empty', input: gt(good({ services: [] })), error: { path: 'spec.services', message: /at least 1/ } },
  { name: 'services bad name', input: gt(good({ services: ['demo v1'] })), error: { path: 'spec.services[0]', message: /fully-qualified/ } },
  { name: 'service not in the protos', input: gt(good({ services: ['demo.v1.Nope'] })), error: { path: 'spec.services[0]', message: /not defined by the protos \(they define demo\.v1\.Greeter\)/ } },
  { name: 'leading dot accepted', input: gt(good({ services: ['.demo.v1.Greeter'] })) },
  // options
  { name: 'unknownMethods passthrough', input: gt(good({ unknownMethods: 'passthrough' })), check: (r) => t.equal(spec(r).unknownMethods, 'passthrough') },
  { name: 'unknownMethods bad', input: gt(good({ unknownMethods: 'ignore' })), error: { path: 'spec.unknownMethods', message: /one of reject, passthrough/ } },
  { name: 'ignoreUnknownQueryParameters', input: gt(good({ ignoreUnknownQueryParameters: true })), check: (r) => t.equal(spec(r).ignoreUnknownQueryParameters, true) },
  { name: 'ignoreUnknownQueryParameters bad', input: gt(good({ ignoreUnknownQueryParameters: 'yes' })), error: { path: 'spec.ignoreUnknownQueryParameters', message: /true or false/ } },
  { name: 'emitDefaults', input: gt(good({ emitDefaults: true })), check: (r) => t.equal(spec(r).emitDefaults, true) },
  { name: 'emitDefaults bad', input: gt(good({ emitDefaults: 1 })), error: { path: 'spec.emitDefaults', message: /true or false/ } },
  { name: 'maxRequestBytes', input: gt(good({ maxRequestBytes: 1024 })), check: (r) => t.equal(spec(r).maxRequestBytes, 1024) },
  { name: 'maxRequestBytes zero', input: gt(good({ maxRequestBytes: 0 })), error: { path: 'spec.maxRequestBytes', message: /between 1/ } },
  { name: 'maxResponseBytes', input: gt(good({ maxResponseBytes: 2048 })), check: (r) => t.equal(spec(r).maxResponseBytes, 2048) },
  { name: 'maxResponseBytes not an integer', input: gt(good({ maxResponseBytes: 1.5 })), error: { path: 'spec.maxResponseBytes', message: /integer/ } },
];

runCases(cases);

t.test('one GrpcTranscoding per service', async (t) => {
  const r = parseAll([gt(good(), 'a'), gt(good(), 'b')]);
  t.notOk(r.ok);
  if (!r.ok) t.match(r.errors, [{ path: 'GrpcTranscoding/b: spec.service', message: /already has GrpcTranscoding "a"/ }]);
});

t.test('compiled once per snapshot into a transcoder keyed by service', async (t) => {
  const r = parseAll([gt(good())]);
  t.ok(r.ok);
  if (!r.ok) return;
  const snap = compileSnapshot({ version: '1', resources: r.value, endpoints: [] });
  const tc = snap.transcoders.get('greeter');
  t.ok(tc, 'a transcoder for the service');
  const m = tc?.transcoder.match('GET', '/v1/hello/ann');
  t.ok(m && 'binding' in m && m.binding.grpcPath === '/demo.v1.Greeter/Hello' && m.vars[0] === 'ann');
  const again = compileSnapshot({ version: '2', resources: r.value, endpoints: [] });
  t.equal(again.transcoders.get('greeter')?.transcoder, tc?.transcoder, 'the same protos are not compiled twice');
});

t.test('embedProtoFiles: file -> source, relative to the YAML file; unreadable files named', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-embed-'));
  writeFileSync(path.join(dir, 'greeter.proto'), PROTO);
  const doc = gt({ ...good(), protos: [{ file: 'greeter.proto' }] });
  const e = embedProtoFiles([doc, { kind: 'Route' }], dir);
  t.ok(e.ok);
  if (e.ok) {
    t.same((e.value[0] as { spec: { protos: unknown[] } }).spec.protos, [{ name: 'greeter.proto', source: PROTO }]);
    t.ok(parseAll(e.value.slice(0, 1)).ok, 'the embedded document parses');
  }
  const bad = embedProtoFiles([gt({ ...good(), protos: [{ file: 'missing.proto' }] })], dir);
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.errors, [{ path: 'GrpcTranscoding/greeter: spec.protos[0].file', message: /cannot read .*missing\.proto: ENOENT/ }]);
});
