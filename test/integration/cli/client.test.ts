/**
 * The client commands as a user runs them (the built `meshlet` against a real control plane):
 * apply lets the control plane judge references against what it stores; dry runs write nothing;
 * diff, delete -f, get's output formats and selectors, global flags anywhere, contexts and the
 * token, suggestions for typos, `-o` validated everywhere, version, completion, check.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
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
  const env = { MESHLET_SERVER: cp.api };
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
    runAsync(['--server', cp.api, 'get', 'routes', '-o', 'name']),
    runAsync(['get', 'routes', '-o', 'name', `--server=${cp.api}`]),
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

t.test('-o is validated by every command that takes it; typos get the nearest name', async (t) => {
  const env = { MESHLET_SERVER: 'http://127.0.0.1:1' };
  const cases = [['status', '-o', 'yaml2'], ['status', '-o', 'foo'], ['get', 'routes', '-o', 'table'], ['stat', '-o', 'yaml2'], ['version', '-o', 'xml'], ['logs', 'x', '-o', 'text'], ['check', '-o', 'foo'], ['apply', '-f', '-', '-o', 'yaml'], ['proxy-config', 'x', '-o', 'wide']];
  const results = await Promise.all(cases.map((args) => runAsync(args, { env })));
  cases.forEach((args, i) => {
    t.equal(results[i]!.code, 2, `${args.join(' ')}: usage error`);
    t.match(results[i]!.stderr, /-o must be one of/, args.join(' '));
  });
  let r = run(['aply', '-f', 'x'], { env });
  t.equal(r.code, 2);
  t.match(r.stderr, /unknown command "aply"; did you mean `apply`\?/);
  r = run(['get', 'routes', '--outptu', 'json'], { env });
  t.match(r.stderr, /unknown flag --outptu; did you mean --output\?/);
  r = run(['apply', '--filname', 'x'], { env });
  t.match(r.stderr, /did you mean --filename\?/);
  r = run(['config', 'use-contxt', 'x'], { env });
  t.match(r.stderr, /did you mean `use-context`\?/);
});

t.test('contexts in the config file, --context, and MESHLET_TOKEN as a bearer token', async (t) => {
  const seen: { url?: string; auth?: string }[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ version: 'v1', revision: 1, convergence: null, sidecars: [] }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dir = tmpDir('meshlet-config-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = path.join(dir, 'config.yaml');
  const env = { MESHLET_CONFIG: cfg };
  let r = run(['config', 'set-context', 'dev', '--server', url, '--token', 'from-file'], { env });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /context "dev" created and made current/);
  t.equal(run(['config', 'set-context', 'prod', '--server', 'http://127.0.0.1:1'], { env }).code, 0);
  t.match(run(['config', 'get-contexts'], { env }).stdout, /\*\s+dev\s+http/);
  t.notMatch(run(['config', 'view'], { env }).stdout, /from-file/, 'view hides tokens');

  r = await runAsync(['status'], { env });
  t.equal(r.code, 0, `the current context's server is used: ${r.stderr}`);
  t.equal(seen.at(-1)?.auth, 'Bearer from-file', "the context's token is sent");
  r = await runAsync(['status'], { env: { ...env, MESHLET_TOKEN: 'from-env' } });
  t.equal(seen.at(-1)?.auth, 'Bearer from-env', 'MESHLET_TOKEN wins over the file');
  t.equal((await runAsync(['status', '--context', 'prod'], { env })).code, 1, '--context picks another (unreachable) control plane');
  t.equal(run(['config', 'use-context', 'prod'], { env }).code, 0);
  t.equal(run(['config', 'current-context'], { env }).stdout, 'prod\n');
  t.equal((await runAsync(['status'], { env })).code, 1, 'now the current context is prod');
  t.equal((await runAsync(['--context', 'dev', 'status'], { env })).code, 0, '--context before the verb');
  t.equal((await runAsync(['status'], { env: { ...env, MESHLET_SERVER: url } })).code, 0, 'MESHLET_SERVER wins over the current context');
  r = await runAsync(['status', '--context', 'nope'], { env });
  t.equal(r.code, 2);
  t.match(r.stderr, /no context "nope"/);
  writeFileSync(cfg, 'contexts: [{name: x}]\n');
  r = await runAsync(['status'], { env });
  t.equal(r.code, 1);
  t.match(r.stderr, /contexts\[0\]\.server: must be a URL/, 'a broken config file names the field');
});

t.test('a closed pipe ends every command quietly', async (t) => {
  const dir = tmpDir('meshlet-pipe-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'logs', 'catalog'), { recursive: true });
  const line = JSON.stringify({ level: 30, time: Date.now(), msg: 'x'.repeat(200) });
  writeFileSync(path.join(dir, 'logs', 'catalog', 'catalog-0.log'), (line + '\n').repeat(20_000));
  for (const cmd of [`logs catalog --data-dir ${dir}`, `logs catalog -o json --data-dir ${dir}`, 'completion bash', '--help']) {
    const r = spawnSync('bash', ['-c', `set -o pipefail; "${process.execPath}" "${MAIN}" ${cmd} 2>"${dir}/err" | head -1 >/dev/null; echo "rc=$?"; cat "${dir}/err"`], { encoding: 'utf8', timeout: 30_000 });
    t.equal(r.stdout.trim(), 'rc=0', `meshlet ${cmd} | head -1: no stack trace, exit 0 (${r.stdout})`);
  }
});

t.test('completion scripts', async (t) => {
  const bash = run(['completion', 'bash']);
  t.equal(bash.code, 0);
  t.match(bash.stdout, /complete -F _meshlet meshlet/);
  t.match(bash.stdout, /apply\) flags="[^"]*--dry-run[^"]*--filename/);
  const syntax = spawnSync('bash', ['-n'], { input: bash.stdout, encoding: 'utf8' });
  t.equal(syntax.status, 0, `bash accepts it: ${syntax.stderr}`);
  // Completing `meshlet ap` in bash.
  const r = spawnSync('bash', ['-c', `${bash.stdout}\nCOMP_WORDS=(meshlet ap); COMP_CWORD=1; _meshlet; echo "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
  t.equal(r.stdout.trim(), 'apply');
  t.match(run(['completion', 'zsh']).stdout, /^#compdef meshlet/);
  t.match(run(['completion', 'fish']).stdout, /complete -c meshlet -n '__fish_seen_subcommand_from get' -l selector/);
  t.equal(run(['completion', 'tcsh']).code, 2);
});
