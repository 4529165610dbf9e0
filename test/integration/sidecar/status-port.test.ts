/**
 * The sidecar's two admin listeners (as Istio's 15000 / 15020): `--status` (the pod address)
 * serves /ready /live /metrics /stats only; config_dump, logging, quitquitquit, tap and explain
 * are on the loopback admin port alone. The control plane reads stats and lists Prometheus
 * targets on the status port. A sidecar with an identity also serves the admin paths there over
 * mTLS to the control plane's own certificate alone, so the CLI reaches it through the control plane.
 */
import * as http from 'node:http';
import * as tls from 'node:tls';
import t from 'tap';
import { controlPlaneSpiffeId } from '../../../src/security/spiffe';
import { apiFetch, cli, eventually, portOf, start, startControlPlane, startSidecar, tmpDir } from '../lib/meshlet';
import { issue, type Workload } from '../lib/mtls';

function req(port: number, path: string, method = 'GET'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      // /tap streams: the status is enough.
      if (path.startsWith('/tap') && res.statusCode === 200) {
        resolve({ status: 200, text: '' });
        r.destroy();
        return;
      }
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    r.on('error', reject);
    r.end();
  });
}

t.test('--status serves /ready /live /metrics /stats; the admin paths stay on the loopback admin port', async (t) => {
  const cp = await startControlPlane(tmpDir());
  t.teardown(() => cp.stop());
  const sc = await startSidecar(['--service', 'web', '--id', 'web-1', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--status', '127.0.0.1:0']);
  t.teardown(() => sc.stop());
  const started = sc.lines.find((l) => l.msg === 'sidecar started') as Record<string, unknown>;
  t.ok(started.status, 'the status listener is in the start line');
  const status = portOf(started.status);
  t.not(status, sc.admin);
  await eventually('ready', async () => ((await req(status, '/ready')).status === 200 ? true : undefined));

  for (const p of ['/ready', '/live', '/metrics', '/stats']) t.equal((await req(status, p)).status, 200, `status port: ${p}`);
  for (const [p, m] of [['/config_dump', 'GET'], ['/logging', 'GET'], ['/logging?level=debug', 'POST'], ['/quitquitquit', 'POST'], ['/tap?service=web', 'GET'], ['/explain?url=http://web/', 'GET']] as const) {
    const r = await req(status, p, m);
    t.equal(r.status, 404, `status port: ${m} ${p} is not served`);
    t.match(r.text, /loopback admin port only/);
  }
  t.equal((await req(sc.admin, '/config_dump')).status, 200, 'the admin port has config_dump');
  t.equal((await req(sc.admin, '/logging')).status, 200, 'and logging');

  // The control plane: Prometheus targets and stats on the status port.
  const sd = await eventually('the sidecar registered', async () => {
    const groups = (await (await apiFetch(`${cp.api}/v1/sd/prometheus`)).json()) as { targets: string[]; labels: Record<string, string> }[];
    return groups.find((g) => g.labels.sidecar === 'web-1');
  });
  t.same(sd.targets, [`127.0.0.1:${status}`], 'Prometheus scrapes the status port');
  const stats = (await (await apiFetch(`${cp.api}/v1/stats`)).json()) as { unreachable: unknown[] };
  t.same(stats.unreachable, [], 'the control plane reads /stats there');
  t.equal(sc.child.exitCode, null, 'quitquitquit on the status port did nothing');
});

/** One request over TLS to a status port holding `w`'s certificate (or none): the answer, or why there was none. */
function tlsReq(port: number, path: string, w: Workload | undefined, method = 'GET'): Promise<{ status: number; text: string } | { error: string }> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...(w ? { key: w.keyPem, cert: w.chainPem, ca: w.bundlePem } : {}), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      const r = http.request({ createConnection: () => s, path, method, headers: { host: 'status', connection: 'close' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      r.on('error', (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message }));
      r.end();
    });
    s.on('error', (e: Error & { code?: string }) => resolve({ error: e.code ?? e.message }));
    s.setTimeout(5000, () => s.destroy());
  });
}

