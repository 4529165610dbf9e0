#!/usr/bin/env node
'use strict';
/**
 * What an HTTP/1.1 head parser of our own could save over Node's llhttp binding, at most, and what
 * the product's fast path (src/http/h1-fast-heads.ts) saves: the binding's cost per head (execute,
 * the callbacks into JS, a string per header name and value, the body's copy) against a bare
 * JavaScript scan that makes the same strings from one latin1 copy of the head and checks each
 * byte against the token / field-value tables, and nothing else (no framing, no smuggling checks,
 * no partial heads: a lower bound of what a real parser costs), and against the fast path itself
 * (the checks that decide whether llhttp must read the head instead, the framing fields).
 *
 *   taskset -c 1 node bench/h1-head-parse.js [--n 300000] [--reps 5]
 *
 * The heads are the full chain's in `npm run bench`: the request as h2load --h1 sends it with the
 * sidecar's tracing headers, and nginx's response with its 2-byte body. ns per head, median of the
 * reps.
 */
const { parseArgs } = require('node:util');
const { HTTPParser } = require('_http_common');
// The product's own fast path (src/http/h1-fast-heads.ts; `npm run build` first).
const { readRequestHead, readResponseHead } = require('../dist/src/http/h1-fast-heads');

const { values: o } = parseArgs({ options: { n: { type: 'string', default: '300000' }, reps: { type: 'string', default: '5' } } });
const N = Number(o.n);
const REPS = Number(o.reps);

const REQUEST = Buffer.from(
  'GET /api/items?id=42 HTTP/1.1\r\nHost: echo\r\nUser-Agent: h2load nghttp2/1.52.0\r\nAccept: */*\r\n' +
    'x-request-id: 5f1c2a7e-2b1d-4a8f-9c6e-1d2e3f4a5b6c\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n',
  'latin1',
);
const RESPONSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 23:40:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok',
  'latin1',
);

let sink = 0;

function llhttp(type, buf) {
  const p = new HTTPParser();
  p.initialize(type, {}, 16384, HTTPParser.kLenientNone);
  p[HTTPParser.kOnHeadersComplete] = (_ma, _mi, h) => {
    sink += h.length;
    return 0;
  };
  p[HTTPParser.kOnBody] = (c) => {
    sink += c.length;
  };
  p[HTTPParser.kOnMessageComplete] = () => {
    sink++;
  };
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) p.execute(buf);
  const ns = Number(process.hrtime.bigint() - t) / N;
  p.close();
  return ns;
}

const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TOKEN[c.charCodeAt(0)] = 1;
const VALUE = new Uint8Array(256);
VALUE[9] = 1;
for (let c = 32; c < 256; c++) if (c !== 127) VALUE[c] = 1;

/** The scan: start line, then name / value strings as substrings of one latin1 copy; the body copied. */
function scan(buf, headers = []) {
  const end = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (end < 0) return -1;
  const s = buf.latin1Slice(0, end + 2);
  const lineEnd = s.indexOf('\r\n');
  const line = s.substring(0, lineEnd);
  let p = lineEnd + 2;
  while (p < end + 2) {
    let q = p;
    while (TOKEN[buf[q]] === 1) q++;
    if (buf[q] !== 58 || q === p) return -2;
    const name = s.substring(p, q);
    q++;
    while (buf[q] === 32 || buf[q] === 9) q++;
    const vs = q;
    while (VALUE[buf[q]] === 1) q++;
    if (buf[q] !== 13 || buf[q + 1] !== 10) return -3;
    let ve = q;
    while (ve > vs && (buf[ve - 1] === 32 || buf[ve - 1] === 9)) ve--;
    headers.push(name, s.substring(vs, ve));
    p = q + 2;
  }
  const body = end + 4 < buf.length ? Buffer.from(buf.subarray(end + 4)) : undefined;
  sink += headers.length + line.length + (body ? body.length : 0);
  return end + 4;
}

/** The product's fast path on the same head (it reads the head; the body stays where it is, as the client's takeBody reads it from the read buffer). */
function fast(type, buf) {
  const read = type === HTTPParser.REQUEST ? readRequestHead : readResponseHead;
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const out = [];
    if (read(buf, 0, buf.length, 16384, out) < 0) throw new Error('the fast path declined the head');
    sink += out.length;
  }
  return Number(process.hrtime.bigint() - t) / N;
}

function js(buf) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) scan(buf);
  return Number(process.hrtime.bigint() - t) / N;
}

// The scan makes the strings llhttp makes (names as sent, values without surrounding blanks).
for (const [type, buf] of [[HTTPParser.REQUEST, REQUEST], [HTTPParser.RESPONSE, RESPONSE]]) {
  const p = new HTTPParser();
  p.initialize(type, {}, 16384, HTTPParser.kLenientNone);
  let native;
  p[HTTPParser.kOnHeadersComplete] = (_ma, _mi, h) => {
    native = h;
    return 0;
  };
  p.execute(buf);
  p.close();
  const mine = [];
  scan(buf, mine);
  if (JSON.stringify(native) !== JSON.stringify(mine)) throw new Error(`the scan's fields differ from llhttp's: ${JSON.stringify(mine)} vs ${JSON.stringify(native)}`);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const rows = { 'request, llhttp': [], 'request, JS scan': [], 'request, fast path': [], 'response, llhttp': [], 'response, JS scan': [], 'response, fast path': [] };
for (let r = 0; r < REPS; r++) {
  rows['request, llhttp'].push(llhttp(HTTPParser.REQUEST, REQUEST));
  rows['request, JS scan'].push(js(REQUEST));
  rows['request, fast path'].push(fast(HTTPParser.REQUEST, REQUEST));
  rows['response, llhttp'].push(llhttp(HTTPParser.RESPONSE, RESPONSE));
  rows['response, JS scan'].push(js(RESPONSE));
  rows['response, fast path'].push(fast(HTTPParser.RESPONSE, RESPONSE));
}
for (const [k, xs] of Object.entries(rows)) console.log(`${k.padEnd(20)} ${median(xs).toFixed(0).padStart(6)} ns/head  (${xs.map((x) => x.toFixed(0)).join(' / ')})`);
const saved = median(rows['request, llhttp']) - median(rows['request, JS scan']) + median(rows['response, llhttp']) - median(rows['response, JS scan']);
if (sink === 0) throw new Error('nothing was parsed');
console.log(`at most ${(saved / 1000).toFixed(2)} µs a proxied request (one request head, one response head)`);
const fastSaved = median(rows['request, llhttp']) - median(rows['request, fast path']) + median(rows['response, llhttp']) - median(rows['response, fast path']);
console.log(`the fast path (src/http/h1-fast-heads.ts) saves ${(fastSaved / 1000).toFixed(2)} µs a proxied request here (before the parser's re-initialization after each body, which it also spares)`);
