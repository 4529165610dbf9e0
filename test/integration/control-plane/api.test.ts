import t, { type Test } from 'tap';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { startControlPlane, type ControlPlane } from '../../../control-plane/index';
import { createPolicyDiscoveryClient, type PolicyDiscoveryClientStream, type SnapshotMessage } from '../../../src/proto';

const route = (name: string, spec: unknown, extra: object = {}) => ({ apiVersion: 'meshlet.dev/v1', kind: 'Route', metadata: { name, ...extra }, spec });
const webRoute = (name = 'web', backend: object = { service: 'web' }) => route(name, { hosts: [name], rules: [{ backends: [backend] }] });
const dp = (name: string, service: string, subsets: string[]) => ({
  apiVersion: 'meshlet.dev/v1',
  kind: 'DestinationPolicy',
  metadata: { name },
  spec: { service, subsets: subsets.map((s) => ({ name: s, labels: { version: s } })) },
});

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

async function start(t: Test): Promise<{ cp: ControlPlane; call: (method: string, p: string, body?: unknown) => Promise<Res> }> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-api-'));
  // Fake sidecars without credentials: the development opt-out.
  const cp = await startControlPlane({ dataDir, api: { port: 0 }, push: { port: 0 }, coalesceMs: 1, security: { mode: 'permissive' } });
  t.teardown(async () => {
    await cp.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  const call = (method: string, p: string, body?: unknown): Promise<Res> =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const req = http.request({ host: cp.apiAddress.host, port: cp.apiAddress.port, method, path: p, headers: data ? { 'content-type': 'application/json' } : {} }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
        });
      });
      req.on('error', reject);
      req.end(data);
    });
  return { cp, call };
}

/** A fake sidecar: a real gRPC push stream that queues the snapshots it receives. */
class FakeSidecar {
  readonly stream: PolicyDiscoveryClientStream;
  private readonly queue: SnapshotMessage[] = [];
  private waiter: ((m: SnapshotMessage) => void) | undefined;
  private readonly client;

  constructor(target: string, id: string) {
    this.client = createPolicyDiscoveryClient(target);
    this.stream = this.client.Stream();
    this.stream.on('data', (m: SnapshotMessage) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(m);
      else this.queue.push(m);
    });
    this.stream.on('error', () => undefined);
    this.stream.write({ node: { id, service: 'web', address: '10.0.0.7', inboundPort: 15006, labels: { version: 'v1' }, buildVersion: 'test' } });
  }

  next(timeoutMs = 5000): Promise<SnapshotMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no snapshot within ' + timeoutMs + 'ms')), timeoutMs);
      this.waiter = (x) => {
        clearTimeout(timer);
        resolve(x);
      };
    });
  }

  ack(m: SnapshotMessage): void {
    this.stream.write({ ack: { version: m.version, nonce: m.nonce } });
  }

  nack(m: SnapshotMessage, reason: string): void {
    this.stream.write({ nack: { version: m.version, nonce: m.nonce, reason } });
  }

  close(): void {
    this.stream.end();
    this.client.close();
  }
}

