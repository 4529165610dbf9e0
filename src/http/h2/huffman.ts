/**
 * HPACK Huffman code (RFC 7541 Section 5.2 and Appendix B): encode, encoded length, and a
 * table-driven decoder, for src/http/h2/hpack.ts.
 *
 * Hand-written hot-path code (allowed by the brief for the measured hot path: issue 20, our own
 * HTTP/2 framing layer behind a flag). There is no well-kept, fast HPACK package on npm
 * (hpack.js is stream-based and unmaintained since 2017), so this is written here.
 *
 * The RFC's code is canonical: codes are assigned in order of (length, symbol), so only the 257
 * code lengths are stored and the codes are derived at load. The derived codes are checked
 * byte-exact by the RFC 7541 Appendix C.4/C.6 vectors and against nghttp2 (node:http2) over all
 * 256 octet values in test/unit/http/h2/hpack.test.ts.
 *
 * Decoding walks the code tree a nibble (4 bits) at a time through a 256-state x 16 table built
 * once at load (the nghttp2 approach): each entry gives the next state and at most one emitted
 * symbol (the shortest code is 5 bits). A string is valid when it ends in the root state or in a
 * state reached only through 1 bits at depth <= 7 (padding: the most significant bits of EOS).
 */

/** Code length in bits of each symbol 0..255 and EOS (256), RFC 7541 Appendix B. */
const LENGTHS = new Uint8Array([
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
  13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
  15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
  20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
  22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
  26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
  20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
  30,
]);

/** Symbol codes, right-aligned (derived: canonical Huffman over LENGTHS). */
const HUFFMAN_CODES = new Uint32Array(257);

{
  const order = Array.from({ length: 257 }, (_, i) => i).sort((a, b) => LENGTHS[a]! - LENGTHS[b]! || a - b);
  let code = 0;
  let prev = LENGTHS[order[0]!]!;
  for (let i = 0; i < order.length; i++) {
    const sym = order[i]!;
    const len = LENGTHS[sym]!;
    if (i > 0) code = (code + 1) * 2 ** (len - prev);
    prev = len;
    HUFFMAN_CODES[sym] = code;
  }
}

/** Decode table: entry = next state | symbol << 8 | EMIT | FAIL. */
const EMIT = 0x10000;
const FAIL = 0x20000;
const DECODE = new Int32Array(256 * 16);
/** 1 when a string may end in this state (root, or <= 7 one bits since the last symbol). */
const ACCEPT = new Uint8Array(256);
/** 1 when the bits since the last symbol are all ones (tells padding > 7 bits from a broken code). */
const ALL_ONES = new Uint8Array(256);

{
  // Tree of 256 internal nodes (node 0 = root); a child < 0 is the leaf -(symbol + 1).
  const child = new Int32Array(256 * 2);
  const depth = new Uint8Array(256);
  let nodes = 1;
  ALL_ONES[0] = 1;
  for (let sym = 0; sym < 257; sym++) {
    const len = LENGTHS[sym]!;
    const code = HUFFMAN_CODES[sym]!;
    let node = 0;
    for (let b = len - 1; b >= 0; b--) {
      const bit = Math.floor(code / 2 ** b) & 1;
      const slot = node * 2 + bit;
      if (b === 0) {
        child[slot] = -(sym + 1);
      } else {
        if (child[slot] === 0) {
          const n = nodes++;
          child[slot] = n;
          depth[n] = depth[node]! + 1;
          ALL_ONES[n] = bit === 1 && ALL_ONES[node] === 1 ? 1 : 0;
        }
        node = child[slot]!;
      }
    }
  }
  for (let s = 0; s < 256; s++) {
    ACCEPT[s] = s === 0 || (ALL_ONES[s] === 1 && depth[s]! <= 7) ? 1 : 0;
    for (let nib = 0; nib < 16; nib++) {
      let cur = s;
      let entry = 0;
      for (let b = 3; b >= 0; b--) {
        const next = child[cur * 2 + ((nib >> b) & 1)]!;
        if (next < 0) {
          const sym = -next - 1;
          if (sym === 256) {
            entry |= FAIL;
            break;
          }
          entry |= EMIT | (sym << 8);
          cur = 0;
        } else {
          cur = next;
        }
      }
      DECODE[s * 16 + nib] = entry | cur;
    }
  }
}

