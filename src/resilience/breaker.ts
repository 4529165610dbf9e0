/**
 * A per-route circuit breaker with closed, open and half-open states, tripped by a failure rate
 * or a slow-call rate over a sliding time window (the model Resilience4j offers in application
 * code). Closed: calls pass and are recorded. Open: calls are refused until `openDurationMs` has
 * passed. Half-open: `halfOpenCalls` trial calls pass; if all succeed (and none is slow) the
 * breaker closes with a fresh window, otherwise it opens again.
 */
import type { Clock } from '../core/clock';
import type { RouteBreaker } from '../policy/types';

export type BreakerState = 'closed' | 'open' | 'half-open';

const BUCKETS = 10;

export class CircuitBreaker {
  private cfg: RouteBreaker;
  private st: BreakerState = 'closed';
  private openedAt = 0;
  private readonly calls = new Float64Array(BUCKETS);
  private readonly failures = new Float64Array(BUCKETS);
  private readonly slow = new Float64Array(BUCKETS);
  private bucket = -1;
  /** The window's sums (of the buckets above), kept as buckets are counted and cleared: no sum over the buckets per call. */
  private totalCalls = 0;
  private totalFailures = 0;
  private totalSlow = 0;
  private trialsStarted = 0;
  private trialsOk = 0;
  /** State changes so far, for metrics and tests. */
  transitions = 0;

  constructor(
    cfg: RouteBreaker,
    private readonly clock: Clock,
    private readonly onChange?: (from: BreakerState, to: BreakerState) => void,
  ) {
    this.cfg = cfg;
  }

  /** A new snapshot may change the thresholds; the state is kept. */
  configure(cfg: RouteBreaker): void {
    if (cfg.windowMs !== this.cfg.windowMs) this.resetWindow();
    this.cfg = cfg;
  }

  state(): BreakerState {
    if (this.st === 'open' && this.clock.monotonic() - this.openedAt >= this.cfg.openDurationMs) this.move('half-open');
    return this.st;
  }

  /** Whether a call may go ahead now. A true answer must be followed by exactly one `record`. */
  allow(): boolean {
    const s = this.state();
    if (s === 'closed') return true;
    if (s === 'open') return false;
    if (this.trialsStarted >= this.cfg.halfOpenCalls) return false;
    this.trialsStarted++;
    return true;
  }

  record(success: boolean, durationMs: number): void {
    const slow = this.cfg.slowCallDurationMs !== undefined && durationMs >= this.cfg.slowCallDurationMs;
    if (this.st === 'half-open') {
      if (!success || slow) {
        this.open();
        return;
      }
      this.trialsOk++;
      if (this.trialsOk >= this.cfg.halfOpenCalls) {
        this.resetWindow();
        this.move('closed');
      }
      return;
    }
    if (this.st === 'open') return;
    const i = this.rotate();
    this.calls[i]++;
    this.totalCalls++;
    if (!success) {
      this.failures[i]++;
      this.totalFailures++;
    }
    if (slow) {
      this.slow[i]++;
      this.totalSlow++;
    }
    const calls = this.totalCalls;
    const failures = this.totalFailures;
    const slows = this.totalSlow;
    if (calls < this.cfg.minimumCalls) return;
    const c = this.cfg;
    if ((failures * 100) / calls >= c.failureRateThreshold || (c.slowCallRateThreshold !== undefined && (slows * 100) / calls >= c.slowCallRateThreshold)) this.open();
  }

  private open(): void {
    this.openedAt = this.clock.monotonic();
    this.move('open');
  }

  private move(to: BreakerState): void {
    if (to === this.st) return;
    const from = this.st;
    this.st = to;
    this.trialsStarted = 0;
    this.trialsOk = 0;
    this.transitions++;
    this.onChange?.(from, to);
  }

  private resetWindow(): void {
    this.calls.fill(0);
    this.failures.fill(0);
    this.slow.fill(0);
    this.totalCalls = this.totalFailures = this.totalSlow = 0;
    this.bucket = -1;
  }

  private rotate(): number {
    const width = this.cfg.windowMs / BUCKETS;
    const b = Math.floor(this.clock.monotonic() / width);
    if (b !== this.bucket) {
      const steps = this.bucket < 0 ? BUCKETS : Math.min(BUCKETS, b - this.bucket);
      for (let i = 1; i <= steps; i++) {
        const idx = (this.bucket + i) % BUCKETS;
        this.totalCalls -= this.calls[idx] as number;
        this.totalFailures -= this.failures[idx] as number;
        this.totalSlow -= this.slow[idx] as number;
        this.calls[idx] = 0;
        this.failures[idx] = 0;
        this.slow[idx] = 0;
      }
      this.bucket = b;
    }
    return b % BUCKETS;
  }
}
