/**
 * HTTP/1.1 multiplexed over one HTTP/2 connection between two sidecars: a control plane, a client
 * sidecar and a server sidecar (both registered, so the server's inbound is a meshed endpoint),
 * an HTTP/1.1 app. 40 concurrent HTTP/1.1 requests cross the sidecar-to-sidecar hop on one TCP
 * connection (counted from /proc/net/tcp), and the app still gets HTTP/1.1. Off by default (the
 * hop uses HTTP/1.1 connections); a DestinationPolicy with `http2Upgrade: true` turns it on.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { cli, eventually, startControlPlane, startSidecar, tmpDir, type SidecarProc } from '../lib/meshlet';
import { pool, request } from './helpers';

/** ESTABLISHED TCP connections whose local port is `port` (IPv4 and IPv6 tables). */
function established(port: number): number {
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const local = cols[1] as string;
      if (parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port && cols[3] === '01') n++;
    }
  }
  return n;
}

t.test('HTTP/1.1 between sidecars: off by default, multiplexed with http2Upgrade: true', async (t) => {
  const seen: { version: string; via: string | undefined; mark: string | undefined }[] = [];
  const app = http.createServer((req, res) => {
    seen.push({ version: req.httpVersion, via: req.headers.via, mark: req.headers['x-meshlet-orig-proto'] as string | undefined });
    // Slow enough that the 40 requests overlap.
    setTimeout(() => res.end(`hello ${req.url}`), 50);
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => {
    app.close(() => r());
    app.closeAllConnections();
  }));
  const dir = tmpDir();
  const cp = await startControlPlane(dir);
  t.teardown(() => cp.stop());
  const push = `127.0.0.1:${cp.pushPort}`;
  const client: SidecarProc = await startSidecar(['--service', 'client', '--control-plane', push, '--advertise', '127.0.0.1']);
  const server: SidecarProc = await startSidecar(['--service', 'echo', '--app-port', String((app.address() as AddressInfo).port), '--control-plane', push, '--advertise', '127.0.0.1']);
  t.teardown(() => Promise.all([client.stop(), server.stop()]));
  const get = (i: number) => request({ port: client.outbound, path: `/r/${i}`, headers: { host: 'echo' } });
  await eventually('echo reachable', async () => ((await get(0)).status === 200 ? true : undefined));

  const burst = async (): Promise<number> => {
    const rs = await pool(40, 40, get);
    t.ok(
      rs.every((r, i) => r.status === 200 && r.text === `hello /r/${i}`),
      '40 concurrent requests, each answered with its own response',
    );
    return established(server.inbound);
  };

  // Off by default (it costs more CPU per request than HTTP/1.1 between the sidecars today).
  t.equal(seen[seen.length - 1]?.via, '1.1 meshlet, 1.1 meshlet', 'default: the hop between the sidecars is HTTP/1.1');

  const on = 'apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: echo}\nspec: {service: echo, http2Upgrade: true}\n';
  t.equal(cli(['apply', '-f', '-'], { server: cp.api, input: on }).code, 0, 'policy applied');
  await eventually('the policy in force', async () => {
    await get(0);
    return seen[seen.length - 1]?.via === '1.1 meshlet, 2 meshlet' ? true : undefined;
  });
  // Counted once the HTTP/2 connection is up (the requests that waited for the policy may have
  // opened HTTP/1.1 connections meanwhile, more of them on a loaded machine): the 40 concurrent
  // requests must open none.
  const baseline = established(server.inbound);
  const n = seen.length;
  const multiplexed = await burst();
  t.equal(multiplexed - baseline, 0, `multiplexed (http2Upgrade: true): 40 concurrent requests on the one HTTP/2 connection, no new connection into the server sidecar (${multiplexed})`);
  t.ok(seen.slice(n).every((s) => s.via === '1.1 meshlet, 2 meshlet'), 'the hop between the sidecars was HTTP/2 for all of them');
  const last = seen[seen.length - 1];
  t.equal(last?.version, '1.1', 'the app gets HTTP/1.1');
  t.equal(last?.mark, undefined, 'the mark does not reach the app');

  const off = 'apiVersion: meshlet.dev/v1\nkind: DestinationPolicy\nmetadata: {name: echo}\nspec: {service: echo, http2Upgrade: false}\n';
  t.equal(cli(['apply', '-f', '-'], { server: cp.api, input: off }).code, 0, 'policy applied');
  await eventually('the policy in force', async () => {
    await get(0);
    return seen[seen.length - 1]?.via === '1.1 meshlet, 1.1 meshlet' ? true : undefined;
  });
  const plain = await burst();
  t.ok(plain > multiplexed, `http2Upgrade: false: HTTP/1.1 on the hop again, ${plain} connections into the server sidecar`);
  t.equal(seen[seen.length - 1]?.via, '1.1 meshlet, 1.1 meshlet');
});
