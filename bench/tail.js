#!/usr/bin/env node
'use strict';
/**
 * The tail at a fixed rate: nginx and the full-chain sidecar, each measured paired with the
 * upstream (the proxy and the upstream each get the full rate, schedules interleaved, from one
 * open-loop generator on the load core: bench/native/openloop.c, the generator of `npm run
 * bench`'s fixed-rate phase), RUNS times, interleaved (nginx then meshlet, then meshlet then
 * nginx, ...). Added latency = proxy - paired direct at each percentile. For the sidecar, an
 * event-loop-delay histogram and its GC pauses by kind over each phase (bench/lib/eld.js,
 * preloaded). Ends with one summary line: the medians, the spread and the p99.9 ratio.
 *
 *   node bench/tail.js [--rate 5000] [--seconds 6] [--runs 3] [--connections 32] [--cold 1]
 *                      [--freeze-ms 20] [--others-ms 20] [--gen openloop|loadjs] [--nice=-10] [--dist DIR]
 *                      [--node-flags '...'] [--json]
 *
 * Steady state: before the runs, each proxy serves `--cold N` phases like the measured ones
 * (default 1), reported as "cold" and not counted: a freshly started sidecar compiles its hot
 * code in V8's background threads for its first seconds of traffic, on the same core, and a
 * sidecar in production serves for hours. The cold figures stay in the output and the JSON.
 *
 * Platform pauses: the machine itself stops a core now and then (on this project's VMs, the
 * hypervisor deschedules a virtual CPU for ~100 ms at a time, in bursts: none for minutes, then
 * several a phase). Whichever proxy is
 * measured then gets ~100 ms at its p99.9, whatever it is. So a real-time sleeper runs on each
 * core through every phase (bench/native/hiccup.c, the idea of jHiccup): a wake-up late by
 * `--freeze-ms` or more can only be the platform (no guest thread delays a SCHED_FIFO thread that
 * long), and a pair (nginx + meshlet) in which either phase saw one during its recorded slots (not
 * in the generator's warm-up or drain) is set aside, reported with
 * its pauses, and run again; at most `--runs` extra pairs in all. `--freeze-ms 0`: no detector,
 * every pair counts.
 *
 * Other work: the machine runs other services beside the bench, and some of them take a core in
 * bursts (one starts a whole Erlang VM every 60 s: ~250 ms of both cores). Their threads are
 * ordinary ones, so the sleepers above do not see them; the scheduler shares the core between
 * them and the proxy, and whichever proxy is measured gets tens of ms at its p99.9. So (as root,
 * with cgroup v1 cpuacct) the bench and everything it starts run in a cgroup of their own, and
 * bench/lib/foreign.js counts the CPU time everyone else spends on each core. A pair in which
 * others took `--others-ms` or more of either core within 100 ms of either phase's recorded slots
 * is set aside and run again the same way (the machine's background takes at most ~6 ms in any
 * 100 ms). `--others-ms 0`: not counted, every pair counts.
 *
 * `--gen loadjs` uses bench/load.js (Node) instead, for comparison: it cannot keep 2 x 5,000
 * sends/s on one core (its send lag reads tens of ms; see the `gen` columns).
 * `--nice=N` (root, N < 0): for a machine shared with other work. With the kernel's autogroup
 * scheduling (sched_autogroup_enabled), a process's nice only counts inside its session's group,
 * and the CPU is shared between groups; so tail.js re-runs itself under setsid(1) (a session, and
 * a group, of its own: the generator, the upstream and both proxies), gives that group niceness N
 * (/proc/self/autogroup) and starts each process at niceness N too. The bench then wins the CPU
 * over the other work most of the time. Without it (the default, and on a quiet machine) the
 * figures are the ones to compare with `npm run bench`.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { parseArgs } = require('node:util');
const procs = require('./lib/procs');
const configs = require('./lib/configs');
const openloop = require('./lib/openloop');
const { nodeFlagsOf } = require('./lib/node-flags');
const hiccup = require('./lib/hiccup');
const foreign = require('./lib/foreign');

const { values: o } = parseArgs({
  options: {
    rate: { type: 'string', default: '5000' },
    seconds: { type: 'string', default: '6' },
    runs: { type: 'string', default: '3' },
    cold: { type: 'string', default: '1' },
    'freeze-ms': { type: 'string', default: '20' },
    'others-ms': { type: 'string', default: '20' },
    connections: { type: 'string', default: '32' },
    gen: { type: 'string', default: 'openloop' },
    dist: { type: 'string', default: path.resolve(__dirname, '..') },
    'node-flags': { type: 'string', default: '' },
    nice: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
  },
});
const NICE = Number(o.nice);
if (NICE && Number(fs.readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ')[3]) !== process.pid) {
  // Not a session leader: run again as one (see --nice above).
  const c = spawn('setsid', ['-w', process.execPath, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.on('SIGINT', () => c.kill('SIGINT'));
  process.on('SIGTERM', () => c.kill('SIGTERM'));
  c.on('exit', (code, sig) => process.exit(code ?? (sig ? 1 : 0)));
  return;
}
if (NICE) fs.writeFileSync('/proc/self/autogroup', String(NICE));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'meshlet-tail-'));
procs.installCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));
const RATE = Number(o.rate);
/** [cmd, args] run at niceness NICE (nice(1) execs the command: the pid stays the command's). */
const niced = (cmd, args) => (NICE ? ['nice', ['-n', String(NICE), cmd, ...args]] : [cmd, args]);
const SECONDS = Number(o.seconds);
const FREEZE_MS = Number(o['freeze-ms']);
/** The generator's warm-up before the recorded slots (openloop's and load.js's default: 1 s). */
const WARMUP_S = 1;
/** The platform-pause detector, on the load core and the proxies' core (see --freeze-ms). */
const detector = FREEZE_MS > 0 ? hiccup.start([0, 1]) : null;
/** The other-work counter (see --others-ms): before anything starts, so that all of it is the bench's. */
const OTHERS_MS = Number(o['others-ms']);
const others = OTHERS_MS > 0 ? foreign.start() : null;
if (OTHERS_MS > 0 && !others) process.stderr.write('tail: cannot count other processes\' CPU (needs root and cgroup v1 cpuacct): every pair counts\n');
procs.installCleanup(() => others?.stop());

