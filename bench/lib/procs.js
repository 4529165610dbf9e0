'use strict';
/**
 * Child-process bookkeeping for the bench harness: every process it starts is registered here and
 * is stopped by `stopAll()` — at the end of each contender, on error, on Ctrl-C / SIGTERM and, as
 * a last resort, synchronously from `process.on('exit')`. Processes are only ever stopped by the
 * pid we spawned (never by name).
 *
 * Also: CPU (utime+stime of all threads) and memory (VmRSS / VmHWM) readers for /proc/PID.
 */
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const http = require('node:http');

const live = new Set();
let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch {
  /* default 100 */
}

/**
 * Starts `cmd args` (optionally pinned with taskset to `cpu`), logging its stdout/stderr into
 * `logFile`. Returns a handle with `pid`, `exited` (a promise) and `stop()`.
 */
function start(name, cmd, args, { cpu, logFile, env, cwd } = {}) {
  const argv = cpu === undefined ? [cmd, ...args] : ['taskset', '-c', String(cpu), cmd, ...args];
  const out = logFile ? fs.openSync(logFile, 'a') : 'ignore';
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', out, out], env: env ?? process.env, cwd });
  if (typeof out === 'number') fs.closeSync(out);
  const h = {
    name,
    child,
    pid: child.pid,
    exitCode: undefined,
    exited: undefined,
    /** SIGTERM, then SIGKILL after `graceMs`. Resolves once the process is gone. */
    async stop(graceMs = 2000) {
      if (h.exitCode !== undefined) return;
      try {
        child.kill('SIGTERM');
      } catch {
        /* already gone */
      }
      const t = setTimeout(() => {
        try {
          child.kill('SIGKILL');
        } catch {
          /* gone */
        }
      }, graceMs);
      await h.exited;
      clearTimeout(t);
    },
  };
  h.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      h.exitCode = code ?? signal ?? 'exited';
      live.delete(h);
      resolve(h.exitCode);
    });
    child.on('error', (err) => {
      h.exitCode = `spawn error: ${err.message}`;
      live.delete(h);
      resolve(h.exitCode);
    });
  });
  live.add(h);
  return h;
}

async function stopAll() {
  await Promise.all([...live].map((h) => h.stop()));
}

