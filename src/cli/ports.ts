/**
 * Ports `meshlet up --ephemeral-ports` chooses for a process it starts later (a Gateway's
 * listeners, the local etcd members). A port asked of the kernel (`listen(0)`) and let go is the
 * kind the kernel hands out again to the next `listen(0)`: the sidecars and control planes that
 * start in between bind port 0, and one of them took a gateway's port (EADDRINUSE, seen in CI).
 * So these come from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), which
 * no `listen(0)` uses, and are checked free on 127.0.0.1 first.
 */
import { readFileSync } from 'node:fs';
import * as net from 'node:net';

/** Lowest port tried. */
const LOW = 10_000;

/** The first port of the kernel's ephemeral range (32768 when it cannot be read). */
function ephemeralStart(): number {
  try {
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(lo) && lo > LOW + 1000 ? lo : 32_768;
  } catch {
    return 32_768;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Ports handed out by this process (two choices never collide with each other). */
const given = new Set<number>();

/** A port free on 127.0.0.1 now, outside the kernel's ephemeral range, not given out before. */
export async function reservedPort(random: () => number = Math.random): Promise<number> {
  const high = ephemeralStart();
  for (let i = 0; i < 200; i++) {
    const port = LOW + Math.floor(random() * (high - LOW));
    if (given.has(port) || !(await bindable(port))) continue;
    given.add(port);
    return port;
  }
  throw new Error(`no free port found between ${LOW} and ${high - 1}`);
}