function loadjs(ports) {
  return new Promise((resolve, reject) => {
    const args = [path.join(__dirname, 'load.js'), ...ports.flatMap((p) => ['--url', `http://127.0.0.1:${p}/`]), '--host', 'upstream', '--rate', o.rate, '--duration', o.seconds, '--warmup', String(WARMUP_S), '--connections', o.connections, '--drain', '5'];
    const c = spawn('taskset', ['-c', '0', ...niced(process.execPath, args).flat()], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load.js exited ${code}`))));
  });
}
const load = (ports) => (o.gen === 'loadjs' ? loadjs(ports) : openloop.run(ports, { rates: [RATE], seconds: SECONDS, warmup: WARMUP_S, connections: Number(o.connections), nice: NICE }));

/** One paired phase: the proxy's added latency and the generator's own health (direct side). */
/** [ms on the CPU, ms runnable but waiting for it] of a process's main thread, so far. */
function schedMs(pid) {
  const [run, wait] = fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(' ').map(Number);
  return [run / 1e6, wait / 1e6];
}

/**
 * The stretch of a phase (its generator started at `t0`) whose disturbances reach the recorded
 * slots: from 0.2 s before the warm-up ends to 0.5 s after the last slot.
 */
function slotsSpan(t0) {
  return [t0 + BigInt(Math.round((WARMUP_S - 0.2) * 1e9)), t0 + BigInt(Math.round((WARMUP_S + SECONDS + 0.5) * 1e9))];
}
/** Whether a pause ending at `p.at` after `p.ms` overlaps a phase's recorded slots (the phase's generator started at `t0`). */
function overlapsSlots(p, t0) {
  const [from, to] = slotsSpan(t0);
  return p.at > from && p.at - BigInt(Math.round(p.ms * 1e6)) < to;
}

async function measure(port, upstreamPort, pid) {
  const s0 = schedMs(pid);
  const c0 = procs.coreTimes();
  const cpu0 = procs.cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  const ph = (await load([port, upstreamPort])).phases[0];
  const t1 = process.hrtime.bigint();
  const s1 = schedMs(pid);
  const wallS = Number(t1 - t0) / 1e9;
  const proxyPct = (100 * (procs.cpuSeconds(pid) - cpu0)) / wallS;
  const [t, d] = ph.targets;
  const bad = t.errors + t.non2xx + t.unfinished + d.errors + d.non2xx + d.unfinished;
  if (!t.latencyUs || !d.latencyUs) throw new Error(`no request completed: ${JSON.stringify(ph.targets.map(({ windowsP99Us, ...x }) => x))}`);
  return {
    added: Object.fromEntries(['p50', 'p99', 'p999'].map((k) => [k, t.latencyUs[k] - d.latencyUs[k]])),
    // The paired estimator (openloop only): percentiles of the per-pair difference, each proxied
    // slot against the direct slot next to it (bench/native/openloop.c, `paired`).
    paired: t.pairedAddedUs ? { p50: t.pairedAddedUs.p50, p99: t.pairedAddedUs.p99, p999: t.pairedAddedUs.p999 } : null,
    proxyUs: t.latencyUs,
    directUs: d.latencyUs,
    sendLagUs: d.sendLagUs,
    sentRate: d.sentRate ?? null,
    // The proxy's main thread over the phase (warm-up included): CPU time, and time it was
    // runnable but another process had its core (the machine's share of the tail).
    proxyCpuMs: Math.round(s1[0] - s0[0]),
    proxyRunqueueWaitMs: Math.round(s1[1] - s0[1]),
    // How busy the proxy's core was besides the proxy's own threads (other processes, and the
    // kernel's softirq work for the loopback traffic, which no process is charged with).
    proxyCoreOtherPct: Math.max(0, Math.round(procs.busyBetween(c0, procs.coreTimes())[1] - proxyPct)),
    bad,
    // Every pause of 5 ms or more the detector saw on either core during the phase. `rt`: seen by
    // a SCHED_FIFO sleeper (false without root: then the guest's own scheduling can be the cause).
    // `measured`: the pause overlaps the recorded slots (the generator's 1 s warm-up sends first;
    // a pause in the warm-up's last 0.2 s or up to 0.5 s after the last slot still delays some).
    platformPauses: detector ? detector.during(t0, t1).map((p) => ({ cpu: p.cpu, ms: Math.round(p.ms * 10) / 10, measured: overlapsSlots(p, t0), rt: p.rt })) : null,
    // Other processes' CPU time on each core over the recorded slots: total, and the most in any
    // 100 ms (see --others-ms).
    otherWork: others ? others.during(...slotsSpan(t0)).filter((c) => c.cpu <= 1) : null,
  };
}

async function main() {
  if (o.gen !== 'loadjs') openloop.binary();
  const up = [await procs.freePort(), await procs.freePort()];
  const conf = path.join(tmp, 'upstream.conf');
  fs.writeFileSync(conf, configs.upstreamNginx(tmp, up));
  procs.start('upstream', ...niced('nginx', ['-c', conf]), { cpu: 0, logFile: path.join(tmp, 'upstream.log') });
  const nginxPort = await procs.freePort();
  const nconf = path.join(tmp, 'proxy.conf');
  fs.writeFileSync(nconf, configs.nginxProxy(tmp, nginxPort, up[0]));
  const ng = procs.start('nginx', ...niced('nginx', ['-c', nconf]), { cpu: 1, logFile: path.join(tmp, 'nginx.log') });
  const policies = path.join(tmp, 'full.json');
  fs.writeFileSync(policies, configs.meshletPolicies('full', up));
  const out = await procs.freePort();
  const admin = await procs.freePort();
  const eldFile = path.join(tmp, 'eld.jsonl');
  const main = path.join(o.dist, 'dist/src/cli/main.js');
  // The build's own Node flags (its main.js shebang), then --node-flags.
  const flags = [...nodeFlagsOf(main), ...o['node-flags'].split(' ').filter(Boolean), '-r', path.join(__dirname, 'lib/eld.js')];
  const sc = procs.start('meshlet', ...niced(process.execPath, [...flags, main, 'sidecar', '--service', 'bench', '--config', policies, '--inbound', '127.0.0.1:0', '--outbound', `127.0.0.1:${out}`, '--admin', `127.0.0.1:${admin}`]), {
    cpu: 1,
    logFile: path.join(tmp, 'meshlet.log'),
    env: { ...process.env, MESHLET_ELD_FILE: eldFile },
  });
  await procs.waitForPort(up[0]);
  await procs.waitForPort(nginxPort);
  await procs.waitForHttp(`http://127.0.0.1:${admin}/ready`, { proc: sc, timeoutMs: 30_000 });
  const runNginx = () => measure(nginxPort, up[0], ng.pid);
  const runMeshlet = async () => {
    process.kill(sc.pid, 'SIGUSR2'); // start the sidecar's histogram afresh
    await procs.sleep(100);
    const m = await measure(out, up[0], sc.pid);
    process.kill(sc.pid, 'SIGUSR2');
    await procs.sleep(200);
    const lines = fs.readFileSync(eldFile, 'utf8').trim().split('\n');
    return { ...m, eld: JSON.parse(lines[lines.length - 1]) };
  };
  const load0 = os.loadavg()[0];
  const f = (x) => `+${x.added.p50}/${x.added.p99}/${x.added.p999}`;
  const fp = (x) => (x.paired ? `+${x.paired.p50}/${x.paired.p99}/${x.paired.p999}` : '-');
  const g = (x) => `direct p99.9 ${x.directUs.p999}, send lag p99.9 ${x.sendLagUs?.p999 ?? '-'}, ${x.sentRate ?? '-'}/s; proxy cpu ${x.proxyCpuMs} ms, waited ${x.proxyRunqueueWaitMs} ms; core 1 busy besides the proxy ${x.proxyCoreOtherPct}%`;
  const othersOf = (x) => x.otherWork.map((c) => `core ${c.cpu} ${c.totalMs} ms (${c.maxMs} in 100 ms)`).join(', ');
  const pausesOf = (x) => (x.platformPauses?.length ? x.platformPauses.map((p) => `${p.ms} ms on core ${p.cpu}${p.measured ? '' : ' (warm-up or drain)'}${p.rt ? '' : ' (not real-time: may be the guest)'}`).join(', ') : 'none');
  /** The pair's lines: both proxies' added latency, the generator's health, the sidecar's stalls. */
  const report = (label, r) => {
    const e = r.meshlet.eld;
    process.stderr.write(
      `${label}: added p50/p99/p99.9 us: nginx ${f(r.nginx)}, meshlet ${f(r.meshlet)}${r.meshlet.paired ? `; paired: nginx ${fp(r.nginx)}, meshlet ${fp(r.meshlet)}` : ''} | gen: [nginx ${g(r.nginx)}] [meshlet ${g(r.meshlet)}]` +
        `${r.nginx.bad + r.meshlet.bad ? ` | ERRORS/unfinished ${r.nginx.bad}/${r.meshlet.bad}` : ''}\n` +
        (detector ? `       platform pauses >= 5 ms: nginx's phase ${pausesOf(r.nginx)}; meshlet's phase ${pausesOf(r.meshlet)}\n` : '') +
        (others ? `       other processes' CPU: nginx's phase ${othersOf(r.nginx)}; meshlet's phase ${othersOf(r.meshlet)}\n` : '') +
        `       sidecar event-loop delay p50/p99/p99.9/max ${e.eventLoopDelayUs.p50}/${e.eventLoopDelayUs.p99}/${e.eventLoopDelayUs.p999}/${e.eventLoopDelayUs.max} us; gc ${JSON.stringify(e.gc, (k, v) => (typeof v === 'number' ? Math.round(v * 100) / 100 : v))}; load avg ${r.loadavg.toFixed(1)}\n` +
        (e.stalls
          ? `       sidecar loop stalls > ${e.stalls.thresholdMs} ms: ${e.stalls.count}, ${e.stalls.totalMs} ms = GC ${e.stalls.gcMs} ${JSON.stringify(e.stalls.gcByKindMs)} + waiting for the core ${e.stalls.waitMs} + running ${e.stalls.otherMs}; the sidecar's other threads ran ${e.otherThreadsCpuMs} ms; longest ${e.stalls.top.map((x) => `${x.ms} (gc ${x.gcMs}, wait ${x.waitMs})`).join(', ')}\n`
          : ''),
    );
  };
  /** One pair, nginx first on even `i`: alternate the order, so neither always follows the other. */
  const pair = async (i) => {
    const r = {};
    if (i % 2 === 0) {
      r.nginx = await runNginx();
      r.meshlet = await runMeshlet();
    } else {
      r.meshlet = await runMeshlet();
      r.nginx = await runNginx();
    }
    r.loadavg = os.loadavg()[0];
    return r;
  };
  /**
   * Whether the platform stopped a core for --freeze-ms or more during the recorded slots of either
   * phase. Only a real-time sleeper's pause proves that; an ordinary thread's can be the bench's own.
   */
  const frozen = (r) => [r.nginx, r.meshlet].some((x) => (x.platformPauses ?? []).some((p) => p.rt && p.measured && p.ms >= FREEZE_MS));
  /** Whether other processes took --others-ms or more of a core within 100 ms of either phase's recorded slots. */
  const crowded = (r) => [r.nginx, r.meshlet].some((x) => (x.otherWork ?? []).some((c) => c.maxMs >= OTHERS_MS));
  let order = 0;
  const cold = [];
  for (let i = 0; i < Number(o.cold); i++) {
    const r = await pair(order++);
    cold.push(r);
    report(`cold ${i + 1} (not counted)`, r);
  }
  const runs = [];
  const voided = [];
  const want = Number(o.runs);
  for (let i = 0; runs.length < want && i < 2 * want; i++) {
    const r = await pair(order++);
    if (frozen(r) || crowded(r)) {
      r.setAside = frozen(r) ? 'platform pause' : 'other processes';
      voided.push(r);
      report(
        `pair ${i + 1}: SET ASIDE, ${frozen(r) ? `the platform stopped a core for >= ${FREEZE_MS} ms` : `other processes took >= ${OTHERS_MS} ms of a core within 100 ms`} (run again)`,
        r,
      );
      continue;
    }
    runs.push(r);
    report(`run ${runs.length}`, r);
  }
  if (detector && !detector.alive()) process.stderr.write('tail: the platform-pause detector stopped early: pauses after that went unseen\n');
  if (runs.length < want) process.stderr.write(`tail: only ${runs.length} of ${want} pairs ran without a platform pause or other processes' burst in ${2 * want} tries\n`);
  await procs.stopAll();
  detector?.stop();
  others?.stop();
  if (!runs.length) throw new Error('no pair ran without a platform pause or other processes\' burst: see the lines above');
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  /**
   * One estimator's figures over the runs (`field`: 'added', the difference of percentiles, or
   * 'paired'): medians and ranges, and per run meshlet's p99.9 over nginx's (nginx's taken as at
   * least 1 µs), how many within 2x, and whether every wanted run was.
   */
  const summarize = (field) => {
    const sum = {};
    for (const who of ['nginx', 'meshlet'])
      for (const k of ['p50', 'p99', 'p999']) {
        const xs = runs.map((r) => r[who][field][k]);
        sum[`${who}.${k}`] = { median: med(xs), min: Math.min(...xs), max: Math.max(...xs) };
      }
    const ratios = runs.map((r) => r.meshlet[field].p999 / Math.max(1, r.nginx[field].p999));
    const within = ratios.filter((x) => x <= 2).length;
    return { sum, ratios, within, met: runs.length === want && within === want };
  };
  const { sum, ratios, within, met } = summarize('added');
  // The paired estimator (openloop only), reported beside the difference of percentiles, which
  // stays the goal's figure.
  const paired = runs.every((r) => r.nginx.paired && r.meshlet.paired) ? summarize('paired') : null;
  const medRatio = sum['meshlet.p999'].median / Math.max(1, sum['nginx.p999'].median);
  const direct999 = runs.flatMap((r) => [r.nginx.directUs.p999, r.meshlet.directUs.p999]);
  const lag999 = runs.flatMap((r) => [r.nginx.sendLagUs?.p999 ?? NaN, r.meshlet.sendLagUs?.p999 ?? NaN]);
  const rates = runs.flatMap((r) => [r.nginx.sentRate, r.meshlet.sentRate]).filter((x) => x != null);
  const load1 = os.loadavg()[0];
  if (o.json) console.log(JSON.stringify({ rate: RATE, seconds: SECONDS, gen: o.gen, nice: NICE, connections: Number(o.connections), runs, sum, ratios, met, paired, freezeMs: FREEZE_MS, othersMs: others ? OTHERS_MS : 0, voided, cold, loadavg: [load0, load1] }));
  for (const [k, v] of Object.entries(sum)) console.log(`${k.padEnd(14)} added median ${v.median} us (${v.min} .. ${v.max})`);
  if (paired) for (const [k, v] of Object.entries(paired.sum)) console.log(`${k.padEnd(14)} paired median ${v.median} us (${v.min} .. ${v.max})`);
  console.log(
    `generator (${o.gen}): direct p99.9 ${Math.min(...direct999)} .. ${Math.max(...direct999)} us, send lag p99.9 ${Math.min(...lag999)} .. ${Math.max(...lag999)} us` +
      (rates.length ? `, sent ${Math.min(...rates).toFixed(0)} .. ${Math.max(...rates).toFixed(0)} req/s per target` : ''),
  );
  console.log(
    `tail @${RATE}/s x${runs.length} (${o.gen}${NICE ? `, nice ${NICE}` : ''}, load avg ${load0.toFixed(1)} -> ${load1.toFixed(1)}): added p99.9 nginx ${sum['nginx.p999'].median} us (${sum['nginx.p999'].min}..${sum['nginx.p999'].max}), ` +
      `meshlet ${sum['meshlet.p999'].median} us (${sum['meshlet.p999'].min}..${sum['meshlet.p999'].max}); ratio of medians ${medRatio.toFixed(2)}, per run ${ratios.map((x) => x.toFixed(2)).join(' ')}; ` +
      `<= 2x in ${within}/${runs.length} runs: ${met ? 'met' : 'not met'}` +
      (detector || others
        ? `; ${voided.length} pair(s) set aside and run again (${voided.filter((r) => r.setAside === 'platform pause').length} for a platform pause >= ${FREEZE_MS} ms, ${voided.filter((r) => r.setAside === 'other processes').length} for other processes' CPU >= ${OTHERS_MS} ms in 100 ms)`
        : '') +
      (paired
        ? `; paired estimator: nginx ${paired.sum['nginx.p999'].median} us (${paired.sum['nginx.p999'].min}..${paired.sum['nginx.p999'].max}), meshlet ${paired.sum['meshlet.p999'].median} us (${paired.sum['meshlet.p999'].min}..${paired.sum['meshlet.p999'].max}), ` +
          `per run ${paired.ratios.map((x) => x.toFixed(2)).join(' ')}, <= 2x in ${paired.within}/${runs.length}`
        : ''),
  );
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch(async (err) => {
  console.error(err);
  await procs.stopAll();
  process.exit(1);
});
