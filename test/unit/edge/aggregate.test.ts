import t, { type Test } from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { systemClock } from '../../../src/core/clock';
import { COMPLETED_HEADER, compileAggregate, parseAggregateConfig, type AggregateCall, type Aggregator } from '../../../src/edge/aggregate';

type Reply = { status?: number; type?: string; body: string; delayMs?: number };

/** A real backend on port 0 answering by path; records what it was asked. */
async function backend(t: Test, answer: (url: URL, req: http.IncomingMessage) => Reply) {
  const seen: { url: string; headers: http.IncomingHttpHeaders; at: number; answeredAt?: number }[] = [];
  const server = http.createServer((req, res) => {
    const s: (typeof seen)[number] = { url: req.url!, headers: req.headers, at: performance.now() };
    seen.push(s);
    const r = answer(new URL(req.url!, 'http://x'), req);
    const timer = setTimeout(() => {
      s.answeredAt = performance.now();
      res.writeHead(r.status ?? 200, { 'content-type': r.type ?? 'application/json' }).end(r.body);
    }, r.delayMs ?? 0);
    res.on('close', () => clearTimeout(timer));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** The injected call: a real HTTP request to the service URL (the mesh stack takes this place later). */
const call: AggregateCall = async (a) => {
  const res = await request(`${a.service}${a.path}`, { method: a.method as 'GET', headers: a.headers, signal: a.signal });
  return { status: res.statusCode, headers: res.headers as Record<string, string>, body: Buffer.from(await res.body.arrayBuffer()) };
};

function agg(raw: unknown): Aggregator {
  const r = compileAggregate(raw, 'spec.rules[0].aggregate', { clock: systemClock });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.value;
}

/** users and orders take SLOW ms each; recs fails at once. */
const SLOW = 800;

async function three(t: Test) {
  const users = await backend(t, (u) => ({
    delayMs: SLOW,
    body: JSON.stringify({ id: 42, name: 'Ada', email: 'ada@example.com', passwordHash: 'x', address: { city: 'London', zip: 'N1' }, path: u.pathname }),
  }));
  const orders = await backend(t, (u) => ({ delayMs: SLOW, body: JSON.stringify([{ id: 1, user: u.searchParams.get('user') }, { id: 2, user: u.searchParams.get('user') }]) }));
  const recs = await backend(t, () => ({ status: 500, body: '{"error":"boom"}' }));
  return { users, orders, recs };
}

t.test('three real backends, one slow and one failing: exact merged body, completion header, time of the slowest', async (t) => {
  const { users, orders, recs } = await three(t);
  const a = agg({
    forwardHeaders: ['x-request-id'],
    backends: [
      { name: 'user', service: users.url, path: '/users/{path.id}', allow: ['id', 'name', 'address.city'], rename: { name: 'fullName' } },
      { name: 'orders', service: orders.url, path: '/orders?user={path.id}&status={query.status}', group: 'orders' },
      { name: 'recs', service: recs.url, path: '/recs/{path.id}', group: 'recommendations' },
    ],
  });
  const t0 = performance.now();
  const res = await a.run({ params: { id: '42' }, query: 'status=open&x=1', headers: { 'x-request-id': 'r-1', cookie: 'secret' } }, call);
  const elapsed = performance.now() - t0;
  t.equal(res.status, 200);
  t.equal(res.headers[COMPLETED_HEADER], 'false');
  t.equal(res.headers['content-type'], 'application/json');
  t.same(JSON.parse(res.body.toString()), {
    id: 42,
    fullName: 'Ada',
    address: { city: 'London' },
    orders: [
      { id: 1, user: '42' },
      { id: 2, user: '42' },
    ],
    _errors: { recs: { code: 'EDGE_AGG_UPSTREAM_STATUS', message: 'recs: answered 500' } },
  });
  t.equal(res.body.toString().indexOf('"id":42'), 1, 'declaration order, deterministic');
  t.equal(orders.seen[0].url, '/orders?user=42&status=open');
  t.equal(users.seen[0].headers['x-request-id'], 'r-1', 'forwarded header');
  t.equal(users.seen[0].headers.cookie, undefined, 'other client headers are not');
  // Two SLOW backends ran side by side: each was asked before the other answered (an order of
  // events, which load cannot change), so the whole takes the slowest, not their sum.
  t.ok(orders.seen[0].at < (users.seen[0].answeredAt ?? Infinity) && users.seen[0].at < (orders.seen[0].answeredAt ?? Infinity), 'user and orders were asked side by side');
  t.ok(elapsed >= SLOW - 10, `took at least the slowest backend's ${SLOW} ms (${elapsed.toFixed(0)} ms)`);
  t.same(
    res.parts.map((p) => [p.backend, p.ok, p.code]),
    [
      ['user', true, undefined],
      ['orders', true, undefined],
      ['recs', false, 'EDGE_AGG_UPSTREAM_STATUS'],
    ],
  );
});

t.test('all parts required: 502 with the error summary; a required timeout: 504; every part failing: 502', async (t) => {
  const { users, orders, recs } = await three(t);
  const backends = [
    { name: 'user', service: users.url, path: '/users/1' },
    { name: 'orders', service: orders.url, path: '/orders', group: 'orders' },
    { name: 'recs', service: recs.url, path: '/recs', group: 'recs' },
  ];
  const all = await agg({ requireAll: true, backends }).run({ params: {}, query: '', headers: {} }, call);
  t.equal(all.status, 502);
  t.equal(all.headers[COMPLETED_HEADER], 'false');
  t.equal(all.headers['x-meshlet-flags'], 'UR');
  t.same(JSON.parse(all.body.toString()), {
    error: 'EDGE_AGG_REQUIRED_FAILED',
    message: 'required backend recs failed: answered 500',
    _errors: { recs: { code: 'EDGE_AGG_UPSTREAM_STATUS', message: 'recs: answered 500' } },
  });

  const t0 = performance.now();
  const slow = await agg({ backends: [{ ...backends[0], required: true, timeoutMs: 100 }, backends[2]] }).run({ params: {}, query: '', headers: {} }, call);
  t.equal(slow.status, 504);
  t.equal(slow.headers['x-meshlet-flags'], 'UT');
  t.match(JSON.parse(slow.body.toString()), { error: 'EDGE_AGG_REQUIRED_TIMEOUT', _errors: { user: { code: 'EDGE_AGG_TIMEOUT' } } });
  t.ok(performance.now() - t0 < SLOW - 100, 'did not wait for the slow backend past its timeout');

  const none = await agg({ backends: [backends[2], { name: 'down', service: 'http://127.0.0.1:1', path: '/' }] }).run({ params: {}, query: '', headers: {} }, call);
  t.equal(none.status, 502);
  t.match(JSON.parse(none.body.toString()), { error: 'EDGE_AGG_REQUIRED_FAILED', message: 'every backend failed', _errors: { down: { code: 'EDGE_AGG_CALL_FAILED' } } });
});

t.test('sequential steps: a backend waits for the value it names; a failed step skips its dependents', async (t) => {
  const { users, orders, recs } = await three(t);
  const a = agg({
    backends: [
      { name: 'orders', service: orders.url, path: '/orders?user={user.id}&city={user.address.city}', group: 'orders' },
      { name: 'user', service: users.url, path: '/users/{path.id}', allow: ['id'] },
      { name: 'recs', service: recs.url, path: '/recs', group: 'recs' },
      { name: 'afterRecs', service: users.url, path: '/users/{recs.id}' },
    ],
  });
  const t0 = performance.now();
  const res = await a.run({ params: { id: 'a b/c' }, query: '', headers: {} }, call);
  const elapsed = performance.now() - t0;
  t.equal(users.seen[0].url, '/users/a%20b%2Fc', 'path values are URL-encoded');
  t.equal(orders.seen[0].url, '/orders?user=42&city=London', 'the later backend got the earlier answer');
  t.ok(orders.seen[0].at >= (users.seen[0].answeredAt ?? Infinity), 'orders was asked after user answered');
  t.ok(elapsed >= 2 * SLOW - 10, `the two steps ran one after the other (${elapsed.toFixed(0)} ms)`);
  t.same(JSON.parse(res.body.toString()), {
    orders: [
      { id: 1, user: '42' },
      { id: 2, user: '42' },
    ],
    id: 42,
    _errors: {
      recs: { code: 'EDGE_AGG_UPSTREAM_STATUS', message: 'recs: answered 500' },
      afterRecs: { code: 'EDGE_AGG_DEPENDENCY_FAILED', message: 'afterRecs: not called: recs failed' },
    },
  });
  t.equal(users.seen.length, 1, 'afterRecs was never called');
});

t.test('non-JSON, non-object and oversized answers are clear per-backend errors', async (t) => {
  const b = await backend(t, (u) => {
    if (u.pathname === '/html') return { type: 'text/html', body: '<html>hi</html>' };
    if (u.pathname === '/list') return { body: '[1,2,3]' };
    if (u.pathname === '/big') return { body: JSON.stringify({ blob: 'x'.repeat(5000) }) };
    return { body: '{"ok":true,"nested":{"v":1}}' };
  });
  const a = agg({
    maxBodyBytes: 1000,
    backends: [
      { name: 'html', service: b.url, path: '/html' },
      { name: 'list', service: b.url, path: '/list' },
      { name: 'listGrouped', service: b.url, path: '/list', group: 'numbers' },
      { name: 'big', service: b.url, path: '/big' },
      { name: 'missing', service: b.url, path: '/x/{nobody.id}' },
      { name: 'nobody', service: b.url, path: '/ok', target: 'nested' },
    ],
  });
  const res = await a.run({ params: {}, query: '', headers: {} }, call);
  t.equal(res.status, 200);
  const body = JSON.parse(res.body.toString());
  t.same(body.numbers, [1, 2, 3]);
  t.equal(body.v, 1, 'target picked the nested object');
  t.same(body._errors, {
    html: { code: 'EDGE_AGG_NOT_JSON', message: 'html: answered text/html that is not JSON' },
    list: { code: 'EDGE_AGG_NOT_OBJECT', message: 'list: answered JSON that is not an object (give it a group to keep it)' },
    big: { code: 'EDGE_AGG_BODY_TOO_LARGE', message: 'big: answered 5011 bytes, more than 1000' },
    missing: { code: 'EDGE_AGG_MISSING_VALUE', message: "missing: nobody.id is not in nobody's answer" },
  });
});

t.test('deny lists drop fields (nested too); errorDetails false hides the summary', async (t) => {
  const b = await backend(t, () => ({ body: JSON.stringify({ id: 1, secret: 's', profile: { ssn: '1', nick: 'n' } }) }));
  const a = agg({
    errorDetails: false,
    backends: [
      { name: 'p', service: b.url, path: '/', deny: ['secret', 'profile.ssn'] },
      { name: 'down', service: 'http://127.0.0.1:1', path: '/' },
    ],
  });
  const res = await a.run({ params: {}, query: new URLSearchParams(), headers: {} }, call);
  t.same(JSON.parse(res.body.toString()), { id: 1, profile: { nick: 'n' } });
  t.equal(res.headers[COMPLETED_HEADER], 'false');
  const ok = await agg({ backends: [{ name: 'p', service: b.url, path: '/' }] }).run({ params: {}, query: '', headers: {} }, call);
  t.equal(ok.headers[COMPLETED_HEADER], 'true');
});

t.test('config errors name the field', async (t) => {
  const bk = (name: string, path = '/') => ({ name, service: 'svc', path });
  const cases: [unknown, RegExp][] = [
    [{}, /spec\.rules\[0\]\.aggregate\.backends: is required/],
    [{ backends: Array.from({ length: 17 }, (_x, i) => bk(`b${i}`)) }, /backends: must have at most 16 items/],
    [{ backends: [bk('a'), bk('a')] }, /backends\[1\]\.name: duplicate backend name "a"/],
    [{ backends: [bk('a', '/{b.id}'), bk('b', '/{a.id}')] }, /backends: backends wait for each other in a cycle: a -> b -> a/],
    [{ backends: [bk('a', '/{zz.id}')] }, /backends\[0\]\.path: \{zz\.…\} names no backend/],
    [{ backends: [bk('a', '/{a.id}')] }, /refers to the backend itself/],
    [{ backends: [bk('a', '/{id}')] }, /backends\[0\]\.path: \{id\} must be/],
    [{ backends: [bk('a', 'users')] }, /backends\[0\]\.path: must start with \//],
    [{ backends: [{ ...bk('a'), timeoutMs: 0 }] }, /backends\[0\]\.timeoutMs/],
    [{ backends: [{ ...bk('a'), method: 'TRACE' }] }, /backends\[0\]\.method/],
    [{ backends: [{ ...bk('a'), group: '_errors' }] }, /backends\[0\]\.group: _errors is reserved/],
    [{ backends: [{ ...bk('a'), rename: { x: 1 } }] }, /backends\[0\]\.rename\.x/],
  ];
  for (const [input, re] of cases) {
    const r = parseAggregateConfig(input, 'spec.rules[0].aggregate');
    t.notOk(r.ok, JSON.stringify(input).slice(0, 80));
    if (!r.ok) t.match(r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'), re);
  }
});
