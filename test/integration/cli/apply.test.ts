/**
 * apply, diff, get, delete and version as a user runs them (the built `meshlet` against a real
 * control plane): apply lets the control plane judge references against what it stores; dry runs
 * write nothing; diff's exit codes; get's output formats and selectors; global flags anywhere.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { MAIN, startControlPlane, tmpDir } from '../lib/meshlet';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], opts: { env?: Record<string, string | undefined>; input?: string } = {}): Run {
  const env: Record<string, string | undefined> = { ...process.env, MESHLET_SERVER: undefined, MESHLET_CONFIG: '/nonexistent/meshlet.yaml', MESHLET_TOKEN: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const r = spawnSync(process.execPath, [MAIN, ...args], { input: opts.input, env: env as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `run` without blocking this process (for tests whose server lives in it). */
function runAsync(args: string[], opts: { env?: Record<string, string | undefined> } = {}): Promise<Run> {
  const env: Record<string, string | undefined> = { ...process.env, MESHLET_SERVER: undefined, MESHLET_CONFIG: '/nonexistent/meshlet.yaml', MESHLET_TOKEN: undefined, ...opts.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  const c = spawn(process.execPath, [MAIN, ...args], { env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

const DP = `apiVersion: meshlet.dev/v1
kind: DestinationPolicy
metadata: {name: catalog, labels: {team: shop}}
spec:
  service: catalog
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
`;
const SVC = `apiVersion: meshlet.dev/v1
kind: Service
metadata: {name: catalog}
spec: {endpoints: [{address: 127.0.0.1, port: 9, labels: {version: v1}}]}
`;
const ROUTE = `apiVersion: meshlet.dev/v1
kind: Route
metadata: {name: catalog, labels: {team: shop, tier: front}}
spec:
  hosts: [catalog]
  rules:
    - name: canary
      matches: [{headers: [{name: x-canary, exact: "true"}]}]
      backends: [{service: catalog, subset: v2}]
    - name: split
      backends: [{service: catalog, subset: v1, weight: 80}, {service: catalog, subset: v2, weight: 20}]
`;
const RLP = `apiVersion: meshlet.dev/v1
kind: RateLimitPolicy
metadata: {name: catalog}
spec:
  service: catalog
  limits:
    - {name: per-caller, routes: [catalog/split], descriptors: [source-service], requests: 100, per: 1s}
`;

t.test('apply, dry runs, diff, get, delete against a real control plane', async (t) => {
  const dir = tmpDir('meshlet-cli-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startControlPlane(path.join(dir, 'data'));
  t.teardown(() => cp.stop());
  const env = { MESHLET_SERVER: cp.api, MESHLET_TOKEN: cp.token };
  const file = (name: string, text: string): string => {
    const p = path.join(dir, name);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, text);
    return p;
  };

  // The DestinationPolicy and Service first, then a file with only the Route: its subsets are
  // defined by what is stored, which only the control plane knows.
  let r = run(['apply', '-f', file('dp.yaml', DP + '---\n' + SVC)], { env });
  t.equal(r.code, 0, r.stderr);
  r = run(['apply', '-f', file('route.yaml', ROUTE)], { env });
  t.equal(r.code, 0, `a Route alone, using stored subsets, applies: ${r.stderr}`);
  t.match(r.stdout, /^Route\/catalog created$/m);
  // README's RateLimitPolicy on a stored route.
  r = run(['apply', '-f', '-'], { env, input: RLP });
  t.equal(r.code, 0, `a RateLimitPolicy naming a stored route applies: ${r.stderr}`);
  // What get prints, apply takes back.
  const yaml = run(['get', 'route', 'catalog', '-o', 'yaml'], { env }).stdout;
  r = run(['apply', '-f', '-'], { env, input: yaml });
  t.equal(r.code, 0, `get -o yaml | apply -f - works: ${r.stderr}`);
  t.match(r.stdout, /Route\/catalog unchanged/);

  // A reference error comes from the server, with its field path; nothing is applied.
  r = run(['apply', '-f', '-'], { env, input: ROUTE.replace('subset: v2}]\n    - name: split', 'subset: v3}]\n    - name: split') });
  t.equal(r.code, 1);
  t.match(r.stderr, /Route\/catalog: spec\.rules\[0\]\.backends\[0\]\.subset: .*v3/, "the server's field-path error is printed");
  // A syntax error is found locally, in every file, before any request.
  r = run(['apply', '-f', file('bad/a.yaml', ROUTE.replace('hosts:', 'hostz:')), '-f', file('bad/b.yaml', 'kind: [')], { env: { MESHLET_SERVER: 'http://127.0.0.1:1' } });
  t.equal(r.code, 1);
  t.match(r.stderr, /a\.yaml: Route\/catalog: spec\.hostz/);
  t.match(r.stderr, /b\.yaml is not valid YAML/);
  t.notMatch(r.stderr, /cannot reach/, 'no request was made');

  // --dry-run=server: full checks, nothing written.
  const changed = file('changed.yaml', ROUTE.replace('weight: 80', 'weight: 70'));
  r = run(['apply', '-f', changed, '--dry-run=server'], { env });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Route\/catalog updated \(dry run: server\)/);
  t.match(run(['get', 'route', 'catalog', '-o', 'yaml'], { env }).stdout, /weight: 80/, 'the dry run wrote nothing');
  r = run(['apply', '-f', '-', '--dry-run=server'], { env, input: ROUTE.replace('subset: v1,', 'subset: v9,') });
  t.equal(r.code, 1, 'a server dry run refuses a bad reference');
  t.match(r.stderr, /subset.*v9/);
  r = run(['apply', '-f', '-', '--dry-run=client'], { env: { MESHLET_SERVER: 'http://127.0.0.1:1' }, input: ROUTE });
  t.equal(r.code, 0, 'a client dry run needs no control plane');
  t.equal(run(['apply', '-f', changed, '--dry-run=maybe'], { env }).code, 2);

  // diff: exit 1 and a unified diff when different; 0 when not; 2 on an error.
  r = run(['diff', '-f', changed], { env });
  t.equal(r.code, 1);
  t.match(r.stdout, /^--- stored\/Route\/catalog\n\+\+\+ file\/Route\/catalog\n@@ .* @@\n/);
  t.match(r.stdout, /^-\s+weight: 80$/m);
  t.match(r.stdout, /^\+\s+weight: 70$/m);
  t.equal(run(['diff', '-f', path.join(dir, 'route.yaml')], { env }).code, 0, 'no difference: exit 0');
  t.equal(run(['diff', '-f', path.join(dir, 'nope.yaml')], { env }).code, 2, 'an error: exit 2');

  // get: all, -o name, jsonpath, wide, selectors, AGE; global flags before or after the verb (in parallel: read-only).
  const [getAll, names, jp1, jp2, wide, sel1, sel2, sel3, before, after] = await Promise.all([
    runAsync(['get', 'all'], { env }),
    runAsync(['get', 'all', '-o', 'name'], { env }),
    runAsync(['get', 'routes', '-o', 'jsonpath={.items[*].spec.hosts[0]}'], { env }),
    runAsync(['get', 'route', 'catalog', '-o', 'jsonpath={.metadata.labels.tier}'], { env }),
    runAsync(['get', 'routes', '-o', 'wide'], { env }),
    runAsync(['get', 'all', '-l', 'team=shop', '-o', 'name'], { env }),
    runAsync(['get', 'all', '-l', 'team=shop,tier!=front', '-o', 'name'], { env }),
    runAsync(['get', 'all', '-l', '!team', '-o', 'name'], { env }),
    runAsync(['--server', cp.api, 'get', 'routes', '-o', 'name'], { env: { MESHLET_TOKEN: cp.token } }),
    runAsync(['get', 'routes', '-o', 'name', `--server=${cp.api}`], { env: { MESHLET_TOKEN: cp.token } }),
  ]);
  t.match(getAll.stdout, /route\/catalog\s+hosts=catalog rules=2\s+\d+s/);
  t.match(getAll.stdout, /destinationpolicy\/catalog/);
  t.match(getAll.stdout, /ratelimitpolicy\/catalog/);
  t.same(names.stdout.trim().split('\n').sort(), ['destinationpolicy/catalog', 'ratelimitpolicy/catalog', 'route/catalog', 'service/catalog']);
  t.equal(jp1.stdout, 'catalog\n');
  t.equal(jp2.stdout, 'front\n');
  t.match(wide.stdout, /backends=catalog:v2,catalog:v1\s+team=shop,tier=front/);
  t.same(sel1.stdout.trim().split('\n').sort(), ['destinationpolicy/catalog', 'route/catalog']);
  t.equal(sel2.stdout.trim(), 'destinationpolicy/catalog');
  t.equal(sel3.stdout.trim().split('\n').length, 2);
  t.equal(before.stdout, 'route/catalog\n', '--server before the verb');
  t.equal(after.stdout, 'route/catalog\n', '--server=URL after it');

  // delete -f: the files' resources, in reverse order (what refers goes first).
  const all = file('all.yaml', [DP, SVC, ROUTE, RLP].join('---\n'));
  r = run(['delete', '-f', all], { env });
  t.equal(r.code, 0, r.stderr);
  t.same(r.stdout.trim().split('\n'), ['RateLimitPolicy/catalog deleted', 'Route/catalog deleted', 'Service/catalog deleted', 'DestinationPolicy/catalog deleted']);
  t.equal(run(['delete', '-f', all], { env }).code, 1, 'deleting what is gone fails');
  t.equal(run(['delete', '-f', all, '--ignore-not-found'], { env }).code, 0);

  // A directory, recursively.
  file('tree/a/dp.yaml', DP);
  file('tree/b/c/route.yaml', ROUTE);
  t.equal(run(['apply', '-f', path.join(dir, 'tree')], { env }).code, 1, 'a directory without -R has no files here');
  r = run(['apply', '-R', '-f', path.join(dir, 'tree')], { env });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /DestinationPolicy\/catalog created\nRoute\/catalog created/);

  // version: client, control plane.
  r = run(['version'], { env });
  t.equal(r.code, 0);
  t.match(r.stdout, /^client version: \d+\.\d+\.\d+/m);
  t.match(r.stdout, /^control plane version: \d+\.\d+\.\d+/m);
  const v = JSON.parse(run(['version', '-o', 'json'], { env }).stdout) as { client: { version: string }; controlPlane: { version: string } };
  t.equal(v.controlPlane.version, v.client.version);
  t.match(run(['version'], { env: { MESHLET_SERVER: 'http://127.0.0.1:1' } }).stdout, /control plane: unreachable/, 'an unreachable control plane is not an error for version');
});
