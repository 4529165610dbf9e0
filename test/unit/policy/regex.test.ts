import t from 'tap';
import { compileRegex, REGEX_MAX_PROGRAM_SIZE, regexEngine, validateRegex } from '../../../src/policy/regex';

// First in this file: nothing here has asked for a pattern yet.
t.test('the RE2 addon is loaded by the first pattern, not with the module', async (t) => {
  const re2Loaded = (): boolean => Object.keys(require.cache).some((k) => k.includes('/node_modules/re2/'));
  t.notOk(re2Loaded(), 'not loaded at import: a sidecar without patterns never maps it');
  t.equal(validateRegex('/v[0-9]+'), undefined);
  t.equal(re2Loaded(), regexEngine() === 're2', 'loaded once a pattern is validated (where the addon is installed)');
});

t.test('validateRegex: what runs in linear time is accepted, the rest refused with the reason', async (t) => {
  const cases: { input: string; error?: RegExp }[] = [
    { input: '/v[0-9]+/items' },
    { input: '/(a|aa)+' },
    { input: '(/[a-z]+)+' },
    { input: '/api/(?<version>v[12])/.*' },
    { input: '\\p{L}+' },
    { input: 'a{2,5}b{3}' },
    { input: '^/(a+)+$', error: /nested quantifier "\(a\+\)\+" is redundant/ },
    { input: '(?:x*)*', error: /nested quantifier/ },
    { input: '(a+){2,}', error: /nested quantifier/ },
    { input: '(a)\\1', error: /backreference \\1: not supported/ },
    { input: '(?<n>a)\\k<n>', error: /named backreference/ },
    { input: 'a(?=b)', error: /lookahead \(\?=/ },
    { input: 'a(?!b)', error: /lookahead \(\?!/ },
    { input: '(?<=a)b', error: /lookbehind \(\?<=/ },
    { input: '(?<!a)b', error: /lookbehind \(\?<!/ },
    { input: '(', error: /invalid regular expression/ },
    { input: 'a{1001}', error: /invalid regular expression: .*repetition/ },
    { input: '(x{1000}){1000}', error: new RegExp(`too large: program size about \\d+, limit ${REGEX_MAX_PROGRAM_SIZE}`) },
    { input: '((ab){50}c){50}', error: /too large/ },
    { input: 'x'.repeat(2000), error: /longer than 1024 characters/ },
    { input: '[(]a+[)]+' },
    { input: '\\(a+\\)+' },
  ];
  for (const c of cases) {
    const err = validateRegex(c.input);
    if (c.error) t.match(err, c.error, `${c.input.slice(0, 40)}: refused`);
    else t.equal(err, undefined, `${c.input}: accepted`);
  }
});

t.test('compileRegex: whole-string matches', async (t) => {
  t.ok(regexEngine() === 're2' || regexEngine() === 'v8-linear');
  const re = compileRegex('/v[0-9]+/items');
  t.ok(re.test('/v2/items'));
  t.notOk(re.test('/v2/items/7'), 'anchored at the end');
  t.notOk(re.test('x/v2/items'), 'anchored at the start');
  t.ok(compileRegex('a|b').test('b'), 'alternation inside the anchors');
  t.notOk(compileRegex('a|b').test('ab'));
  t.ok(compileRegex('/(a|aa)+').test('/' + 'a'.repeat(100_000)));
  t.notOk(compileRegex('/(a|aa)+').test('/' + 'a'.repeat(100_000) + 'b'), 'a long near-worst-case input answers');
  t.throws(() => compileRegex('(a)\\1'), /backreference/);
});
