/**
 * The original destination of a connection that iptables REDIRECTed to one of our listeners
 * (deploy/meshlet-init.sh), from the kernel's NAT entry: getsockopt(SO_ORIGINAL_DST) through
 * the small N-API addon in native/original-dst (Node has no API for it). This is what Envoy's
 * original_dst listener filter does; the alternatives were worse here: one listener per app port
 * cannot tell the destination of arbitrary outbound TCP, and TPROXY needs IP_TRANSPARENT on the
 * listening socket, which Node cannot set either.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';

type Addon = { originalDst(fd: number): { address: string; port: number } | number };

let addon: Addon | undefined;
let loadError: string | undefined;

/** The addon, built by `npm run build` (scripts/build-native.js), found from src/ or dist/src/. */
function load(): Addon | undefined {
  if (addon || loadError) return addon;
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, 'native', 'original-dst', 'build', 'Release', 'original_dst.node');
    if (fs.existsSync(file)) {
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        addon = require(file) as Addon;
      } catch (e) {
        loadError = `${file}: ${(e as Error).message}`;
      }
      return addon;
    }
    dir = path.dirname(dir);
  }
  loadError = 'native/original-dst is not built: run `npm run build` (needs python3, make and a C compiler)';
  return undefined;
}

/** Why original destinations are unavailable, or undefined when they are. */
export function originalDstUnavailable(): string | undefined {
  load();
  return addon ? undefined : loadError;
}

export interface OriginalDst {
  address: string;
  port: number;
}

/**
 * Where the connection was going before it was redirected; undefined when it was not redirected
 * (it came to our port directly) or the kernel has no NAT entry for it.
 */
export function originalDst(socket: net.Socket): OriginalDst | undefined {
  const a = load();
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!a || typeof fd !== 'number' || fd < 0) return undefined;
  const r = a.originalDst(fd);
  if (typeof r === 'number') return undefined;
  if (r.address === socket.localAddress && r.port === socket.localPort) return undefined; // not NATed
  return r;
}
