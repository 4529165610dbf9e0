import * as path from 'node:path';
import { hostPort, flags, type Command } from './common';
import { logger, runUntilSignal } from './process';

export const controlPlane: Command = {
  name: 'control-plane',
  usage: `meshlet control-plane [--data-dir D] [--api HOST:PORT] [--push HOST:PORT] [--grace DURATION_MS]

  --data-dir D        where policies and the endpoint registry are kept (default .meshlet/)
  --api HOST:PORT     REST API (default 127.0.0.1:15080)
  --push HOST:PORT    gRPC push port sidecars connect to (default 127.0.0.1:15010)
  --grace MS          how long a disconnected sidecar's endpoint stays (default 10000)
  --log-level LEVEL   trace, debug, info, warn, error (default info)

Both ports stay on loopback unless told otherwise. SIGTERM or SIGINT stops it cleanly.`,
  async run(argv) {
    const { values } = flags(argv, {
      'data-dir': { type: 'string' },
      api: { type: 'string' },
      push: { type: 'string' },
      grace: { type: 'string' },
      'log-level': { type: 'string' },
    });
    const log = logger(values['log-level']);
    const { startControlPlane } = await import('../../control-plane');
    const graceMs = values.grace === undefined ? undefined : Number(values.grace);
    const cp = await startControlPlane({
      dataDir: path.resolve(values['data-dir'] ?? '.meshlet'),
      api: values.api ? hostPort(values.api, '--api') : undefined,
      push: values.push ? hostPort(values.push, '--push') : undefined,
      graceMs: graceMs !== undefined && Number.isFinite(graceMs) ? graceMs : undefined,
      logger: log,
    });
    return runUntilSignal(() => cp.close());
  },
};
