/**
 * HPACK (RFC 7541) header compression for meshlet's own HTTP/2 framing layer (issue 20: built
 * behind a flag because node:http2's JavaScript session layer costs ~30 KB and ~60 µs per request).
 *
 * Hand-written hot-path code, as the brief allows for the measured hot path: there is no
 * well-kept, fast HPACK package on npm (hpack.js is stream-based and unmaintained since 2017).
 * The connection layer calls `decode` once per received header block and `encode` once per sent
 * one, so this is written for speed:
 * - the static table is looked up through Maps built once at load;
 * - the dynamic table is a ring buffer of parallel arrays (no shifting on insert or eviction);
 * - Huffman decoding is a 4-bit state machine (src/http/h2/huffman.ts), and the encoder uses
 *   Huffman only when it is shorter;
 * - the encoder writes into 16 KB slabs shared by all encoders and returns each block as a view
 *   that is never written again (no copy), so the caller may keep or queue the returned Buffer;
 *   Huffman decoding uses one shared scratch buffer: no per-connection buffers;
 * - decode reads integers and positions through fields, not result objects.
 *
 * Strings are latin1 both ways, as node:http2 (nghttp2) gives and takes them: each octet is one
 * UTF-16 code unit when decoding; each code unit's low octet is sent when encoding. An entry's
 * size is therefore name.length + value.length + 32 (RFC 7541 4.1).
 *
 * Encoder policy: a field that matches a static or dynamic entry exactly is indexed;
 * `authorization`, `proxy-authorization`, `cookie`, `set-cookie` and `x-api-key` are literals never indexed;
 * fields whose entry would take more than half the table are literals without indexing. Fields
 * whose values often change from message to message (MODES below: content-length, date, etag,
 * location, x-request-id, traceparent, grpc-timeout...) are indexed on repeat: a value is sent as
 * a literal without indexing, and added to the table only when the next message of the connection
 * sends the same value again (a fixed-size body's content-length, the date within one second), so
 * a steady stream of similar messages costs one octet for them too, while a value unique to each
 * message (a request id, a trace id) never enters the table and never evicts the stable fields
 * (inserting them cycled a 4 KB table every ~17 gRPC requests: ~265 octets a request upstream).
 * Such a name is added once with its value when no table has the name yet, so later literals
 * can reference it. Every other field is added to the dynamic table (incremental indexing), so a
 * repeated field costs one octet.
 */
import {
  HUFFMAN_EOS,
  HUFFMAN_LONG_PADDING,
  huffmanDecode,
  huffmanEncode,
  huffmanLength,
} from './huffman';

/** A header block that cannot be decoded: a connection error COMPRESSION_ERROR (RFC 9113 4.3). */
export class HpackError extends Error {
  readonly code = 'ERR_HPACK';
  constructor(message: string) {
    super(message);
    this.name = 'HpackError';
  }
}

/** RFC 7541 Appendix A, index 1..61 at [index - 1]. */
const STATIC: readonly (readonly [string, string])[] = [
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ['accept-charset', ''],
  ['accept-encoding', 'gzip, deflate'],
  ['accept-language', ''],
  ['accept-ranges', ''],
  ['accept', ''],
  ['access-control-allow-origin', ''],
  ['age', ''],
  ['allow', ''],
  ['authorization', ''],
  ['cache-control', ''],
  ['content-disposition', ''],
  ['content-encoding', ''],
  ['content-language', ''],
  ['content-length', ''],
  ['content-location', ''],
  ['content-range', ''],
  ['content-type', ''],
  ['cookie', ''],
  ['date', ''],
  ['etag', ''],
  ['expect', ''],
  ['expires', ''],
  ['from', ''],
  ['host', ''],
  ['if-match', ''],
  ['if-modified-since', ''],
  ['if-none-match', ''],
  ['if-range', ''],
  ['if-unmodified-since', ''],
  ['last-modified', ''],
  ['link', ''],
  ['location', ''],
  ['max-forwards', ''],
  ['proxy-authenticate', ''],
  ['proxy-authorization', ''],
  ['range', ''],
  ['referer', ''],
  ['refresh', ''],
  ['retry-after', ''],
  ['server', ''],
  ['set-cookie', ''],
  ['strict-transport-security', ''],
  ['transfer-encoding', ''],
  ['user-agent', ''],
  ['vary', ''],
  ['via', ''],
  ['www-authenticate', ''],
];
const STATIC_LEN = STATIC.length; // 61
const STATIC_NAMES = STATIC.map((e) => e[0]);
const STATIC_VALUES = STATIC.map((e) => e[1]);