async function eventually<T>(f: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('CRUD round trip', async (t) => {
  const { call } = await start(t);
  let r = await call('GET', '/v1/routes');
  t.equal(r.status, 200);
  t.same(r.body, { apiVersion: 'meshlet.dev/v1', kind: 'List', items: [] });

  r = await call('POST', '/v1/routes', webRoute());
  t.equal(r.status, 201, 'created');
  t.equal(r.body.metadata.name, 'web');
  t.match(r.body.metadata.resourceVersion, /^\d+$/);
  t.same(r.body.spec.rules[0].backends, [{ service: 'web', weight: 1 }], 'stored normalised');
  t.equal(r.body.spec.rules[0].name, 'rule-0');
  const rv1 = r.body.metadata.resourceVersion;

  r = await call('POST', '/v1/route', webRoute());
  t.equal(r.status, 409, 'create again conflicts');
  t.equal(r.body.code, 'conflict');

  for (const k of ['route', 'routes', 'Route']) {
    r = await call('GET', `/v1/${k}/web`);
    t.equal(r.status, 200, `GET via ${k}`);
    t.equal(r.body.metadata.resourceVersion, rv1);
  }
  r = await call('GET', '/v1/routes');
  t.equal(r.body.items.length, 1);
  t.equal(r.body.items[0].metadata.resourceVersion, rv1);

  // PUT updates with the current version, refuses a stale one.
  const updated = route('web', { hosts: ['web'], rules: [{ backends: [{ service: 'web' }], timeout: '2s' }] }, { resourceVersion: rv1 });
  r = await call('PUT', '/v1/routes/web', updated);
  t.equal(r.status, 200, 'updated');
  t.equal(r.body.spec.rules[0].timeout, '2s');
  const rv2 = r.body.metadata.resourceVersion;
  t.not(rv2, rv1);
  r = await call('PUT', '/v1/routes/web', updated);
  t.equal(r.status, 409, 'stale resourceVersion');
  t.equal(r.body.code, 'conflict');
  t.match(r.body.message, /modified/);

  // PUT without a version creates.
  r = await call('PUT', '/v1/routes/api', webRoute('api'));
  t.equal(r.status, 201);

  // Name and kind must match the URL.
  r = await call('PUT', '/v1/routes/other', webRoute('api'));
  t.equal(r.status, 400);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['metadata.name']);
  r = await call('POST', '/v1/dp', webRoute('x'));
  t.equal(r.status, 400);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['kind']);

  // DELETE, conditional then plain.
  r = await call('DELETE', '/v1/routes/web?resourceVersion=1');
  t.equal(r.status, 409, 'delete with a stale version');
  r = await call('DELETE', `/v1/routes/web?resourceVersion=${rv2}`);
  t.equal(r.status, 200);
  t.equal(r.body.metadata.name, 'web', 'returns the deleted resource');
  r = await call('GET', '/v1/routes/web');
  t.equal(r.status, 404);
  t.equal(r.body.code, 'not_found');
  r = await call('DELETE', '/v1/routes/web');
  t.equal(r.status, 404);
});

t.test('bad input is a JSON error, never a crash', async (t) => {
  const { call } = await start(t);
  let r = await call('POST', '/v1/routes', route('web', { hosts: ['web'], rules: [{ backends: [{ service: 'web' }], matches: [{ path: { regex: '(' } }] }] }));
  t.equal(r.status, 400);
  t.equal(r.body.code, 'invalid');
  t.equal(r.body.message, 'Route/web is invalid');
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['spec.rules[0].matches[0].path.regex']);

  r = await call('POST', '/v1/routes', { ...webRoute(), status: {} });
  t.equal(r.status, 400, 'unknown field');
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['status']);
  t.match(r.body.errors[0].message, /unknown field/);

  r = await call('POST', '/v1/routes', '{"kind": ');
  t.equal(r.status, 400);
  t.equal(r.body.code, 'invalid_json');
  r = await call('POST', '/v1/routes');
  t.equal(r.body.code, 'invalid_json', 'empty body');
  r = await call('POST', '/v1/routes', 'null');
  t.equal(r.status, 400);
  t.equal(r.body.code, 'invalid');

  r = await call('GET', '/v1/ingresses');
  t.equal(r.status, 404);
  t.equal(r.body.code, 'unknown_kind');
  r = await call('GET', '/v2/routes');
  t.equal(r.status, 404);
  t.equal(r.body.code, 'not_found');
  r = await call('GET', '/v1/routes/%E0%A4%A');
  t.equal(r.status, 400, 'bad percent-encoding');
  r = await call('PATCH', '/v1/routes/web', {});
  t.equal(r.status, 405);
  t.equal(r.headers.allow, 'GET, PUT, DELETE');
  r = await call('GET', '/v1/apply');
  t.equal(r.status, 405);
  t.equal(r.headers.allow, 'POST');

  r = await call('POST', '/v1/routes', JSON.stringify({ ...webRoute(), pad: 'x'.repeat(4 * 1024 * 1024) }));
  t.equal(r.status, 413);
  t.equal(r.body.code, 'too_large');

  r = await call('GET', '/healthz');
  t.equal(r.status, 200);
  t.equal(r.text, 'ok\n');
});

