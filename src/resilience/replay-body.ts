/**
 * A request body read once from the client and replayable for retries. Chunks are kept while the
 * total stays within the limit; each attempt gets a fresh Readable (`cursor()`) that replays what
 * was kept and then follows the client. Past the limit the body can no longer be replayed
 * (`replayable` turns false, and the kept chunks are released as the current attempt consumes
 * them) but the current attempt keeps streaming. Backpressure is the current attempt's: the
 * client is read only while the attempt wants data.
 */
import { Readable } from 'node:stream';

export class ReplayableBody {
  /** Chunks not yet released; `chunks[i]` is the body's `base + i`-th chunk. */
  readonly chunks: Buffer[] = [];
  base = 0;
  size = 0;
  replayable = true;
  ended = false;
  failed: Error | undefined;
  private current: BodyCursor | undefined;

  constructor(
    readonly source: Readable,
    private readonly limit: number,
  ) {
    source.on('data', (c: Buffer) => this.onData(c));
    source.once('end', () => {
      this.ended = true;
      this.current?.pump();
    });
    const onFail = (err?: Error): void => {
      if (this.ended || this.failed) return;
      this.failed = err instanceof Error ? err : new Error('request body aborted');
      this.current?.destroy(this.failed);
    };
    source.once('error', onFail);
    source.once('aborted', onFail);
    source.pause();
  }

  /** A Readable for a new attempt, replaying from the first byte; undefined when that is no longer possible. */
  cursor(): Readable | undefined {
    if (!this.replayable || this.failed || this.base > 0) return undefined;
    const prev = this.current;
    this.current = new BodyCursor(this);
    if (prev && !prev.destroyed) prev.destroy();
    return this.current;
  }

  private onData(c: Buffer): void {
    this.chunks.push(c);
    this.size += c.length;
    if (this.size > this.limit) this.replayable = false;
    const cur = this.current;
    if (cur && cur.waiting) cur.pump();
    else this.source.pause();
  }

  /** Called by the cursor once it has consumed everything: drops what can never be replayed. */
  release(upTo: number): void {
    if (this.replayable) return;
    const n = upTo - this.base;
    if (n <= 0) return;
    this.chunks.splice(0, n);
    this.base = upTo;
  }
}

class BodyCursor extends Readable {
  /** Index (absolute) of the next chunk to push. */
  private next = 0;
  waiting = false;

  constructor(private readonly body: ReplayableBody) {
    super();
  }

  override _read(): void {
    this.pump();
  }

  pump(): void {
    const b = this.body;
    this.waiting = false;
    while (this.next - b.base < b.chunks.length) {
      const chunk = b.chunks[this.next - b.base] as Buffer;
      this.next++;
      if (!this.push(chunk)) {
        b.release(this.next);
        return;
      }
    }
    b.release(this.next);
    if (b.ended) {
      this.push(null);
      return;
    }
    this.waiting = true;
    b.source.resume();
  }
}
