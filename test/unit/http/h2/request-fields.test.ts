/**
 * `requestFieldsOf` (src/http/h2/headers.ts), the upstream's request head built straight from a
 * proxy's flat header list: for any list it gives exactly the field list `requestFields` makes of
 * the header object src/http/upstream.ts builds from the same list (a null-prototype object,
 * repeated names merged), or, when that object would merge, reorder or refuse something,
 * nothing at all (the upstream then sends the object).
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import fc from 'fast-check';
import t from 'tap';
import { requestFields, requestFieldsOf } from '../../../../src/http/h2/headers';

/** The object upstream.ts gives node:http2's `request` (and our `request`). */
function viaObject(method: string, path: string, authority: string, scheme: string, raw: string[]): string[] | { error: string } {
  const h = Object.create(null) as OutgoingHttpHeaders;
  h[':method'] = method;
  h[':path'] = path;
  h[':authority'] = authority;
  h[':scheme'] = scheme;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const prev = h[name];
    if (prev === undefined) h[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else h[name] = [String(prev), value];
  }
  try {
    return requestFields(h);
  } catch (err) {
    return { error: (err as { code: string }).code };
  }
}

t.test('the usual proxied head: the same list as through the object, one array', async (t) => {
  const raw = ['user-agent', 'wrk', 'accept', '*/*', 'x-forwarded-for', '127.0.0.1', 'via', '1.1 meshlet', 'x-request-id', 'abc', 'x-meshlet-orig-proto', 'HTTP/1.1'];
  const got = requestFieldsOf('GET', '/p?q=1', 'echo', 'http', raw);
  t.same(got, viaObject('GET', '/p?q=1', 'echo', 'http', raw));
  t.same(got!.slice(0, 8), [':method', 'GET', ':path', '/p?q=1', ':authority', 'echo', ':scheme', 'http']);
  t.same(requestFieldsOf('HEAD', '/', 'a', 'https', []), [':method', 'HEAD', ':path', '/', ':authority', 'a', ':scheme', 'https']);
  t.same(requestFieldsOf('GET', '/', 'a', 'http', ['Content-Type', 'text/plain', 'te', 'trailers', 'constructor', 'c', '__proto__', 'p']), [':method', 'GET', ':path', '/', ':authority', 'a', ':scheme', 'http', 'content-type', 'text/plain', 'te', 'trailers', 'constructor', 'c', '__proto__', 'p'], 'names lower-cased; te: trailers kept; inherited-looking names are fields');
});

t.test('what the object would merge, reorder or refuse: no list (the object decides)', async (t) => {
  const cases: [string, string[]][] = [
    ['a repeated name', ['x-a', '1', 'x-b', '2', 'x-a', '3']],
    ['a repeated name in two cases', ['X-A', '1', 'x-a', '2']],
    ['a repeated single-value name', ['content-type', 'a', 'content-type', 'b']],
    ['a pseudo-header', [':path', '/other']],
    ['an unknown pseudo-header', [':foo', 'x']],
    ['an integer-like name', ['123', 'x']],
    ['an empty name', ['', 'x']],
    ['a connection-specific name', ['connection', 'close']],
    ['transfer-encoding', ['transfer-encoding', 'chunked']],
    ['te other than trailers', ['te', 'gzip']],
    ['a space in a name', ['x a', '1']],
    ['a non-ASCII name', ['x-\u00c4', '1']],
  ];
  for (const [what, raw] of cases) t.equal(requestFieldsOf('GET', '/', 'a', 'http', raw), undefined, what);
});

t.test('any list: the same fields as through the object, or none', async (t) => {
  const names = fc.constantFrom('accept', 'Accept', 'x-a', 'X-A', 'content-type', 'te', 'connection', 'upgrade', ':path', ':protocol', '1', '1a', '', 'a b', 'constructor', '__proto__', 'toString', 'x-\u00e9', 'via');
  const values = fc.constantFrom('1', 'trailers', 'gzip', '', 'a, b');
  let listed = 0;
  fc.assert(
    fc.property(fc.array(fc.tuple(names, values), { maxLength: 8 }), fc.constantFrom('GET', 'HEAD', 'POST'), (pairs, method) => {
      const raw = pairs.flat();
      const got = requestFieldsOf(method, '/', 'a', 'http', raw);
      if (got === undefined) return;
      listed++;
      t.same(got, viaObject(method, '/', 'a', 'http', raw));
    }),
    { numRuns: 2000, seed: 20261204 },
  );
  t.ok(listed > 100, `most lists had a field list (${listed})`);
});
