/**
 * src/http/multiplex.ts: the far sidecar removes the `x-meshlet-orig-proto` mark from the
 * request's own flat header list, in place, wherever it stands, and leaves a list without it (or
 * with the name only as a value) as it is.
 */
import t from 'tap';
import { ORIG_PROTO_HEADER, withoutMark } from '../../../src/http/multiplex';

t.test('the mark removed in place: first, middle, last', async (t) => {
  for (const [list, want] of [
    [[ORIG_PROTO_HEADER, 'HTTP/1.1', 'a', '1', 'b', '2'], ['a', '1', 'b', '2']],
    [['a', '1', ORIG_PROTO_HEADER, 'HTTP/1.1', 'b', '2'], ['a', '1', 'b', '2']],
    [['a', '1', 'b', '2', ORIG_PROTO_HEADER, 'HTTP/1.0'], ['a', '1', 'b', '2']],
    [[ORIG_PROTO_HEADER, 'HTTP/1.1'], []],
  ] as [string[], string[]][]) {
    const out = withoutMark(list);
    t.equal(out, list, 'the same array');
    t.same(out, want);
  }
});

t.test('no mark, or the name only as a value: unchanged', async (t) => {
  const a = ['a', '1', 'b', '2'];
  t.same(withoutMark(a), ['a', '1', 'b', '2']);
  const b = ['x', ORIG_PROTO_HEADER, 'b', '2'];
  t.same(withoutMark(b), ['x', ORIG_PROTO_HEADER, 'b', '2']);
  t.same(withoutMark([]), []);
});
