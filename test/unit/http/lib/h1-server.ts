import * as net from 'node:net';
import type { Test } from 'tap';
import { H1Server, type H1Request, type H1Response } from '../../../../src/http/h1-server';

/** meshlet's HTTP/1.1 server on a loopback port, closed at the test's end: the port. */
export async function startH1Server(t: Test, onRequest: (req: H1Request, res: H1Response) => void, maxHeaderBytes = 64 * 1024): Promise<number> {
  const h1 = new H1Server({ maxHeaderBytes, headersTimeoutMs: 5_000, keepAliveTimeoutMs: 5_000, onRequest, onRefused: () => undefined });
  const server = net.createServer((s) => h1.serve(s, Buffer.alloc(0)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    h1.close();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}
