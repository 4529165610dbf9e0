/**
 * HAND-WRITTEN HOT PATH (every stream either end of meshlet's HTTP/2 layer opens and closes): the
 * open streams of a session by id, in place of a `Map`.
 *
 * Why not a Map: V8 replaces a Map's hash table once deletions pile up in it (every few dozen
 * streams on a busy session), and the table it replaces keeps a link to its successor (for
 * iterators still running) besides the streams it held. When one table of that chain is in the
 * old generation (a mark-compact moves every live young object there, the table in use
 * included), each dead table keeps its successor, and the streams in it with everything they
 * reach, alive through two scavenges: they are promoted, their successor table with them, and
 * the chain goes on until the next mark-compact, which starts it again. Measured with h2c at 256
 * requests in flight (docs/performance.md, 2026-12-05, fourth stop): with a Map, 1.3-1.9 KB
 * promoted a request, a mark-compact every ~5 scavenges and scavenge pauses of ~3 ms, in every
 * round of one setup and in about a third of the rounds of another; with this table, 15-20 B, no
 * mark-compact, 0.8 ms.
 *
 * How: the stream ids a session holds grow (RFC 9113 §5.1.1; each side's ids have one parity), so
 * `id >>> 1` counts streams and the slot is that count modulo a power-of-two ring. The ring
 * doubles while it is more than half full (up to MAX_SLOTS). A stream still open when a newer one
 * needs its slot (a long-lived stream among many short ones) moves to a small Map of its own.
 * Nothing is allocated per stream; the ring is replaced only when it grows.
 */

/** Slots the ring grows to at most: past that, streams over the ring's share go to the overflow map. */
const MAX_SLOTS = 2048;

export class StreamTable<S extends { readonly id: number }> {
  private ring: (S | undefined)[];
  private mask: number;
  /** Open streams displaced from their slot by a newer one. */
  private overflow: Map<number, S> | undefined = undefined;
  /** Open streams held. */
  size = 0;

  constructor(slots = 16) {
    this.ring = new Array<S | undefined>(slots).fill(undefined);
    this.mask = slots - 1;
  }

  get(id: number): S | undefined {
    const s = this.ring[(id >>> 1) & this.mask];
    if (s !== undefined && s.id === id) return s;
    return this.overflow === undefined ? undefined : this.overflow.get(id);
  }

  /** Adds stream `s` under `id` (its own id), or replaces the one held under it. */
  set(id: number, s: S): void {
    if (this.get(id) !== undefined) this.delete(id);
    if ((this.size + 1) * 2 > this.ring.length && this.ring.length < MAX_SLOTS) this.grow();
    this.place(id, s);
    this.size++;
  }

  delete(id: number): boolean {
    const i = (id >>> 1) & this.mask;
    const s = this.ring[i];
    if (s !== undefined && s.id === id) {
      this.ring[i] = undefined;
      this.size--;
      return true;
    }
    if (this.overflow === undefined || !this.overflow.delete(id)) return false;
    if (this.overflow.size === 0) this.overflow = undefined;
    this.size--;
    return true;
  }

  /** The open streams, oldest first (a copy: the caller may close them while walking it). */
  values(): S[] {
    const out: S[] = [];
    if (this.overflow !== undefined) for (const s of this.overflow.values()) out.push(s);
    for (const s of this.ring) if (s !== undefined) out.push(s);
    return out.sort((a, b) => a.id - b.id);
  }

  clear(): void {
    this.ring.fill(undefined);
    this.overflow = undefined;
    this.size = 0;
  }

  /** Puts `s` in its slot; a stream holding it moves to the overflow map. */
  private place(id: number, s: S): void {
    const i = (id >>> 1) & this.mask;
    const held = this.ring[i];
    if (held !== undefined) {
      // The newer stream keeps the slot (lookups of new streams are the common ones).
      const overflow = (this.overflow ??= new Map());
      if (held.id < id) {
        overflow.set(held.id, held);
        this.ring[i] = s;
      } else overflow.set(id, s);
      return;
    }
    this.ring[i] = s;
  }

  private grow(): void {
    const all = this.values();
    const slots = this.ring.length * 2;
    this.ring = new Array<S | undefined>(slots).fill(undefined);
    this.mask = slots - 1;
    this.overflow = undefined;
    for (const s of all) this.place(s.id, s);
  }
}
