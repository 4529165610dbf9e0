/**
 * One set of listeners on a request body for two consumers. In direct mode the retry layer's
 * replay body (src/resilience/replay-body.ts) listens to `data`, `end`, `error` and `aborted` on
 * the downstream HTTP/2 request stream, and the HTTP/2 upstream's body pipe (`pipeBody`,
 * upstream.ts) would listen to the same four on the same stream. Every `on()`/`off()` on an
 * `Http2Stream` also emits `'newListener'`/`'removeListener'` (node listens to them), so the pipe
 * rides on the replay body's shared listeners instead: they call the relay set in `[RELAY]`
 * after their own work, in the order the two sets of listeners ran before (replay first).
 *
 * `body[RELAY]`: `undefined` when no such listeners are on the body (the pipe adds its own);
 * `null` when they are and nothing is relayed to; otherwise the relay being fed.
 */
import type { Readable } from 'node:stream';

export const RELAY = Symbol('meshlet.bodyRelay');

/** A second consumer of a body's events; shared functions (no closures per call). */
export interface BodyRelay {
  data(body: Relayed, chunk: Buffer): void;
  end(body: Relayed): void;
  /** `'error'` or `'aborted'` on the body. */
  fail(body: Relayed): void;
}

export type Relayed = Readable & { [RELAY]?: BodyRelay | null };
