/**
 * `meshlet up --netns`: the demo mesh as network-namespace pods with interception, started the
 * way a user starts it, answering through every hop, and leaving nothing behind on SIGTERM.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { start } from '../integration/lib/meshlet';
import { get } from './lib/pods';

const PREFIX = 'mlt7u';
const leftovers = () => ({
  netns: execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`${PREFIX}-`)),
  links: execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').filter((l) => new RegExp(`^\\d+: ${PREFIX}`).test(l)),
  hosts: existsSync(`/etc/netns/${PREFIX}-frontend`),
});

t.test('meshlet up --netns', async (t) => {
  const up = start(['up', '--netns', '--prefix', PREFIX, '--subnet', '7']);
  t.teardown(async () => {
    await up.stop('SIGKILL');
    for (const n of leftovers().netns) execFileSync('ip', ['netns', 'del', n.split(' ')[0]]);
    for (const l of leftovers().links) execFileSync('ip', ['link', 'del', /^\d+: ([^:@]+)/.exec(l)![1]]);
  });
  const ready = await up.waitFor((l) => l.msg === 'mesh ready', 60_000);
  const url = String(ready.frontend);
  t.equal(url, 'http://10.78.7.2/');
  const r = await get(url);
  t.equal(r.status, 200, JSON.stringify(r.body));
  t.equal(r.body.service, 'frontend');
  t.match(r.body.catalog, { service: /^catalog-v[12]$/, items: [{ service: 'pricing' }] }, 'frontend -> catalog -> pricing, the apps calling each other by name');
  for (let i = 0; i < 3; i++) {
    const c = await get(url, { 'x-canary': 'true' });
    t.equal(c.body.catalog.service, 'catalog-v2', 'x-canary: true -> v2, by policy');
  }
  t.equal(await up.stop('SIGTERM'), 0, 'SIGTERM: exits 0');
  t.same(leftovers(), { netns: [], links: [], hosts: false }, 'namespaces, bridge, veths and hosts files removed');
});
