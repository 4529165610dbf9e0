/**
 * WebSocket through two sidecars: a real `ws` client -> sidecar A (outbound: routes apply) ->
 * sidecar B (inbound) -> a real `ws` echo server. Text and binary frames both ways, a message
 * larger than the socket buffers, routes (a path with no rule gets the mesh's 404 NR), the idle
 * timeout of the route, the connection counters on the admin port, and an upstream that is down.
 */
import { once } from 'node:events';
import type * as http from 'node:http';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { closedPort, HOST, request, route, service, startSidecar, within, type SidecarProc } from './helpers';

interface Echo {
  port: number;
  requests: http.IncomingMessage[];
}

async function echoServer(t: Test): Promise<Echo> {
  const wss = new WebSocketServer({
    host: HOST,
    port: 0,
    // The app refuses upgrades on /ws/forbidden: 403, no switch.
    verifyClient: (info: { req: http.IncomingMessage }, cb: (ok: boolean, code?: number, message?: string) => void) =>
      info.req.url?.startsWith('/ws/forbidden') ? cb(false, 403, 'Forbidden') : cb(true),
  });
  const e: Echo = { port: 0, requests: [] };
  wss.on('connection', (ws, req) => {
    e.requests.push(req);
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  await once(wss, 'listening');
  e.port = (wss.address() as { port: number }).port;
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  );
  return e;
}

function connect(t: Test, port: number, path: string, host: string): WebSocket {
  const ws = new WebSocket(`ws://${HOST}:${port}${path}`, { headers: { host } });
  ws.on('error', () => undefined);
  t.teardown(() => ws.terminate());
  return ws;
}

const next = (ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> =>
  new Promise((r) => ws.once('message', (data: Buffer, binary: boolean) => r({ data, binary })));

async function metric(sc: SidecarProc, name: string): Promise<number> {
  const r = await request({ port: sc.admin, path: '/metrics', headers: { host: 'admin' } });
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(r.text);
  return m ? Number(m[1]) : NaN;
}

t.test('WebSocket echo through two sidecars', async (t) => {
  const app = await echoServer(t);
  const b = await startSidecar(t, [service('unused', [{ port: 9 }])], { service: 'chat', appPort: app.port });
  const down = await closedPort();
  const a = await startSidecar(t, [
    service('chat', [{ port: b.inbound }]),
    service('down', [{ port: down }]),
    { ...route('chat', ['chat'], []), spec: { hosts: ['chat'], rules: [{ matches: [{ path: { prefix: '/ws' } }], backends: [{ service: 'chat' }] }], websocket: { idleTimeout: '400ms' } } },
    route('down', ['down'], [{ backends: [{ service: 'down' }] }]),
  ]);

  t.test('frames both ways, text, binary and large', async (t) => {
    const ws = connect(t, a.outbound, '/ws/room?x=1', 'chat');
    await within(once(ws, 'open'), 10_000, 'the upgrade');
    ws.send('hello');
    const m1 = await within(next(ws), 10_000, 'the echo');
    t.equal(m1.data.toString(), 'hello');
    t.equal(m1.binary, false, 'a text frame');
    const big = Buffer.alloc(1024 * 1024, 3);
    big.writeUInt32BE(0xdeadbeef, 0);
    ws.send(big);
    const m2 = await within(next(ws), 10_000, 'the large echo');
    t.equal(m2.binary, true, 'a binary frame');
    t.ok(m2.data.equals(big), '1 MiB came back intact');
    const req = app.requests[app.requests.length - 1];
    t.equal(req?.url, '/ws/room?x=1', 'path and query reach the app');
    t.equal(req?.headers.host, 'chat');
    t.equal(req?.headers.via, '1.1 meshlet, 1.1 meshlet', 'through both sidecars');
    t.equal(req?.headers['x-forwarded-for'], '127.0.0.1, 127.0.0.1');
    t.equal(await metric(a, 'meshlet_websocket_connections'), 1, 'counted open on the client sidecar');
    t.equal(await metric(b, 'meshlet_websocket_connections'), 1, 'and on the server sidecar');
    ws.close();
    await within(once(ws, 'close'), 10_000, 'the close');
    await within(
      (async () => {
        while ((await metric(a, 'meshlet_websocket_connections')) !== 0) await new Promise((r) => setTimeout(r, 20));
      })(),
      10_000,
      'the gauge to drop',
    );
    t.ok((await metric(a, 'meshlet_websocket_connections_total')) >= 1, 'and in the total');
  });

  t.test('routes apply', async (t) => {
    const ws = connect(t, a.outbound, '/elsewhere', 'chat');
    const [, res] = (await within(once(ws, 'unexpected-response'), 10_000, 'the answer')) as [unknown, http.IncomingMessage];
    t.equal(res.statusCode, 404, 'no rule for this path');
    t.equal(res.headers['x-meshlet-flags'], 'NR');
    const dead = connect(t, a.outbound, '/', 'down');
    const [, res2] = (await within(once(dead, 'unexpected-response'), 10_000, 'the answer')) as [unknown, http.IncomingMessage];
    t.equal(res2.statusCode, 503, 'upstream down');
    t.equal(res2.headers['x-meshlet-flags'], 'UF');
  });

  t.test('an app that refuses the upgrade: its answer reaches the client', async (t) => {
    const ws = connect(t, a.outbound, '/ws/forbidden', 'chat');
    const [, res] = (await within(once(ws, 'unexpected-response'), 10_000, 'the answer')) as [unknown, http.IncomingMessage];
    t.equal(res.statusCode, 403);
    t.equal(res.headers['x-meshlet-flags'], undefined, "the app's answer, not the mesh's");
  });

  t.test('the idle timeout closes a quiet connection', async (t) => {
    const ws = connect(t, a.outbound, '/ws/quiet', 'chat');
    await within(once(ws, 'open'), 10_000, 'the upgrade');
    ws.send('still here');
    await next(ws);
    const [code] = (await within(once(ws, 'close'), 10_000, 'the sidecar to close the idle connection')) as [number];
    t.equal(code, 1006, 'closed by the proxy (no close frame): idle');
  });
});
