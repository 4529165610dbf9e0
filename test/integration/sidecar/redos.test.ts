/**
 * Regular-expression denial of service, tried against the real processes:
 *
 * - the control plane's API refuses the classic ReDoS pattern `^/(a+)+$` and patterns RE2 cannot
 *   run in linear time (backreferences, lookaround), with the field path;
 * - a sidecar whose routes match path, header and query parameter with `(a|aa)+` (exponential for
 *   a backtracking engine: a 40-character input would take minutes) answers a request carrying
 *   4,000 `a`s followed by a `b` in all three places at about the cost of a plain request, and
 *   plain requests sent while such requests are in flight are not held up.
 *
 * Costs are compared as ratios against plain requests measured in the same test, never as wall time.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { apiFetch, startControlPlane } from '../lib/meshlet';
import { agent, echo, h1Upstream, pool, request, route, service, startSidecar } from './helpers';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

t.test('the API refuses patterns that cannot run in linear time, naming the field', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-redos-'));
  const cp = await startControlPlane(dir);
  t.teardown(async () => {
    await cp.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const put = async (name: string, match: object) => {
    const body = { apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name }, spec: { hosts: [name], rules: [{ matches: [match], backends: [{ service: 'web' }] }] } };
    const r = await apiFetch(`${cp.api}/v1/routes/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, body: (await r.json()) as { errors?: { path: string; message: string }[] } };
  };
  const cases: [string, object, string, RegExp][] = [
    ['redos', { path: { regex: '^/(a+)+$' } }, 'spec.rules[0].matches[0].path.regex', /nested quantifier "\(a\+\)\+"/],
    ['backref', { headers: [{ name: 'x-a', regex: '(a)\\1' }] }, 'spec.rules[0].matches[0].headers[0].regex', /backreference/],
    ['lookahead', { queryParams: [{ name: 'q', regex: '(?=a)a' }] }, 'spec.rules[0].matches[0].queryParams[0].regex', /lookahead/],
    ['huge', { path: { regex: '/(x{1000}){1000}' } }, 'spec.rules[0].matches[0].path.regex', /too large.*limit/],
  ];
  for (const [name, match, field, why] of cases) {
    const r = await put(name, match);
    t.equal(r.status, 400, `${name}: refused`);
    t.equal(r.body.errors?.[0]?.path, field, `${name}: the field path`);
    t.match(r.body.errors?.[0]?.message, why, `${name}: says why`);
  }
  t.equal((await put('fine', { path: { regex: '/(a|aa)+' } })).status, 201, 'a pattern RE2 runs in linear time is accepted');
});

t.test('a near-worst-case pattern costs about what a plain request costs, and holds nobody up', async (t) => {
  const up = await h1Upstream(t, echo('web'));
  const sc = await startSidecar(t, [
    service('web', [{ port: up.port }]),
    route('web', ['web'], [
      { name: 'by-path', matches: [{ path: { regex: '/(a|aa)+' } }], backends: [{ service: 'web' }] },
      { name: 'by-header', matches: [{ headers: [{ name: 'x-id', regex: '(a|aa)+' }] }], backends: [{ service: 'web' }] },
      { name: 'by-query', matches: [{ queryParams: [{ name: 'q', regex: '(a|aa)+' }] }], backends: [{ service: 'web' }] },
      { name: 'rest', backends: [{ service: 'web' }] },
    ]),
  ]);
  const a = agent(t, 8);
  const evil = 'a'.repeat(4000) + 'b';
  const plain = () => request({ port: sc.outbound, path: '/plain', headers: { host: 'web' }, agent: a });
  const attack = () => request({ port: sc.outbound, path: `/${evil}?q=${evil}`, headers: { host: 'web', 'x-id': evil }, agent: a });
  const timed = async (f: () => Promise<{ status: number }>): Promise<number> => {
    const t0 = process.hrtime.bigint();
    const r = await f();
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    return Number(process.hrtime.bigint() - t0);
  };
  // Warm up both paths (connections, JIT), then interleave so load changes hit both alike.
  for (let i = 0; i < 20; i++) await Promise.all([timed(plain), timed(attack)]);
  const plainNs: number[] = [];
  const attackNs: number[] = [];
  for (let i = 0; i < 40; i++) {
    plainNs.push(await timed(plain));
    attackNs.push(await timed(attack));
  }
  const ratio = median(attackNs) / median(plainNs);
  t.comment(`median plain ${(median(plainNs) / 1e3).toFixed(0)} us, with 3 x 4001-byte (a|aa)+ matches ${(median(attackNs) / 1e3).toFixed(0)} us: ratio ${ratio.toFixed(2)}`);
  // A backtracking engine would need ~2^4000 steps; linear matching of 12 KB adds tens of microseconds.
  t.ok(ratio < 4, `the attack request costs ${ratio.toFixed(2)}x a plain one`);

  // Plain requests while attack requests keep 4 connections busy.
  const busyNs: number[] = [];
  let stop = false;
  const attackers = Array.from({ length: 4 }, async () => {
    while (!stop) await timed(attack);
  });
  await pool(40, 1, async () => busyNs.push(await timed(plain)));
  stop = true;
  await Promise.all(attackers);
  const busyRatio = median(busyNs) / median(plainNs);
  t.comment(`median plain request during the attack: ${(median(busyNs) / 1e3).toFixed(0)} us (${busyRatio.toFixed(2)}x)`);
  t.ok(busyRatio < 15, `plain requests during the attack take ${busyRatio.toFixed(2)}x their usual time (4 attack requests in flight ahead of each)`);
});
