import t from 'tap';
import { matchTemplate, parseTemplate } from '../../../src/grpc/transcode/template';

t.test('parse: valid templates', async (t) => {
  const cases: [string, { literals: number; vars: string[]; verb?: string; hasRest: boolean }][] = [
    ['/v1/books', { literals: 2, vars: [], hasRest: false }],
    ['/v1/{name}', { literals: 1, vars: ['name'], hasRest: false }],
    ['/v1/{book.name=shelves/*/books/*}', { literals: 3, vars: ['book.name'], hasRest: false }],
    ['/v1/{parent=shelves/*}/books', { literals: 3, vars: ['parent'], hasRest: false }],
    ['/v1/books:search', { literals: 2, vars: [], verb: 'search', hasRest: false }],
    ['/v1/{name=**}', { literals: 1, vars: ['name'], hasRest: true }],
    ['/v1/*/x/{a}/{b}:do', { literals: 2, vars: ['a', 'b'], verb: 'do', hasRest: false }],
  ];
  for (const [src, want] of cases) {
    const p = parseTemplate(src);
    t.same({ literals: p.literals, vars: p.variables.map((v) => v.fieldPath.join('.')), verb: p.verb, hasRest: p.hasRest }, { ...want, verb: want.verb }, src);
  }
});

t.test('parse: invalid templates name the problem', async (t) => {
  const cases: [string, RegExp][] = [
    ['v1/books', /must start with "\/"/],
    ['/', /at least one segment/],
    ['/v1/{name', /unclosed/],
    ['/v1/{a.b-c}', /invalid field path/],
    ['/v1/{a}/{a}', /appears twice/],
    ['/v1/{a=}', /empty pattern/],
    ['/v1/x{a}', /whole segment/],
    ['/v1/**/x', /"\*\*" must be the last/],
    ['/v1/', /must not end with "\/"/],
    ['/v1/a b', /invalid segment/],
    ['/v1/{a={b}}', /nested/],
    ['/v1/x:', /invalid verb/],
  ];
  for (const [src, re] of cases) t.throws(() => parseTemplate(src), re, src);
});

t.test('match', async (t) => {
  const cases: [string, string, string[] | undefined][] = [
    ['/v1/books', '/v1/books', []],
    ['/v1/books', '/v1/books/x', undefined],
    ['/v1/{name}', '/v1/abc', ['abc']],
    ['/v1/{name}', '/v1/a%20b%2Fc', ['a b/c']],
    ['/v1/{name}', '/v1/', undefined],
    ['/v1/{name}', '/v1/a/b', undefined],
    ['/v1/{book.name=shelves/*/books/*}', '/v1/shelves/s1/books/b%C3%A9', ['shelves/s1/books/bé']],
    ['/v1/{book.name=shelves/*/books/*}', '/v1/shelves/s1/books/a%2Fb', ['shelves/s1/books/a%2Fb']],
    ['/v1/{book.name=shelves/*/books/*}', '/v1/shelves/s1/cds/b', undefined],
    ['/v1/{parent=shelves/*}/books', '/v1/shelves/s1/books', ['shelves/s1']],
    ['/v1/books:search', '/v1/books:search', []],
    ['/v1/books:search', '/v1/books', undefined],
    ['/v1/{name}:publish', '/v1/b1:publish', ['b1']],
    ['/v1/{name=**}', '/v1/a/b/c', ['a/b/c']],
    ['/v1/{name=**}', '/v1', ['']],
    ['/v1/{a}/{b=x/*}', '/v1/1/x/2', ['1', 'x/2']],
    ['/v1/{a}', '/v1/%E0%A4%A', undefined],
  ];
  for (const [src, path, want] of cases) t.same(matchTemplate(parseTemplate(src), path), want, `${src} ~ ${path}`);
});