/** How the encoder sends a field whose value is not in a table. */
const INDEX = 0;
/**
 * Indexed on repeat: a literal without indexing unless the value is the one this name was last
 * sent with (or no table has the name): values that differ on nearly every message would only
 * evict useful entries, while one that repeats is worth its entry.
 */
const ON_REPEAT = 1;
/** Literal never indexed (RFC 7541 7.1.3): credentials an intermediary must not put in a shared table. */
const NEVER_INDEX = 2;
const MODES = new Map<string, number>([
  ['authorization', NEVER_INDEX],
  ['proxy-authorization', NEVER_INDEX],
  ['cookie', NEVER_INDEX],
  ['set-cookie', NEVER_INDEX],
  // API keys (a Route's apiKeys, read from x-api-key by default): a credential too.
  ['x-api-key', NEVER_INDEX],
  // Static names.
  ['content-length', ON_REPEAT],
  ['age', ON_REPEAT],
  ['date', ON_REPEAT],
  ['etag', ON_REPEAT],
  ['if-modified-since', ON_REPEAT],
  ['if-none-match', ON_REPEAT],
  ['location', ON_REPEAT],
  // Per-request ids and deadlines (meshlet adds x-request-id and the trace context upstream).
  ['x-request-id', ON_REPEAT],
  ['traceparent', ON_REPEAT],
  ['b3', ON_REPEAT],
  ['x-b3-traceid', ON_REPEAT],
  ['x-b3-spanid', ON_REPEAT],
  ['x-b3-parentspanid', ON_REPEAT],
  ['x-amzn-trace-id', ON_REPEAT],
  ['grpc-timeout', ON_REPEAT],
]);

/**
 * Encoder lookup, one Map get per field: name -> index of its first static entry (0: not a static
 * name), exact value -> entry index, the mode, and for ON_REPEAT names a slot in each encoder's
 * `lastLiteral`. Names of MODES that are not static names have an entry with no values.
 */
interface NamePolicy {
  index: number;
  values: Map<string, number>;
  mode: number;
  slot: number;
}
const BY_NAME = new Map<string, NamePolicy>();
let repeatSlots = 0;
const policy = (name: string, index: number): NamePolicy => {
  const mode = MODES.get(name) ?? INDEX;
  return { index, values: new Map(), mode, slot: mode === ON_REPEAT ? repeatSlots++ : -1 };
};
for (let i = 0; i < STATIC_LEN; i++) {
  const [name, value] = STATIC[i]!;
  let e = BY_NAME.get(name);
  if (e === undefined) BY_NAME.set(name, (e = policy(name, i + 1)));
  // An empty value in the table means "no typical value": only a real '' matches it.
  e.values.set(value, i + 1);
}
for (const name of MODES.keys()) if (!BY_NAME.has(name)) BY_NAME.set(name, policy(name, 0));
const REPEAT_SLOTS = repeatSlots;

/** The encoder's view of the dynamic entries with one name, as absolute ids (insertion numbers). */
interface DynamicName {
  /** The newest entry with this name. */
  latest: number;
  values: Map<string, number>;
}

/**
 * Output slabs shared by every encoder (encode is synchronous, so blocks never interleave):
 * blocks are cut from the current slab and handed out without a copy, and an idle connection
 * holds no output buffer of its own. A slab is freed when no block cut from it is referenced.
 */
const SLAB = 16 * 1024;
const NO_SLAB = Buffer.alloc(0);
let slab = Buffer.allocUnsafe(SLAB);
let slabPos = 0;

/** Huffman decode scratch shared by every decoder (decode is synchronous). */
let huffScratch = Buffer.allocUnsafe(1024);

