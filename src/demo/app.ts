/**
 * The demo services `meshlet up` runs: frontend -> catalog (v1, v2) -> pricing. Plain HTTP apps
 * that know nothing of the mesh beyond HTTP_PROXY: they call each other by service name
 * (`http://catalog/items`) through their sidecar's outbound listener, and forward the request's
 * tracing and routing headers, as mesh apps are asked to.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type DemoRole = 'frontend' | 'catalog' | 'pricing';

export interface DemoApp {
  port: number;
  close(): Promise<void>;
}

/** Headers an app forwards from its request to the calls it makes (routing and trace context). */
const PROPAGATE = ['x-canary', 'x-request-id', 'traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled'];

/**
 * `proxy`: call through the sidecar's outbound listener (HTTP_PROXY style). Without it the app
 * calls the URL directly, as an app in an intercepted pod does (`meshlet up --netns`).
 */
export function startDemoApp(role: DemoRole, opts: { version?: string; proxy?: () => { host: string; port: number }; port?: number; host?: string }): Promise<DemoApp> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const instance = `${role}${opts.version ? '-' + opts.version : ''}`;

  // Through the sidecar, absolute-form, exactly as an HTTP_PROXY-aware client does it.
  const call = (url: string, from: http.IncomingMessage): Promise<{ status: number; body: unknown }> =>
    new Promise((resolve, reject) => {
      const proxy = opts.proxy?.();
      const u = new URL(url);
      const headers: Record<string, string> = { host: u.host };
      for (const h of PROPAGATE) {
        const v = from.headers[h];
        if (typeof v === 'string') headers[h] = v;
      }
      const where = proxy ? { host: proxy.host, port: proxy.port, path: url } : { host: u.hostname, port: Number(u.port || 80), path: u.pathname + u.search };
      const req = http.request({ ...where, method: 'GET', headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON: keep the text (a mesh error page, say)
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });

  const send = (res: http.ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body) + '\n';
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    const fail = (err: unknown) => send(res, 502, { service: instance, error: (err as Error).message });
    if (role === 'pricing') {
      const m = /^\/price\/([\w-]+)$/.exec(path);
      if (!m) return send(res, 404, { service: instance, error: 'try /price/ITEM' });
      const item = m[1] as string;
      let h = 0;
      for (const c of item) h = (h * 31 + c.charCodeAt(0)) % 10_000;
      return send(res, 200, { service: instance, item, price: (h % 5000) / 100 + 1 });
    }
    if (role === 'catalog') {
      if (path !== '/items') return send(res, 404, { service: instance, error: 'try /items' });
      const names = opts.version === 'v2' ? ['teapot', 'kettle', 'mug'] : ['teapot', 'kettle'];
      Promise.all(names.map((n) => call(`http://pricing/price/${n}`, req))).then((prices) => {
        const bad = prices.find((p) => p.status !== 200);
        if (bad) return send(res, 502, { service: instance, error: 'pricing failed', pricing: bad });
        send(res, 200, { service: instance, items: prices.map((p) => p.body) });
      }, fail);
      return;
    }
    // frontend
    if (path !== '/') return send(res, 404, { service: instance, error: 'try /' });
    call('http://catalog/items', req).then((c) => send(res, c.status === 200 ? 200 : 502, { service: instance, catalog: c.body }), fail);
  });
  server.keepAliveTimeout = 65_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((done) => {
            agent.destroy();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
