/**
 * Mirror: a fire-and-forget copy of a share of the requests to the mirror backend (authority
 * suffixed `-shadow`, as Envoy does), with the headers as they go upstream. Its response is
 * discarded; if it cannot keep up with the request body it is dropped: the primary never waits.
 */
import { PassThrough, type Readable } from 'node:stream';
import { DISCARD_SINK, type Layer } from '../core/layer';
import type { UpstreamTarget } from '../http/upstream-types';
import { endpointKey } from '../lb';
import type { Mirror, RequestView } from '../policy';
import type { StackContext } from './context';

const MIRROR_BUFFER = 1024 * 1024;

export function mirrorLayer(ctx: StackContext, m: Mirror): Layer {
  return (next) => (call, sink) => {
    if (call.kind !== 'websocket' && ctx.random() * 100 < m.percent) {
      const svc = ctx.resilience.service(m.service);
      const cs = ctx.snapshot()?.services.get(m.service);
      const ep = svc?.picker(m.subset)?.pick(call.view as RequestView);
      if (svc && cs && ep) {
        const target: UpstreamTarget = {
          key: endpointKey(ep),
          address: ep.address,
          port: ep.port,
          protocol: cs.protocol === 'auto' ? call.protocol : cs.protocol,
          limits: svc.limits,
          idleMs: svc.idleMs,
        };
        ctx.stats.metrics.mirror(m.service);
        ctx.pools.send(target, { method: call.method, path: call.path, authority: `${call.authority}-shadow`, headers: call.headers, body: copyOf(call.body) }, DISCARD_SINK);
      }
    }
    return next(call, sink);
  };
}

function copyOf(body: Readable | null): Readable | null {
  if (!body) return null;
  const pt = new PassThrough();
  const onData = (c: Buffer): void => {
    if (pt.writableLength > MIRROR_BUFFER) {
      body.off('data', onData);
      pt.destroy(new Error('mirror fell behind'));
      return;
    }
    pt.write(c);
  };
  body.on('data', onData);
  body.once('end', () => pt.end());
  body.once('aborted', () => pt.destroy(new Error('aborted')));
  return pt;
}
