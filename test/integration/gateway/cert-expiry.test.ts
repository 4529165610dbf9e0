/**
 * Gateway certificates about to expire, seen the way an operator sees them: a real control plane
 * sampling a real `meshlet gateway` whose HTTPS listener serves certificates made by openssl (one
 * expired, one valid for 2 days, one for 90), `meshlet check` reporting MC0018 (error, exit 1) and
 * MC0017 (warning, `--cert-expiry`), the gateway's not-after gauge, and a renewed file on disk
 * clearing the finding without a restart.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { renameSync } from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { apiFetch, eventually, portOf, start, tokenFor } from '../lib/meshlet';
import { closedPort, gatewayResource, HOST, MAIN, makeCert, makeCertBetween, metric, tempDir } from './helpers';

interface Finding {
  code: string;
  severity: string;
  resource: string;
  field?: string;
  message: string;
  fix?: string;
}

function run(args: string[], server: string, input = ''): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = spawn(process.execPath, [MAIN, ...args], { env: { ...process.env, MESHLET_SERVER: server, MESHLET_TOKEN: tokenFor(server) ?? '', MESHLET_CONFIG: '/nonexistent' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  c.stdin.end(input);
  return new Promise((resolve) => c.on('close', (code) => resolve({ code, stdout, stderr })));
}

const findings = async (server: string, args: string[] = []): Promise<Finding[]> => {
  const r = await run(['check', '-o', 'json', ...args], server);
  return (JSON.parse(r.stdout) as { findings: Finding[] }).findings.filter((f) => f.code === 'MC0017' || f.code === 'MC0018');
};

/** What openssl itself says the certificate's notAfter is, as Unix seconds. */
const enddate = (file: string): number => Date.parse(execFileSync('openssl', ['x509', '-noout', '-enddate', '-in', file], { encoding: 'utf8' }).trim().replace(/^notAfter=/, '')) / 1000;

