/**
 * `reservedPort` (src/cli/ports.ts), the ports `meshlet up --ephemeral-ports` picks for processes
 * it starts later: outside the kernel's ephemeral range (so no `listen(0)` of a sidecar takes one
 * meanwhile), free when chosen, never the same twice, and a port in use is passed over.
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';
import t from 'tap';
import { reservedPort } from '../../../src/cli/ports';

const ephemeralLow = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);

t.test('below the ephemeral range, free, distinct', async (t) => {
  const ports: number[] = [];
  for (let i = 0; i < 30; i++) ports.push(await reservedPort());
  t.ok(
    ports.every((p) => p >= 10_000 && p < ephemeralLow),
    `all in [10000, ${ephemeralLow}): ${ports.join(' ')}`,
  );
  t.equal(new Set(ports).size, ports.length, 'no port given twice');
  // Each can be bound (what the gateway or etcd will do with it).
  for (const p of ports.slice(0, 5)) {
    const s = net.createServer();
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(p, '127.0.0.1', resolve);
    });
    await new Promise<void>((r) => s.close(() => r()));
  }
});

t.test('a port in use is passed over', async (t) => {
  const busy = net.createServer();
  // A port of the range, taken by a listener for the test.
  const taken = await reservedPort();
  await new Promise<void>((r) => busy.listen(taken, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => busy.close(() => r())));
  const at = (port: number) => (port - 10_000 + 0.5) / (ephemeralLow - 10_000);
  // The first draw lands on the busy port; the ones after it are random.
  let calls = 0;
  const got = await reservedPort(() => (calls++ === 0 ? at(taken) : Math.random()));
  t.ok(calls >= 2, `the busy port was drawn, then another (${calls} draws)`);
  t.not(got, taken, 'not the port in use');
});
