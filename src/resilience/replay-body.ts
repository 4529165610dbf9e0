/**
 * A request body read once from the client and replayable for retries. Chunks are kept while the
 * total stays within the limit; each attempt gets a fresh Readable (`cursor()`) that replays what
 * was kept and then follows the client. Past the limit the body can no longer be replayed
 * (`replayable` turns false, and the kept chunks are released as the current attempt consumes
 * them) but the current attempt keeps streaming. Backpressure is the current attempt's: the
 * client is read only while the attempt wants data.
 *
 * `direct`: the first attempt gets the source itself (an HTTP/2 request stream, piped straight
 * into the upstream stream), not a cursor; the chunks are kept as the pipe reads them. A call
 * that is never retried (nearly all) then costs no second Readable and no second pipe. A later
 * attempt takes the source off the first one's pipe (`detach`, also when the retry layer
 * abandons that try) and gets a cursor as above. The source stays paused until its consumer
 * resumes it (`pipe()` does; so does the HTTP/1.1 client), so no chunk flows before it listens.
 * The source's listeners are shared functions that find this body on it (no closures per call);
 * they also feed the HTTP/2 upstream's body pipe when the source itself is what it sends
 * (src/http/body-relay.ts), so that pipe adds no listeners of its own to the stream.
 */
import { Readable } from 'node:stream';
import { RELAY, type Relayed } from '../http/body-relay';

const REPLAY = Symbol('meshlet.replayableBody');
type Source = Relayed & { [REPLAY]?: ReplayableBody };

function onSourceData(this: Source, c: Buffer): void {
  this[REPLAY]?.onData(c);
  const r = this[RELAY];
  if (r) r.data(this, c);
}
function onSourceEnd(this: Source): void {
  this[REPLAY]?.onEnd();
  const r = this[RELAY];
  if (r) r.end(this);
}
function onSourceFail(this: Source, err?: Error): void {
  this[REPLAY]?.onFail(err);
  const r = this[RELAY];
  if (r) r.fail(this);
}

export class ReplayableBody {
  /** Chunks not yet released; `chunks[i]` is the body's `base + i`-th chunk. */
  readonly chunks: Buffer[] = [];
  base = 0;
  size = 0;
  replayable = true;
  ended = false;
  failed: Error | undefined;
  private current: BodyCursor | undefined;
  /** Direct mode: the source went to the first attempt as it is, and is still piped there. */
  private piped = false;

  constructor(
    readonly source: Readable,
    private readonly limit: number,
    private direct = false,
  ) {
    const src = source as Source;
    if (src[REPLAY] === undefined) {
      // Shared listeners that find this body on its source: no closures per request.
      src[REPLAY] = this;
      src[RELAY] = null;
      source.on('data', onSourceData);
      source.on('end', onSourceEnd);
      source.on('error', onSourceFail);
      source.on('aborted', onSourceFail);
    } else {
      source.on('data', (c: Buffer) => this.onData(c));
      source.once('end', () => this.onEnd());
      const onFail = (err?: Error): void => this.onFail(err);
      source.once('error', onFail);
      source.once('aborted', onFail);
    }
    source.pause();
  }

  /** A Readable for a new attempt, replaying from the first byte; undefined when that is no longer possible. */
  cursor(): Readable | undefined {
    if (!this.replayable || this.failed || this.base > 0) return undefined;
    if (this.direct) {
      this.direct = false;
      this.piped = true;
      return this.source;
    }
    this.detach();
    const prev = this.current;
    this.current = new BodyCursor(this);
    if (prev && !prev.destroyed) prev.destroy();
    return this.current;
  }

  /** Direct mode: the first attempt was abandoned; its pipe stops reading the source. */
  detach(): void {
    if (!this.piped) return;
    this.piped = false;
    this.source.unpipe();
    this.source.pause();
  }

  onEnd(): void {
    this.ended = true;
    this.current?.pump();
  }

  onFail(err?: Error): void {
    if (this.ended || this.failed) return;
    this.failed = err instanceof Error ? err : new Error('request body aborted');
    this.current?.destroy(this.failed);
  }

  onData(c: Buffer): void {
    this.chunks.push(c);
    this.size += c.length;
    if (this.size > this.limit) this.replayable = false;
    if (this.piped) {
      // The first attempt's pipe reads the source; past the limit nothing is kept.
      if (!this.replayable) {
        this.base += this.chunks.length;
        this.chunks.length = 0;
      }
      return;
    }
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
