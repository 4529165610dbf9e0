/**
 * `forwardResponseFields` (src/http/headers.ts): the one-pass field list of a forwarded HTTP/2
 * response head must be exactly what the object path sends (`forwardResponseHeaders`, the flag
 * header extended, `:status` set, then `responseFields` of src/http/h2/headers.ts): same fields,
 * same order, same Date rule; and it must step aside (undefined) wherever that path would refuse
 * or reorder, so the object path keeps its errors. Property-tested with fast-check over header
 * objects built from hop-by-hop, Connection-named, via, flag, date, repeated and odd names.
 */
import fc from 'fast-check';
import t from 'tap';
import { forwardResponseFields, forwardResponseHeaders } from '../../../src/http/headers';
import { H2Error, responseFields, responseStatus } from '../../../src/http/h2/headers';

type Head = Record<string, string | string[] | undefined>;

/** The object path as src/stack/respond-http.ts takes it: the field list, or the error it throws. */
function objectPath(h: Head, status: number, flags: string): string[] | H2Error {
  const out = forwardResponseHeaders(h, '2 meshlet');
  if (flags) {
    const prev = out['x-meshlet-flags'];
    out['x-meshlet-flags'] = prev !== undefined && prev.length > 0 ? `${String(prev)},${flags}` : flags;
  }
  out[':status'] = String(status);
  try {
    return responseFields(out, responseStatus(out));
  } catch (err) {
    if (err instanceof H2Error) return err;
    throw err;
  }
}

t.test('a typical upstream head: the same list as the object path, Date added', async (t) => {
  const h: Head = { server: 'nginx/1.22.1', 'content-type': 'text/plain', 'content-length': '20', connection: 'keep-alive', 'keep-alive': 'timeout=5', 'x-upstream-port': '8081' };
  const head = forwardResponseFields(h, 200, '2 meshlet', '');
  t.ok(head);
  t.same(head!.fields, objectPath(h, 200, ''));
  t.same(head!.fields.slice(0, 10), [':status', '200', 'server', 'nginx/1.22.1', 'content-type', 'text/plain', 'content-length', '20', 'x-upstream-port', '8081']);
  t.same(head!.fields.slice(10, 12), ['via', '2 meshlet']);
  t.equal(head!.fields[12], 'date');
  t.equal(head!.contentLength, '20');
});

t.test('via and the flag header keep the upstream position, extended', async (t) => {
  const h: Head = { via: '1.1 lb', 'x-meshlet-flags': 'RL', date: 'Mon, 01 Jan 2024 00:00:00 GMT', 'set-cookie': ['a=1', 'b=2'], 'x-a': 'b' };
  const head = forwardResponseFields(h, 503, '2 meshlet', 'UO');
  t.same(head!.fields, [':status', '503', 'via', '1.1 lb, 2 meshlet', 'x-meshlet-flags', 'RL,UO', 'date', 'Mon, 01 Jan 2024 00:00:00 GMT', 'set-cookie', 'a=1', 'set-cookie', 'b=2', 'x-a', 'b']);
  t.same(head!.fields, objectPath(h, 503, 'UO'));
});

t.test('steps aside where the object path refuses or reorders', async (t) => {
  const cases: [string, Head, number][] = [
    ['an upper-case name', { 'X-Up': 'a' }, 200],
    ['a name with a space', { 'x up': 'a' }, 200],
    ['a digit-led name (an object orders integer keys first)', { '123': 'a' }, 200],
    ['two values of a single-value field', { 'content-type': ['a', 'b'] }, 200],
    ['via as an array', { via: ['a', 'b'] }, 200],
    ['a status outside 200..599', {}, 101],
  ];
  for (const [what, h, status] of cases) t.equal(forwardResponseFields(h, status, '2 meshlet', ''), undefined, what);
  t.equal(forwardResponseFields({ 'x-meshlet-flags': ['a', 'b'] }, 200, '2 meshlet', 'UO'), undefined, 'the flag header as an array, with flags to add');
  t.ok(objectPath({ 'content-type': ['a', 'b'] }, 200, '') instanceof H2Error, 'the object path refuses that one');
});

const name = fc.constantFrom(
  'content-type', 'content-length', 'date', 'via', 'x-meshlet-flags', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'upgrade', 'proxy-connection',
  'trailer', 'x-drop', 'set-cookie', 'server', 'x-a', 'x-b', 'etag', ':status', '', 'X-Up', 'Via', '9x', 'x y', 'http2-settings', 'expect', 'location',
);
const value = fc.oneof(
  fc.constantFrom('', '0', '20', 'x-drop', 'close, x-drop', 'keep-alive', 'trailers', 'chunked', 'RL', '1.1 lb'),
  fc.array(fc.constantFrom('a', 'b', '0', 'x-drop'), { maxLength: 3 }),
  fc.constant(undefined),
);

t.test('property: the field list equals the object path wherever it does not step aside', async (t) => {
  let compared = 0;
  fc.assert(
    fc.property(fc.array(fc.tuple(name, value), { maxLength: 12 }), fc.constantFrom(200, 204, 304, 404, 503, 100, 600), fc.constantFrom('', 'UO', 'UO,RL'), (pairs, status, flags) => {
      const h: Head = {};
      for (const [n, v] of pairs) h[n] = v;
      const head = forwardResponseFields(h, status, '2 meshlet', flags);
      if (head === undefined) return;
      compared++;
      const expect = objectPath(h, status, flags);
      if (expect instanceof H2Error) throw new Error(`the object path refuses (${expect.code}) what the field list sends: ${JSON.stringify(h)}`);
      if (JSON.stringify(head.fields) !== JSON.stringify(expect)) throw new Error(`differs for ${JSON.stringify(h)}: ${JSON.stringify(head.fields)} vs ${JSON.stringify(expect)}`);
      const out = forwardResponseHeaders(h, '2 meshlet');
      const cl = out['content-length'];
      if (head.contentLength !== (typeof cl === 'string' ? cl : undefined)) throw new Error(`content-length ${head.contentLength} vs ${String(cl)}`);
    }),
    { numRuns: 3000 },
  );
  t.ok(compared > 1000, `${compared} heads compared`);
});
