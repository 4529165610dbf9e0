import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { api, CliError, describeApiError, flags, serverUrl, UsageError, type Command } from './common';

/** What `GET /v1/ca` answers, and what the offline mode reads from a data dir. */
interface CaInfo {
  trustDomain: string;
  caHash: string;
  roots: { subject: string; fingerprint256: string; notAfter: string; until?: string }[];
  bundlePem: string;
}

export const ca: Command = {
  name: 'ca',
  usage: `meshlet ca show [--data-dir D] [-o json]
       meshlet ca bundle [--data-dir D]                 the trust bundle (PEM) on stdout
       meshlet ca rotate [--overlap DURATION] [--ca-cert FILE --ca-key FILE] [--data-dir D]

The control plane's certificate authority, through its REST API (--server/--context; admin role),
or, with --data-dir D, in that data dir (D/ca) with no control plane needed (the file store only).
rotate: a new root signs from now on (or an intermediate under the new user root you give);
the old root stays trusted for --overlap (default twice the certificate TTL, 48h), so no
certificate it signed stops working before it is replaced. Every replica picks the change up
within 2 s (the CA is kept in the data dir or in etcd), sends every sidecar the new bundle, and
they renew their certificates. Join tokens made before the rotation still join during the overlap
(the push port proves the new root under the old one); after it, make new ones.`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { 'data-dir': { type: 'string' }, overlap: { type: 'string' }, 'ca-cert': { type: 'string' }, 'ca-key': { type: 'string' }, output: { type: 'string', short: 'o' } },
      true,
    );
    const [sub, ...rest] = positionals;
    if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
    if (values.output !== undefined && values.output !== 'json') throw new UsageError(`-o: only json, got ${JSON.stringify(values.output)}`);
    const offline = values['data-dir'] !== undefined;
    if (sub === 'show') {
      const info = offline ? await local(values['data-dir'] as string) : await remote();
      const { bundlePem: _b, ...shown } = info;
      process.stdout.write(
        values.output === 'json'
          ? JSON.stringify(shown, null, 2) + '\n'
          : `trust domain ${info.trustDomain}\nCA hash (--ca-hash) ${info.caHash}\n${info.roots.map((r, i) => `root ${i}: ${r.subject}\n  sha256 ${r.fingerprint256}\n  expires ${r.notAfter}${r.until ? `, trusted until ${r.until} (rotation overlap)` : ''}`).join('\n')}\n`,
      );
      return 0;
    }
    if (sub === 'bundle') {
      process.stdout.write((offline ? await local(values['data-dir'] as string) : await remote()).bundlePem);
      return 0;
    }
    if (sub === 'rotate') {
      if (!values['ca-cert'] !== !values['ca-key']) throw new UsageError('--ca-cert and --ca-key go together');
      const { parseTtl } = await import('../security/duration');
      const overlapMs = values.overlap === undefined ? undefined : parseTtl(values.overlap);
      if (values.overlap !== undefined && overlapMs === undefined) throw new UsageError(`--overlap: expected a duration such as 48h, got ${JSON.stringify(values.overlap)}`);
      const read = (f: string) => {
        try {
          return readFileSync(f, 'utf8');
        } catch (e) {
          throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
        }
      };
      const userRoot = values['ca-cert'] && values['ca-key'] ? { certPem: read(values['ca-cert']), keyPem: read(values['ca-key']) } : undefined;
      let info: CaInfo;
      if (offline) {
        const m = await openLocal(values['data-dir'] as string);
        try {
          await m.rotateRoot({ overlapMs, userRoot });
        } catch (e) {
          throw new CliError((e as Error).message);
        }
        info = await infoOf(m);
      } else {
        const server = serverUrl(undefined);
        const r = await api(server, 'POST', '/v1/ca/rotate', { overlap: values.overlap, caCertPem: userRoot?.certPem, caKeyPem: userRoot?.keyPem });
        if (r.status !== 200) throw new CliError(`could not rotate the CA: ${describeApiError(r)}`);
        info = r.body as CaInfo;
      }
      if (values.output === 'json') {
        const { bundlePem: _b, ...shown } = info;
        process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
      } else {
        const old = info.roots.slice(1).map((r) => r.until).filter((u): u is string => !!u);
        process.stdout.write(
          `new root ${info.roots[0]?.subject} signs from now on; CA hash ${info.caHash}; trusted roots: ${info.roots.length}${old.length ? `; the previous root is trusted until ${old.sort()[0]}` : ''}\n` +
            `join tokens made before now keep working until then; new ones carry the new hash\n`,
        );
      }
      return 0;
    }
    throw new UsageError(sub ? `unknown sub-command ${JSON.stringify(sub)}` : 'show, bundle or rotate?');
  },
};

async function openLocal(dir: string) {
  const dataDir = path.resolve(dir);
  const { MeshCa, CA_DIR, CA_FILE } = await import('../../control-plane/ca');
  const { existsSync } = await import('node:fs');
  if (!existsSync(path.join(dataDir, CA_DIR, CA_FILE))) throw new CliError(`no CA in ${path.join(dataDir, CA_DIR)}: a control plane makes one when it starts (--data-dir ${dataDir})`);
  return MeshCa.open({ dataDir, pollMs: 0 });
}

async function infoOf(m: Awaited<ReturnType<typeof openLocal>>): Promise<CaInfo> {
  const { caPinOf } = await import('../security/ca-pin');
  // caHash: the hash sidecars pin the push port with (--ca-hash; what join tokens carry).
  return { trustDomain: m.trustDomain, caHash: caPinOf(m.rootPem()), roots: m.trustBundle().info(), bundlePem: m.bundlePem() };
}

async function local(dir: string): Promise<CaInfo> {
  return infoOf(await openLocal(dir));
}

async function remote(): Promise<CaInfo> {
  const r = await api(serverUrl(undefined), 'GET', '/v1/ca');
  if (r.status !== 200) throw new CliError(`could not read the CA: ${describeApiError(r)}`);
  return r.body as CaInfo;
}
