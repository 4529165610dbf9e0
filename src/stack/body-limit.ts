/**
 * A request body over a size limit (the gateway listener's `maxRequestBodyBytes`) is cut and the
 * call answered 413 (gRPC: RESOURCE_EXHAUSTED), whether or not the upstream request had started.
 * A body with a declared length over the limit is refused by the front before any stack; this
 * layer is for bodies without one (chunked HTTP/1.1, HTTP/2 DATA), counted as they stream.
 */
import { Transform } from 'node:stream';
import { Flags } from '../core/errors';
import { LocalReply, type Layer, type UpstreamCall } from '../core/layer';

export function bodyLimitLayer(max: number): Layer {
  return (next) => (call, sink) => {
    const src = call.body;
    if (!src) return next(call, sink);
    let done = false;
    let started = false;
    let inner: UpstreamCall | undefined;
    let n = 0;
    const reply = new LocalReply(413, Flags.DownstreamProtocolError, `request body larger than ${max} bytes`, { grpcStatus: 8 });
    const stop = (): void => {
      if (done) return;
      done = true;
      inner?.abort(reply);
      src.unpipe(out);
      src.resume();
      sink.onError(reply, started);
    };
    const out = new Transform({
      transform(chunk: Buffer, _e, cb) {
        n += chunk.length;
        if (n > max) {
          stop();
          cb();
        } else cb(null, chunk);
      },
    });
    src.on('error', (err) => out.destroy(err));
    src.pipe(out);
    call.body = out;
    inner = next(call, {
      onResponse(status, headers) {
        started = true;
        if (!done) sink.onResponse(status, headers);
      },
      onData: (chunk) => (done ? true : sink.onData(chunk)),
      onEnd(trailers) {
        if (done) return;
        done = true;
        sink.onEnd(trailers);
      },
      onError(err, s) {
        if (done) return;
        done = true;
        sink.onError(err, s);
      },
    });
    return {
      abort(reason) {
        done = true;
        inner?.abort(reason);
      },
      resume: () => inner?.resume(),
    };
  };
}
