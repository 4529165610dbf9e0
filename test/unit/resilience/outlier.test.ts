import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import type { Endpoint, OutlierDetection } from '../../../src/policy';
import { OutlierDetector } from '../../../src/resilience/outlier';

const eps: Endpoint[] = ['a', 'b', 'c', 'd'].map((n, i) => ({ service: 's', address: '10.0.0.' + (i + 1), port: 80, labels: {}, weight: 1, meshed: true, id: n }));
const key = (e: Endpoint) => `${e.address}:${e.port}`;
const keys = eps.map(key);
const base: OutlierDetection = { consecutive5xx: 3, intervalMs: 1_000, baseEjectionTimeMs: 10_000, maxEjectionPercent: 50, panicThreshold: 25 };

t.test('consecutive 5xx eject for baseEjectionTime x ejections, then the endpoint comes back', async (t) => {
  const clock = new FakeClock();
  const ejected: string[] = [];
  const od = new OutlierDetector(clock, (k, reason) => ejected.push(`${k} ${reason}`));
  // A long interval: no tick earns the multiplier back during this test.
  od.configure({ ...base, intervalMs: 600_000 }, keys);
  const a = keys[0] as string;
  od.report(a, 'http-5xx');
  od.report(a, 'http-5xx');
  od.report(a, 'success');
  od.report(a, 'http-5xx');
  od.report(a, 'http-5xx');
  t.notOk(od.isEjected(a), 'a success resets the count');
  od.report(a, 'http-5xx');
  t.ok(od.isEjected(a), 'three in a row eject');
  t.same(ejected, ['10.0.0.1:80 consecutive-5xx']);
  t.equal(od.filter(eps, key).length, 3);
  clock.advance(9_999);
  t.ok(od.isEjected(a));
  clock.advance(1);
  t.notOk(od.isEjected(a), 'back after 10 s');
  for (let i = 0; i < 3; i++) od.report(a, 'http-5xx');
  t.ok(od.isEjected(a), 'ejected a second time');
  clock.advance(19_999);
  t.ok(od.isEjected(a), 'the second ejection lasts 2 x 10 s');
  clock.advance(1);
  t.notOk(od.isEjected(a));
  od.close();
});

t.test('maxEjectionPercent caps ejections; gateway errors have their own trigger', async (t) => {
  const clock = new FakeClock();
  const od = new OutlierDetector(clock);
  od.configure({ ...base, consecutive5xx: undefined, consecutiveGatewayErrors: 2 }, keys);
  for (const k of keys) {
    od.report(k, 'http-5xx');
    od.report(k, 'http-5xx');
  }
  t.equal(keys.filter((k) => od.isEjected(k)).length, 0, 'plain 500s are not gateway errors');
  for (const k of keys) {
    od.report(k, 'gateway');
    od.report(k, 'gateway');
  }
  t.equal(keys.filter((k) => od.isEjected(k)).length, 2, 'at most 50% of 4 endpoints out at once');
  od.close();
});

t.test('panic threshold: too few healthy endpoints -> use all of them', async (t) => {
  const clock = new FakeClock();
  const od = new OutlierDetector(clock);
  od.configure({ ...base, maxEjectionPercent: 100, panicThreshold: 50 }, keys);
  for (const k of keys.slice(0, 2)) for (let i = 0; i < 3; i++) od.report(k, 'http-5xx');
  t.equal(od.filter(eps, key).length, 2, '2 of 4 healthy = 50%: not panicking');
  for (let i = 0; i < 3; i++) od.report(keys[2] as string, 'http-5xx');
  t.equal(od.filter(eps, key).length, 4, '1 of 4 healthy < 50%: all endpoints used');
  od.close();
});

t.test('failure percentage is judged once per interval over hosts with enough volume', async (t) => {
  const clock = new FakeClock();
  const od = new OutlierDetector(clock);
  od.configure({ intervalMs: 1_000, baseEjectionTimeMs: 5_000, maxEjectionPercent: 50, panicThreshold: 0, failurePercentage: { threshold: 40, minimumHosts: 3, requestVolume: 10 } }, keys);
  for (const k of keys) for (let i = 0; i < 10; i++) od.report(k, k === keys[1] && i % 2 === 0 ? 'http-5xx' : 'success');
  t.notOk(od.isEjected(keys[1] as string), 'not before the interval ends');
  const v = od.version;
  clock.advance(1_000);
  t.ok(od.isEjected(keys[1] as string), '50% failures >= 40%');
  t.ok(od.version > v, 'pickers are told to rebuild');
  t.equal(keys.filter((k) => od.isEjected(k)).length, 1);
  od.close();
});

t.test('health-check verdicts take endpoints out and back', async (t) => {
  const clock = new FakeClock();
  const od = new OutlierDetector(clock);
  od.configure(undefined, keys);
  od.setHealthy(keys[3] as string, false);
  t.ok(od.isEjected(keys[3] as string));
  t.equal(od.filter(eps, key).length, 3);
  od.setHealthy(keys[3] as string, true);
  t.equal(od.filter(eps, key).length, 4);
  od.close();
});
