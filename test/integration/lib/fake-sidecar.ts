/**
 * A sidecar that is only a push stream: it registers over real gRPC and answers each snapshot
 * with whatever the test says (ACK, or a NACK with field-path errors, as a sidecar that cannot
 * compile something would).
 */
import * as grpc from '@grpc/grpc-js';
import { createPolicyDiscoveryClient, type PolicyDiscoveryClientStream, type SnapshotMessage } from '../../../src/proto';
import { splitJoinToken } from '../../../src/security/ca-pin';

export class FakeSidecar {
  readonly stream: PolicyDiscoveryClientStream;
  private readonly queue: SnapshotMessage[] = [];
  private waiter: ((m: SnapshotMessage) => void) | undefined;
  private readonly client;

  /**
   * `tls`: the push port is TLS (the default of a control plane): `ca` is the mesh's trust bundle
   * (DATA_DIR/ca.pem) and `joinToken` the credential strict registration asks for.
   */
  constructor(
    target: string,
    node: { id: string; service: string; address?: string; inboundPort?: number; adminPort?: number; acceptsDelta?: boolean },
    tls?: { ca: Buffer; joinToken: string },
  ) {
    this.client = createPolicyDiscoveryClient(target, tls ? grpc.credentials.createSsl(tls.ca) : undefined);
    this.stream = this.client.Stream();
    this.stream.on('data', (m: SnapshotMessage) => {
      const w = this.waiter;
      this.waiter = undefined;
      if (w) w(m);
      else this.queue.push(m);
    });
    this.stream.on('error', () => undefined);
    this.stream.write({ node: { address: '10.255.0.7', inboundPort: 15006, labels: {}, buildVersion: 'test', ...node, ...(tls ? { credential: splitJoinToken(tls.joinToken).credential } : {}) } });
  }

  next(timeoutMs = 10_000): Promise<SnapshotMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const waiter = (x: SnapshotMessage) => {
        clearTimeout(timer);
        resolve(x);
      };
      // A wait that timed out must not swallow the next message.
      const timer = setTimeout(() => {
        if (this.waiter === waiter) this.waiter = undefined;
        reject(new Error(`no snapshot within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = waiter;
    });
  }

  ack(m: SnapshotMessage): void {
    this.stream.write({ ack: { version: m.version, nonce: m.nonce } });
  }

  nack(m: SnapshotMessage, reason: string): void {
    this.stream.write({ nack: { version: m.version, nonce: m.nonce, reason } });
  }

  close(): void {
    this.stream.end();
    this.client.close();
  }
}
