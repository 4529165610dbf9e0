import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { CliError, hostPort, flags, UsageError, type Command } from './common';
import { logger, runUntilSignal } from './process';

export const controlPlane: Command = {
  name: 'control-plane',
  usage: `meshlet control-plane [--data-dir D] [--api HOST:PORT] [--push HOST:PORT] [--grace DURATION_MS]

  --data-dir D        where policies and the endpoint registry are kept (default .meshlet/)
  --api HOST:PORT     REST API (default 127.0.0.1:15080)
  --push HOST:PORT    gRPC push port sidecars connect to (default 127.0.0.1:15010)
  --grace MS          how long a disconnected sidecar's endpoint stays (default 10000)
  --log-level LEVEL   trace, debug, info, warn, error (default info)
  --max-snapshot-bytes N  refuse writes that would make the resources pushed to sidecars larger than N bytes of
                      JSON (default 50331648: 48 MiB, within the 64 MiB push message limit)
  --repair            start even if store files are damaged (unreadable, checksum mismatch), setting them
                      aside as <file>.corrupt-<time> (what they held is gone: re-apply it); without it a
                      damaged store stops the control plane from starting, naming the files

Service discovery from Kubernetes:
  --kubernetes                 also take endpoints from EndpointSlices (KUBECONFIG, ~/.kube/config or in-cluster)
  --k8s-namespace NS           only this namespace's (default: all)

The sidecar injector (Kubernetes mutating admission webhook, HTTPS, POST /inject):
  --webhook HOST:PORT          serve it there (e.g. 0.0.0.0:15017); needs --tls-cert and --tls-key
  --tls-cert FILE, --tls-key FILE   PEM certificate (for the webhook Service's DNS name) and key
  --inject-image IMAGE         the image injected pods run (default ghcr.io/meshlet/meshlet:0.1.0)
  --inject-control-plane H:P   the push address injected sidecars use (default meshlet-control-plane.meshlet-system.svc:15010)
  --inject-mode native|classic the sidecar layout (default native: Kubernetes >= 1.29)

Both ports stay on loopback unless told otherwise. SIGTERM or SIGINT stops it cleanly.`,
  async run(argv) {
    const { values } = flags(argv, {
      'data-dir': { type: 'string' },
      api: { type: 'string' },
      push: { type: 'string' },
      grace: { type: 'string' },
      'log-level': { type: 'string' },
      repair: { type: 'boolean' },
      'max-snapshot-bytes': { type: 'string' },
      webhook: { type: 'string' },
      kubernetes: { type: 'boolean' },
      'k8s-namespace': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'inject-image': { type: 'string' },
      'inject-control-plane': { type: 'string' },
      'inject-mode': { type: 'string' },
    });
    if (values['k8s-namespace'] !== undefined && !values.kubernetes) throw new UsageError('--k8s-namespace goes with --kubernetes');
    let webhook;
    if (values.webhook) {
      if (!values['tls-cert'] || !values['tls-key']) throw new UsageError('--webhook needs --tls-cert and --tls-key (the API server calls webhooks over HTTPS only)');
      const read = (f: string) => {
        try {
          return readFileSync(f);
        } catch (e) {
          throw new CliError(`cannot read ${f}: ${(e as Error).message}`);
        }
      };
      const { DEFAULT_OPTIONS } = await import('../inject');
      const mode = values['inject-mode'] ?? DEFAULT_OPTIONS.mode;
      if (mode !== 'native' && mode !== 'classic') throw new UsageError(`--inject-mode must be native or classic, got ${JSON.stringify(mode)}`);
      webhook = {
        ...hostPort(values.webhook, '--webhook'),
        cert: read(values['tls-cert']),
        key: read(values['tls-key']),
        inject: {
          ...DEFAULT_OPTIONS,
          mode: mode as 'native' | 'classic',
          image: values['inject-image'] ?? DEFAULT_OPTIONS.image,
          controlPlane: values['inject-control-plane'] ?? DEFAULT_OPTIONS.controlPlane,
        },
      };
    } else if (values['tls-cert'] || values['tls-key'] || values['inject-image'] || values['inject-control-plane'] || values['inject-mode']) {
      throw new UsageError('--tls-cert, --tls-key and --inject-* go with --webhook');
    }
    const log = logger(values['log-level']);
    // A file-size limit (ulimit -f) must fail a store write (EFBIG, answered "outcome unknown" like
    // a full disk), not kill the control plane between two files of a commit.
    process.on('SIGXFSZ', () => undefined);
    const { startControlPlane } = await import('../../control-plane');
    const graceMs = values.grace === undefined ? undefined : Number(values.grace);
    const cp = await startControlPlane({
      dataDir: path.resolve(values['data-dir'] ?? '.meshlet'),
      repair: values.repair === true,
      maxSnapshotBytes: snapshotBytes(values['max-snapshot-bytes']),
      api: values.api ? hostPort(values.api, '--api') : undefined,
      push: values.push ? hostPort(values.push, '--push') : undefined,
      graceMs: graceMs !== undefined && Number.isFinite(graceMs) ? graceMs : undefined,
      logger: log,
      webhook,
      kubernetes: values.kubernetes ? { namespace: values['k8s-namespace'] } : undefined,
    });
    return runUntilSignal(() => cp.close());
  },
};

function snapshotBytes(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,10}$/.test(v) || Number(v) < 1024) throw new UsageError(`--max-snapshot-bytes: expected a number of bytes, at least 1024, got ${JSON.stringify(v)}`);
  return Number(v);
}
