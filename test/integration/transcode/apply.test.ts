/**
 * `meshlet apply -f` embeds the `file:` protos of a GrpcTranscoding policy (relative to the YAML
 * file) and validates them locally: the real CLI, --dry-run (the control-plane path is covered by
 * up.test.ts, where pricing's policy travels through the control plane to the sidecars).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { MAIN } from '../sidecar/helpers';

const PROTO = `syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";
import "types.proto";
service Greeter { rpc Hello(HelloRequest) returns (HelloReply) { option (google.api.http) = { get: "/v1/hello/{name}" }; } }
`;
const TYPES = `syntax = "proto3";
package demo.v1;
message HelloRequest { string name = 1; }
message HelloReply { string text = 1; }
`;
const policy = (file: string, extra = '') => `apiVersion: meshlet.dev/v1
kind: GrpcTranscoding
metadata: {name: greeter}
spec:
  service: greeter
  protos:
    - file: ${file}
    - {file: protos/types.proto, name: types.proto}
  services: [demo.v1.Greeter${extra}]
`;

t.test('meshlet apply -f embeds proto files and reports their errors by field path', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-apply-proto-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'protos'));
  writeFileSync(path.join(dir, 'protos', 'greeter.proto'), PROTO);
  writeFileSync(path.join(dir, 'protos', 'types.proto'), TYPES);
  writeFileSync(path.join(dir, 'protos', 'broken.proto'), 'syntax = "proto3"; service {');
  const apply = (name: string, text: string) => {
    writeFileSync(path.join(dir, name), text);
    // From another working directory: paths are relative to the YAML file.
    return spawnSync(process.execPath, [MAIN, 'apply', '-f', path.join(dir, name), '--dry-run'], { cwd: os.tmpdir(), encoding: 'utf8' });
  };
  const ok = apply('ok.yaml', policy('protos/greeter.proto'));
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /GrpcTranscoding\/greeter valid \(dry run\)/);
  const missing = apply('missing.yaml', policy('protos/nope.proto'));
  t.equal(missing.status, 1);
  t.match(missing.stderr, /GrpcTranscoding\/greeter: spec\.protos\[0\]\.file: cannot read .*nope\.proto: ENOENT/);
  const broken = apply('broken.yaml', policy('protos/broken.proto'));
  t.equal(broken.status, 1);
  t.match(broken.stderr, /GrpcTranscoding\/greeter: spec\.protos\[0\]\.source: .*illegal/);
  const unknown = apply('unknown.yaml', policy('protos/greeter.proto', ', demo.v1.Nope'));
  t.equal(unknown.status, 1);
  t.match(unknown.stderr, /spec\.services\[1\]: service "demo\.v1\.Nope" is not defined by the protos \(they define demo\.v1\.Greeter\)/);
});