/** Buffer's latin1 slicer without toString's encoding dispatch (on Buffer.prototype in every node). */
interface Latin1Buffer {
  latin1Slice(start: number, end: number): string;
}

const ENTRY_OVERHEAD = 32;
const MAX_INT = 2 ** 31 - 1;
const DEFAULT_TABLE_SIZE = 4096;

function checkSize(n: number | undefined, what: string): number {
  if (n === undefined) return DEFAULT_TABLE_SIZE;
  if (!Number.isInteger(n) || n < 0 || n > MAX_INT) throw new RangeError(`${what} must be an integer in [0, 2^31 - 1], got ${n}`);
  return n;
}

/**
 * The dynamic table (RFC 7541 2.3.2) as a ring: entry 0 is the newest. Capacity is a power of two;
 * it starts at what a 4096-octet table can hold at most (128 entries of 32 octets) or less, and
 * doubles when full, so a large SETTINGS_HEADER_TABLE_SIZE costs memory only when used.
 */
class DynamicTable {
  names: string[];
  values: string[];
  private mask: number;
  /** Slot the next entry goes into. */
  private head = 0;
  count = 0;
  size = 0;
  maxSize: number;
  /** Entries inserted so far (the encoder's absolute ids). */
  inserted = 0;
  onEvict: ((name: string, value: string, id: number) => void) | null = null;

  constructor(limit: number, maxSize: number) {
    let cap = 1;
    while (cap < 128 && cap < Math.floor(limit / ENTRY_OVERHEAD)) cap *= 2;
    this.names = new Array<string>(cap).fill('');
    this.values = new Array<string>(cap).fill('');
    this.mask = cap - 1;
    this.maxSize = maxSize;
  }

  /** Slot of dynamic entry i (0 = newest), i < count. */
  slot(i: number): number {
    return (this.head - 1 - i) & this.mask;
  }

  add(name: string, value: string): void {
    const size = name.length + value.length + ENTRY_OVERHEAD;
    if (size > this.maxSize) {
      // RFC 7541 4.4: an entry larger than the table empties it and is not added.
      this.evictTo(0);
      return;
    }
    this.evictTo(this.maxSize - size);
    if (this.count === this.mask + 1) this.grow();
    const s = this.head;
    this.names[s] = name;
    this.values[s] = value;
    this.head = (s + 1) & this.mask;
    this.count++;
    this.size += size;
    this.inserted++;
  }

  /** Doubles the ring, oldest entry first at slot 0. */
  private grow(): void {
    const cap = (this.mask + 1) * 2;
    const names = new Array<string>(cap).fill('');
    const values = new Array<string>(cap).fill('');
    for (let i = 0; i < this.count; i++) {
      const s = this.slot(this.count - 1 - i);
      names[i] = this.names[s]!;
      values[i] = this.values[s]!;
    }
    this.names = names;
    this.values = values;
    this.mask = cap - 1;
    this.head = this.count;
  }

  setMaxSize(n: number): void {
    this.maxSize = n;
    this.evictTo(n);
  }

  /** Evicts the oldest entries until size <= target. */
  private evictTo(target: number): void {
    while (this.size > target) {
      const s = (this.head - this.count) & this.mask;
      const name = this.names[s]!;
      const value = this.values[s]!;
      this.size -= name.length + value.length + ENTRY_OVERHEAD;
      this.count--;
      if (this.onEvict !== null) this.onEvict(name, value, this.inserted - this.count - 1);
      this.names[s] = '';
      this.values[s] = '';
    }
  }
}

export class HpackDecoder {
  private readonly table: DynamicTable;
  private readonly limit: number;
  /** Read position, shared by the integer and string readers. */
  private pos = 0;
  private listSize = 0;

  constructor(opts?: { maxTableSize?: number }) {
    this.limit = checkSize(opts?.maxTableSize, 'maxTableSize');
    this.table = new DynamicTable(this.limit, this.limit);
  }

  /** Size of the last decoded list as RFC 9113 6.5.2 counts it (sum of name + value octets + 32 per field). */
  get lastListSize(): number {
    return this.listSize;
  }

