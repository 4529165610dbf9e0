/**
 * Active health checking for one service: every endpoint is probed each interval, with an HTTP
 * GET (2xx = healthy) or the gRPC health protocol (`grpc.health.v1.Health/Check`, SERVING =
 * healthy, over h2c). `unhealthyThreshold` failures in a row mark an endpoint down,
 * `healthyThreshold` successes bring it back; verdicts go to the outlier detector.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import type { Clock, Timer } from '../core/clock';
import type { HealthCheck } from '../policy/types';

export interface ProbeTarget {
  key: string;
  address: string;
  port: number;
}

interface Probe {
  target: ProbeTarget;
  fails: number;
  oks: number;
  healthy: boolean;
  inFlight: boolean;
}

export class HealthChecker {
  private readonly probes = new Map<string, Probe>();
  private timer: Timer | undefined;
  private closed = false;
  /** Probes sent so far, for tests and metrics. */
  sent = 0;

  constructor(
    private cfg: HealthCheck,
    private readonly clock: Clock,
    private readonly verdict: (key: string, healthy: boolean) => void,
  ) {
    this.schedule(0);
  }

  configure(cfg: HealthCheck, targets: readonly ProbeTarget[]): void {
    this.cfg = cfg;
    const keep = new Set(targets.map((t) => t.key));
    for (const k of [...this.probes.keys()]) if (!keep.has(k)) this.probes.delete(k);
    for (const t of targets) if (!this.probes.has(t.key)) this.probes.set(t.key, { target: t, fails: 0, oks: 0, healthy: true, inFlight: false });
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    this.timer = this.clock.setTimeout(() => {
      for (const p of this.probes.values()) if (!p.inFlight) this.probe(p);
      this.schedule(this.cfg.intervalMs);
    }, ms);
  }

  private probe(p: Probe): void {
    p.inFlight = true;
    this.sent++;
    const done = (ok: boolean): void => {
      p.inFlight = false;
      if (this.closed || this.probes.get(p.target.key) !== p) return;
      if (ok) {
        p.fails = 0;
        p.oks++;
        if (!p.healthy && p.oks >= this.cfg.healthyThreshold) {
          p.healthy = true;
          this.verdict(p.target.key, true);
        }
      } else {
        p.oks = 0;
        p.fails++;
        if (p.healthy && p.fails >= this.cfg.unhealthyThreshold) {
          p.healthy = false;
          this.verdict(p.target.key, false);
        }
      }
    };
    if (this.cfg.grpcService !== undefined) grpcProbe(p.target, this.cfg.grpcService, this.cfg.timeoutMs, done);
    else httpProbe(p.target, this.cfg.httpPath ?? '/', this.cfg.timeoutMs, done);
  }
}

function httpProbe(t: ProbeTarget, path: string, timeoutMs: number, done: (ok: boolean) => void): void {
  let settled = false;
  const settle = (ok: boolean): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    done(ok);
  };
  const req = http.request({ host: t.address, port: t.port, path, method: 'GET', agent: false, headers: { 'user-agent': 'meshlet-health-check', connection: 'close' } }, (res) => {
    const ok = (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300;
    res.resume();
    res.once('end', () => settle(ok));
    res.once('error', () => settle(false));
  });
  const timer = setTimeout(() => {
    req.destroy();
    settle(false);
  }, timeoutMs);
  timer.unref();
  req.once('error', () => settle(false));
  req.end();
}

/** HealthCheckRequest{service} as one gRPC message frame. */
function healthRequest(service: string): Buffer {
  const s = Buffer.from(service);
  const msg = s.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(s.length), s]);
  const frame = Buffer.alloc(5 + msg.length);
  frame.writeUInt32BE(msg.length, 1);
  msg.copy(frame, 5);
  return frame;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

function grpcProbe(t: ProbeTarget, service: string, timeoutMs: number, done: (ok: boolean) => void): void {
  let settled = false;
  const session = http2.connect(`http://${t.address}:${t.port}`);
  const settle = (ok: boolean): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    session.destroy();
    done(ok);
  };
  const timer = setTimeout(() => settle(false), timeoutMs);
  timer.unref();
  session.on('error', () => settle(false));
  const stream = session.request({
    ':method': 'POST',
    ':path': '/grpc.health.v1.Health/Check',
    'content-type': 'application/grpc',
    te: 'trailers',
    'grpc-timeout': `${Math.max(1, timeoutMs)}m`,
  });
  const chunks: Buffer[] = [];
  let grpcStatus: string | undefined;
  stream.on('response', (h) => {
    if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
  });
  stream.on('trailers', (h) => {
    if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
  });
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.on('error', () => settle(false));
  stream.on('end', () => {
    const body = Buffer.concat(chunks);
    // HealthCheckResponse{status = 1 (SERVING)}: field 1, varint.
    const serving = grpcStatus === '0' && body.length >= 7 && body[5] === 0x08 && body[6] === 1;
    settle(serving);
  });
  stream.end(healthRequest(service));
}
