// Choosing the external interface the way flanneld does (docs/flanneld-compat.md, "External interface"): --iface (name
// or IP, first match wins), then --iface-regex (IPs first, then names), then --iface-can-reach
// (route lookup), else the interface of the IPv4 default route; with only --public-ip, the
// interface that owns that IP.
import { execFileSync } from 'node:child_process';
import { makeNet, parseIPv4, type IPv4Net } from '../net.js';

export interface ExternalInterface {
  name: string;
  index: number;
  /** First usable IPv4 address (global before link-local, permanent before dynamic). */
  addr: string;
  mtu: number;
  /** The networks of its IPv4 addresses (a peer's PublicIP may not be their broadcast address). */
  networks: IPv4Net[];
}

export interface IfaceSelection {
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach: string;
  publicIP: string;
}

interface IpAddrInfo { family: string; local: string; prefixlen?: number; scope: string; dynamic?: boolean; temporary?: boolean; deprecated?: boolean }
interface IpLink { ifindex: number; ifname: string; mtu: number; flags: string[]; addr_info: IpAddrInfo[] }

function ipJson<T>(args: string[]): T {
  return JSON.parse(execFileSync('ip', ['-j', ...args], { encoding: 'utf8' })) as T;
}

function usableV4(link: IpLink): string | null {
  const v4 = link.addr_info.filter((a) => a.family === 'inet' && !a.deprecated && !a.temporary);
  v4.sort((a, b) => rank(a) - rank(b));
  return v4[0]?.local ?? null;
  function rank(a: IpAddrInfo): number {
    return (a.scope === 'global' ? 0 : 2) + (a.dynamic ? 1 : 0);
  }
}

function describe(link: IpLink): ExternalInterface {
  const addr = usableV4(link);
  if (!addr) throw new Error(`interface ${link.ifname} has no usable IPv4 address`);
  const networks: IPv4Net[] = [];
  for (const a of link.addr_info) {
    const ip = a.family === 'inet' ? parseIPv4(a.local) : null;
    if (ip !== null && a.prefixlen !== undefined) networks.push(makeNet(ip, a.prefixlen));
  }
  return { name: link.ifname, index: link.ifindex, addr, mtu: link.mtu, networks };
}

export function selectInterface(sel: IfaceSelection): ExternalInterface {
  const links = ipJson<IpLink[]>(['addr', 'show']);
  for (const want of sel.iface) {
    const byName = links.find((l) => l.ifname === want);
    if (byName) return describe(byName);
    const byAddr = links.find((l) => l.addr_info.some((a) => a.local === want));
    if (byAddr) return describe(byAddr);
  }
  if (sel.iface.length > 0) throw new Error(`no interface matches --iface ${sel.iface.join(', ')}`);
  for (const pattern of sel.ifaceRegex) {
    let re: RegExp;
    try { re = new RegExp(pattern); } catch (e) { throw new Error(`--iface-regex ${pattern}: ${(e as Error).message}`); }
    const byIp = links.find((l) => l.addr_info.some((a) => a.family === 'inet' && re.test(a.local)));
    if (byIp) return describe(byIp);
    const byName = links.find((l) => re.test(l.ifname));
    if (byName) return describe(byName);
  }
  if (sel.ifaceRegex.length > 0) throw new Error(`no interface matches --iface-regex ${sel.ifaceRegex.join(', ')}`);
  if (sel.ifaceCanReach) {
    const routes = ipJson<{ dev: string }[]>(['route', 'get', sel.ifaceCanReach]);
    const link = links.find((l) => l.ifname === routes[0]?.dev);
    if (!link) throw new Error(`no interface can reach ${sel.ifaceCanReach}`);
    return describe(link);
  }
  if (sel.publicIP) {
    const owner = links.find((l) => l.addr_info.some((a) => a.local === sel.publicIP));
    if (owner) return describe(owner);
  }
  const defaults = ipJson<{ dev: string }[]>(['-4', 'route', 'show', 'default']);
  const link = links.find((l) => l.ifname === defaults[0]?.dev);
  if (!link) throw new Error('no default route: name the external interface with --iface');
  return describe(link);
}
