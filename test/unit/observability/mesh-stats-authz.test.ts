/** `meshlet stat`'s authorization rows: the sidecars' decision counts summed per service, policy, rule and result. */
import t from 'tap';
import { aggregate } from '../../../src/observability/mesh-stats';
import { formatStats } from '../../../src/cli/stat';

t.test('decision counts are summed across a service\'s sidecars', async (t) => {
  const d = (rule: string, result: string, count: number) => ({ policy: 'p', rule, action: rule === 'defaultAction' ? 'default' : 'DENY', result, count });
  const s = aggregate(
    [
      { id: 'a', service: 'web', routes: [], authz: [d('no-admin', 'would_deny', 2), d('defaultAction', 'allow', 5)] },
      { id: 'b', service: 'web', routes: [], authz: [d('no-admin', 'would_deny', 3)] },
      { id: 'c', service: 'api', routes: [] },
      { id: 'd', service: 'old', routes: [], authz: 'garbage' as never },
    ],
    [],
    new Date(0),
  );
  t.same(s.authz, [
    { service: 'web', policy: 'p', rule: 'defaultAction', action: 'default', result: 'allow', count: 5, sidecars: 1 },
    { service: 'web', policy: 'p', rule: 'no-admin', action: 'DENY', result: 'would_deny', count: 5, sidecars: 2 },
  ]);
  t.match(formatStats(s), /web\s+p\s+no-admin\s+WOULD DENY \(dryRun\)\s+5\s+2/);
  t.notMatch(formatStats(aggregate([], [], new Date(0))), /Authorization/, 'no table without policies');
});