function killAllSync() {
  for (const h of live) {
    try {
      process.kill(h.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  live.clear();
}

let handlersInstalled = false;
let interrupted = false;
/** True once a signal asked the harness to stop (failures after that are the stop, not errors). */
const isInterrupted = () => interrupted;
/** Installs the cleanup handlers once: signals stop children, call `onSignal`, then exit 130/143. */
function installCleanup(onSignal) {
  if (handlersInstalled) return;
  handlersInstalled = true;
  let stopping = false;
  const handler = (sig) => {
    if (stopping) {
      killAllSync();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    interrupted = true;
    process.stderr.write(`\nbench: ${sig}, stopping child processes...\n`);
    stopAll().finally(() => {
      try {
        if (onSignal) onSignal(sig);
      } finally {
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }
    });
    setTimeout(() => {
      killAllSync();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }, 4000).unref();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('SIGHUP', handler);
  process.on('exit', killAllSync);
}

/** Runs a command to completion (bounded by `timeoutMs`), collecting stdout and stderr. */
function run(cmd, args, { cpu, timeoutMs = 60_000, env } = {}) {
  return new Promise((resolve, reject) => {
    const argv = cpu === undefined ? [cmd, ...args] : ['taskset', '-c', String(cpu), cmd, ...args];
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const h = { name: cmd, child, pid: child.pid, exitCode: undefined, stop: async () => child.kill('SIGKILL') };
    live.add(h);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(t);
      live.delete(h);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(t);
      live.delete(h);
      h.exitCode = code ?? signal;
      if (code === 0) resolve({ stdout, stderr });
      else reject(Object.assign(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim() || stdout.trim()}`), { stdout, stderr }));
    });
  });
}

/** A free TCP port on 127.0.0.1 (bound then released; the caller binds it right away). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Pids of `pid` and all its descendants (reads /proc/PID/task/TID/children). */
function tree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks = [];
    try {
      tasks = fs.readdirSync(`/proc/${out[i]}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const kids = fs.readFileSync(`/proc/${out[i]}/task/${t}/children`, 'utf8').trim();
        if (kids) for (const k of kids.split(/\s+/)) out.push(Number(k));
      } catch {
        /* raced */
      }
    }
  }
  return out;
}

/** CPU seconds (user + system, all threads) used so far by `pid` and its descendants. */
function cpuSeconds(pid) {
  let ticks = 0;
  for (const p of tree(pid)) {
    try {
      const s = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      // Fields after the ")" closing comm: state is field 3; utime is 14, stime 15.
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return ticks / CLK_TCK;
}

/** { rssKb, hwmKb } summed over `pid` and its descendants. */
function memory(pid) {
  let rssKb = 0;
  let hwmKb = 0;
  for (const p of tree(pid)) {
    try {
      const s = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      const rss = /VmRSS:\s+(\d+)/.exec(s);
      const hwm = /VmHWM:\s+(\d+)/.exec(s);
      if (rss) rssKb += Number(rss[1]);
      if (hwm) hwmKb += Number(hwm[1]);
    } catch {
      /* gone */
    }
  }
  return { rssKb, hwmKb };
}

/** Samples VmRSS every `everyMs` while running; `stop()` returns the peak (max of samples and VmHWM). */
function memorySampler(pid, everyMs = 100) {
  let peakKb = 0;
  const tick = () => {
    const m = memory(pid);
    peakKb = Math.max(peakKb, m.rssKb, m.hwmKb);
  };
  tick();
  const t = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(t);
      tick();
      return peakKb;
    },
  };
}

/** Waits until a TCP connect to host:port succeeds (bounded). */
async function waitForPort(port, { host = '127.0.0.1', timeoutMs = 15_000, proc } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== undefined) throw new Error(`${proc.name} exited (${proc.exitCode}) before listening on ${port}`);
    const okay = await new Promise((resolve) => {
      const s = net.connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (okay) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** GETs a URL until it answers `status` (bounded). */
async function waitForHttp(url, { status = 200, headers = {}, timeoutMs = 15_000, proc } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (proc && proc.exitCode !== undefined) throw new Error(`${proc.name} exited (${proc.exitCode}) before ${url} answered`);
    const got = await new Promise((resolve) => {
      const req = http.get(url, { headers, agent: false, timeout: 1000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (e) => resolve(e.message));
    });
    if (got === status) return;
    last = String(got);
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms (last: ${last})`);
    await sleep(50);
  }
}

/** Per-core { idle, total } jiffies from /proc/stat (the whole machine, not just our processes). */
function coreTimes() {
  return fs
    .readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => {
      const f = l.trim().split(/\s+/).slice(1).map(Number);
      const idle = f[3] + (f[4] ?? 0); // idle + iowait
      return { idle, total: f.reduce((x, y) => x + y, 0) };
    });
}

/** Busy % of each core between two `coreTimes()` snapshots. */
function busyBetween(a, b) {
  return b.map((x, i) => (100 * (1 - (x.idle - a[i].idle) / Math.max(1, x.total - a[i].total))));
}

/** Busy % of each core over the next `ms`. */
async function coreBusy(ms = 1000) {
  const a = coreTimes();
  await sleep(ms);
  return busyBetween(a, coreTimes()).map(Math.round);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

module.exports = { start, run, stopAll, killAllSync, installCleanup, isInterrupted, freePort, cpuSeconds, memory, memorySampler, waitForPort, waitForHttp, coreTimes, busyBetween, coreBusy, sleep, CLK_TCK };
