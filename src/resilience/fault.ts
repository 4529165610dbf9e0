/** Fault injection (chaos testing): per route, a fixed delay and/or an abort for a share of requests. */
import type { RequestView } from '../policy/compiled';
import type { FaultInjection } from '../policy/types';

export interface FaultDecision {
  delayMs: number;
  abort?: { httpStatus?: number; grpcStatus?: number };
}

const none: FaultDecision = { delayMs: 0 };

export function decideFault(f: FaultInjection, req: RequestView, random: () => number): FaultDecision {
  if (f.header !== undefined && req.header(f.header) === undefined) return none;
  const delayMs = f.delay && random() * 100 < f.delay.percent ? f.delay.fixedMs : 0;
  const abort = f.abort && random() * 100 < f.abort.percent ? f.abort : undefined;
  if (delayMs === 0 && !abort) return none;
  return { delayMs, abort };
}
