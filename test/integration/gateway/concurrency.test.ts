/**
 * `meshlet gateway --concurrency 2` with the real processes: a control plane, the gateway's primary
 * and two workers. Both workers serve the Gateway's HTTP and HTTPS listeners (the per-worker
 * connection counter is the observable, like Envoy's listener.worker_N.downstream_cx_total, and
 * /config_dump lists the two worker pids); a Route change pushed by the control plane reaches
 * both; a certificate replaced on disk is served by both; /metrics counts every request once,
 * /stats reports each certificate once (and the control plane's GET /v1/certificates shows it),
 * /cache/purge reaches both workers' caches; a killed worker is restarted and serves again.
 */
import { copyFileSync, renameSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as tls from 'node:tls';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { apiRequest, eventually, portOf, start, tmpDir, type Proc } from '../lib/meshlet';
import { h1Upstream, service } from '../sidecar/helpers';
import { closedPort, gatewayResource, HOST, makeCert } from './helpers';

interface Res {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  serial?: string;
}

/** One request on a new connection (agent: false), so the kernel picks a worker each time. */
function get(port: number, host: string, p = '/', secure = false): Promise<Res> {
  return new Promise((resolve, reject) => {
    const opts = { host: HOST, port, path: p, headers: { host }, agent: false as const };
    const onRes = (res: http.IncomingMessage): void => {
      const serial = secure ? (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber : undefined;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers, serial }));
    };
    const req = secure ? https.get({ ...opts, servername: host, rejectUnauthorized: false }, onRes) : http.get(opts, onRes);
    req.on('error', reject);
  });
}

