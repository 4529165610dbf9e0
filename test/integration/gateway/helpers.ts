/**
 * The real `meshlet gateway --config FILE` as a child process, with certificates made by openssl
 * and free ports for the Gateway's listeners (a Gateway names its ports: bound, closed, reused).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import type { Test } from 'tap';
import type * as tls from 'node:tls';
import { closedPort, HOST, MAIN, within } from '../sidecar/helpers';

export { closedPort, HOST, MAIN, within };

type Obj = Record<string, unknown>;
const API = 'meshlet.dev/v1';

export const gatewayResource = (name: string, spec: Obj): Obj => ({ apiVersion: API, kind: 'Gateway', metadata: { name }, spec });

/** A self-signed certificate for `names` (the first is the CN), valid `days` from now, written to dir; its files. */
export function makeCert(dir: string, file: string, names: string[], serial = 1, days = 2): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, `${file}.crt`);
  const keyFile = path.join(dir, `${file}.key`);
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', String(days), '-set_serial', String(serial), '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`, '-keyout', keyFile, '-out', certFile],
    { stdio: 'ignore' },
  );
  return { certFile, keyFile };
}

/**
 * A self-signed certificate valid between two given times (`openssl ca -selfsign -startdate
 * -enddate`: `openssl req -x509` only counts days from now), e.g. one that has already expired.
 */
export function makeCertBetween(dir: string, file: string, names: string[], notBefore: Date, notAfter: Date): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, `${file}.crt`);
  const keyFile = path.join(dir, `${file}.key`);
  const work = mkdtempSync(path.join(dir, `${file}-ca-`));
  const csr = path.join(work, 'req.csr');
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`, '-keyout', keyFile, '-out', csr], { stdio: 'ignore' });
  writeFileSync(path.join(work, 'index.txt'), '');
  writeFileSync(path.join(work, 'serial'), '01\n');
  writeFileSync(
    path.join(work, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${work}/index.txt\nnew_certs_dir = ${work}\nserial = ${work}/serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n`,
  );
  const asn1 = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  execFileSync('openssl', ['ca', '-batch', '-notext', '-config', path.join(work, 'ca.cnf'), '-selfsign', '-keyfile', keyFile, '-in', csr, '-startdate', asn1(notBefore), '-enddate', asn1(notAfter), '-out', certFile], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
  return { certFile, keyFile };
}

export function tempDir(t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'meshlet-gateway-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface GatewayProc {
  admin: number;
  logs: Record<string, unknown>[];
  configFile: string;
}

export async function startGateway(t: Test, name: string, resources: Obj[], dir: string, args: string[] = []): Promise<GatewayProc> {
  const configFile = path.join(dir, `${name}-policies.yaml`);
  writeFileSync(configFile, resources.map((r) => JSON.stringify(r)).join('\n---\n') + '\n');
  const child = spawn(process.execPath, [MAIN, 'gateway', '--name', name, '--config', configFile, '--address', HOST, '--admin', `${HOST}:0`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const k = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(k);
    }
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const logs: Record<string, unknown>[] = [];
  const started = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (rec.msg === 'gateway started') resolve(rec);
      } catch {
        // not JSON
      }
    });
    void exited.then(() => reject(new Error(`gateway exited (${child.exitCode}) before it started; stderr:\n${stderr}`)));
  });
  const line = await within(started, 15_000, `the 'gateway started' line; stderr:\n${stderr}`);
  const a = String(line.admin);
  return { admin: Number(a.slice(a.lastIndexOf(':') + 1)), logs, configFile };
}

/** A metric's value from the gateway's admin /metrics (0 when absent). */
export async function metric(admin: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://${HOST}:${admin}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/**
 * GET / on `port` for `host` over one keep-alive TLS connection (a new request reuses it while it
 * lasts): the body, whether the connection was reused, and the serial of the certificate served.
 */
export function keepAliveGetter(t: Test, port: number, host: string): () => Promise<{ body: string; reused: boolean; serial: string }> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
  t.teardown(() => agent.destroy());
  return () =>
    new Promise((resolve, reject) => {
      const req = https.get({ host: HOST, port, servername: host, headers: { host }, agent, path: '/' }, (res) => {
        let body = '';
        const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ body, reused: req.reusedSocket, serial }));
      });
      req.on('error', reject);
    });
}
