/**
 * The authorization layer on a fake call (`call.peer` set as the mTLS listener sets it) with a
 * fake dispatcher (the app) and a real metrics registry: no process, no socket.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { FakeClock } from '../../../src/core/clock';
import { compose, LocalReply, MeshCall, type Handler } from '../../../src/core/layer';
import type { ResponseSink, UpstreamCall } from '../../../src/http/upstream-types';
import { Registry } from '../../../src/observability/metrics';
import { parseAll } from '../../../src/policy/parse';
import type { RequestView } from '../../../src/policy';
import { parseSpiffeId, type SpiffeId } from '../../../src/security/spiffe';
import { AUTHZ_METRIC, AUTHZ_METRIC_HELP, AUTHZ_METRIC_LABELS, authzLayer, InboundAuthz, LOG_PER_SECOND } from '../../../src/stack/authz';

const FRONTEND = 'spiffe://cluster.local/ns/shop/sa/frontend';
const OPS = 'spiffe://cluster.local/ns/ops/sa/admin-tool';
const LOCAL_CATALOG = 'spiffe://mesh.local/svc/catalog';

function id(uri: string): SpiffeId {
  const r = parseSpiffeId(uri);
  if (!r.ok) throw new Error(uri);
  return r.value;
}

interface Setup {
  authz: InboundAuthz;
  registry: Registry;
  logs: Record<string, unknown>[];
  clock: FakeClock;
  run(c: Partial<CallSpec>): Promise<{ status: number | 'app'; error?: LocalReply; appCalls: number }>;
}

interface CallSpec {
  peer: string | undefined;
  method: string;
  path: string;
  headers: Record<string, string>;
  port: number;
  kind: MeshCall['kind'];
}

function setup(service: string, specs: { name: string; spec: unknown }[]): Setup {
  const parsed = parseAll(specs.map((p) => ({ apiVersion: 'meshlet.dev/v1', kind: 'AuthorizationPolicy', metadata: { name: p.name }, spec: p.spec })));
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors));
  const registry = new Registry();
  const logs: Record<string, unknown>[] = [];
  const dest = new Writable({
    write(chunk, _e, cb) {
      logs.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      cb();
    },
  });
  const clock = new FakeClock();
  const authz = new InboundAuthz({ service, counters: registry.counter(AUTHZ_METRIC, AUTHZ_METRIC_HELP, AUTHZ_METRIC_LABELS), logger: pino({ level: 'info' }, dest), clock });
  authz.apply(parsed.value);
  let appCalls = 0;
  const app: Handler = (_call, sink): UpstreamCall => {
    appCalls++;
    sink.onResponse(200, {});
    sink.onEnd(undefined);
    return { abort() {}, resume() {} };
  };
  const stack = compose([authzLayer(() => authz)], app);
  return {
    authz,
    registry,
    logs,
    clock,
    run(c) {
      const s: CallSpec = { peer: FRONTEND, method: 'GET', path: '/items', headers: {}, port: 8080, kind: 'http', ...c };
      const flat = Object.entries(s.headers).flatMap(([k, v]) => [k, v]);
      const view: RequestView = { method: s.method, path: s.path, query: '', authority: 'catalog', header: (n: string) => s.headers[n] } as unknown as RequestView;
      const call = new MeshCall('inbound', s.kind, 'http1', s.method, s.path, 'catalog', view, flat, null, '1.1');
      call.peer = s.peer === undefined ? undefined : id(s.peer);
      call.target = { key: 'app', address: '127.0.0.1', port: s.port, protocol: 'http1' };
      const before = appCalls;
      return new Promise((resolve) => {
        const sink: ResponseSink = {
          onResponse() {},
          onData: () => true,
          onEnd: () => resolve({ status: appCalls > before ? 'app' : 0, appCalls: appCalls - before }),
          onError: (err) => resolve({ status: (err as LocalReply).status, error: err as LocalReply, appCalls: appCalls - before }),
        };
        stack(call, sink);
      });
    },
  };
}

function metric(registry: Registry): string[] {
  return registry
    .render('prometheus')
    .split('\n')
    .filter((l) => l.startsWith(AUTHZ_METRIC));
}

t.test('no policy for the service: everything passes, nothing is counted', async (t) => {
  const s = setup('catalog', [{ name: 'other', spec: { service: 'pricing', rules: [{ action: 'DENY' }] } }]);
  t.equal(s.authz.current, undefined, 'nothing compiled for catalog');
  t.equal((await s.run({ peer: undefined })).status, 'app');
  t.same(metric(s.registry), []);
});

t.test('allow and deny by SPIFFE ID, service, namespace wildcard, path, method, header, port', async (t) => {
  const s = setup('catalog', [
    {
      name: 'catalog-access',
      spec: {
        service: 'catalog',
        defaultAction: 'DENY',
        rules: [
          { name: 'frontend-reads', action: 'ALLOW', from: [{ spiffeIds: [FRONTEND] }], to: { methods: ['GET'], paths: [{ prefix: '/items' }] } },
          { name: 'ops', action: 'ALLOW', from: [{ namespaces: ['op*'] }] },
          { name: 'self', action: 'ALLOW', from: [{ services: ['catalog'] }], to: { ports: [9090] } },
          { name: 'canary', action: 'ALLOW', to: { headers: [{ name: 'x-canary', regex: 'yes|true' }], paths: [{ regex: '/v[0-9]+/health' }] } },
        ],
      },
    },
  ]);
  const cases: { name: string; call: Partial<CallSpec>; allowed: boolean }[] = [
    { name: 'SPIFFE ID + method + path prefix', call: {}, allowed: true },
    { name: 'wrong method', call: { method: 'DELETE' }, allowed: false },
    { name: 'wrong path', call: { path: '/orders' }, allowed: false },
    { name: 'query ignored', call: { path: '/items/1?x=/orders' }, allowed: true },
    { name: 'namespace wildcard', call: { peer: OPS, method: 'DELETE', path: '/anything' }, allowed: true },
    { name: 'service (local SPIFFE form) + port', call: { peer: LOCAL_CATALOG, port: 9090, path: '/x' }, allowed: true },
    { name: 'service on another port', call: { peer: LOCAL_CATALOG, port: 8080, path: '/x' }, allowed: false },
    { name: 'header regex + path regex, any caller', call: { peer: undefined, path: '/v2/health', headers: { 'x-canary': 'yes' } }, allowed: true },
    { name: 'header regex is anchored', call: { peer: undefined, path: '/v2/health', headers: { 'x-canary': 'yesno' } }, allowed: false },
    { name: 'plaintext caller: no identity rule matches', call: { peer: undefined }, allowed: false },
  ];
  for (const c of cases) {
    const r = await s.run(c.call);
    t.equal(r.status, c.allowed ? 'app' : 403, c.name);
    t.equal(r.appCalls, c.allowed ? 1 : 0, `${c.name}: the app ${c.allowed ? 'sees' : 'never sees'} it`);
    if (!c.allowed) {
      t.equal(r.error?.flag, 'RBAC', `${c.name}: RBAC flag`);
      t.match(r.error?.message, /denied by AuthorizationPolicy catalog-access rule defaultAction/);
    }
  }
  const m = metric(s.registry);
  t.ok(m.includes(`${AUTHZ_METRIC}{policy="catalog-access",rule="frontend-reads",action="ALLOW",result="allow"} 2`), m.join('\n'));
  t.ok(m.includes(`${AUTHZ_METRIC}{policy="catalog-access",rule="defaultAction",action="default",result="deny"} 5`), m.join('\n'));
  t.ok(m.includes(`${AUTHZ_METRIC}{policy="catalog-access",rule="ops",action="ALLOW",result="allow"} 1`));
  const denied = s.logs.filter((l) => l.authz === 'deny');
  t.equal(denied.length, 5, 'each denial logged');
  t.has(denied[0], { policy: 'catalog-access', rule: 'defaultAction', method: 'DELETE', path: '/items', source: FRONTEND, msg: 'request denied by AuthorizationPolicy' });
  t.has(s.authz.decisions().find((d) => d.result === 'deny'), { policy: 'catalog-access', rule: 'defaultAction', count: 5 });
});

t.test('DENY before ALLOW; mesh-wide default; gRPC answer', async (t) => {
  const s = setup('catalog', [
    { name: 'mesh', spec: { defaultAction: 'ALLOW', rules: [{ name: 'no-debug', action: 'DENY', to: { headers: [{ name: 'x-debug' }] } }] } },
    { name: 'catalog', spec: { service: 'catalog', rules: [{ name: 'everyone', action: 'ALLOW', from: [{ namespaces: ['*'] }] }, { name: 'no-admin', action: 'DENY', to: { paths: [{ prefix: '/admin' }] } }] } },
  ]);
  t.equal((await s.run({ path: '/admin/x' })).status, 403, 'DENY wins over a matching ALLOW');
  t.equal((await s.run({ headers: { 'x-debug': '1' } })).error?.message, 'denied by AuthorizationPolicy mesh rule no-debug', 'the mesh-wide DENY applies too');
  t.equal((await s.run({ peer: undefined })).status, 'app', 'the mesh-wide defaultAction ALLOW, as no rule matched');
  const g = await s.run({ kind: 'grpc', method: 'POST', path: '/admin.Admin/Drop' });
  t.equal(g.status, 403);
  t.equal(g.error?.extra?.grpcStatus, 7, 'gRPC: PERMISSION_DENIED');
  t.equal((await s.run({ path: '/admin/x' })).error?.extra?.grpcStatus, undefined, 'HTTP: no gRPC status (not counted as one)');
});

t.test('allow-list without defaultAction denies the rest', async (t) => {
  const s = setup('catalog', [{ name: 'allow-frontend', spec: { service: 'catalog', rules: [{ action: 'ALLOW', from: [{ services: ['frontend'] }] }] } }]);
  t.equal((await s.run({})).status, 'app');
  const r = await s.run({ peer: OPS });
  t.equal(r.status, 403);
  t.match(r.error?.message, /allow-frontend rule defaultAction/);
});

t.test('dryRun and AUDIT: counted and logged, nothing denied; the access-log field', async (t) => {
  const s = setup('catalog', [
    {
      name: 'lockdown',
      spec: { service: 'catalog', dryRun: true, defaultAction: 'DENY', rules: [{ name: 'frontend', action: 'ALLOW', from: [{ services: ['frontend'] }] }, { name: 'no-delete', action: 'DENY', to: { methods: ['DELETE'] } }] },
    },
    { name: 'watch', spec: { service: 'catalog', rules: [{ name: 'writes', action: 'AUDIT', to: { methods: ['POST', 'DELETE'] } }] } },
  ]);
  t.equal((await s.run({})).status, 'app');
  t.equal((await s.run({ method: 'DELETE' })).status, 'app', 'a dry-run DENY rule lets it through');
  t.equal((await s.run({ peer: OPS })).status, 'app', 'a dry-run default DENY lets it through');
  t.equal((await s.run({ peer: OPS, method: 'POST' })).status, 'app');
  const m = metric(s.registry);
  for (const line of [
    `{policy="lockdown",rule="no-delete",action="DENY",result="would_deny"} 1`,
    `{policy="lockdown",rule="defaultAction",action="default",result="would_deny"} 2`,
    `{policy="lockdown",rule="frontend",action="ALLOW",result="allow"} 2`,
    `{policy="watch",rule="writes",action="AUDIT",result="audit"} 2`,
  ])
    t.ok(m.includes(AUTHZ_METRIC + line), `${line}\n${m.join('\n')}`);
  t.notOk(m.some((l) => l.includes('result="deny"')), 'nothing denied');
  t.ok(s.logs.some((l) => l.authz === 'would_deny' && l.rule === 'no-delete' && l.msg === 'request would be denied by AuthorizationPolicy (dryRun)'));
  t.ok(s.logs.some((l) => l.authz === 'audit' && l.policy === 'watch'));
});

t.test('log lines are rate-limited; the suppressed count shows on the next', async (t) => {
  const s = setup('catalog', [{ name: 'deny-all', spec: { service: 'catalog', defaultAction: 'DENY' } }]);
  for (let i = 0; i < LOG_PER_SECOND + 5; i++) t.equal((await s.run({})).status, 403);
  t.equal(s.logs.length, LOG_PER_SECOND);
  s.clock.advance(1000);
  await s.run({});
  t.equal(s.logs.length, LOG_PER_SECOND + 1);
  t.equal(s.logs.at(-1)?.suppressed, 5);
  t.ok(metric(s.registry).includes(`${AUTHZ_METRIC}{policy="deny-all",rule="defaultAction",action="default",result="deny"} ${LOG_PER_SECOND + 6}`), 'every denial counted');
});

t.test('a new snapshot replaces the rules; removing the policy restores access', async (t) => {
  const s = setup('catalog', [{ name: 'deny-all', spec: { service: 'catalog', defaultAction: 'DENY' } }]);
  t.equal((await s.run({})).status, 403);
  s.authz.apply([]);
  t.equal(s.authz.current, undefined);
  t.equal((await s.run({})).status, 'app');
  t.equal(s.authz.decisions()[0]?.count, 1, 'counts survive snapshots');
});
