/**
 * meshlet's own HTTP/2 framing layer (src/http/h2/, `MESHLET_H2_FRAMING=meshlet`) under the gRPC
 * suites (interop with grpc-js, gRPC-Web, gRPC across the mesh) and the gateway's HTTP/2 suites
 * (TLS with ALPN h2, WebSockets over extended CONNECT, protocol conversion). They run unchanged,
 * with the flag set for every sidecar and gateway they start.
 */
import t from 'tap';
import { suitesPassWith } from '../lib/with-env';

t.test('the gRPC and gateway HTTP/2 suites pass with MESHLET_H2_FRAMING=meshlet', async (t) => {
  suitesPassWith(t, { MESHLET_H2_FRAMING: 'meshlet' }, [
    'test/integration/grpc/interop.test.ts',
    'test/integration/grpc/grpc-web.test.ts',
    'test/integration/grpc/mesh.test.ts',
    'test/integration/gateway/websocket-h2.test.ts',
    'test/integration/gateway/tls.test.ts',
    'test/integration/gateway/protocols.test.ts',
  ]);
});
