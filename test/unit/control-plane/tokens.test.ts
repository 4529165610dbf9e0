import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FakeClock } from '../../../src/core/clock';
import { TokenStore } from '../../../control-plane/tokens';
import { parseTtl } from '../../../src/security/duration';

t.test('join tokens: one service, expiry, revocation, shared through the file', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'meshlet-tokens-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const clock = new FakeClock(Date.parse('2026-12-01T00:00:00Z'));
  const cli = new TokenStore(dir, clock);
  const cp = new TokenStore(dir, clock);
  const { token, info } = await cli.create({ service: 'catalog', ttlMs: 3600_000, description: 'ci' });
  t.same({ service: info.service, state: info.state, expiresAt: info.expiresAt, description: info.description }, { service: 'catalog', state: 'active', expiresAt: '2026-12-01T01:00:00.000Z', description: 'ci' });
  t.same(await cp.verify(token), { id: info.id, service: 'catalog', expiresAt: Date.parse('2026-12-01T01:00:00Z') }, 'another store on the same dir sees it');
  t.notOk(readFileSync(path.join(dir, 'tokens.json'), 'utf8').includes(token.split('.')[1] as string));
  await t.rejects(cp.verify(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')), { code: 'CREDENTIAL_INVALID', message: /not known/ }, 'a wrong secret');
  await t.rejects(cp.verify('hello'), { code: 'CREDENTIAL_INVALID', message: /expected mlj_ID.SECRET/ });
  clock.advance(3600_000);
  await t.rejects(cp.verify(token), { code: 'CREDENTIAL_EXPIRED', message: /expired at 2026-12-01T01:00:00.000Z; create a new one with `meshlet token create --service catalog`/ });
  t.equal((await cp.list())[0]?.state, 'expired');
  const second = await cli.create({ service: 'pricing' });
  t.equal(second.info.expiresAt, '2026-12-01T02:00:00.000Z', 'default TTL 1 h');
  t.ok(await cli.revoke(second.info.id));
  t.ok(await cli.revoke(second.info.id), 'revoking twice is fine');
  t.notOk(await cli.revoke('ffffffff'));
  await t.rejects(cp.verify(second.token), { code: 'CREDENTIAL_REVOKED', message: /was revoked at/ });
  t.same((await cp.list()).map((x) => x.state), ['expired', 'revoked']);
  t.notOk(JSON.stringify(await cp.list()).includes('sha256'), 'lists never show the hash');
  clock.advance(2 * 86_400_000);
  await cli.create({ service: 'frontend' });
  t.same((await cp.list()).map((x) => x.service), ['frontend'], 'tokens dead for a day are forgotten');
  await t.rejects(cli.create({ service: 'Bad_Name' }), { message: /not a service name/ });
  await t.rejects(cli.create({ service: 'ok', ttlMs: 0 }), { message: /--ttl must be positive/ });
  writeFileSync(path.join(dir, 'tokens.json'), '{oops');
  await t.rejects(cp.list(), /not JSON.*fix or remove it/);
  rmSync(path.join(dir, 'tokens.json'));
  t.same(await cp.list(), []);
});

t.test('durations', async (t) => {
  t.equal(parseTtl('1h'), 3600_000);
  t.equal(parseTtl('1h30m'), 5400_000);
  t.equal(parseTtl('7d'), 7 * 86_400_000);
  t.equal(parseTtl('250ms'), 250);
  for (const bad of ['', '1', 'h', '-1h', '0s', '1.5h', '1 h']) t.equal(parseTtl(bad), undefined, JSON.stringify(bad));
});
