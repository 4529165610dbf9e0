'use strict';
/**
 * h2load's summary, parsed, with the checks every h2load run needs: the connection spoke h2c, no
 * request failed, errored or timed out, every status was 2xx, and (unless `warmUp`, a short run
 * that may end before any request completes on a cold proxy) at least one succeeded. Returns
 * `{ r, problems }`; the caller adds its own checks and throws when `problems` is not empty.
 * `traffic`: also parse the response DATA bytes (`r.dataBytes`).
 */
function summary(out, { warmUp = false, traffic = false } = {}) {
  const proto = /Application protocol: (\S+)/.exec(out);
  const fin = /finished in ([\d.]+)(us|ms|s|m|h)?, ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const st = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const data = traffic ? /traffic: .*?, .*?headers.*?, \S+ \((\d+)\) data/.exec(out) : undefined;
  if (!fin || !req || !st || (traffic && !data)) return undefined;
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }[fin[2] ?? 's'];
  const r = {
    protocol: proto ? proto[1] : undefined,
    seconds: Number(fin[1]) * unit,
    rps: Number(fin[3]),
    requests: Number(req[3]),
    succeeded: Number(req[4]),
    failed: Number(req[5]),
    errored: Number(req[6]),
    timeout: Number(req[7]),
    status: { '2xx': Number(st[1]), '3xx': Number(st[2]), '4xx': Number(st[3]), '5xx': Number(st[4]) },
  };
  if (data) r.dataBytes = Number(data[1]);
  const problems = [];
  if (r.protocol !== 'h2c') problems.push(`application protocol ${r.protocol ?? '(none: no connection was made)'}, not h2c`);
  if (r.failed || r.errored || r.timeout) problems.push(`${r.failed} failed, ${r.errored} errored, ${r.timeout} timeout`);
  const non2xx = r.status['3xx'] + r.status['4xx'] + r.status['5xx'];
  if (non2xx) problems.push(`${non2xx} non-2xx (${r.status['3xx']} 3xx, ${r.status['4xx']} 4xx, ${r.status['5xx']} 5xx)`);
  if (!(r.succeeded > 0) && !warmUp) problems.push('no request succeeded');
  return { r, problems };
}

module.exports = { summary };
