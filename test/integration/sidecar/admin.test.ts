/**
 * The admin port of a sidecar started with `--config`: /ready, /live, /config_dump (the version in
 * force, the same one the log and the metrics report) and /metrics (Prometheus text with
 * meshlet_requests_total counting what the listeners did). And a bad policy file stops the
 * sidecar at start with the field that is wrong.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { MAIN, echo, h1Upstream, request, route, service, startSidecar } from './helpers';

t.test('admin endpoints', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, [service('web', [{ port: up.port, labels: { version: 'v1' } }]), route('web', ['web'], [{ backends: [{ service: 'web' }] }])], {
    service: 'frontend',
  });

  const ready = await request({ port: sc.admin, path: '/ready' });
  t.equal(ready.status, 200, '/ready is 200 once the static config is applied');
  t.equal((await request({ port: sc.admin, path: '/live' })).status, 200, '/live is 200');

  const applied = sc.logs.find((l) => l.msg === 'snapshot applied');
  t.ok(applied, "the sidecar logged 'snapshot applied'");
  const version = String(applied?.version);
  t.match(version, /^[0-9a-f]{12}$/, 'the static config version is a content hash');

  const dump = await request({ port: sc.admin, path: '/config_dump' });
  t.equal(dump.status, 200);
  t.match(String(dump.headers['content-type']), /^application\/json/);
  const d = dump.json() as {
    service: string;
    source: string;
    version: string;
    resources: { kind: string; metadata: { name: string } }[];
    services: { name: string; endpoints: { address: string; port: number; labels: Record<string, string> }[] }[];
  };
  t.equal(d.version, version, '/config_dump shows the version in force');
  t.equal(d.service, 'frontend');
  t.ok(d.source.includes(sc.configFile), 'and where it came from');
  t.same(
    d.resources.map((r) => `${r.kind}/${r.metadata.name}`).sort(),
    ['Route/web', 'Service/web'],
    'and the resources',
  );
  t.same(
    d.services.find((s) => s.name === 'web')?.endpoints,
    [{ address: '127.0.0.1', port: up.port, labels: { version: 'v1' }, meshed: false }],
    'and the endpoints of each service',
  );

  // Some traffic to count: two answered, one without a route.
  for (let i = 0; i < 2; i++) t.equal((await request({ port: sc.outbound, path: '/', headers: { host: 'web' } })).status, 200);
  t.equal((await request({ port: sc.outbound, path: '/', headers: { host: 'elsewhere' } })).status, 404);

  const m = await request({ port: sc.admin, path: '/metrics' });
  t.equal(m.status, 200);
  t.match(String(m.headers['content-type']), /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
  t.match(m.text, /^# TYPE meshlet_requests_total counter$/m);
  t.match(
    m.text,
    /^meshlet_requests_total\{direction="outbound",source="frontend",destination="web",route="web\/[^"]+",response_code_class="2xx",response_code="200",response_flags="-"\} 2$/m,
    'answered requests are counted, per source, destination and route',
  );
  t.match(
    m.text,
    /^meshlet_requests_total\{direction="outbound",source="frontend",destination="unknown",route="unknown",response_code_class="4xx",response_code="404",response_flags="NR"\} 1$/m,
    'the no-route answer is counted with its flag',
  );
  t.match(m.text, new RegExp(`^meshlet_policy_info\\{version="${version}"\\} 1$`, 'm'), 'the metrics report the same version');
  t.match(m.text, /^meshlet_policy_acks_total 1$/m);

  t.equal((await request({ port: sc.admin, path: '/nope' })).status, 404, 'an unknown admin path is 404');
  t.equal((await request({ port: sc.admin, method: 'POST', path: '/ready', body: '' })).status, 405, 'the admin port is read-only');
});

t.test('a bad policy file stops the sidecar at start, naming the field', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-bad-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'bad.yaml');
  writeFileSync(file, 'apiVersion: meshlet.dev/v1\nkind: Route\nmetadata: { name: web }\nspec:\n  hosts: [web]\n  rules:\n    - backends: [{ service: web }]\n      timout: 1s\n');
  const r = spawnSync(process.execPath, [MAIN, 'sidecar', '--service', 'x', '--config', file, '--outbound', '127.0.0.1:0', '--inbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  t.equal(r.status, 1, 'exit code 1');
  t.match(r.stderr, /spec\.rules\[0\]\.timout/, 'stderr names the field');
});

t.test('the listener limits take flags, checked', async (t) => {
  for (const [flag, value] of [
    ['--headers-timeout', '0'],
    ['--headers-timeout', 'soon'],
    ['--max-header-bytes', '64k'],
  ]) {
    const r = spawnSync(process.execPath, [MAIN, 'sidecar', '--service', 'x', '--config', '/nonexistent.yaml', flag, value], { encoding: 'utf8', timeout: 20_000 });
    t.equal(r.status, 2, `${flag} ${value}: usage error, exit 2`);
    t.match(r.stderr, new RegExp(`${flag}: expected a positive integer`), `${flag} ${value}: says what is expected`);
  }
  const help = spawnSync(process.execPath, [MAIN, 'sidecar', '--help'], { encoding: 'utf8', timeout: 20_000 });
  t.match(help.stdout, /--headers-timeout MS/);
  t.match(help.stdout, /--max-header-bytes N/);
});
