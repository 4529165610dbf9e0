/**
 * The admin port: `/ready` (200 once the first snapshot is applied), `/live`, `/config_dump`
 * (the version in force and the compiled config) and `/metrics` (Prometheus text format).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

export interface AdminSource {
  ready(): boolean;
  configDump(): unknown;
  metrics(): string;
  /** POST /quitquitquit from inside the pod: stop the sidecar (a classic-layout Job's app calls it when done). */
  quit?(): void;
}

export interface AdminServer {
  address(): { host: string; port: number };
  close(): Promise<void>;
}

export function startAdmin(host: string, port: number, src: AdminSource, logger: Logger): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/quitquitquit' && src.quit) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST', 'content-type': 'text/plain' }).end('use POST\n');
        return;
      }
      // Only from inside the pod: the admin port also answers the kubelet's probes from outside.
      const from = req.socket.remoteAddress ?? '';
      if (from !== '127.0.0.1' && from !== '::1' && from !== '::ffff:127.0.0.1') {
        res.writeHead(403, { 'content-type': 'text/plain' }).end('quitquitquit is only accepted from loopback\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('quitting\n');
      logger.info('quit requested through the admin port');
      src.quit();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    switch (path) {
      case '/ready': {
        const ok = src.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'no policy snapshot applied yet\n');
        return;
      }
      case '/live':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n');
        return;
      case '/config_dump':
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(src.configDump(), null, 2) + '\n');
        return;
      case '/metrics':
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(src.metrics());
        return;
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /ready /live /config_dump /metrics\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      logger.info({ listener: 'admin', address: `${a.address}:${a.port}` }, 'listening');
      resolve({
        address: () => ({ host: a.address, port: a.port }),
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
