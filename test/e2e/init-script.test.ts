/**
 * deploy/meshlet-init.sh inside real network namespaces: what it redirects, what it leaves
 * alone, that a second run changes nothing, and that --remove restores direct traffic. The
 * "proxy" here is a probe that reports the original destination it learns through SO_ORIGINAL_DST.
 */
import t from 'tap';
import * as path from 'node:path';
import { Cluster, INIT_SCRIPT, type Pod } from './lib/pods';
import { ROOT } from '../integration/lib/meshlet';

const PROBE = path.join(ROOT, 'test', 'e2e', 'fixtures', 'probe.js');

/** Connects from inside `pod` (as uid 1337 with `asProxy`) and returns what the server said. */
function connect(pod: Pod, host: string, port: number, asProxy = false): string {
  const code = `const s=require('net').connect(${port},${JSON.stringify(host)});let d='';s.on('data',c=>d+=c);s.on('end',()=>console.log(d));s.on('error',e=>console.log('error '+e.code));setTimeout(()=>{console.log('timeout');process.exit(0)},5000).unref()`;
  return pod.exec([...(asProxy ? ['setpriv', '--reuid=1337', '--regid=1337', '--clear-groups'] : []), process.execPath, '-e', code]).trim();
}

t.test('meshlet-init.sh in a network namespace', async (t) => {
  const cluster = new Cluster(1);
  cluster.setup();
  t.teardown(async () => {
    await cluster.stopAll();
    cluster.cleanup();
  });
  const a = cluster.addPod('a');
  const b = cluster.addPod('b');
  const c = cluster.addPod('c');
  cluster.writeHosts();
  const probes = [
    a.run([process.execPath, PROBE, 'outbound', '15001']),
    a.run([process.execPath, PROBE, 'inbound', '15006']),
    a.run([process.execPath, PROBE, 'a-local', '9999,9090']),
    b.run([process.execPath, PROBE, 'b', '80,5432']),
    c.run([process.execPath, PROBE, 'c', '80']),
  ];
  await Promise.all(probes.map((p) => p.waitFor((l) => l.msg === 'listening')));

  const args = ['--exclude-inbound-ports', '15000,9090', '--exclude-outbound-ports', '5432', '--exclude-outbound-cidrs', `${c.ip}/32`];
  const first = a.exec(['sh', INIT_SCRIPT, ...args]);
  t.match(first, /outbound TCP -> 15001, inbound TCP -> 15006/);
  const rules = a.exec(['iptables-save', '-t', 'nat']).split('\n').filter((l) => l.startsWith('-A') || l.startsWith(':MESHLET'));
  a.exec(['sh', INIT_SCRIPT, ...args]);
  const again = a.exec(['iptables-save', '-t', 'nat']).split('\n').filter((l) => l.startsWith('-A') || l.startsWith(':MESHLET'));
  t.same(again, rules, 'running it twice leaves the same rules (no duplicates)');
  t.equal(rules.filter((l) => l === '-A OUTPUT -p tcp -j MESHLET_OUTPUT').length, 1);

  t.equal(connect(a, b.ip, 80), `outbound ${b.ip}:80`, 'outbound TCP goes to 15001, original destination known');
  t.equal(connect(a, 'b', 80), `outbound ${b.ip}:80`, 'by name too (the pod\'s /etc/hosts)');
  t.equal(connect(a, b.ip, 80, true), 'b -', 'uid 1337 (the proxy) is not intercepted');
  t.equal(connect(a, '127.0.0.1', 9999), 'a-local -', 'loopback is not intercepted');
  t.equal(connect(a, a.ip, 9999), 'a-local -', 'nor the pod\'s own address (via lo)');
  t.equal(connect(a, b.ip, 5432), 'b -', 'an excluded outbound port goes direct');
  t.equal(connect(a, c.ip, 80), 'c -', 'an excluded CIDR goes direct');
  t.equal(connect(b, a.ip, 8080), `inbound ${a.ip}:8080`, 'inbound TCP goes to 15006, original destination known');
  t.equal(connect(b, a.ip, 9090), 'a-local -', 'an excluded inbound port goes direct');

  t.match(a.exec(['sh', INIT_SCRIPT, '--remove']), /interception removed/);
  t.notMatch(a.exec(['iptables-save', '-t', 'nat']), /MESHLET/, 'no rule or chain left');
  t.equal(connect(a, b.ip, 80), 'b -', 'after --remove, traffic goes direct');
  t.match(a.exec(['sh', INIT_SCRIPT, '--remove']), /interception removed/, 'removing twice is fine');

  // Bad input: a clear message, exit 2, nothing changed.
  for (const [bad, re] of [
    [['--exclude-outbound-ports', '80,http'], /--exclude-outbound-ports: expected comma-separated ports \(1-65535\), got 'http'/],
    [['--exclude-outbound-cidrs', '10.0.0.0/40'], /--exclude-outbound-cidrs: expected comma-separated IPv4 CIDRs/],
    [['--inbound-port', '0'], /--inbound-port: expected a port/],
    [['--proxy-uid'], /--proxy-uid needs a value/],
    [['--bogus', '1'], /unknown flag --bogus/],
  ] as [string[], RegExp][]) {
    let err: { status?: number; stderr?: string } = {};
    try {
      a.exec(['sh', INIT_SCRIPT, ...bad]);
    } catch (e) {
      err = { status: 2, stderr: (e as Error).message };
    }
    t.equal(err.status, 2, `${bad.join(' ')} fails`);
    t.match(err.stderr ?? '', re);
  }
  t.notMatch(a.exec(['iptables-save', '-t', 'nat']), /MESHLET/, 'bad input changed nothing');
});
