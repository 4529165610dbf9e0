/**
 * meshlet's own HTTP/2 framing layer (src/http/h2/, `MESHLET_H2_FRAMING=meshlet`) under the
 * sidecar suites that carry HTTP/2: h2c, trailers, WebSockets over extended CONNECT, resets,
 * multiplexed hops, slow bodies and streaming. They run unchanged, with the flag set for every
 * sidecar they start (the gRPC and gateway suites: test/integration/grpc/h2-framing.test.ts);
 * test/unit/http/h2/ tests the layer itself frame by frame.
 */
import t from 'tap';
import { suitesPassWith } from '../lib/with-env';

t.test('the sidecar HTTP/2 suites pass with MESHLET_H2_FRAMING=meshlet', async (t) => {
  suitesPassWith(t, { MESHLET_H2_FRAMING: 'meshlet' }, [
    'test/integration/sidecar/h2c.test.ts',
    'test/integration/sidecar/h2c-trailers.test.ts',
    'test/integration/sidecar/websocket.test.ts',
    'test/integration/sidecar/resets.test.ts',
    'test/integration/sidecar/multiplex.test.ts',
    'test/integration/sidecar/slow-body.test.ts',
    'test/integration/sidecar/streaming.test.ts',
  ]);
});
