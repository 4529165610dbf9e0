import * as path from 'node:path';
import { readFileSync } from 'node:fs';
import { CliError, flags, UsageError, type Command } from './common';

export const ca: Command = {
  name: 'ca',
  usage: `meshlet ca show [--data-dir D] [-o json]
       meshlet ca bundle [--data-dir D]                 the trust bundle (PEM) on stdout
       meshlet ca rotate [--overlap DURATION] [--ca-cert FILE --ca-key FILE] [--data-dir D]

The control plane's certificate authority (D/ca, default .meshlet/ca).
rotate: a new root signs from now on (or an intermediate under the new user root you give);
the old root stays trusted for --overlap (default twice the certificate TTL, 48h), so no
certificate it signed stops working before it is replaced. A running control plane picks the
change up within 2 s, sends every sidecar the new bundle, and they renew their certificates.`,
  async run(argv) {
    const { values, positionals } = flags(
      argv,
      { 'data-dir': { type: 'string' }, overlap: { type: 'string' }, 'ca-cert': { type: 'string' }, 'ca-key': { type: 'string' }, output: { type: 'string', short: 'o' } },
      true,
    );
    const [sub, ...rest] = positionals;
    if (rest.length) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`);
    const dataDir = path.resolve(values['data-dir'] ?? '.meshlet');
    const { MeshCa, CA_DIR, CA_FILE } = await import('../../control-plane/ca');
    const { existsSync } = await import('node:fs');
    if (!existsSync(path.join(dataDir, CA_DIR, CA_FILE))) throw new CliError(`no CA in ${path.join(dataDir, CA_DIR)}: a control plane makes one when it starts (--data-dir ${dataDir})`);
    const open = () => MeshCa.open({ dataDir, pollMs: 0 });
    if (sub === 'show') {
      const m = await open();
      const { caPinOf } = await import('../security/ca-pin');
      // The hash sidecars pin the push port with (--ca-hash; what join tokens carry).
      const info = { trustDomain: m.trustDomain, caHash: caPinOf(m.rootPem()), roots: m.trustBundle().info() };
      process.stdout.write(
        values.output === 'json'
          ? JSON.stringify(info, null, 2) + '\n'
          : `trust domain ${info.trustDomain}\nCA hash (--ca-hash) ${info.caHash}\n${info.roots.map((r, i) => `root ${i}: ${r.subject}\n  sha256 ${r.fingerprint256}\n  expires ${r.notAfter}${r.until ? `, trusted until ${r.until} (rotation overlap)` : ''}`).join('\n')}\n`,
      );
      return 0;
    }
    if (sub === 'bundle') {
      process.stdout.write((await open()).bundlePem());
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
      const m = await open();
      try {
        await m.rotateRoot({ overlapMs, userRoot: values['ca-cert'] && values['ca-key'] ? { certPem: read(values['ca-cert']), keyPem: read(values['ca-key']) } : undefined });
      } catch (e) {
        throw new CliError((e as Error).message);
      }
      const roots = m.trustBundle().info();
      process.stdout.write(`new root ${roots[0]?.subject} signs from now on; trusted roots: ${roots.length}\n`);
      return 0;
    }
    throw new UsageError(sub ? `unknown sub-command ${JSON.stringify(sub)}` : 'show, bundle or rotate?');
  },
};
