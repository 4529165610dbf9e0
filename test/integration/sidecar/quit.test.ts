/**
 * POST /quitquitquit on the admin port stops the sidecar the way SIGTERM does (exit 0): how a
 * Job's app ends its classic-layout sidecar. Only from loopback: the admin port also faces the
 * kubelet's probes from outside the pod.
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
  t.match(await res.body.text(), /only accepted from loopback/);
  const ready = await request(`http://${HOST}:${sc.admin}/live`);
  t.equal(ready.statusCode, 200, 'still running');
  await ready.body.dump();
});