t.test('references are checked against the resulting set', async (t) => {
  const { call, cp } = await start(t);
  let r = await call('POST', '/v1/routes', webRoute('web', { service: 'web', subset: 'v2' }));
  t.equal(r.status, 400, 'subset nobody defines');
  t.equal(r.body.code, 'invalid');
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['Route/web: spec.rules[0].backends[0].subset']);

  t.equal((await call('POST', '/v1/dp', dp('web', 'web', ['v1', 'v2']))).status, 201);
  t.equal((await call('POST', '/v1/routes', webRoute('web', { service: 'web', subset: 'v2' }))).status, 201);

  // Dropping the subset the route uses, or the whole policy, is refused.
  r = await call('PUT', '/v1/destinationpolicies/web', dp('web', 'web', ['v1']));
  t.equal(r.status, 400);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['Route/web: spec.rules[0].backends[0].subset']);
  r = await call('DELETE', '/v1/destinationpolicies/web');
  t.equal(r.status, 400);
  t.match(r.body.message, /cannot be deleted/);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['Route/web: spec.rules[0].backends[0].subset']);
  t.ok(cp.store.get('DestinationPolicy', 'web'), 'still there');

  // A second route for the same host.
  r = await call('POST', '/v1/routes', route('web2', { hosts: ['web'], rules: [{ backends: [{ service: 'web' }] }] }));
  t.equal(r.status, 400);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['Route/web2: spec.hosts[0]']);
});

t.test('apply is all or nothing', async (t) => {
  const { call, cp } = await start(t);
  t.equal((await call('POST', '/v1/routes', webRoute('web'))).status, 201);
  const rev = cp.store.revision;

  let r = await call('POST', '/v1/apply', {
    items: [webRoute('api'), route('bad', { hosts: ['bad'], rules: [{ backends: [{ service: 'bad' }], timeout: 'soon' }] }), { kind: 'Route' }],
  });
  t.equal(r.status, 400);
  t.equal(r.body.code, 'invalid');
  const paths = r.body.errors.map((e: { path: string }) => e.path);
  t.ok(paths.includes('Route/bad: spec.rules[0].timeout'), 'named item');
  t.ok(paths.some((p: string) => p.startsWith('document[2]: ')), 'unnamed item');
  t.equal(cp.store.revision, rev, 'nothing written');
  t.notOk(cp.store.get('Route', 'api'));

  // Parses, but references a subset only a *later* item would define in a different service.
  r = await call('POST', '/v1/apply', { items: [webRoute('api', { service: 'api', subset: 'v1' }), dp('web', 'web', ['v1'])] });
  t.equal(r.status, 400);
  t.same(r.body.errors.map((e: { path: string }) => e.path), ['Route/api: spec.rules[0].backends[0].subset']);
  t.equal(cp.store.revision, rev);

  r = await call('POST', '/v1/apply', { items: [dp('web', 'web', ['v1']), webRoute('web', { service: 'web', subset: 'v1' }), webRoute('api')] });
  t.equal(r.status, 200);
  t.equal(r.body.revision, rev + 1, 'one revision for the whole apply');
  t.same(
    r.body.results.map((x: { kind: string; name: string; action: string }) => `${x.kind}/${x.name} ${x.action}`),
    ['DestinationPolicy/web created', 'Route/web updated', 'Route/api created'],
  );
  r = await call('POST', '/v1/apply', { items: [webRoute('api')] });
  t.same(r.body.results[0].action, 'unchanged');
  t.equal(r.body.revision, rev + 1);

  r = await call('POST', '/v1/apply', { things: [] });
  t.equal(r.status, 400);
});

