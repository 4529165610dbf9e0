/**
 * Overload protection, tried as an attacker would against the real sidecar process:
 *
 * - many idle connections: at the listener's cap the oldest idle ones are closed, normal requests
 *   are still served and the admin port's /ready answers; when every connection is busy, new ones
 *   are refused; near the real scale, a sidecar whose fd limit is 6,000 takes 10,000 idle
 *   connections (which would exhaust its descriptors) and keeps serving;
 * - requests over the in-flight cap, and any request while memory is above the watermark, get
 *   503 with the `OL` flag; every action is counted in /metrics and logged.
 */
import t from 'tap';
import * as http from 'node:http';
import * as net from 'node:net';
import { echo, h1Upstream, HOST, request, route, service, startSidecar, within } from './helpers';

const policies = (port: number) => [service('web', [{ port }]), route('web', ['web'], [{ backends: [{ service: 'web' }] }])];

/** Opens `n` TCP connections (a few hundred at a time); resolves with them once all connected or failed. */
async function openIdle(t: { teardown(fn: () => void): void }, port: number, n: number): Promise<{ sockets: net.Socket[]; closed: () => number }> {
  const sockets: net.Socket[] = [];
  let closed = 0;
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, n - i) }, () =>
        new Promise<void>((resolve) => {
          const s = net.connect(port, HOST);
          sockets.push(s);
          s.on('error', () => undefined);
          s.on('close', () => {
            closed++;
            resolve();
          });
          s.on('connect', () => resolve());
        }),
      ),
    );
  }
  return { sockets, closed: () => closed };
}

const metric = async (admin: number, re: RegExp): Promise<number> => {
  const r = await request({ port: admin, path: '/metrics' });
  const m = re.exec(r.text);
  return m ? Number(m[1]) : 0;
};

const waitUntil = async (what: string, check: () => boolean | Promise<boolean>): Promise<void> => {
  await within(
    (async () => {
      while (!(await check())) await new Promise((r) => setTimeout(r, 25));
    })(),
    15_000,
    what,
  );
};

t.test('at the connection cap the oldest idle connections are closed; requests and /ready still answer', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, policies(up.port), { args: ['--max-connections', '50'] });
  const idle = await openIdle(t, sc.outbound, 200);
  await waitUntil('150 idle connections closed by the sidecar', () => idle.closed() >= 150);
  t.ok(idle.sockets.slice(0, 150).every((s) => s.destroyed), 'the oldest ones went first');
  const r = await request({ port: sc.outbound, path: '/x', headers: { host: 'web' } });
  t.equal(r.status, 200, 'a normal request is served');
  t.equal((await request({ port: sc.admin, path: '/ready' })).status, 200, 'admin /ready answers');
  t.ok((await metric(sc.admin, /meshlet_overload_actions_total\{listener="outbound",action="idle_closed"\} (\d+)/)) >= 150, 'counted');
  t.equal(await metric(sc.admin, /^meshlet_downstream_connections_limit (\d+)$/m), 50, 'the limit is exported');
  t.ok(sc.logs.some((l) => l.msg === 'overload: idle connection closed to make room'), 'logged');
  t.ok(sc.logs.filter((l) => String(l.msg).startsWith('overload: idle')).length < 5, 'logged at a limited rate');
});