function admin(port: number, p: string, method = 'GET', body?: unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, path: p, method, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (b += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Sum of a metric's samples whose label set contains every `labels` pair. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

interface Dump {
  version: string | null;
  listeners: { name: string; address: { port: number } }[];
  workers: { worker: number; pid: number | null; listening: boolean; version: string | null }[];
}

const API = 'meshlet.dev/v1';

t.test('meshlet gateway --concurrency 2: both workers serve HTTP and HTTPS, follow the control plane, restart', async (t) => {
  const dir = tmpDir('meshlet-gateway-workers-');
  const cert = makeCert(dir, 'shop', ['shop.example.com'], 1);
  const v1 = await h1Upstream(t, (req, res) => {
    req.resume();
    res.writeHead(200, { 'cache-control': req.url?.startsWith('/cached') ? 'max-age=600' : 'no-store' });
    res.end('v1');
  });
  const v2 = await h1Upstream(t, (req, res) => {
    req.resume();
    res.end('v2');
  });
  const cp = start(['control-plane', '--data-dir', path.join(dir, 'data'), '--api', `${HOST}:0`, '--push', `${HOST}:0`, '--history-interval', '500']);
  t.teardown(() => cp.stop());
  const l = await cp.waitFor((x) => x.msg === 'control plane started', 60_000);
  const api = String(l.api);
  const apply = async (items: unknown[]): Promise<void> => {
    const r = await apiRequest(`${api}/v1/apply`, { method: 'POST', body: JSON.stringify({ items }), headers: { 'content-type': 'application/json' } });
    const text = await r.body.text();
    if (r.statusCode !== 200) throw new Error(`apply: ${r.statusCode} ${text}`);
  };
  const cpVersion = async (): Promise<string> => ((await (await apiRequest(`${api}/v1/status`)).body.json()) as { version: string }).version;
  const [httpPort, httpsPort] = [await closedPort(), await closedPort()];
  const shop = (backend: string) => ({ apiVersion: API, kind: 'Route', metadata: { name: 'shop' }, spec: { hosts: ['shop.example.com'], gateways: ['edge'], rules: [{ name: 'all', backends: [{ service: backend }], cache: {} }] } });
  await apply([
    service('v1', [{ port: v1.port }], 'http1'),
    service('v2', [{ port: v2.port }], 'http1'),
    shop('v1'),
    gatewayResource('edge', {
      listeners: [
        { name: 'http', port: httpPort, protocol: 'HTTP' },
        { name: 'https', port: httpsPort, protocol: 'HTTPS', tls: { certificates: [cert] } },
      ],
    }),
  ]);

  const gw: Proc = start(['gateway', '--name', 'edge', '--id', 'edge-0', '--control-plane', `${HOST}:${portOf(l.push)}`, '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0', '--concurrency', '2']);
  t.teardown(() => gw.stop());
  const started = await gw.waitFor((x) => x.msg === 'gateway started', 60_000);
  t.equal(started.concurrency, 2, "the 'gateway started' line names the workers");
  const adminPort = portOf(started.admin);
  const dump = async (): Promise<Dump> => JSON.parse((await admin(adminPort, '/config_dump')).body) as Dump;
  const metrics = async (): Promise<string> => (await admin(adminPort, '/metrics')).body;
  const perWorker = async (listener: string): Promise<number[]> => {
    const m = await metrics();
    return [0, 1].map((w) => metric(m, 'meshlet_worker_connections_total', { listener, worker: String(w) }));
  };
  /** Batches of 20 new connections (bounded: 10 batches) until each worker accepted more on `listener` than at the start. */
  const onBoth = async (t: Test, listener: string, send: () => Promise<Res>, check: (r: Res) => boolean, what: string): Promise<number> => {
    const before = await perWorker(listener);
    let now = before;
    let sent = 0;
    for (let round = 0; round < 10 && !now.every((n, i) => n > before[i]!); round++) {
      const rs = await Promise.all(Array.from({ length: 20 }, send));
      sent += rs.length;
      const bad = rs.find((r) => !check(r));
      t.notOk(bad, `${what}${bad ? `: got ${bad.status} ${bad.body} ${bad.serial ?? ''}` : ''}`);
      now = await perWorker(listener);
    }
    t.ok(
      now.every((n, i) => n > before[i]!),
      `${listener}: connections accepted by both workers (${now.map((n, i) => n - before[i]!).join(' / ')})`,
    );
    return sent;
  };
  await eventually('ready', async () => ((await admin(adminPort, '/ready')).status === 200 ? true : undefined));

  let sentHttp = 0;
  await t.test('two worker processes, each with the snapshot in force and the listeners bound', async (t) => {
    const d = await dump();
    t.equal(d.version, await cpVersion(), 'the version the control plane pushed');
    t.equal(d.workers.length, 2);
    t.ok(
      d.workers.every((w) => w.listening && w.version === d.version && w.pid !== null && w.pid !== gw.child.pid),
      'each worker is its own process and applied it',
    );
    t.not(d.workers[0]!.pid, d.workers[1]!.pid);
    t.same(d.listeners.map((x) => [x.name, x.address.port]).sort(), [
      ['http', httpPort],
      ['https', httpsPort],
    ]);
  });

  await t.test('HTTP: both workers serve, /metrics counts every request once', async (t) => {
    sentHttp = await onBoth(t, 'http', () => get(httpPort, 'shop.example.com'), (r) => r.status === 200 && r.body === 'v1', 'every request reaches v1');
    const m = await metrics();
    t.equal(metric(m, 'meshlet_gateway_requests_total', { listener: 'http' }), sentHttp, `the merged counter shows exactly ${sentHttp} requests`);
    t.equal(metric(m, 'meshlet_worker_connections_total', { listener: 'http' }), sentHttp, 'every connection counted by one worker');
    t.equal(metric(m, 'meshlet_workers', { state: 'running' }), 2);
  });

  await t.test('HTTPS: both workers terminate TLS with the certificate (SNI), reported once', async (t) => {
    await onBoth(t, 'https', () => get(httpsPort, 'shop.example.com', '/', true), (r) => r.status === 200 && r.body === 'v1' && r.serial === '01', 'every TLS request answered with serial 01');
    const stats = JSON.parse((await admin(adminPort, '/stats')).body) as { certificates: { listener: string; names: string[]; serial: string }[] };
    t.same(
      stats.certificates.map((c) => [c.listener, c.names, c.serial]),
      [['https', ['shop.example.com'], '01']],
      '/stats: the certificate once, not once per worker',
    );
    const m = await metrics();
    const expiry = metric(m, 'meshlet_gateway_certificate_expiry_timestamp_seconds', { listener: 'https' });
    t.ok(expiry > Date.now() / 1000 && expiry < Date.now() / 1000 + 3 * 86400, `the expiry gauge is the certificate's notAfter, not a sum over workers (${expiry})`);
    const sampled = await eventually('the control plane to sample the certificate', async () => {
      const r = (await (await apiRequest(`${api}/v1/certificates`)).body.json()) as { certificates: { gateway: string; serial: string }[] };
      return r.certificates.length > 0 ? r.certificates : undefined;
    });
    t.same(
      sampled.map((c) => [c.gateway, c.serial]),
      [['edge-0', '01']],
      'GET /v1/certificates: one certificate for the gateway',
    );
  });

  await t.test('a certificate renewed on disk is served by both workers', async (t) => {
    const renewed = makeCert(dir, 'shop-next', ['shop.example.com'], 2);
    copyFileSync(renewed.keyFile, cert.keyFile + '.tmp');
    copyFileSync(renewed.certFile, cert.certFile + '.tmp');
    renameSync(cert.keyFile + '.tmp', cert.keyFile);
    renameSync(cert.certFile + '.tmp', cert.certFile);
    // Each worker polls the files itself: wait until a batch sees only the new one.
    await eventually('both workers to reload', async () => {
      const rs = await Promise.all(Array.from({ length: 10 }, () => get(httpsPort, 'shop.example.com', '/', true)));
      return rs.every((r) => r.serial === '02') ? true : undefined;
    });
    await onBoth(t, 'https', () => get(httpsPort, 'shop.example.com', '/', true), (r) => r.status === 200 && r.serial === '02', 'every handshake gets serial 02');
    const m = await metrics();
    t.ok(metric(m, 'meshlet_gateway_certificate_reloads_total', { listener: 'https', result: 'ok' }) >= 2, 'reloaded by each worker');
  });

  await t.test('/cache/purge on the primary reaches both workers', async (t) => {
    await onBoth(t, 'http', () => get(httpPort, 'shop.example.com', '/cached'), (r) => r.status === 200 && r.body === 'v1', 'cached answers');
    const r = await admin(adminPort, '/cache/purge', 'POST', { prefix: '' });
    t.equal(r.status, 200);
    t.equal((JSON.parse(r.body) as { purged: number }).purged, 2, 'one entry from each worker');
  });

  await t.test('a Route change pushed by the control plane reaches both workers', async (t) => {
    await apply([shop('v2')]);
    const version = await cpVersion();
    await eventually('both workers to apply it', async () => {
      const d = await dump();
      return d.version === version && d.workers.every((w) => w.version === version) ? true : undefined;
    });
    t.equal((await admin(adminPort, '/ready')).status, 200);
    await onBoth(t, 'http', () => get(httpPort, 'shop.example.com'), (r) => r.status === 200 && r.body === 'v2', 'every request reaches v2');
    const m = await metrics();
    t.equal(metric(m, 'meshlet_policy_acks_total'), 2, 'one policy stream: one ACK per snapshot, not one per worker');
  });

  await t.test('a killed worker is restarted and serves', async (t) => {
    const d = await dump();
    const victim = d.workers[0]!.pid as number;
    process.kill(victim, 'SIGKILL');
    const restarted = await eventually('worker 0 to be restarted', async () => {
      const x = await dump();
      const w = x.workers[0]!;
      return w.pid !== null && w.pid !== victim && w.listening && w.version === x.version ? x : undefined;
    });
    t.not(restarted.workers[0]!.pid, victim, 'a new process in slot 0');
    t.equal(restarted.workers[1]!.pid, d.workers[1]!.pid, 'the other worker kept running');
    t.equal((await admin(adminPort, '/ready')).status, 200, 'ready again');
    t.equal(metric(await metrics(), 'meshlet_worker_restarts_total'), 1);
    await onBoth(t, 'http', () => get(httpPort, 'shop.example.com'), (r) => r.status === 200 && r.body === 'v2', 'the new worker has the snapshot in force');
    await onBoth(t, 'https', () => get(httpsPort, 'shop.example.com', '/', true), (r) => r.status === 200 && r.serial === '02', 'and the current certificate');
  });
});
