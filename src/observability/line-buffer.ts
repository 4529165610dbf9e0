/**
 * Access-log lines written straight into a Buffer: JSON string literals and integers byte by
 * byte, constant runs (field names, punctuation) copied whole, with no intermediate string.
 * Building each line as a string and encoding a batch at once cost more than the line itself in
 * the proxy: V8 flattens the
 * concatenation (a tree of small strings per line) before encoding it, and every number becomes a
 * string first. Here an ASCII string without anything JSON escapes (nearly every method,
 * authority, path and id) is copied a character a byte; anything else goes through
 * `JSON.stringify` and a UTF-8 write, so the output is always what `JSON.stringify` gives.
 *
 * The buffer is handed off whole (`take`): the destination writes it asynchronously, so a new
 * one is allocated for the next batch rather than reused.
 */
export class LineBuffer {
  buf: Buffer;
  pos = 0;

  constructor(private readonly size = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Makes room for `n` more bytes: grows (copying) when the batch has no room left. */
  reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.size, 2 * (this.pos + n)));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** The bytes written so far, and a fresh buffer for what follows. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = Buffer.allocUnsafe(this.size);
    this.pos = 0;
    return out;
  }

  /**
   * Constant bytes (field names and punctuation, encoded once). Every write here makes its own
   * room, so a caller never has to count bytes.
   */
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    // One memmove (TypedArray set): half the cost of a byte loop for these 10-60 byte runs.
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** One ASCII byte. */
  byte(c: number): void {
    this.reserve(1);
    this.buf[this.pos++] = c;
  }

  /**
   * `s` as a JSON string literal, exactly as `JSON.stringify(s)` writes it (room for the worst
   * case: 6 bytes a UTF-16 unit, for `\uXXXX` escapes, plus the quotes).
   */
  string(s: string): void {
    this.reserve(6 * s.length + 2);
    const buf = this.buf;
    const start = this.pos;
    let p = start;
    buf[p++] = 0x22;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      // Controls, `"`, `\` and anything outside ASCII: the general path.
      if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) {
        this.pos = start + buf.write(JSON.stringify(s), start, 'utf8');
        return;
      }
      buf[p++] = c;
    }
    buf[p++] = 0x22;
    this.pos = p;
  }

  /** A non-negative safe integer in decimal. */
  int(n: number): void {
    if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER && Math.floor(n) === n)) {
      this.ascii(JSON.stringify(n));
      return;
    }
    this.reserve(16);
    const buf = this.buf;
    if (n < 10) {
      buf[this.pos++] = 0x30 + n;
      return;
    }
    let digits = 0;
    for (let v = n; v >= 1; v = Math.floor(v / 10)) digits++;
    let p = this.pos + digits;
    this.pos = p;
    for (let v = n; v >= 1; v = Math.floor(v / 10)) buf[--p] = 0x30 + (v % 10);
  }

  /**
   * `thousandths / 1000` as JavaScript prints it (`1.5`, `2`, `0.042`) for a non-negative
   * integer count of thousandths: the number an access line's `duration_ms` holds.
   */
  thousandths(t: number): void {
    if (!(t >= 0 && t <= Number.MAX_SAFE_INTEGER && Math.floor(t) === t)) {
      this.ascii(JSON.stringify(t / 1000));
      return;
    }
    const whole = Math.floor(t / 1000);
    let frac = t - whole * 1000;
    this.int(whole);
    if (frac === 0) return;
    this.reserve(4);
    const buf = this.buf;
    buf[this.pos++] = 0x2e;
    let scale = 100;
    while (frac > 0) {
      const d = Math.floor(frac / scale);
      buf[this.pos++] = 0x30 + d;
      frac -= d * scale;
      scale /= 10;
    }
  }

  /**
   * `new Date(ms).toISOString()` for a whole number of milliseconds: the
   * `YYYY-MM-DDTHH:MM:SS.` part is formatted once a second.
   */
  isoTime(ms: number): void {
    const sec = Math.floor(ms / 1000);
    if (sec !== isoSecond) {
      const full = new Date(sec * 1000).toISOString();
      isoSecond = sec;
      isoPrefix = full.slice(0, full.length - 4);
    }
    this.ascii(isoPrefix);
    this.reserve(4);
    const m = ms - sec * 1000;
    const buf = this.buf;
    buf[this.pos++] = 0x30 + Math.floor(m / 100);
    buf[this.pos++] = 0x30 + (Math.floor(m / 10) % 10);
    buf[this.pos++] = 0x30 + (m % 10);
    buf[this.pos++] = 0x5a;
  }

  /** An ASCII string known to need no escaping. */
  ascii(s: string): void {
    this.reserve(s.length);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < s.length; i++) buf[p++] = s.charCodeAt(i);
    this.pos = p;
  }
}

/** The second `isoPrefix` was formatted for (shared by every LineBuffer: one clock, one cache). */
let isoSecond = NaN;
let isoPrefix = '';