t.test('status, snapshot push, ACK/NACK and metrics', async (t) => {
  const { call, cp } = await start(t);
  const sidecar = new FakeSidecar(`${cp.pushAddress.host}:${cp.pushAddress.port}`, 'web-1');
  t.teardown(() => sidecar.close());

  const first = await sidecar.next();
  const endpoints = JSON.parse(first.endpointsJson);
  t.equal(endpoints.length, 1, 'the sidecar is in its own snapshot');
  t.equal(endpoints[0].address, '10.0.0.7');
  sidecar.ack(first);
  const acked = await eventually(async () => {
    const s = (await call('GET', '/v1/status')).body;
    return s.sidecars[0]?.ackedVersion ? s : undefined;
  });
  t.equal(acked.sidecars.length, 1);
  t.equal(acked.sidecars[0].id, 'web-1');
  t.equal(acked.sidecars[0].connected, true);
  t.equal(acked.sidecars[0].ackedVersion, first.version);
  t.equal(acked.version, first.version);

  // A change after connect is pushed.
  const t0 = performance.now();
  const put = await call('PUT', '/v1/routes/web', webRoute());
  t.equal(put.status, 201);
  const second = await sidecar.next();
  const ms = performance.now() - t0;
  t.comment(`push latency (PUT sent -> snapshot at the sidecar): ${ms.toFixed(2)} ms`);
  t.not(second.version, first.version);
  t.same(JSON.parse(second.resourcesJson).map((r: { metadata: { name: string } }) => r.metadata.name), ['web']);
  sidecar.nack(second, 'spec.rules[0]: not today');
  const nacked = await eventually(async () => {
    const s = (await call('GET', '/v1/status')).body;
    return s.sidecars[0]?.nackReason ? s : undefined;
  });
  t.equal(nacked.sidecars[0].nackVersion, second.version);
  t.equal(nacked.sidecars[0].nackReason, 'spec.rules[0]: not today');
  t.equal(nacked.sidecars[0].ackedVersion, first.version, 'the last good version stays');
  t.equal(nacked.version, second.version);
  t.ok(nacked.convergence, 'convergence measured');
  t.equal(nacked.convergence.version, second.version);
  t.equal(nacked.convergence.nacked, 1);

  const snap = (await call('GET', '/v1/snapshot')).body;
  t.equal(snap.version, second.version);
  t.equal(snap.resources.length, 1);
  t.equal(snap.endpoints.length, 1);

  const m = await call('GET', '/metrics');
  t.equal(m.status, 200);
  t.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  t.match(m.text, /^meshlet_push_acks_total 1$/m);
  t.match(m.text, /^meshlet_push_nacks_total 1$/m);
  t.match(m.text, /^meshlet_connected_sidecars 1$/m);
  t.match(m.text, /^meshlet_api_requests_total\{code="200"\} \d+$/m);
});

t.test('concurrent writers: one wins, the other gets 409', async (t) => {
  const { call } = await start(t);
  const rv = (await call('POST', '/v1/routes', webRoute())).body.metadata.resourceVersion;
  const edit = (timeout: string) => route('web', { hosts: ['web'], rules: [{ backends: [{ service: 'web' }], timeout }] }, { resourceVersion: rv });
  const results = await Promise.all([call('PUT', '/v1/routes/web', edit('1s')), call('PUT', '/v1/routes/web', edit('2s'))]);
  t.same(results.map((r) => r.status).sort(), [200, 409]);
});

t.test('a restarted control plane serves what it stored, at the same snapshot version', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-api-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const opts = { dataDir, api: { port: 0 }, push: { port: 0 } };
  let cp = await startControlPlane(opts);
  const base = () => `http://${cp.apiAddress.host}:${cp.apiAddress.port}`;
  const put = await fetch(`${base()}/v1/routes/web`, { method: 'PUT', body: JSON.stringify(webRoute()) });
  t.equal(put.status, 201);
  const before = (await (await fetch(`${base()}/v1/status`)).json()) as { version: string; revision: number };
  await cp.close(); // with fetch's keep-alive connection still open
  cp = await startControlPlane(opts);
  t.teardown(() => cp.close());
  const after = (await (await fetch(`${base()}/v1/status`)).json()) as { version: string; revision: number };
  t.same(after, { ...before, convergence: null, sidecars: [] });
  const got = await fetch(`${base()}/v1/routes/web`);
  t.equal(got.status, 200);
});

t.test('the JSON Schema of every kind is served at /v1/schema/{kind}', async (t) => {
  const { call } = await start(t);
  const list = await call('GET', '/v1/schema');
  t.equal(list.status, 200);
  t.same(
    list.body.kinds.map((k: { kind: string }) => k.kind),
    ['Route', 'DestinationPolicy', 'RateLimitPolicy', 'Service', 'GrpcTranscoding', 'AuthorizationPolicy', 'PeerAuthentication', 'Gateway', 'TLSCertificate', 'ApiConsumer'],
  );
  for (const { kind, schema } of list.body.kinds as { kind: string; schema: string }[]) {
    const r = await call('GET', schema);
    t.equal(r.status, 200, schema);
    t.match(r.headers['content-type'], /json/);
    t.same(r.body, JSON.parse(fs.readFileSync(path.join(__dirname, '../../../deploy/schema', `${kind.toLowerCase()}.json`), 'utf8')), `${kind}: as in deploy/schema/`);
  }
  const alias = await call('GET', '/v1/schema/routes');
  t.equal(alias.body.title, 'meshlet.dev/v1 Route', 'kind aliases work');
  const bad = await call('GET', '/v1/schema/ingress');
  t.equal(bad.status, 404);
  t.equal(bad.body.code, 'unknown_kind');
});
