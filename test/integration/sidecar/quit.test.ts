/**
 * POST /quitquitquit on the admin port stops the sidecar the way SIGTERM does (exit 0): how a
 * Job's app ends its classic-layout sidecar. Only from loopback (and so is changing the log level):
 * the admin port also faces the kubelet's probes and Prometheus from outside the pod.
 */
import * as os from 'node:os';
import t from 'tap';
import { request } from 'undici';
import { HOST, service, startSidecar, within } from './helpers';

t.test('POST /quitquitquit from loopback stops the sidecar; GET does not', async (t) => {
  const sc = await startSidecar(t, [service('one', [{ port: 1 }])]);
  const get = await request(`http://${HOST}:${sc.admin}/quitquitquit`);
  t.equal(get.statusCode, 405, 'only POST');
  await get.body.dump();
  const res = await request(`http://${HOST}:${sc.admin}/quitquitquit`, { method: 'POST' });
  t.equal(res.statusCode, 200);
  t.equal(await res.body.text(), 'quitting\n');
  t.equal(await within(sc.exited, 15_000, 'the sidecar to exit'), 0, 'exits 0, as on SIGTERM');
});

const external = Object.values(os.networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

t.test('refused from outside the pod', async (t) => {
  if (!external) throw new Error('this test needs a non-loopback IPv4 address on the machine');
  const sc = await startSidecar(t, [service('one', [{ port: 1 }])], { args: ['--admin', '0.0.0.0:0'] });
  const res = await request(`http://${external}:${sc.admin}/quitquitquit`, { method: 'POST' });
  t.equal(res.statusCode, 403);
  t.match(await res.body.text(), /quitquitquit is only accepted from loopback/);
  const level = await request(`http://${external}:${sc.admin}/logging?level=trace`, { method: 'POST' });
  t.equal(level.statusCode, 403, 'the log level cannot be changed from outside either');
  t.match(await level.body.text(), /changing the log level is only accepted from loopback/);
  const read = await request(`http://${external}:${sc.admin}/logging`);
  t.same(await read.body.json(), { level: 'info' }, 'reading it is fine, and it did not change');
  const metrics = await request(`http://${external}:${sc.admin}/metrics`);
  t.equal(metrics.statusCode, 200, 'Prometheus scrapes from outside');
  await metrics.body.dump();
  const ready = await request(`http://${HOST}:${sc.admin}/live`);
  t.equal(ready.statusCode, 200, 'still running');
  await ready.body.dump();
});
