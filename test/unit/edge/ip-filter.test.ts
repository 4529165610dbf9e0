import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { clientAddress, compileIpFilter, parseIpFilterConfig, type IpFilter } from '../../../src/edge/ip-filter';

function filter(raw: unknown): IpFilter {
  const r = compileIpFilter(raw, 'spec.ipFilter');
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

t.test('allow and deny CIDRs, IPv4 and IPv6; deny wins; unknown addresses refused', async (t) => {
  const f = filter({ allow: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32'], deny: ['10.9.0.0/16', '2001:db8:bad::/48'] });
  const table: [string | undefined, boolean][] = [
    ['10.1.2.3', true],
    ['10.9.1.1', false],
    ['11.0.0.1', false],
    ['192.168.1.7', true],
    ['192.168.1.8', false],
    ['::ffff:10.1.2.3', true],
    ['::ffff:10.9.0.1', false],
    ['2001:db8::1', true],
    ['2001:DB8:0:0::5', true],
    ['2001:db8:bad::1', false],
    ['2001:db9::1', false],
    ['not-an-ip', false],
    [undefined, false],
  ];
  for (const [addr, allowed] of table) {
    const e = f.check(addr);
    t.equal(e === undefined, allowed, `${addr} ${allowed ? 'allowed' : 'denied'}`);
    if (e) {
      t.equal(e.status, 403);
      t.equal(e.code, 'EDGE_IP_DENIED');
    }
  }
  const denyOnly = filter({ deny: ['0.0.0.0/0'] });
  t.ok(denyOnly.check('8.8.8.8'));
  t.equal(denyOnly.check('::1'), undefined, 'an IPv4 deny-all does not touch IPv6');
});

t.test('client address: the peer, or N trusted hops back along X-Forwarded-For', async (t) => {
  t.equal(clientAddress('::ffff:10.0.0.5', '1.2.3.4', 0), '10.0.0.5', 'no trusted hops: the peer, XFF ignored');
  t.equal(clientAddress('10.0.0.5', '6.6.6.6, 1.2.3.4', 1), '1.2.3.4', 'one trusted proxy: what it saw');
  t.equal(clientAddress('10.0.0.5', ['6.6.6.6', '1.2.3.4, 10.0.0.4'], 2), '1.2.3.4');
  t.equal(clientAddress('10.0.0.5', '1.2.3.4', 5), '1.2.3.4', 'fewer entries than hops: the leftmost');
  t.equal(clientAddress('10.0.0.5', undefined, 1), '10.0.0.5');
});

t.test('config errors name the field', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{}, /spec\.ipFilter: needs allow or deny/],
    [{ allow: ['10.0.0.0/33'] }, /spec\.ipFilter\.allow\[0\]: "10\.0\.0\.0\/33" is not/],
    [{ deny: ['2001:db8::/129'] }, /deny\[0\]/],
    [{ deny: ['example.com'] }, /deny\[0\]/],
    [{ deny: ['10.0.0.0/8x'] }, /deny\[0\]/],
    [{ allowed: ['10.0.0.0/8'] }, /spec\.ipFilter\.allowed: unknown field/],
  ];
  for (const [input, re] of cases) {
    const r = parseIpFilterConfig(input, 'spec.ipFilter');
    t.notOk(r.ok);
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
});

t.test('real connections over IPv4 and IPv6 loopback, on a dual-stack listener', async (t) => {
  const f = filter({ allow: ['127.0.0.0/8'] });
  const server = http.createServer((req, res) => {
    const e = f.check(req.socket.remoteAddress);
    res.writeHead(e ? e.status : 200).end(e ? e.message : 'ok');
  });
  const v6 = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(0, '::', () => resolve(true));
  });
  if (!v6) await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  const port = (server.address() as AddressInfo).port;
  const get = (host: string) =>
    new Promise<number>((resolve, reject) => {
      http.get({ host, port, path: '/', family: net.isIP(host) as 4 | 6 }, (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject);
    });
  t.equal(await get('127.0.0.1'), 200, 'IPv4 peer (seen as ::ffff:127.0.0.1 on a dual-stack socket) allowed');
  if (v6) t.equal(await get('::1'), 403, 'IPv6 loopback is not in 127.0.0.0/8');
});
