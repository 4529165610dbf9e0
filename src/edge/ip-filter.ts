/**
 * IP allow/deny lists for a gateway or a route, by CIDR (RFC 4632 for IPv4, RFC 4291 2.3 prefixes
 * for IPv6), on Node's `net.BlockList` (a native prefix matcher: no per-request parsing of the
 * lists). Rules, as nginx's allow/deny and Envoy's RBAC remote_ip read them to users:
 *  - a match in `deny` refuses (deny wins over allow);
 *  - a non-empty `allow` refuses every address it does not match;
 *  - an address that does not parse is refused (fail closed).
 * IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, how a dual-stack socket reports IPv4 peers) are
 * matched as the IPv4 address they carry.
 *
 * `clientAddress(remote, xff, trustedHops)` picks the address to filter on: the socket peer, or,
 * behind `trustedHops` proxies of our own, the address the outermost of them saw in
 * X-Forwarded-For (Envoy's xff_num_trusted_hops): never the client-written left end.
 *
 * Entry point: `compileIpFilter(raw, path)` once per snapshot -> `IpFilter.check(address)`.
 */
import { BlockList, isIP } from 'node:net';
import { fail, ok, type Result } from '../core/result';
import { EdgeError } from './errors';
import { Checker, join } from './validate';

export interface IpFilterConfig {
  allow: string[];
  deny: string[];
}

function parseCidr(s: string): { addr: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const slash = s.indexOf('/');
  const addr = slash < 0 ? s : s.slice(0, slash);
  const v = isIP(addr);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  return { addr, prefix, family: v === 4 ? 'ipv4' : 'ipv6' };
}

export function parseIpFilterConfig(raw: unknown, path = 'ipFilter'): Result<IpFilterConfig> {
  const c = new Checker();
  const o = c.obj(raw, path);
  if (!o) return fail(c.errors);
  c.known(o, path, ['allow', 'deny']);
  const cfg: IpFilterConfig = { allow: c.strList(o.allow, join(path, 'allow')), deny: c.strList(o.deny, join(path, 'deny')) };
  for (const k of ['allow', 'deny'] as const) {
    cfg[k].forEach((cidr, i) => {
      if (!parseCidr(cidr)) c.err(`${join(path, k)}[${i}]`, `${JSON.stringify(cidr)} is not an IPv4/IPv6 address or CIDR (like 10.0.0.0/8 or 2001:db8::/32)`);
    });
  }
  if (cfg.allow.length === 0 && cfg.deny.length === 0) c.err(path, 'needs allow or deny');
  return c.errors.length ? fail(c.errors) : ok(cfg);
}

export function compileIpFilter(raw: unknown, path = 'ipFilter'): Result<IpFilter> {
  const r = parseIpFilterConfig(raw, path);
  return r.ok ? ok(new IpFilter(r.value)) : r;
}

function blockList(cidrs: readonly string[]): BlockList {
  const bl = new BlockList();
  for (const s of cidrs) {
    const c = parseCidr(s)!;
    bl.addSubnet(c.addr, c.prefix, c.family);
  }
  return bl;
}

/** `::ffff:a.b.c.d` -> `a.b.c.d`; anything else unchanged. */
export function unmapIPv4(addr: string): string {
  return addr.length > 7 && addr.slice(0, 7).toLowerCase() === '::ffff:' && isIP(addr.slice(7)) === 4 ? addr.slice(7) : addr;
}

export class IpFilter {
  private readonly allow: BlockList | undefined;
  private readonly deny: BlockList | undefined;

  constructor(readonly config: IpFilterConfig) {
    this.allow = config.allow.length ? blockList(config.allow) : undefined;
    this.deny = config.deny.length ? blockList(config.deny) : undefined;
  }

  /** undefined: allowed; an EdgeError (403, EDGE_IP_DENIED) otherwise. */
  check(address: string | undefined): EdgeError | undefined {
    const a = address === undefined ? '' : unmapIPv4(address);
    const v = isIP(a);
    if (v === 0) return new EdgeError('EDGE_IP_DENIED', 'the client address is unknown');
    const family = v === 4 ? 'ipv4' : 'ipv6';
    if (this.deny?.check(a, family)) return new EdgeError('EDGE_IP_DENIED', `${a} is denied`);
    if (this.allow && !this.allow.check(a, family)) return new EdgeError('EDGE_IP_DENIED', `${a} is not allowed`);
    return undefined;
  }
}

/**
 * The client address: with 0 trusted hops the socket peer; with N, the address N hops back along
 * X-Forwarded-For (the list with the peer appended), or the leftmost if the list is shorter.
 */
export function clientAddress(remote: string | undefined, xff: string | string[] | undefined, trustedHops: number): string | undefined {
  if (trustedHops <= 0 || xff === undefined) return remote === undefined ? undefined : unmapIPv4(remote);
  const hops = (Array.isArray(xff) ? xff.join(',') : xff)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (remote !== undefined) hops.push(remote);
  const pick = hops[Math.max(0, hops.length - 1 - trustedHops)];
  return pick === undefined ? undefined : unmapIPv4(pick);
}
