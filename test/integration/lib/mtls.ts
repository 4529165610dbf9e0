/** Helpers for the mTLS tests: certificates signed by a control plane's CA (as another workload would hold), metrics, an app that shows what it was sent. */
import type * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type { Test } from 'tap';
import { request } from 'undici';
import { FakeClock } from '../../../src/core/clock';
import { createPolicyDiscoveryClient, type SnapshotMessage } from '../../../src/proto';
import { CertificateAuthority, type CaMaterial } from '../../../src/security/ca';
import { createCsr } from '../../../src/security/csr';
import { generateKeyPair, privateKeyToPem } from '../../../src/security/keys';
import { serviceSpiffeId, type SpiffeId } from '../../../src/security/spiffe';
import { start, portOf, type Proc } from './meshlet';

export interface Workload {
  keyPem: string;
  chainPem: string;
  bundlePem: string;
}

/** A workload certificate for `service` from the CA in `dataDir`; `offsetMs` moves the CA's clock (expired / not yet valid). */
export async function issue(dataDir: string, service: string, opts: { offsetMs?: number; ttlMs?: number; spiffeId?: (trustDomain: string) => SpiffeId } = {}): Promise<Workload> {
  const stored = JSON.parse(readFileSync(path.join(dataDir, 'ca', 'ca.json'), 'utf8')) as { material: CaMaterial; bundle: { pem: string }[] };
  const ca = await CertificateAuthority.load(stored.material, new FakeClock(Date.now() + (opts.offsetMs ?? 0)));
  const keys = await generateKeyPair();
  const id = opts.spiffeId ? opts.spiffeId(stored.material.trustDomain) : serviceSpiffeId(stored.material.trustDomain, service);
  const c = await ca.sign(await createCsr(keys, id), id, opts.ttlMs ?? 3600_000);
  return { keyPem: await privateKeyToPem(keys.privateKey), chainPem: c.chainPem, bundlePem: stored.bundle.map((b) => b.pem).join('') };
}

/** The sum of a metric's samples whose labels include all of `labels`. */
export async function metric(admin: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await request(`http://127.0.0.1:${admin}/metrics`, { reset: true })).body.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

export interface App {
  port: number;
  /** The `x-meshlet-source` of every request it got, in order. */
  sources: (string | undefined)[];
  close(): Promise<void>;
}

/** An app answering JSON `{ source }`: who its sidecar says called. */
export function sourceApp(): Promise<App> {
  const sources: (string | undefined)[] = [];
  const server = http.createServer((req, res) => {
    const source = req.headers['x-meshlet-source'] as string | undefined;
    sources.push(source);
    const body = JSON.stringify({ source: source ?? null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        sources,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      }),
    ),
  );
}

export interface MeshSidecar extends Proc {
  inbound: number;
  outbound: number;
  admin: number;
}

/** `meshlet sidecar` with a join token, registered with the control plane at `push`. */
export async function meshSidecar(push: number, service: string, token: string, extra: string[] = []): Promise<MeshSidecar> {
  const p = start(
    ['sidecar', '--service', service, '--control-plane', `127.0.0.1:${push}`, '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...extra],
    { MESHLET_JOIN_TOKEN: token },
  );
  const l = await p.waitFor((x) => x.msg === 'sidecar started');
  return Object.assign(p, { inbound: portOf(l.inbound), outbound: portOf(l.outbound), admin: portOf(l.admin) });
}

/**
 * Opens a push stream on `port` with `creds` and registers as `node`; resolves with the first
 * message the control plane sends, or the error that ended the stream, and closes the stream.
 */
export function firstPushMessage(
  port: number,
  creds: grpc.ChannelCredentials,
  node: { id: string; service: string; credential: string },
): Promise<{ msg?: SnapshotMessage; error?: grpc.ServiceError }> {
  const client = createPolicyDiscoveryClient(`localhost:${port}`, creds);
  const call = client.Stream();
  return new Promise((resolve) => {
    const done = (r: { msg?: SnapshotMessage; error?: grpc.ServiceError }) => {
      call.removeAllListeners();
      call.on('error', () => undefined);
      call.cancel();
      client.close();
      resolve(r);
    };
    call.on('data', (msg: SnapshotMessage) => done({ msg }));
    call.on('error', (error: grpc.ServiceError) => done({ error }));
    call.write({ node: { ...node, address: '127.0.0.1', inboundPort: 15006, labels: {}, buildVersion: 'test' } });
  });
}

/** A sidecar process started with a join token (push over TLS), with its outbound and admin ports. */
export async function joinedSidecar(t: Test, push: number, service: string, token: string, extra: string[] = []): Promise<Proc & { outbound: number; admin: number }> {
  const p = start(
    ['sidecar', '--service', service, '--control-plane', `127.0.0.1:${push}`, '--advertise', '127.0.0.1', '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...extra],
    { MESHLET_JOIN_TOKEN: token },
    { pushTls: true },
  );
  t.teardown(() => p.stop());
  const l = await p.waitFor((x) => x.msg === 'sidecar started');
  return Object.assign(p, { outbound: portOf(l.outbound), admin: portOf(l.admin) });
}
