// The contenders that need no linen code, as plain functions over a namespace:
//   - host-gw: a route to every other pod subnet via that host's underlay IP;
//   - kernel VXLAN configured exactly as flanneld configures flannel.<VNI>
//     (docs/flanneld-compat.md, "VXLAN backend").
// configureKernelVxlanNode() is the reusable piece: one kernel VXLAN node in one namespace, with
// its VTEP MAC readable and peers added or removed one by one, so that an interop test can
// wire a kernel node against a linen node (give it the linen node's subnet, public IP and
// VtepMAC; give linen this node's vtepMAC).

import { VXLAN_DEFAULT_PORT, VXLAN_DEFAULT_VNI, VXLAN_MTU_OVERHEAD } from '../src/config/network.js';
import { randomVtepMAC } from '../src/backend/backend.js';
import { formatIPv4, formatMAC, parseCIDR } from '../src/net.js';
import { ipNs, nsExec, nsSysctl, sh } from './netns.js';
import type { HostInfo, Topology } from './topology.js';

// ---------------------------------------------------------------------------------------------
// Small helpers

/** "10.5.33.0/24" → "10.5.33.0" (the network address G of a subnet). */
export function subnetNetworkAddress(cidr: string): string {
  const net = parseCIDR(cidr);
  if (net === null) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  return formatIPv4(net.ip);
}

