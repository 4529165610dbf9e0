import t from 'tap';
import { cli } from '../lib/meshlet';

t.test('interception flags are checked', async (t) => {
  for (const [args, re] of [
    [['--http-ports', '80'], /--http-ports goes with --intercept/],
    [['--intercept', '--http-ports', '80,web'], /--http-ports: expected a port number/],
    [['--drain-ms', '0'], /--drain-ms: expected a positive integer/],
  ] as [string[], RegExp][]) {
    const r = cli(['sidecar', '--service', 's', ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re);
  }
});
