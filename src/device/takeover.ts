// Taking over a node where flanneld ran: a device of linend's name that linend did
// not create is what flanneld left behind, and opening the TUN over it fails (TUNSETIFF on a
// vxlan device: EINVAL; on a busy TUN: EBUSY). linend's own TUN is never persistent, so before
// linend starts any device of that name belongs to someone else:
//   - a kernel vxlan device (flanneld's VXLAN backend keeps flannel.<VNI> after it stops, with
//     its address, routes, neighbour and FDB entries; it also holds UDP port 8472, which linen
//     must bind): deleted, and what went with it logged;
//   - a persistent TUN (created with `ip tuntap add`, left by some tool): deleted. Attaching to
//     it instead would leave it behind when linend stops, and flanneld's UDP backend would then
//     come up as flannel1 (it asks for the template flannel%d);
//   - a non-persistent TUN: some process has it open right now (flanneld or another linend
//     still running): refused, never deleted;
//   - any of them while a flanneld process runs in this network namespace: refused;
//   - anything else (a bridge, a dummy...): refused, it is not a flannel leftover.
// flanneld's UDP backend leaves nothing: its flannel0 is not persistent and goes (with its
// address and route) when flanneld exits.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Logger } from '../log.js';
import { parseMAC } from '../net.js';