interface IpLinkJson {
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  stats64?: { rx: Record<string, number>; tx: Record<string, number> };
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

function linkJson(ns: string, dev: string, ...flags: string[]): IpLinkJson {
  const arr = JSON.parse(ipNs(ns, '-j', ...flags, 'link', 'show', 'dev', dev)) as IpLinkJson[];
  const l = arr[0];
  if (!l) throw new Error(`no device ${dev} in ${ns}`);
  return l;
}

/** The MAC address of a device. */
export function readLinkMac(ns: string, dev: string): string {
  const mac = linkJson(ns, dev).address;
  if (!mac) throw new Error(`${dev} in ${ns} has no MAC address`);
  return mac;
}

/** The MTU of a device. */
export function readLinkMtu(ns: string, dev: string): number {
  return linkJson(ns, dev).mtu;
}

export interface LinkCounters {
  rx: { bytes: number; packets: number; errors: number; dropped: number; over_errors: number; multicast: number; [k: string]: number };
  tx: { bytes: number; packets: number; errors: number; dropped: number; carrier_errors: number; collisions: number; [k: string]: number };
}

/** The device counters of `ip -s link` (stats64). */
export function linkCounters(ns: string, dev: string): LinkCounters {
  const s = linkJson(ns, dev, '-s').stats64;
  if (!s) throw new Error(`no counters for ${dev} in ${ns}`);
  return s as LinkCounters;
}

/** Sum of every error counter (rx and tx, `*errors`, excluding drops). */
export function linkErrorCount(c: LinkCounters): number {
  let n = 0;
  for (const side of [c.rx, c.tx] as Record<string, number>[]) {
    for (const [k, v] of Object.entries(side)) if (/errors$/.test(k)) n += v;
  }
  return n;
}

/** `ip -d link show dev <dev>` as text. */
export function linkDetails(ns: string, dev: string): string {
  return ipNs(ns, '-d', 'link', 'show', 'dev', dev);
}

// ---------------------------------------------------------------------------------------------
// host-gw

export interface HostGwHandle {
  stop(): void;
}

/** Routes each host's traffic for every other pod subnet via that host's underlay IP. */
export function setupHostGw(topo: Topology): HostGwHandle {
  const added: [HostInfo, HostInfo][] = [];
  const stop = (): void => {
    for (const [h, peer] of added.splice(0)) {
      try { ipNs(h.ns, 'route', 'del', peer.podSubnet, 'via', peer.underlayIP, 'dev', h.underlayDev); } catch { /* gone */ }
    }
  };
  try {
    for (const h of topo.hosts) {
      for (const peer of topo.hosts) {
        if (peer === h) continue;
        ipNs(h.ns, 'route', 'replace', peer.podSubnet, 'via', peer.underlayIP, 'dev', h.underlayDev);
        added.push([h, peer]);
      }
    }
  } catch (e) {
    stop();
    throw e;
  }
  return { stop };
}

// ---------------------------------------------------------------------------------------------
// Kernel VXLAN as flanneld configures it

/** One peer as flannel's VXLAN backend sees it (from its lease). */
export interface VxlanPeer {
  /** The peer's lease subnet S, e.g. "10.5.33.0/24". */
  subnet: string;
  /** The peer's PublicIP P. */
  publicIP: string;
  /** The peer's VtepMAC M. */
  vtepMAC: string;
}

export interface KernelVxlanConfig {
  /** Namespace (the simulated host). */
  ns: string;
  /** VNI; default 1. */
  vni?: number;
  /** UDP port; default 8472. 0: no port attribute (kernel default, 8472), as flannel does for Port 0. */
  port?: number;
  /** Own public IP (`local`). */
  localIP: string;
  /** Underlay device (`dev`). */
  underlayDev: string;
  /** Own lease subnet, e.g. "10.5.72.0/24": the device gets its network address /32. */
  ownSubnet: string;
  /** Peers to add now (more can be added later with addPeer). */
  peers?: VxlanPeer[];
  /** Device MTU; default the underlay device's MTU − 50. */
  mtu?: number;
  /** Device MAC (VtepMAC); default random locally administered unicast, as flanneld does. */
  mac?: string;
  /** Device name; default flannel.<vni>. */
  dev?: string;
}

export interface KernelVxlanNode {
  readonly ns: string;
  readonly dev: string;
  readonly vni: number;
  readonly port: number;
  readonly localIP: string;
  readonly ownSubnet: string;
  readonly mtu: number;
  /** The device's MAC, read back from the kernel: what this node advertises as VtepMAC. */
  readonly vtepMAC: string;
  /** As a peer entry for another node (subnet, publicIP, vtepMAC). */
  asPeer(): VxlanPeer;
  /** Current peers (by subnet). */
  peers(): VxlanPeer[];
  /** Neighbour G→M, FDB M→P (self, permanent), route S via G dev flannel.<vni> onlink; replaces. */
  addPeer(p: VxlanPeer): void;
  /** Deletes neighbour, FDB entry and route (errors ignored, as flanneld logs and goes on). */
  removePeer(p: VxlanPeer): void;
  /** Deletes the device (with every neighbour, FDB entry and route through it). Idempotent. */
  destroy(): void;
}

function addPeerEntries(ns: string, dev: string, p: VxlanPeer): void {
  const g = subnetNetworkAddress(p.subnet);
  // In flanneld's order (docs/flanneld-compat.md, "VXLAN backend"); on failure undo the
  // earlier steps as it does.
  ipNs(ns, 'neigh', 'replace', g, 'lladdr', p.vtepMAC, 'dev', dev, 'nud', 'permanent');
  try {
    sh('bridge', ['-n', ns, 'fdb', 'replace', p.vtepMAC, 'dev', dev, 'dst', p.publicIP, 'self', 'permanent']);
  } catch (e) {
    try { ipNs(ns, 'neigh', 'del', g, 'dev', dev); } catch { /* best effort */ }
    throw e;
  }
  try {
    ipNs(ns, 'route', 'replace', p.subnet, 'via', g, 'dev', dev, 'onlink');
  } catch (e) {
    try { ipNs(ns, 'neigh', 'del', g, 'dev', dev); } catch { /* best effort */ }
    try { sh('bridge', ['-n', ns, 'fdb', 'del', p.vtepMAC, 'dev', dev, 'dst', p.publicIP, 'self']); } catch { /* best effort */ }
    throw e;
  }
}

function removePeerEntries(ns: string, dev: string, p: VxlanPeer): void {
  const g = subnetNetworkAddress(p.subnet);
  try { ipNs(ns, 'neigh', 'del', g, 'dev', dev); } catch { /* logged by flanneld, not fatal */ }
  try { sh('bridge', ['-n', ns, 'fdb', 'del', p.vtepMAC, 'dev', dev, 'dst', p.publicIP, 'self']); } catch { /* idem */ }
  try { ipNs(ns, 'route', 'del', p.subnet, 'via', g, 'dev', dev, 'onlink'); } catch { /* idem */ }
}

/**
 * Configures one kernel VXLAN node in `ns` as flanneld does (§7.1):
 *   ip link add flannel.<vni> address <mac> mtu <underlay−50> type vxlan id <vni> local <localIP>
 *       dev <underlayDev> dstport <port> nolearning
 *   ip addr add <G_own>/32 dev flannel.<vni>; accept_ra 0; link up
 * then adds `peers` (§7.2). An existing device of that name in the namespace is replaced.
 */
export function configureKernelVxlanNode(cfg: KernelVxlanConfig): KernelVxlanNode {
  const { ns, localIP, underlayDev, ownSubnet } = cfg;
  const vni = cfg.vni ?? VXLAN_DEFAULT_VNI;
  const port = cfg.port ?? VXLAN_DEFAULT_PORT;
  const dev = cfg.dev ?? `flannel.${vni}`;
  const mtu = cfg.mtu ?? readLinkMtu(ns, underlayDev) - VXLAN_MTU_OVERHEAD;
  const mac = cfg.mac ?? formatMAC(randomVtepMAC());
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new Error(`bad VNI ${vni}`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad port ${port}`);

  try { ipNs(ns, 'link', 'del', dev); } catch { /* none yet */ }
  ipNs(ns, 'link', 'add', dev, 'address', mac, 'mtu', String(mtu), 'type', 'vxlan', 'id', String(vni), 'local', localIP,
    'dev', underlayDev, ...(port === 0 ? [] : ['dstport', String(port)]), 'nolearning');
  const peers = new Map<string, VxlanPeer>();
  let gone = false;
  const destroy = (): void => {
    if (gone) return;
    gone = true;
    peers.clear();
    try { ipNs(ns, 'link', 'del', dev); } catch { /* namespace or device already gone */ }
  };
  try {
    // The sysctl key spells the dot in "flannel.1" as "/"; IPv6 may be off: best effort.
    try { nsSysctl(ns, `net.ipv6.conf.${dev.replace(/\./g, '/')}.accept_ra`, '0'); } catch { /* no IPv6 */ }
    ipNs(ns, 'addr', 'add', `${subnetNetworkAddress(ownSubnet)}/32`, 'dev', dev);
    ipNs(ns, 'link', 'set', dev, 'up');
    const vtepMAC = readLinkMac(ns, dev);
    if (vtepMAC.toLowerCase() !== mac.toLowerCase()) throw new Error(`${dev}: MAC is ${vtepMAC}, expected ${mac}`);
    const node: KernelVxlanNode = {
      ns, dev, vni, port: port === 0 ? VXLAN_DEFAULT_PORT : port, localIP, ownSubnet, mtu, vtepMAC,
      asPeer: () => ({ subnet: ownSubnet, publicIP: localIP, vtepMAC }),
      peers: () => [...peers.values()],
      addPeer(p) {
        if (gone) throw new Error(`${dev} in ${ns} is destroyed`);
        // Like flanneld: a changed VtepMAC for the same subnet replaces neighbour and route;
        // the FDB entry of the old MAC stays (stale, harmless).
        addPeerEntries(ns, dev, p);
        peers.set(p.subnet, { ...p });
      },
      removePeer(p) {
        if (gone) return;
        removePeerEntries(ns, dev, p);
        peers.delete(p.subnet);
      },
      destroy,
    };
    for (const p of cfg.peers ?? []) node.addPeer(p);
    return node;
  } catch (e) {
    destroy();
    throw e;
  }
}

export interface KernelVxlanMesh {
  /** One node per host, in topology order. */
  nodes: KernelVxlanNode[];
  stop(): void;
}

/** Kernel VXLAN on every host of the topology, each peered with all others. */
export function setupKernelVxlan(topo: Topology, opts: { vni?: number; port?: number } = {}): KernelVxlanMesh {
  const nodes: KernelVxlanNode[] = [];
  const stop = (): void => {
    for (const n of nodes.splice(0)) n.destroy();
  };
  try {
    for (const h of topo.hosts) {
      nodes.push(configureKernelVxlanNode({
        ns: h.ns, vni: opts.vni, port: opts.port, localIP: h.underlayIP, underlayDev: h.underlayDev, ownSubnet: h.podSubnet,
      }));
    }
    for (const n of nodes) {
      for (const peer of nodes) if (peer !== n) n.addPeer(peer.asPeer());
    }
  } catch (e) {
    stop();
    throw e;
  }
  return { nodes, stop };
}

// ---------------------------------------------------------------------------------------------
// Kernel counters

/** /proc/net/snmp of a namespace as "Udp.InErrors" -> value. */
export function snmp(ns: string): Record<string, number> {
  const text = nsExec(ns, 'cat', ['/proc/net/snmp']);
  const out: Record<string, number> = {};
  const lines = text.trim().split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const head = lines[i]!.split(/\s+/);
    const vals = lines[i + 1]!.split(/\s+/);
    const proto = head[0]!.replace(':', '');
    for (let k = 1; k < head.length; k++) out[`${proto}.${head[k]}`] = Number(vals[k]);
  }
  return out;
}

/** RX/TX drop counters of a device in a namespace. */
export function linkDrops(ns: string, dev: string): { rx: number; tx: number; rxPackets: number } {
  const s = linkCounters(ns, dev);
  return { rx: s.rx.dropped, tx: s.tx.dropped, rxPackets: s.rx.packets };
}