t.test('when every connection is busy, new ones are refused, and requests over the in-flight cap get 503 OL', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await h1Upstream(t, (_req, res) => held.push(res));
  t.teardown(() => held.forEach((r) => r.destroy()));
  const sc = await startSidecar(t, policies(up.port), { args: ['--max-connections', '10', '--max-requests', '6'] });
  const inflight = Array.from({ length: 6 }, () => request({ port: sc.outbound, path: '/hold', headers: { host: 'web' } }).catch((e: Error) => e));
  await waitUntil('6 requests held by the upstream', () => held.length === 6);
  const over = await request({ port: sc.outbound, path: '/more', headers: { host: 'web' } });
  t.equal(over.status, 503, 'the 7th request in flight is shed');
  t.equal(over.headers['x-meshlet-flags'], 'OL', 'with the OL flag');
  // Fill the other 4 connection slots with requests still sending their headers (busy, not idle).
  const partial = await openIdle(t, sc.outbound, 4);
  partial.sockets.forEach((s) => s.write('GET /slow HTTP/1.1\r\nhost: web\r\n'));
  await new Promise((r) => setTimeout(r, 200));
  const refused = await request({ port: sc.outbound, path: '/x', headers: { host: 'web' } }).then(
    (r) => r.status,
    (e: Error) => e.message,
  );
  t.match(String(refused), /ECONNRESET|socket hang up/, 'the 11th connection is refused');
  t.equal(partial.closed(), 0, 'the busy connections were kept');
  t.equal((await request({ port: sc.admin, path: '/ready' })).status, 200, 'admin /ready answers');
  held.splice(0).forEach((r) => r.end('done'));
  const first = await Promise.all(inflight);
  t.ok(first.every((r) => !(r instanceof Error) && r.status === 200), 'the requests in flight complete');
  t.ok((await metric(sc.admin, /meshlet_overload_actions_total\{listener="outbound",action="request_shed"\} (\d+)/)) >= 1, 'sheds counted');
  t.ok((await metric(sc.admin, /meshlet_overload_actions_total\{listener="outbound",action="connection_refused"\} (\d+)/)) >= 1, 'refusals counted');
  t.ok((await metric(sc.admin, /meshlet_requests_total\{[^}]*response_flags="OL"\} (\d+)/)) >= 1, 'and seen as 503 OL in the request metrics');
});

t.test('above the memory watermark: new connections refused, /ready and /metrics still answer', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, policies(up.port), { args: ['--max-memory', '1'] });
  await waitUntil('the sidecar to report overload', async () => (await metric(sc.admin, /^meshlet_overloaded (\d+)$/m)) === 1);
  const r = await request({ port: sc.outbound, path: '/x', headers: { host: 'web' } }).then(
    (r) => r.status,
    (e: Error) => e.message,
  );
  t.comment(`outbound: ${String(r)}`);
  t.match(String(r), /ECONNRESET|socket hang up/, 'the connection is refused');
  t.equal((await request({ port: sc.admin, path: '/ready' })).status, 200, 'admin /ready answers');
  t.ok((await metric(sc.admin, /meshlet_overload_actions_total\{listener="outbound",action="connection_refused"\} (\d+)/)) >= 1, 'counted');
  t.ok(sc.logs.some((l) => String(l.msg).startsWith('overload: memory above the watermark')), 'logged');
});

t.test('near the real scale: 10,000 idle connections to a sidecar limited to 6,000 fds', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  // Default cap from the fd limit: (6000 - 256) / 4 = 1436 per listener.
  const sc = await startSidecar(t, policies(up.port), { wrap: ['prlimit', '--nofile=6000'] });
  const idle = await openIdle(t, sc.outbound, 10_000);
  t.comment(`${idle.closed()} of 10000 idle connections closed by the sidecar`);
  await waitUntil('the sidecar to close all but 1436', () => idle.closed() >= 10_000 - 1436);
  const rs = await Promise.all(Array.from({ length: 20 }, () => request({ port: sc.outbound, path: '/x', headers: { host: 'web' } })));
  t.ok(rs.every((r) => r.status === 200), 'normal requests are served');
  t.equal((await request({ port: sc.admin, path: '/ready' })).status, 200, 'admin /ready answers');
  t.equal(await metric(sc.admin, /^meshlet_downstream_connections_limit (\d+)$/m), 1436, 'the cap derived from the fd limit');
  t.ok(sc.alive(), 'still running');
  t.notOk(/EMFILE/.test(sc.stderr() + JSON.stringify(sc.logs)), 'never ran out of file descriptors');
});