/** What `ip -d -j link show` says about a device (the fields used here). */
export interface LinkJson {
  ifname: string;
  address?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

export interface Leftover {
  name: string;
  /** linkinfo kind: "vxlan", "tun", ... ("" when the kernel reports none). */
  kind: string;
  mac: string | null;
  /** Device attributes worth logging (VNI, local address, port; TUN flags). */
  attrs: string;
}

export type TakeoverDecision = { replace: true } | { replace: false; why: string };

export function describeLink(link: LinkJson): Leftover {
  const kind = link.linkinfo?.info_kind ?? '';
  const d = link.linkinfo?.info_data ?? {};
  let attrs = '';
  if (kind === 'vxlan') attrs = `VNI ${String(d['id'])}, local ${String(d['local'] ?? '-')}, port ${String(d['port'] ?? '-')}`;
  else if (kind === 'tun') attrs = `${String(d['type'] ?? 'tun')}, ${d['persist'] === true ? 'persistent' : 'not persistent'}${d['multi_queue'] === true ? ', multi-queue' : ''}`;
  return { name: link.ifname, kind, mac: link.address ?? null, attrs };
}

/** Whether a device of linend's name may be deleted to make room for linend's TUN. */
export function mayReplace(link: LinkJson): TakeoverDecision {
  const kind = link.linkinfo?.info_kind ?? '';
  if (kind === 'vxlan') return { replace: true };
  if (kind === 'tun') {
    if (link.linkinfo?.info_data?.['persist'] === true) return { replace: true };
    return { replace: false, why: 'is a TUN that a running process holds open (is flanneld or another linend still running on this node?)' };
  }
  return { replace: false, why: `is a ${kind || 'plain'} device, not something flanneld leaves behind; remove or rename it` };
}

function ipJson<T>(cmd: 'ip' | 'bridge', args: string[]): T {
  const out = execFileSync(cmd, ['-j', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  return (out === '' ? [] : JSON.parse(out)) as T;
}

function findLink(name: string): LinkJson | null {
  try {
    return ipJson<LinkJson[]>('ip', ['-d', 'link', 'show', 'dev', name])[0] ?? null;
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '');
    if (/does not exist|Cannot find device/.test(stderr)) return null;
    throw new Error(`ip -d link show dev ${name}: ${stderr.trim() || (e as Error).message}`);
  }
}

/**
 * The MAC of a leftover kernel vxlan device of this name (flanneld's VtepMAC when it ran), or
 * null. linend publishes the VtepMAC of its lease first: that is what the peers' FDB and
 * neighbour entries hold (they learnt it from the lease). This one is the fallback when the
 * lease is gone, which is what flanneld itself does on a restart: it keeps an existing
 * device and its MAC, so a node that comes back keeps its VtepMAC.
 */
export function leftoverVtepMAC(name: string): Uint8Array | null {
  const link = findLink(name);
  if (link?.linkinfo?.info_kind !== 'vxlan' || !link.address) return null;
  return parseMAC(link.address);
}

/** What went with a device: its IPv4 addresses, routes, neighbours and FDB entries. */
export interface Removed {
  leftover: Leftover;
  addresses: string[];
  routes: string[];
  neighbours: number;
  fdb: number;
}

export function removalMessage(r: Removed): string {
  const l = r.leftover;
  const list = (xs: string[]): string => (xs.length === 0 ? 'none' : xs.length <= 8 ? xs.join(', ') : `${xs.slice(0, 8).join(', ')}, ...`);
  return `Replaced ${l.name} left behind by flanneld: deleted ${l.kind} device (${l.attrs}${l.mac ? `, MAC ${l.mac}` : ''}) ` +
    `with address(es) ${list(r.addresses)}, ${r.routes.length} route(s) (${list(r.routes)}), ` +
    `${r.neighbours} neighbour entr${r.neighbours === 1 ? 'y' : 'ies'}, ${r.fdb} FDB entr${r.fdb === 1 ? 'y' : 'ies'}`;
}

function inventory(link: LinkJson): Removed {
  const name = link.ifname;
  const count = <T>(f: () => T[]): T[] => { try { return f(); } catch { return []; } };
  const addrs = count(() => ipJson<{ addr_info?: { family: string; local: string; prefixlen: number }[] }[]>('ip', ['-4', 'addr', 'show', 'dev', name])
    .flatMap((l) => l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
  const routes = count(() => ipJson<{ dst: string; gateway?: string }[]>('ip', ['-4', 'route', 'show', 'dev', name])
    .map((r) => (r.gateway ? `${r.dst} via ${r.gateway}` : r.dst)));
  const neighbours = count(() => ipJson<unknown[]>('ip', ['-4', 'neigh', 'show', 'dev', name])).length;
  const fdb = link.linkinfo?.info_kind === 'vxlan' ? count(() => ipJson<unknown[]>('bridge', ['fdb', 'show', 'dev', name])).length : 0;
  return { leftover: describeLink(link), addresses: addrs, routes, neighbours, fdb };
}

/**
 * The pid of a flanneld process in this network namespace, or null. A kernel vxlan device
 * does not say whether flanneld still runs; deleting it under a live flanneld would start a
 * fight (flanneld recreates its device when it goes). Best effort: processes of another PID
 * namespace (linend in a container without the host's PIDs) are not seen.
 */
export function runningFlanneld(): number | null {
  let own: string;
  try { own = readlinkSync('/proc/self/ns/net'); } catch { return null; }
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'flanneld') continue;
      if (readlinkSync(`/proc/${entry}/ns/net`) === own) return Number(entry);
    } catch { /* gone meanwhile, or not ours to read */ }
  }
  return null;
}

/**
 * Makes room for linend's TUN `name`: nothing to do when no device has that name; deletes a
 * flanneld leftover (logging what went with it) and returns what was removed; throws for a
 * device that must not be touched.
 */
export function takeOverDevice(name: string, log: Logger): Removed | null {
  const link = findLink(name);
  if (link === null) return null;
  const v = mayReplace(link);
  if (!v.replace) throw new Error(`device ${name} already exists and ${v.why}`);
  const pid = runningFlanneld();
  if (pid !== null) throw new Error(`device ${name} belongs to flanneld, which is still running (pid ${pid}): stop it first`);
  const removed = inventory(link);
  try {
    execFileSync('ip', ['link', 'del', 'dev', name], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`deleting ${removed.leftover.kind} device ${name} left by flanneld: ${String((e as { stderr?: unknown }).stderr ?? '').trim() || (e as Error).message}`);
  }
  log.info(removalMessage(removed));
  return removed;
}