t.test('check: Gateway certificates expired (MC0018) and about to expire (MC0017), cleared by a renewed file', async (t) => {
  const dir = tempDir(t);
  const day = 86_400_000;
  const old = makeCertBetween(dir, 'old', ['old.example.com'], new Date(Date.now() - 40 * day), new Date(Date.now() - 3 * day));
  const soon = makeCert(dir, 'soon', ['soon.example.com'], 2, 2);
  const fine = makeCert(dir, 'fine', ['fine.example.com'], 3, 90);
  const cp = start(['control-plane', '--data-dir', path.join(dir, 'data'), '--api', `${HOST}:0`, '--push', `${HOST}:0`, '--history-interval', '500']);
  t.teardown(() => cp.stop()); // before the wait: a start that times out must not leave it running
  const l = await cp.waitFor((x) => x.msg === 'control plane started', 60_000);
  const api = String(l.api);
  const gw = start(['gateway', '--name', 'edge', '--id', 'edge-0', '--control-plane', `${HOST}:${portOf(l.push)}`, '--address', HOST, '--admin', `${HOST}:0`, '--access-log', '0']);
  t.teardown(() => gw.stop());
  const admin = portOf((await gw.waitFor((x) => x.msg === 'gateway started', 60_000)).admin);

  const httpsPort = await closedPort();
  const gateway = gatewayResource('edge', { listeners: [{ name: 'https', port: httpsPort, protocol: 'HTTPS', tls: { certificates: [old, soon, fine] } }] });
  const applied = await run(['apply', '-f', '-'], api, JSON.stringify(gateway));
  t.equal(applied.code, 0, applied.stderr);

  const first = await eventually('check sees the gateway\'s certificates', async () => {
    const f = await findings(api);
    return f.length === 2 ? f : undefined;
  }, 60_000);
  t.same(
    first.map((f) => `${f.severity} ${f.code} ${f.resource} ${f.field}`),
    ['error MC0018 Gateway/edge spec.listeners[0].tls.certificates[0].certFile', 'warning MC0017 Gateway/edge spec.listeners[0].tls.certificates[1].certFile'],
    'the expired one an error, the one valid for 2 days a warning at the default 14d, the 90-day one nothing',
  );
  t.match(first[0]!.message, new RegExp(`^certificate ${old.certFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} \\(old\\.example\\.com\\) of listener https expired 3d( \\d+[hm])? ago, at .*: clients refuse the handshake \\(served by edge-0\\)$`));
  t.match(first[1]!.message, /\(soon\.example\.com\) of listener https expires in 1d 23h|\(soon\.example\.com\) of listener https expires in 2d/);
  t.match(first[0]!.fix, /renew .*old\.crt .* without a restart/);

  const human = await run(['check'], api);
  t.equal(human.code, 1, 'an expired certificate is an error: exit 1');
  t.match(human.stdout, /^Error \[MC0018\] Gateway\/edge spec\.listeners\[0\]\.tls\.certificates\[0\]\.certFile: certificate /m);
  t.match(human.stdout, /^Warning \[MC0017\] Gateway\/edge spec\.listeners\[0\]\.tls\.certificates\[1\]\.certFile: certificate /m);

  t.same((await findings(api, ['--cert-expiry', '1d'])).map((f) => f.code), ['MC0018'], '--cert-expiry 1d: 2 days left is not a finding');
  t.same((await findings(api, ['--cert-expiry', '100d'])).map((f) => f.code), ['MC0018', 'MC0017', 'MC0017'], '--cert-expiry 100d: the 90-day one too');
  const bad = await run(['check', '--cert-expiry', 'soon'], api);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--cert-expiry: expected a duration such as 30d/);

  const listed = (await (await apiFetch(`${api}/v1/certificates`)).json()) as { sampling: boolean; certificates: { gateway: string; service: string; listener: string; file: string; names: string[]; notAfter: string }[] };
  t.equal(listed.sampling, true);
  t.same(
    listed.certificates.map((c) => [c.gateway, c.service, c.listener, c.file, c.names.join(',')]),
    [
      ['edge-0', 'edge', 'https', old.certFile, 'old.example.com'],
      ['edge-0', 'edge', 'https', soon.certFile, 'soon.example.com'],
      ['edge-0', 'edge', 'https', fine.certFile, 'fine.example.com'],
    ],
    'GET /v1/certificates: soonest to expire first',
  );
  t.equal(Date.parse(listed.certificates[0]!.notAfter) / 1000, enddate(old.certFile), 'notAfter as openssl reads it');

  for (const c of [old, soon, fine])
    t.equal(await metric(admin, 'meshlet_gateway_certificate_expiry_timestamp_seconds', { listener: 'https', file: c.certFile }), enddate(c.certFile), `the not-after gauge of ${path.basename(c.certFile)}`);

  // Renewed in place (as cert-manager or a Secret update does): written aside, then renamed over.
  const renewed = makeCert(dir, 'old-renewed', ['old.example.com'], 4, 90);
  renameSync(renewed.keyFile, old.keyFile);
  renameSync(renewed.certFile, old.certFile);
  await gw.waitFor((x) => x.msg === 'certificates reloaded', 60_000);
  const after = await eventually('check no longer reports the renewed certificate', async () => {
    const f = await findings(api);
    return f.some((x) => x.code === 'MC0018') ? undefined : f;
  }, 60_000);
  t.same(after.map((f) => `${f.code} ${f.field}`), ['MC0017 spec.listeners[0].tls.certificates[1].certFile'], 'only the 2-day certificate is left');
  t.equal((await run(['check'], api)).code, 0, 'warnings only: exit 0');
  t.equal(await metric(admin, 'meshlet_gateway_certificate_expiry_timestamp_seconds', { listener: 'https', file: old.certFile }), enddate(old.certFile), 'the gauge follows the reload');
  t.ok(enddate(old.certFile) > Date.now() / 1000 + 80 * 86_400, 'the renewed file is the 90-day one');
});
