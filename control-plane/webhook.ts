/**
 * The sidecar injector as a Kubernetes mutating admission webhook: HTTPS (the API server only
 * calls webhooks over TLS), POST /inject, AdmissionReview v1 in and out (src/inject/admission.ts).
 * GET /healthz answers for probes. Bodies over 5 MiB are refused; nothing a client sends crashes it.
 *
 * AdmissionReviews are taken only on this TLS listener (TLS 1.2+): the REST API port has no
 * /inject, and a request that reached this handler without TLS (it cannot, but the check is
 * cheap) is refused.
 */
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { review } from '../src/inject/admission';
import type { InjectOptions } from '../src/inject/plan';

export interface WebhookOptions {
  host: string;
  port: number;
  cert: string | Buffer;
  key: string | Buffer;
  inject: InjectOptions;
  /** The push port's CA hash, asked at each review (it changes when the root rotates): injected proxies get `--ca-hash`. */
  caHash?: () => string | undefined;
  logger: Logger;
}

export interface Webhook {
  address: { host: string; port: number };
  close(): Promise<void>;
}

const MAX_BODY = 5 * 1024 * 1024;

export function startWebhook(opts: WebhookOptions): Promise<Webhook> {
  const log = opts.logger;
  const send = (res: import('node:http').ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const server = https.createServer({ cert: opts.cert, key: opts.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (!(req.socket as TLSSocket).encrypted) return send(res, 403, { code: 'TLS_REQUIRED', message: 'AdmissionReviews are accepted over the webhook TLS listener only' });
    if (path === '/healthz' && req.method === 'GET') return send(res, 200, { ok: true });
    if (path !== '/inject') return send(res, 404, { code: 'NOT_FOUND', message: `no such path: ${path}; the webhook is POST /inject` });
    if (req.method !== 'POST') return send(res, 405, { code: 'METHOD_NOT_ALLOWED', message: 'use POST' });
    const chunks: Buffer[] = [];
    let size = 0;
    let refused = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY && !refused) {
        refused = true;
        send(res, 413, { code: 'TOO_LARGE', message: `AdmissionReview over ${MAX_BODY} bytes` });
        req.destroy();
      }
      if (!refused) chunks.push(c);
    });
    req.on('error', () => undefined);
    req.on('end', () => {
      if (refused) return;
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (e) {
        return send(res, 400, { code: 'MALFORMED_REVIEW', message: `malformed AdmissionReview: not JSON (${(e as Error).message})` });
      }
      let a;
      try {
        a = review(parsed, opts.caHash && !opts.inject.caHash ? { ...opts.inject, caHash: opts.caHash() } : opts.inject);
      } catch (err) {
        // review() is written not to throw; should it, the API server gets an answer, not a reset.
        log.error({ err }, 'admission review failed');
        return send(res, 500, { code: 'INTERNAL', message: (err as Error).message });
      }
      if (a.status !== 200) log.warn({ message: (a.body as { message: string }).message }, 'malformed admission review');
      send(res, a.status, a.body);
    });
  });
  server.on('tlsClientError', (err) => log.debug({ err }, 'webhook TLS error'));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      const address = { host: opts.host, port: (server.address() as AddressInfo).port };
      log.info({ webhook: `https://${address.host}:${address.port}/inject` }, 'injector webhook listening');
      resolve({
        address,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeIdleConnections();
            setTimeout(() => server.closeAllConnections(), 2000).unref();
          }),
      });
    });
  });
}