t.test('with an identity, the status port serves the admin paths over mTLS to the control plane alone: proxy-config, explain, explain --last, cache purge and tap reach the sidecar', async (t) => {
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const tok = cli(['token', 'create', '--service', 'web', '--ttl', '1h', '--data-dir', dir, '-o', 'json']);
  t.equal(tok.code, 0, tok.stderr);
  const p = start(['sidecar', '--service', 'web', '--id', 'web-1', '--control-plane', `127.0.0.1:${cp.pushPort}`, '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--status', '127.0.0.1:0'], {
    MESHLET_JOIN_TOKEN: (JSON.parse(tok.stdout) as { token: string }).token,
  });
  t.teardown(() => p.stop());
  const started = await p.waitFor((l) => l.msg === 'sidecar started');
  const status = portOf(started.status);
  await p.waitFor((l) => l.msg === 'workload certificate installed');
  await eventually('registered', async () => ((await apiFetch(`${cp.api}/v1/sidecars/web-1/config_dump`)).status === 200 ? true : undefined));

  // Through the control plane, as the CLI does.
  const dump = await apiFetch(`${cp.api}/v1/sidecars/web-1/config_dump`);
  t.equal(dump.status, 200, 'proxy-config reaches the sidecar (its registered port is the status port)');
  t.equal(((await dump.json()) as { id: string }).id, 'web-1');
  const ex = await apiFetch(`${cp.api}/v1/explain?sidecar=web-1&url=${encodeURIComponent('http://web/')}`);
  t.equal(ex.status, 200, `explain reaches the sidecar: ${await ex.clone().text()}`);
  const dec = await apiFetch(`${cp.api}/v1/decisions?id=no-such-request&sidecar=web-1`);
  const decBody = (await dec.json()) as { asked: number; unreachable?: unknown[] };
  t.same([decBody.asked, decBody.unreachable], [1, undefined], 'explain --last asks the sidecar and reaches it');
  const purge = await apiFetch(`${cp.api}/v1/cache/purge`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prefix: '' }) });
  const purgeBody = (await purge.json()) as { sidecars: { id: string; purged?: number; error?: string }[] };
  t.same(purgeBody.sidecars, [{ id: 'web-1', service: 'web', purged: 0 }], 'cache purge reaches the sidecar');
  t.ok(cp.lines.some((l) => l.msg === "control-plane certificate for the sidecars' status ports issued"), 'the control plane signed itself a certificate');

  // The tap: the stream to the sidecar stays up (a second status line still counts it).
  const ctl = new AbortController();
  const tap = await apiFetch(`${cp.api}/v1/tap?service=web`, { signal: ctl.signal });
  t.equal(tap.status, 200);
  const reader = (tap.body as ReadableStream<Uint8Array>).getReader();
  let text = '';
  while ((text.match(/"type":"status"/g) ?? []).length < 2) text += new TextDecoder().decode((await reader.read()).value);
  ctl.abort();
  t.match(text.split('\n')[1] ?? '', /"sidecars":1/, 'the tap stream to the sidecar is up (over mTLS)');

  // From outside: plaintext is told where the path is; only the control plane's certificate gets in.
  const plain = await new Promise<http.IncomingMessage>((resolve) => http.get({ host: '127.0.0.1', port: status, path: '/config_dump', agent: false }, resolve));
  plain.resume();
  t.equal(plain.statusCode, 404, 'plaintext: config_dump is not served');
  t.equal(plain.headers['x-meshlet-admin'], 'mtls', 'and the answer says it is served over mTLS');
  t.equal((await req(status, '/ready')).status, 200, 'probes still work in plaintext');
  const asControlPlane = await issue(dir, 'x', { spiffeId: controlPlaneSpiffeId });
  const ok = await tlsReq(status, '/config_dump', asControlPlane);
  t.equal('status' in ok ? ok.status : ok.error, 200, 'the control plane identity reads config_dump over mTLS');
  const quit = await tlsReq(status, '/quitquitquit', asControlPlane, 'POST');
  t.equal('status' in quit ? quit.status : quit.error, 404, 'quitquitquit is never served on the status port, even to the control plane');
  const logging = await tlsReq(status, '/logging?level=debug', asControlPlane, 'POST');
  t.equal('status' in logging ? logging.status : logging.error, 404, 'nor is /logging');
  const workload = await issue(dir, 'web');
  const wr = await tlsReq(status, '/config_dump', workload);
  t.ok('error' in wr, `a workload certificate (even the sidecar's own service) is closed: ${JSON.stringify(wr)}`);
  const none = await tlsReq(status, '/config_dump', undefined);
  t.ok('error' in none, `no client certificate: refused (${JSON.stringify(none)})`);
  t.ok(p.lines.some((l) => l.msg === 'status port: a TLS client that is not the control plane; closed'), 'the refusal is logged');
  t.equal(p.child.exitCode, null, 'the sidecar still runs');
  // The CLI last (it blocks this process: a pooled API connection would go stale meanwhile).
  const pc = cli(['proxy-config', 'web-1', '-o', 'json'], { server: cp.api });
  t.equal(pc.code, 0, `meshlet proxy-config: ${pc.stderr}`);
  t.match(pc.stdout, /web-1/, 'meshlet proxy-config shows the sidecar');
});
