/**
 * The demo services `meshlet up` runs: frontend -> catalog (v1, v2) -> pricing. frontend and
 * catalog are plain HTTP apps that know nothing of the mesh beyond HTTP_PROXY: they call each
 * other by service name (`http://catalog/items`) through their sidecar's outbound listener, and
 * forward the request's tracing and routing headers, as mesh apps are asked to. pricing is a gRPC
 * service (deploy/local/pricing.proto, @grpc/grpc-js, h2c); catalog still calls it with plain
 * HTTP/JSON (`GET http://pricing/price/teapot`), which catalog's sidecar transcodes to gRPC.
 */
import { existsSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

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
  if (role === 'pricing') return startPricing(opts.port ?? 0, opts.host ?? '127.0.0.1');
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

/** A price in 1.00 .. 50.99, stable per item. */
export function priceOf(item: string): number {
  let h = 0;
  for (const c of item) h = (h * 31 + c.charCodeAt(0)) % 10_000;
  return (h % 5000) / 100 + 1;
}

/** The pricing service over gRPC (h2c) on 127.0.0.1; `meshlet up` starts its sidecar with --app-protocol http2. */
async function startPricing(port: number, host: string): Promise<DemoApp> {
  // Loaded only for pricing: the other demo apps are plain HTTP.
  const grpc = await import('@grpc/grpc-js');
  const protoLoader = await import('@grpc/proto-loader');
  const root = packageRoot();
  const def = protoLoader.loadSync(path.join(root, 'deploy', 'local', 'pricing.proto'), {
    includeDirs: [path.join(__dirname, '..', 'proto'), path.dirname(require.resolve('protobufjs/package.json'))],
    keepCase: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { demo: { pricing: { v1: { Pricing: { service: import('@grpc/grpc-js').ServiceDefinition } } } } };
  const server = new grpc.Server();
  server.addService(pkg.demo.pricing.v1.Pricing.service, {
    GetPrice(call: { request: { item?: string } }, cb: (err: { code: number; details: string } | null, v?: unknown) => void) {
      const item = call.request.item ?? '';
      if (!/^[\w-]+$/.test(item)) return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'item must be letters, digits, "-" or "_"' });
      cb(null, { service: 'pricing', item, price: priceOf(item) });
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    port: bound,
    close: () =>
      new Promise<void>((done) => {
        server.tryShutdown(() => done());
        setTimeout(() => server.forceShutdown(), 2000).unref();
      }),
  };
}

/** The package root (deploy/ and package.json are there), from src/ or dist/src/. */
export function packageRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}