  /** Octets the dynamic table holds now (RFC 7541 4.1). */
  get dynamicTableSize(): number {
    return this.table.size;
  }

  /** The table's maximum size as the peer's last update set it. */
  get dynamicTableMaxSize(): number {
    return this.table.maxSize;
  }

  /** The dynamic table, newest first, as [name, value, ...] (for tests and diagnostics). */
  dynamicTableEntries(): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.table.count; i++) {
      const s = this.table.slot(i);
      out.push(this.table.names[s]!, this.table.values[s]!);
    }
    return out;
  }

  /**
   * Decodes one complete header block (HEADERS + CONTINUATION fragments already joined) into
   * [name, value, name, value, ...]; throws HpackError on malformed input. After an error the
   * decoder's table is undefined: the connection must end (COMPRESSION_ERROR).
   */
  decode(block: Buffer): string[] {
    const out: string[] = [];
    const end = block.length;
    const table = this.table;
    let listSize = 0;
    this.pos = 0;
    while (this.pos < end) {
      const b = block[this.pos]!;
      let name: string;
      let value: string;
      if (b & 0x80) {
        // 6.1 Indexed Header Field.
        const idx = this.readInt(block, 7);
        if (idx === 0) throw new HpackError('index 0 in an indexed header field');
        if (idx <= STATIC_LEN) {
          name = STATIC_NAMES[idx - 1]!;
          value = STATIC_VALUES[idx - 1]!;
        } else {
          const d = idx - STATIC_LEN - 1;
          if (d >= table.count) throw new HpackError(`index ${idx} beyond the tables (${STATIC_LEN + table.count} entries)`);
          const s = table.slot(d);
          name = table.names[s]!;
          value = table.values[s]!;
        }
      } else if ((b & 0xe0) === 0x20) {
        // 6.3 Dynamic Table Size Update: only before the first field (RFC 7541 4.2).
        if (out.length !== 0) throw new HpackError('dynamic table size update after a header field');
        const n = this.readInt(block, 5);
        if (n > this.limit) throw new HpackError(`dynamic table size update to ${n} above the limit ${this.limit}`);
        table.setMaxSize(n);
        continue;
      } else {
        // 6.2 Literal Header Field: with incremental indexing (01), without (0000) or never indexed (0001).
        const indexing = (b & 0xc0) === 0x40;
        const idx = this.readInt(block, indexing ? 6 : 4);
        if (idx === 0) {
          name = this.readString(block);
        } else if (idx <= STATIC_LEN) {
          name = STATIC_NAMES[idx - 1]!;
        } else {
          const d = idx - STATIC_LEN - 1;
          if (d >= table.count) throw new HpackError(`name index ${idx} beyond the tables (${STATIC_LEN + table.count} entries)`);
          name = table.names[table.slot(d)]!;
        }
        value = this.readString(block);
        if (indexing) table.add(name, value);
      }
      out.push(name, value);
      listSize += name.length + value.length + ENTRY_OVERHEAD;
    }
    this.listSize = listSize;
    return out;
  }

  /** Reads an integer with an n-bit prefix at this.pos (RFC 7541 5.1); at most 2^31 - 1. */
  private readInt(buf: Buffer, n: number): number {
    const max = (1 << n) - 1;
    let v = buf[this.pos++]! & max;
    if (v < max) return v;
    let m = 1;
    for (;;) {
      if (this.pos >= buf.length) throw new HpackError('truncated integer');
      const b = buf[this.pos++]!;
      v += (b & 0x7f) * m;
      if (v > MAX_INT) throw new HpackError('integer above 2^31 - 1');
      if ((b & 0x80) === 0) return v;
      m *= 128;
      // Zero continuation octets add nothing; bound them so the loop ends.
      if (m > 2 ** 35) throw new HpackError('integer above 2^31 - 1 (too many octets)');
    }
  }

  /** Reads a string literal at this.pos (RFC 7541 5.2). */
  private readString(buf: Buffer): string {
    if (this.pos >= buf.length) throw new HpackError('truncated header block: string expected');
    const huffman = (buf[this.pos]! & 0x80) !== 0;
    const len = this.readInt(buf, 7);
    const start = this.pos;
    const end = start + len;
    if (end > buf.length) throw new HpackError(`truncated string: ${len} octets declared, ${buf.length - start} left`);
    this.pos = end;
    if (!huffman) return (buf as unknown as Latin1Buffer).latin1Slice(start, end);
    const need = Math.ceil((len * 8) / 5);
    if (huffScratch.length < need) huffScratch = Buffer.allocUnsafe(Math.max(need, huffScratch.length * 2));
    const n = huffmanDecode(buf, start, end, huffScratch);
    if (n < 0) {
      throw new HpackError(
        n === HUFFMAN_EOS
          ? 'Huffman string contains EOS'
          : n === HUFFMAN_LONG_PADDING
            ? 'Huffman padding longer than 7 bits'
            : 'Huffman padding not all ones (or a truncated code)',
      );
    }
    return (huffScratch as unknown as Latin1Buffer).latin1Slice(0, n);
  }
}

