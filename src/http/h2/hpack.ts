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
 * - the encoder writes into one reused, growing buffer and returns a copy (small copies come
 *   from node's Buffer pool), so the caller may keep or queue the returned Buffer;
 * - decode reads integers and positions through fields, not result objects.
 *
 * Strings are latin1 both ways, as node:http2 (nghttp2) gives and takes them: each octet is one
 * UTF-16 code unit when decoding; each code unit's low octet is sent when encoding. An entry's
 * size is therefore name.length + value.length + 32 (RFC 7541 4.1).
 *
 * Encoder policy: a field that matches a static entry exactly is indexed; `authorization`,
 * `proxy-authorization`, `cookie` and `set-cookie` are literals never indexed; fields whose entry
 * would take more than half the table, and a few values that change on nearly every message
 * (NO_INDEX below), are literals without indexing; every other field is added to the dynamic
 * table (incremental indexing), so a repeated field costs one octet.
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

/** Encoder lookup: name -> index of its first static entry, and value -> exact entry index. */
interface StaticName {
  index: number;
  values: Map<string, number>;
}
const STATIC_BY_NAME = new Map<string, StaticName>();
for (let i = 0; i < STATIC_LEN; i++) {
  const [name, value] = STATIC[i]!;
  let e = STATIC_BY_NAME.get(name);
  if (e === undefined) STATIC_BY_NAME.set(name, (e = { index: i + 1, values: new Map() }));
  // An empty value in the table means "no typical value": only a real '' matches it.
  e.values.set(value, i + 1);
}

/** Never indexed (RFC 7541 7.1.3): credentials an intermediary must not put in a shared table. */
const SENSITIVE = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie']);
/** Values that differ on nearly every message: indexing them only evicts useful entries. */
const NO_INDEX = new Set(['content-length', 'age', 'etag', 'if-modified-since', 'if-none-match', 'location', 'x-request-id']);

const ENTRY_OVERHEAD = 32;
const MAX_INT = 2 ** 31 - 1;
const DEFAULT_TABLE_SIZE = 4096;

function checkSize(n: number | undefined, what: string): number {
  if (n === undefined) return DEFAULT_TABLE_SIZE;
  if (!Number.isInteger(n) || n < 0 || n > MAX_INT) throw new RangeError(`${what} must be an integer in [0, 2^31 - 1], got ${n}`);
  return n;
}

/**
 * The dynamic table (RFC 7541 2.3.2) as a ring: entry 0 is the newest. Capacity is a power of two
 * holding at least maxSize / 32 entries, the most a table of that size can have.
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
    while (cap < Math.floor(limit / ENTRY_OVERHEAD)) cap *= 2;
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
    const s = this.head;
    this.names[s] = name;
    this.values[s] = value;
    this.head = (s + 1) & this.mask;
    this.count++;
    this.size += size;
    this.inserted++;
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
  private huff = Buffer.allocUnsafe(256);
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
    if (!huffman) return buf.toString('latin1', start, end);
    const need = Math.ceil((len * 8) / 5);
    if (this.huff.length < need) this.huff = Buffer.allocUnsafe(Math.max(need, this.huff.length * 2));
    const n = huffmanDecode(buf, start, end, this.huff);
    if (n < 0) {
      throw new HpackError(
        n === HUFFMAN_EOS
          ? 'Huffman string contains EOS'
          : n === HUFFMAN_LONG_PADDING
            ? 'Huffman padding longer than 7 bits'
            : 'Huffman padding not all ones (or a truncated code)',
      );
    }
    return this.huff.toString('latin1', 0, n);
  }
}

export class HpackEncoder {
  private readonly table: DynamicTable;
  private readonly limit: number;
  private out = Buffer.allocUnsafe(1024);
  private pos = 0;
  /** A size update owed at the start of the next block: the smallest size since the last one, and the final size. */
  private pendingMin = -1;
  private pendingSize = -1;
  /** Dynamic entries by name then value, and the newest entry per name, as absolute ids. */
  private readonly byNameValue = new Map<string, Map<string, number>>();
  private readonly byName = new Map<string, number>();

  constructor(opts?: { maxTableSize?: number }) {
    this.limit = checkSize(opts?.maxTableSize, 'maxTableSize');
    // The peer's decoder starts at 4096 (RFC 9113 6.5.2); a smaller own limit is announced first.
    const initial = Math.min(this.limit, DEFAULT_TABLE_SIZE);
    this.table = new DynamicTable(this.limit, initial);
    if (initial < DEFAULT_TABLE_SIZE) this.pendingMin = this.pendingSize = initial;
    this.table.onEvict = (name, value, id) => {
      const values = this.byNameValue.get(name);
      if (values !== undefined && values.get(value) === id) {
        values.delete(value);
        if (values.size === 0) this.byNameValue.delete(name);
      }
      if (this.byName.get(name) === id) this.byName.delete(name);
    };
  }

  /** The peer's SETTINGS_HEADER_TABLE_SIZE: the next block starts with a Dynamic Table Size Update. */
  setMaxTableSize(n: number): void {
    const size = Math.min(checkSize(n, 'header table size'), this.limit);
    this.pendingMin = this.pendingMin < 0 ? size : Math.min(this.pendingMin, size);
    this.pendingSize = size;
  }

  /** Octets the dynamic table holds now. */
  get dynamicTableSize(): number {
    return this.table.size;
  }

  /**
   * Encodes one header list given as a flat [name, value, ...] array (names already lower-case).
   * Returns a fresh Buffer the caller owns.
   */
  encode(fields: readonly string[]): Buffer {
    this.pos = 0;
    const table = this.table;
    if (this.pendingSize >= 0) {
      if (this.pendingMin < this.pendingSize) {
        this.ensure(6);
        this.writeInt(0x20, 5, this.pendingMin);
        table.setMaxSize(this.pendingMin);
      }
      this.ensure(6);
      this.writeInt(0x20, 5, this.pendingSize);
      table.setMaxSize(this.pendingSize);
      this.pendingMin = this.pendingSize = -1;
    }
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i]!;
      const value = fields[i + 1]!;
      this.ensure(name.length + value.length + 20);
      const st = STATIC_BY_NAME.get(name);
      let nameIdx = 0;
      if (st !== undefined) {
        const exact = st.values.get(value);
        if (exact !== undefined) {
          this.writeInt(0x80, 7, exact);
          continue;
        }
        nameIdx = st.index;
      }
      if (SENSITIVE.has(name)) {
        this.writeLiteral(0x10, 4, nameIdx, name, value);
        continue;
      }
      const values = this.byNameValue.get(name);
      if (values !== undefined) {
        const id = values.get(value);
        if (id !== undefined) {
          this.writeInt(0x80, 7, table.inserted - id + STATIC_LEN);
          continue;
        }
      }
      if (nameIdx === 0) {
        const id = this.byName.get(name);
        if (id !== undefined) nameIdx = table.inserted - id + STATIC_LEN;
      }
      if (NO_INDEX.has(name) || (name.length + value.length + ENTRY_OVERHEAD) * 2 > table.maxSize) {
        this.writeLiteral(0x00, 4, nameIdx, name, value);
        continue;
      }
      this.writeLiteral(0x40, 6, nameIdx, name, value);
      const id = table.inserted;
      table.add(name, value);
      let m = this.byNameValue.get(name);
      if (m === undefined) this.byNameValue.set(name, (m = new Map()));
      m.set(value, id);
      this.byName.set(name, id);
    }
    const res = Buffer.allocUnsafe(this.pos);
    this.out.copy(res, 0, 0, this.pos);
    return res;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.out.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.pos + n));
    this.out.copy(next, 0, 0, this.pos);
    this.out = next;
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
