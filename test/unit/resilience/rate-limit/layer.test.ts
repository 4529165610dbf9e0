import t from 'tap';
import { FakeClock } from '../../../../src/core/clock';
import type { RateLimitPolicySpec } from '../../../../src/policy/types';
import { RateLimitLayer, type LimitRequest } from '../../../../src/resilience/rate-limit';
import { closedPort } from '../../../integration/sidecar/helpers';

const req = (headers: Record<string, string> = {}): LimitRequest => ({ path: '/', remoteAddress: '10.0.0.1', header: (n) => headers[n] });

function decide(layer: RateLimitLayer, r: LimitRequest = req()): Promise<{ allowed: boolean; headers?: Record<string, string>; reason?: string }> {
  return new Promise((resolve) =>
    layer.admit(
      r,
      () => resolve({ allowed: true }),
      (headers, reason) => resolve({ allowed: false, headers, reason }),
    ),
  );
}

const spec = (s: Partial<RateLimitPolicySpec>): RateLimitPolicySpec => ({ service: 'catalog', failureMode: 'open', limits: [], ...s });

t.test('local limits, per key, on a fake clock; counted on /metrics', async (t) => {
  const clock = new FakeClock();
  const layer = new RateLimitLayer({ service: 'catalog', clock });
  t.teardown(() => layer.close());
  t.notOk(layer.active);
  t.same(await decide(layer), { allowed: true }, 'no policy: everything passes');
  layer.apply(spec({ limits: [{ name: 'per-key', descriptors: [{ header: 'x-api-key' }], requests: 2, periodMs: 1000, burst: 0, scope: 'local' }] }));
  t.ok(layer.active);
  t.ok((await decide(layer, req({ 'x-api-key': 'a' }))).allowed);
  t.ok((await decide(layer, req({ 'x-api-key': 'a' }))).allowed);
  const denied = await decide(layer, req({ 'x-api-key': 'a' }));
  t.notOk(denied.allowed);
  t.same(denied.headers, { 'retry-after': '1', 'ratelimit-policy': '"per-key";q=2;w=1', ratelimit: '"per-key";r=0;t=1' });
  t.match(denied.reason, /per-key/);
  t.ok((await decide(layer, req({ 'x-api-key': 'b' }))).allowed, 'another key has its own budget');
  t.ok((await decide(layer, req())).allowed, 'no key header: the limit does not apply');
  // The same limit in a new snapshot keeps its state.
  layer.apply(spec({ limits: [{ name: 'per-key', descriptors: [{ header: 'x-api-key' }], requests: 2, periodMs: 1000, burst: 0, scope: 'local' }] }));
  t.notOk((await decide(layer, req({ 'x-api-key': 'a' }))).allowed, 'state survives an unchanged re-apply');
  clock.advance(500);
  t.ok((await decide(layer, req({ 'x-api-key': 'a' }))).allowed, 'a token is back after period/requests');
  const m = layer.render();
  t.match(m, /meshlet_ratelimit_decisions_total\{limit="per-key",scope="local",decision="allowed"\} 4/);
  t.match(m, /meshlet_ratelimit_decisions_total\{limit="per-key",scope="local",decision="limited"\} 2/);
  layer.apply(spec({ service: 'other', limits: [{ name: 'x', descriptors: [], requests: 1, periodMs: 1000, burst: 0, scope: 'local' }] }));
  t.notOk(layer.active, "another service's policy does not apply here");
  layer.apply(undefined);
  t.notOk(layer.active);
});

t.test('several limits: the first that denies answers', async (t) => {
  const clock = new FakeClock();
  const layer = new RateLimitLayer({ service: 'catalog', clock });
  t.teardown(() => layer.close());
  layer.apply(
    spec({
      limits: [
        { name: 'all', descriptors: [], requests: 3, periodMs: 1000, burst: 0, scope: 'local' },
        { name: 'reads', routes: ['r/read'], descriptors: [], requests: 1, periodMs: 1000, burst: 0, scope: 'local' },
      ],
    }),
  );
  const read = req({ 'x-meshlet-route': 'r/read' });
  t.ok((await decide(layer, read)).allowed);
  t.match((await decide(layer, read)).reason, /"reads"/, 'the route limit denies');
  t.ok((await decide(layer, req({ 'x-meshlet-route': 'r/write' }))).allowed, 'other routes only meet the overall limit');
  t.match((await decide(layer, req())).reason, /"all"/, 'the overall limit is spent (3 taken)');
});

t.test('global limits with Redis unreachable: failureMode decides, counted', async (t) => {
  const port = await closedPort();
  const limits = [{ name: 'g', descriptors: [], requests: 1, periodMs: 1000, burst: 0, scope: 'global' as const }];
  const open = new RateLimitLayer({ service: 'catalog' });
  t.teardown(() => open.close());
  open.apply(spec({ failureMode: 'open', limits, redis: { address: `127.0.0.1:${port}`, timeoutMs: 5 } }));
  for (let i = 0; i < 3; i++) t.ok((await decide(open)).allowed, 'fail open: allowed');
  t.match(open.render(), /decision="failed_open"\} 3/);
  t.match(open.render(), /meshlet_ratelimit_redis_up\{redis="127.0.0.1:\d+"\} 0/);
  const closed = new RateLimitLayer({ service: 'catalog' });
  t.teardown(() => closed.close());
  closed.apply(spec({ failureMode: 'closed', limits, redis: { address: `127.0.0.1:${port}`, timeoutMs: 5 } }));
  const d = await decide(closed);
  t.notOk(d.allowed, 'fail closed: denied');
  t.match(d.reason, /unavailable.*failureMode closed/);
  t.equal(d.headers?.['retry-after'], '1');
  t.match(closed.render(), /decision="failed_closed"\} 1/);
});

t.test('a worker of N (localShare 1/N) enforces 1/N of a local limit, and keeps at least one token', async (t) => {
  const clock = new FakeClock();
  const layer = new RateLimitLayer({ service: 'catalog', clock, localShare: 1 / 2 });
  t.teardown(() => layer.close());
  layer.apply(spec({ limits: [{ name: 'all', descriptors: [], requests: 10, periodMs: 1000, burst: 4, scope: 'local' }] }));
  let allowed = 0;
  for (let i = 0; i < 20; i++) if ((await decide(layer)).allowed) allowed++;
  t.equal(allowed, 7, 'half of requests + burst (10 + 4) at once');
  clock.advance(1000);
  allowed = 0;
  for (let i = 0; i < 20; i++) if ((await decide(layer)).allowed) allowed++;
  t.equal(allowed, 5, 'refilled at half the rate');
  const denied = await decide(layer);
  t.match(denied.headers?.['ratelimit-policy'], /q=10;/, "the headers still state the policy's limit");
  // 1 request a second over 2 workers: half a token each would admit nothing; a bucket holds one.
  layer.apply(spec({ limits: [{ name: 'one', descriptors: [], requests: 1, periodMs: 1000, burst: 0, scope: 'local' }] }));
  t.ok((await decide(layer)).allowed, 'a limit smaller than N still admits');
  t.notOk((await decide(layer)).allowed);
  clock.advance(1000);
  t.notOk((await decide(layer)).allowed, 'refilled at half a token a second');
  clock.advance(1000);
  t.ok((await decide(layer)).allowed);
  t.throws(() => new RateLimitLayer({ service: 'catalog', localShare: 0 }), RangeError);
});