export class HpackEncoder {
  private readonly table: DynamicTable;
  private readonly limit: number;
  /** While encoding, the shared slab; the block being written is out[base, pos). */
  private out = NO_SLAB;
  private base = 0;
  private pos = 0;
  /** A size update owed at the start of the next block: the smallest size since the last one, and the final size. */
  private pendingMin = -1;
  private pendingSize = -1;
  private readonly dynamic = new Map<string, DynamicName>();
  /** Per ON_REPEAT name (its policy's slot): the value last sent as a literal without indexing. */
  private readonly lastLiteral: (string | undefined)[] = new Array<string | undefined>(REPEAT_SLOTS).fill(undefined);

  constructor(opts?: { maxTableSize?: number }) {
    this.limit = checkSize(opts?.maxTableSize, 'maxTableSize');
    // The peer's decoder starts at 4096 (RFC 9113 6.5.2); a smaller own limit is announced first.
    const initial = Math.min(this.limit, DEFAULT_TABLE_SIZE);
    this.table = new DynamicTable(this.limit, initial);
    if (initial < DEFAULT_TABLE_SIZE) this.pendingMin = this.pendingSize = initial;
    this.table.onEvict = (name, value, id) => {
      const dn = this.dynamic.get(name)!;
      if (dn.latest === id) {
        // The newest entry with this name goes last: no other is left.
        this.dynamic.delete(name);
      } else if (dn.values.get(value) === id) {
        dn.values.delete(value);
      }
    };
  }

  /**
   * The peer's SETTINGS_HEADER_TABLE_SIZE: the next block starts with a Dynamic Table Size Update
   * to min(n, own maxTableSize) (and first to the smallest size set since the last block, if lower).
   */
  setMaxTableSize(n: number): void {
    // Any u32 is a valid SETTINGS value (up to 2^32 - 1); we use at most our own limit.
    if (!Number.isInteger(n) || n < 0) throw new RangeError(`header table size must be a non-negative integer, got ${n}`);
    const size = Math.min(n, this.limit);
    this.pendingMin = this.pendingMin < 0 ? size : Math.min(this.pendingMin, size);
    this.pendingSize = size;
  }

  /** Octets the dynamic table holds now. */
  get dynamicTableSize(): number {
    return this.table.size;
  }

