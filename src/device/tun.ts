// Configuring the overlay TUN device once the data plane has opened it: its address (the own
// subnet's .0/32, as flanneld), MTU, link state and the route for the whole cluster network.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { formatCIDR, formatIPv4, type IPv4Net } from '../net.js';

function ip(args: string[]): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer };
    throw new Error(`ip ${args.join(' ')}: ${err.stderr?.toString().trim() || (e as Error).message}`);
  }
}

export interface TunSetup {
  name: string;
  /** Own subnet network address (host order), put on the device as a /32. */
  addr: number;
  mtu: number;
  /** Route sent into the device: the whole cluster network. */
  network: IPv4Net;
}

export function configureTun(s: TunSetup): void {
  ip(['link', 'set', 'dev', s.name, 'mtu', String(s.mtu)]);
  ip(['addr', 'replace', `${formatIPv4(s.addr)}/32`, 'dev', s.name]);
  // The overlay carries IPv4 only: without this the kernel would give the device a link-local
  // IPv6 address when it comes up and send router solicitations into it, which the data plane
  // can only count and drop.
  disableIpv6(s.name);
  ip(['link', 'set', 'dev', s.name, 'up']);
  // ICMP errors the core writes back into the TUN come from the device's own address; without
  // accept_local the kernel would drop them as martians.
  writeFileSync(`/proc/sys/net/ipv4/conf/${s.name}/accept_local`, '1');
  ip(['route', 'replace', formatCIDR(s.network), 'dev', s.name]);
}

function disableIpv6(dev: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '1');
  } catch (e) {
    // No IPv6 in this kernel or namespace: nothing to turn off.
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`disabling IPv6 on ${dev}: ${(e as Error).message}`);
  }
}

export function tunExists(name: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** flanneld's --ip-blackhole-route: traffic to unused addresses of the own subnet is dropped
 * here instead of leaking out through the default route. Returns a function removing it. */
export function addBlackholeRoute(subnet: IPv4Net): () => void {
  const dst = formatCIDR(subnet);
  try {
    ip(['route', 'add', 'blackhole', dst, 'metric', '4096']);
  } catch (e) {
    if (!/File exists/.test((e as Error).message)) throw e;
  }
  return () => {
    try { ip(['route', 'del', 'blackhole', dst, 'metric', '4096']); } catch { /* already gone */ }
  };
}
