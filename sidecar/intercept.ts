/**
 * Interception (deploy/meshlet-init.sh): every TCP connection of the pod reaches the sidecar,
 * not only HTTP. Each redirected connection is classified by its original destination port
 * (src/http/original-dst.ts) before any byte is read:
 *
 * - outbound (15001): to an address the mesh knows (an endpoint of a service), on a port some
 *   policy makes HTTP (a Route host naming it, `catalog:8080`), port 80, or one of `--http-ports`:
 *   the HTTP proxy routes it; anything else is piped, as opaque TCP, to where the app was
 *   connecting (pods without a sidecar, the outside world; the sidecar's uid is excluded from
 *   interception, so this does not loop);
 * - inbound (15006): the app port and the inbound port itself (sidecar-to-sidecar) go to the
 *   HTTP inbound handler; any other port is piped to the address it was sent to, the pod's own
 *   address, at that port (as Istio does since 1.10): an app that listens only on 127.0.0.1 stays
 *   out of the network's reach, as it would be without a sidecar. `inboundLocalhost` (the pod
 *   annotation `meshlet.dev/inbound-localhost: "true"`, sidecar `--inbound-localhost`) keeps the
 *   old behaviour, 127.0.0.1:PORT, for apps that only listen there and must be reached.
 *
 * Connections that were not redirected (HTTP_PROXY, a direct call to the port) are HTTP as before.
 * The classification of ports is computed once per snapshot.
 */
import * as net from 'node:net';
import type { Logger } from 'pino';
import { originalDst, originalDstUnavailable } from '../src/http/original-dst';
import type { CompiledSnapshot } from '../src/policy';

export interface InterceptOptions {
  /** Outbound destination ports always treated as HTTP, beside those the policies name. */
  httpPorts?: readonly number[];
  /** Inbound connections to ports other than the app's go to 127.0.0.1:PORT, not the pod's address (the old behaviour). */
  inboundLocalhost?: boolean;
}

/** A listener hook: returns true when it took the connection (opaque TCP), false for HTTP. */
export type Takeover = (socket: net.Socket) => boolean;

const portsBySnapshot = new WeakMap<CompiledSnapshot, ReadonlySet<number>>();
const addressesBySnapshot = new WeakMap<CompiledSnapshot, ReadonlySet<string>>();

/** Addresses of the endpoints the snapshot knows (meshed pods and a Service's static endpoints). */
export function meshAddresses(snap: CompiledSnapshot | undefined): ReadonlySet<string> {
  if (!snap) return new Set();
  let s = addressesBySnapshot.get(snap);
  if (!s) {
    s = new Set(snap.endpoints.map((e) => e.address));
    addressesBySnapshot.set(snap, s);
  }
  return s;
}

const DEFAULT_HTTP = new Set([80]);

/** Ports the snapshot's policies make HTTP: those named in Route hosts, plus 80. */
export function httpPorts(snap: CompiledSnapshot | undefined): ReadonlySet<number> {
  if (!snap) return DEFAULT_HTTP;
  let s = portsBySnapshot.get(snap);
  if (!s) {
    const set = new Set<number>(DEFAULT_HTTP);
    for (const r of snap.resources) {
      if (r.kind !== 'Route') continue;
      for (const h of r.spec.hosts) {
        const m = /:(\d{1,5})$/.exec(h);
        if (m) set.add(Number(m[1]));
      }
    }
    s = set;
    portsBySnapshot.set(snap, s);
  }
  return s;
}

/** Pipes `socket` to host:port both ways; either side closing or failing closes the other. */
export function tunnel(socket: net.Socket, host: string, port: number, log: Logger, direction: string): void {
  // Half-close passes through: a client that sends, shuts its side and waits for the answer
  // (the listener's sockets are not half-open by default) still gets it.
  (socket as net.Socket & { allowHalfOpen: boolean }).allowHalfOpen = true;
  const upstream = net.connect({ host, port, noDelay: true, allowHalfOpen: true });
  const done = (err?: Error) => {
    if (err) log.debug({ err, direction, to: `${host}:${port}` }, 'opaque tcp closed with an error');
    socket.destroy();
    upstream.destroy();
  };
  upstream.on('error', done);
  socket.on('error', done);
  upstream.on('close', () => socket.destroy());
  socket.on('close', () => upstream.destroy());
  socket.pipe(upstream);
  upstream.pipe(socket);
}

export function outboundTakeover(snapshot: () => CompiledSnapshot | undefined, opts: InterceptOptions, log: Logger): Takeover {
  const why = originalDstUnavailable();
  if (why) throw new Error(`interception needs the original destination of connections: ${why}`);
  const extra = new Set(opts.httpPorts ?? []);
  return (socket) => {
    const dst = originalDst(socket);
    if (!dst) return false;
    const snap = snapshot();
    if ((httpPorts(snap).has(dst.port) || extra.has(dst.port)) && meshAddresses(snap).has(dst.address)) return false;
    tunnel(socket, dst.address, dst.port, log, 'outbound');
    return true;
  };
}

export function inboundTakeover(app: { host: string; port: number } | undefined, inboundPort: () => number, log: Logger, opts: InterceptOptions = {}): Takeover {
  const local = opts.inboundLocalhost === true ? (app?.host ?? '127.0.0.1') : undefined;
  return (socket) => {
    const dst = originalDst(socket);
    if (!dst || dst.port === app?.port || dst.port === inboundPort()) return false;
    // The pod's own address (where the caller sent it), unless the pod opted into loopback.
    tunnel(socket, local ?? dst.address, dst.port, log, 'inbound');
    return true;
  };
}