/**
 * `charCodeAt` called through the prototype's function: `s.charCodeAt(i)` loads the method from
 * `s` first, and where the strings come in many representations that load is megamorphic (see
 * huffmanEncode); `.call` on a known function compiles to the same inlined character read.
 */
const charCodeAt = String.prototype.charCodeAt;

/** Octets the Huffman encoding of a latin1 string takes. */
export function huffmanLength(s: string): number {
  let bits = 0;
  const len = s.length;
  for (let i = 0; i < len; i++) bits += LENGTHS[charCodeAt.call(s, i) & 0xff]!;
  return (bits + 7) >>> 3;
}

/**
 * Writes the Huffman encoding of a latin1 string at out[pos]; returns the position after it.
 *
 * The length is read once, before the loop, and the characters through `charCodeAt.call`: the
 * strings written come in every representation V8 has (constants, substrings of a parsed head,
 * concatenations, fresh strings), and a `s.length` in the loop's test or a `s.charCodeAt` was a
 * megamorphic load, one call into V8's stub cache per character (callgrind, gRPC through the
 * full chain: 192 such calls a call, ~5 % of its instructions).
 */
export function huffmanEncode(s: string, out: Buffer, pos: number): number {
  let acc = 0; // pending bits, fewer than 8 between symbols
  let n = 0;
  const slen = s.length;
  for (let i = 0; i < slen; i++) {
    const sym = charCodeAt.call(s, i) & 0xff;
    let len = LENGTHS[sym]!;
    let code = HUFFMAN_CODES[sym]!;
    if (len > 24) {
      // Keep acc within 31 bits: push the high part first.
      const hi = len - 16;
      acc = (acc << hi) | (code >>> 16);
      n += hi;
      while (n >= 8) {
        n -= 8;
        out[pos++] = acc >>> n;
      }
      acc &= (1 << n) - 1;
      code &= 0xffff;
      len = 16;
    }
    acc = (acc << len) | code;
    n += len;
    while (n >= 8) {
      n -= 8;
      out[pos++] = acc >>> n;
    }
    acc &= (1 << n) - 1;
  }
  if (n > 0) out[pos++] = (acc << (8 - n)) | (0xff >>> n);
  return pos;
}

/** Huffman decode errors (negative results of huffmanDecode). */
export const HUFFMAN_EOS = -1;
export const HUFFMAN_LONG_PADDING = -2;
const HUFFMAN_BAD_PADDING = -3;

/**
 * Decodes src[start, end) into out from 0 (out must hold (end - start) * 8 / 5 octets); returns
 * the decoded length, or HUFFMAN_EOS / HUFFMAN_LONG_PADDING / HUFFMAN_BAD_PADDING.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, out: Uint8Array): number {
  let state = 0;
  let o = 0;
  for (let i = start; i < end; i++) {
    const b = src[i]!;
    let e = DECODE[(state << 4) | (b >>> 4)]!;
    if (e & FAIL) return HUFFMAN_EOS;
    if (e & EMIT) out[o++] = e >>> 8;
    state = e & 0xff;
    e = DECODE[(state << 4) | (b & 15)]!;
    if (e & FAIL) return HUFFMAN_EOS;
    if (e & EMIT) out[o++] = e >>> 8;
    state = e & 0xff;
  }
  if (ACCEPT[state] === 1) return o;
  return ALL_ONES[state] === 1 ? HUFFMAN_LONG_PADDING : HUFFMAN_BAD_PADDING;
}