  /**
   * Encodes one header list given as a flat [name, value, ...] array (names already lower-case).
   * The result is a view of a shared 16 KB slab that is never written again: the caller owns it
   * and may queue it (no copy is made).
   */
  encode(fields: readonly string[]): Buffer {
    const table = this.table;
    this.out = slab;
    this.base = this.pos = slabPos;
    if (this.pendingSize >= 0) {
      this.ensure(12);
      if (this.pendingMin < this.pendingSize) {
        this.writeInt(0x20, 5, this.pendingMin);
        table.setMaxSize(this.pendingMin);
      }
      this.writeInt(0x20, 5, this.pendingSize);
      table.setMaxSize(this.pendingSize);
      this.pendingMin = this.pendingSize = -1;
    }
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]!;
      const value = fields[i + 1]!;
      this.ensure(name.length + value.length + 20);
      let nameIdx = 0;
      let mode = INDEX;
      let slot = -1;
      const st = BY_NAME.get(name);
      if (st !== undefined) {
        const exact = st.values.get(value);
        if (exact !== undefined) {
          this.writeInt(0x80, 7, exact);
          continue;
        }
        nameIdx = st.index;
        mode = st.mode;
        slot = st.slot;
        if (mode === NEVER_INDEX) {
          this.writeLiteral(0x10, 4, nameIdx, name, value);
          continue;
        }
      }
      const dn = this.dynamic.get(name);
      if (dn !== undefined) {
        const id = dn.values.get(value);
        if (id !== undefined) {
          this.writeInt(0x80, 7, table.inserted - id + STATIC_LEN);
          continue;
        }
        if (nameIdx === 0) nameIdx = table.inserted - dn.latest + STATIC_LEN;
      }
      if (mode === ON_REPEAT && nameIdx !== 0 && this.lastLiteral[slot] !== value) {
        // A value not seen last time: a literal that leaves the table alone.
        this.lastLiteral[slot] = value;
        this.writeLiteral(0x00, 4, nameIdx, name, value);
        continue;
      }
      if ((name.length + value.length + ENTRY_OVERHEAD) * 2 > table.maxSize) {
        this.writeLiteral(0x00, 4, nameIdx, name, value);
        continue;
      }
      this.writeLiteral(0x40, 6, nameIdx, name, value);
      const id = table.inserted;
      table.add(name, value); // may evict (and forget) this name's older entries
      const rec = this.dynamic.get(name);
      if (rec === undefined) {
        this.dynamic.set(name, { latest: id, values: new Map([[value, id]]) });
      } else {
        rec.latest = id;
        rec.values.set(value, id);
      }
    }
    const block = this.out.subarray(this.base, this.pos);
    // The next block (of any encoder) starts 8-aligned after this one.
    slab = this.out;
    slabPos = (this.pos + 7) & ~7;
    this.out = NO_SLAB;
    return block;
  }

  /** Makes room for n more octets, moving the block begun so far to a new slab if needed. */
  private ensure(n: number): void {
    if (this.pos + n <= this.out.length) return;
    const used = this.pos - this.base;
    const next = Buffer.allocUnsafe(Math.max(SLAB, (used + n) * 2));
    this.out.copy(next, 0, this.base, this.pos);
    this.out = next;
    this.base = 0;
    this.pos = used;
  }

  /** Writes an integer with an n-bit prefix after the pattern bits `first` (RFC 7541 5.1). */
  private writeInt(first: number, n: number, v: number): void {
    const out = this.out;
    const max = (1 << n) - 1;
    if (v < max) {
      out[this.pos++] = first | v;
      return;
    }
    out[this.pos++] = first | max;
    v -= max;
    while (v >= 128) {
      out[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[this.pos++] = v;
  }

  private writeLiteral(first: number, n: number, nameIdx: number, name: string, value: string): void {
    this.writeInt(first, n, nameIdx);
    if (nameIdx === 0) this.writeString(name);
    this.writeString(value);
  }

  /** A string literal, Huffman-coded when that is shorter (RFC 7541 5.2). */
  private writeString(s: string): void {
    const len = s.length;
    if (len < 127) {
      // One pass: Huffman-code behind a 1-octet length (codes are at most 30 bits: room for
      // 4 octets per character), keep it only if it came out shorter.
      this.ensure(len * 4 + 1);
      const start = this.pos + 1;
      const end = huffmanEncode(s, this.out, start);
      if (end - start < len) {
        this.out[this.pos] = 0x80 | (end - start);
        this.pos = end;
      } else {
        this.out[this.pos] = len;
        this.pos = start + this.out.write(s, start, len, 'latin1');
      }
      return;
    }
    const hlen = huffmanLength(s);
    if (hlen < len) {
      this.writeInt(0x80, 7, hlen);
      this.pos = huffmanEncode(s, this.out, this.pos);
    } else {
      this.writeInt(0x00, 7, len);
      this.pos += this.out.write(s, this.pos, len, 'latin1');
    }
  }
}
