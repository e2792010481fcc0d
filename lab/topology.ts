// The standard topology for the benchmark, the demo and the end-to-end tests: N ≥ 2 simulated hosts on
// one underlay, each with one pod behind it.
//
//   pod 1 ─veth─ host 1 ─┐                          N = 2: host 1 and host 2 joined by one veth pair
//   10.y.1.2   10.y.1.1  │ 192.168.x.1              N > 2 (or bridge: true): every host has a veth
//                        ├── underlay 192.168.x.0/24      into a bridge in its own namespace
//   pod 2 ─veth─ host 2 ─┘ 192.168.x.2
//   10.y.2.2   10.y.2.1
//
// Host n (1-based) has underlay address 192.168.x.n/24 and pod subnet 10.y.n.0/24 inside the
// cluster network 10.y.0.0/16; the host side of the pod veth holds 10.y.n.1/24 (the CNI
// bridge gateway) and the pod 10.y.n.2/24 with a default route via .1. ip_forward is on in
// the hosts. Nothing routes between pods until a contender (bench/contenders.ts) sets it up.
//
// Every name carries a per-run id ("lb" + 5 random base-36 characters): namespaces are
// <id>-h<n>, <id>-p<n>, <id>-br; devices are <id>-u<n> (host underlay), <id>-g<n> (host side
// of the pod veth), <id>-p<n> (pod side), <id>-b<n> (bridge ports), <id>-br (the bridge).
// Devices are created directly inside the namespaces: nothing is added to the root
// namespace, and deleting the namespaces removes everything. destroy() is idempotent and also
// runs on process exit, SIGINT and SIGTERM.
//
// lab/ is the simulated cluster that the benchmark, the demo and the tests share; it is
// compiled with src/, bench/ and demo/ (tsconfig.json) and never imports from bench/, demo/ or test/.

import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { randomInt } from 'node:crypto';

import { ipNs, Lab, nsExec, nsSysctl, type ShOptions } from './netns.js';

// ---------------------------------------------------------------------------------------------
// Topology

export interface TopologyOptions {
  /** Number of hosts, ≥ 2; default 2. */
  hosts?: number;
  /** Join the hosts through a bridge namespace even when there are only 2 (default: hosts > 2). */
  bridge?: boolean;
  /** Underlay MTU; default 1500. */
  underlayMtu?: number;
  /** Initial MTU of the pod veths; default the underlay MTU. Contenders set it (setPodMtu). */
  podMtu?: number;
  /** x in 192.168.x.0/24; default random (1..254, not used by another live topology here). */
  underlayOctet?: number;
  /** y in 10.y.0.0/16; default random (1..254, not used by another live topology here). */
  clusterOctet?: number;
  /** Run destroy() on process exit, SIGINT and SIGTERM; default true. */
  cleanupOnExit?: boolean;
}

export interface PodInfo {
  /** Namespace name. */
  ns: string;
  /** The pod's device (its end of the veth). */
  dev: string;
  /** 10.y.n.2 */
  ip: string;
  /** 10.y.n.2/24 */
  cidr: string;
  /** 10.y.n.1 (the default route) */
  gateway: string;
}

export interface HostInfo {
  /** 1-based host number n (used in 192.168.x.n and 10.y.n.0/24). */
  index: number;
  /** Namespace name. */
  ns: string;
  /** The host's underlay device (flannel's "external interface"). */
  underlayDev: string;
  /** 192.168.x.n: the host's public IP. */
  underlayIP: string;
  /** 192.168.x.n/24 */
  underlayCidr: string;
  /** 10.y.n.0/24: this host's pod subnet (its flannel lease). */
  podSubnet: string;
  /** 10.y.n.1: host side of the pod veth. */
  podGateway: string;
  /** Device holding podGateway (stands in for the CNI bridge). */
  podGatewayDev: string;
  pod: PodInfo;
}

export interface Topology {
  /** Per-run id contained in every namespace and device name. */
  readonly id: string;
  /** 192.168.x.0/24 */
  readonly underlayNet: string;
  /** 10.y.0.0/16 (flannel's Network) */
  readonly clusterNet: string;
  readonly underlayMtu: number;
  readonly hosts: readonly HostInfo[];
  /** Namespace holding the underlay bridge, when there is one. */
  readonly bridgeNs: string | undefined;
  /** Current MTU of the pod veths. */
  readonly podMtu: number;
  readonly destroyed: boolean;
  /** Every namespace of this topology. */
  namespaces(): string[];
  /** Sets the MTU of both ends of every pod veth (the contender's tunnel MTU). */
  setPodMtu(mtu: number): void;
  /** `ip -n <ns> ...` */
  ip(ns: string, ...args: string[]): string;
  /** Runs a command inside a namespace; returns stdout, throws on failure or timeout. */
  exec(ns: string, cmd: string, args?: string[], opts?: ShOptions): string;
  /**
   * Starts a long-running process inside a namespace (`ip netns exec`, which execs, so the
   * child's pid is the command's). It is killed by destroy(). Bound its lifetime yourself.
   */
  spawn(ns: string, cmd: string, args?: string[], opts?: SpawnOptions): ChildProcess;
  /**
   * An address on the underlay inside the bridge namespace (192.168.x.254), for services the
   * hosts share, such as etcd. Needs a bridge (hosts > 2 or bridge: true).
   */
  serviceAddress(): string;
  /** Creates one more namespace (loopback up) that destroy() removes with the rest. */
  addNamespace(name: string): void;
  /** Kills every process in the namespaces, deletes them. Idempotent, synchronous. */
  destroy(): void;
}

const live = new Set<TopologyImpl>();

function pickOctet(taken: Set<number>, wanted?: number): number {
  if (wanted !== undefined) {
    if (!Number.isInteger(wanted) || wanted < 0 || wanted > 255) throw new Error(`topology: bad octet ${wanted}`);
    return wanted;
  }
  for (;;) {
    const v = randomInt(1, 255);
    if (!taken.has(v)) return v;
  }
}

class TopologyImpl implements Topology {
  private readonly lab: Lab;
  readonly id: string;
  readonly underlayNet: string;
  readonly clusterNet: string;
  readonly underlayMtu: number;
  readonly hosts: HostInfo[] = [];
  bridgeNs: string | undefined;
  podMtu: number;
  readonly x: number;
  readonly y: number;

  constructor(opts: TopologyOptions) {
    const n = opts.hosts ?? 2;
    if (!Number.isInteger(n) || n < 2 || n > 250) throw new Error(`topology: hosts must be an integer in 2..250, got ${n}`);
    this.lab = new Lab({ cleanupOnExit: opts.cleanupOnExit ?? true });
    this.id = this.lab.prefix;
    this.underlayMtu = opts.underlayMtu ?? 1500;
    this.podMtu = opts.podMtu ?? this.underlayMtu;
    this.x = pickOctet(new Set([...live].map((t) => t.x)), opts.underlayOctet);
    this.y = pickOctet(new Set([...live].map((t) => t.y)), opts.clusterOctet);
    this.underlayNet = `192.168.${this.x}.0/24`;
    this.clusterNet = `10.${this.y}.0.0/16`;
    for (let i = 1; i <= n; i++) {
      const podNet = `10.${this.y}.${i}`;
      this.hosts.push({
        index: i,
        ns: `${this.id}-h${i}`,
        underlayDev: `${this.id}-u${i}`,
        underlayIP: `192.168.${this.x}.${i}`,
        underlayCidr: `192.168.${this.x}.${i}/24`,
        podSubnet: `${podNet}.0/24`,
        podGateway: `${podNet}.1`,
        podGatewayDev: `${this.id}-g${i}`,
        pod: { ns: `${this.id}-p${i}`, dev: `${this.id}-p${i}`, ip: `${podNet}.2`, cidr: `${podNet}.2/24`, gateway: `${podNet}.1` },
      });
    }
    this.bridgeNs = (opts.bridge ?? n > 2) ? `${this.id}-br` : undefined;
  }

  get destroyed(): boolean {
    return this.lab.cleanedUp;
  }

  build(): void {
    const mtu = String(this.underlayMtu);
    const addNs = (name: string): void => {
      this.lab.ns(name);
    };
    if (this.bridgeNs) {
      addNs(this.bridgeNs);
      const br = `${this.id}-br`;
      ipNs(this.bridgeNs, 'link', 'add', br, 'mtu', mtu, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0');
      ipNs(this.bridgeNs, 'link', 'set', br, 'up');
    }
    for (const h of this.hosts) {
      addNs(h.ns);
      addNs(h.pod.ns);
      nsSysctl(h.ns, 'net.ipv4.ip_forward', '1');
    }
    // Underlay.
    if (this.bridgeNs) {
      for (const h of this.hosts) {
        const port = `${this.id}-b${h.index}`;
        ipNs(h.ns, 'link', 'add', h.underlayDev, 'mtu', mtu, 'type', 'veth', 'peer', 'name', port, 'mtu', mtu, 'netns', this.bridgeNs);
        ipNs(this.bridgeNs, 'link', 'set', port, 'master', `${this.id}-br`);
        ipNs(this.bridgeNs, 'link', 'set', port, 'up');
      }
    } else {
      const [a, b] = this.hosts as [HostInfo, HostInfo];
      ipNs(a.ns, 'link', 'add', a.underlayDev, 'mtu', mtu, 'type', 'veth', 'peer', 'name', b.underlayDev, 'mtu', mtu, 'netns', b.ns);
    }
    for (const h of this.hosts) {
      ipNs(h.ns, 'addr', 'add', h.underlayCidr, 'dev', h.underlayDev);
      ipNs(h.ns, 'link', 'set', h.underlayDev, 'up');
    }
    // Pods.
    const pmtu = String(this.podMtu);
    for (const h of this.hosts) {
      ipNs(h.ns, 'link', 'add', h.podGatewayDev, 'mtu', pmtu, 'type', 'veth', 'peer', 'name', h.pod.dev, 'mtu', pmtu, 'netns', h.pod.ns);
      ipNs(h.ns, 'addr', 'add', `${h.podGateway}/24`, 'dev', h.podGatewayDev);
      ipNs(h.ns, 'link', 'set', h.podGatewayDev, 'up');
      ipNs(h.pod.ns, 'addr', 'add', h.pod.cidr, 'dev', h.pod.dev);
      ipNs(h.pod.ns, 'link', 'set', h.pod.dev, 'up');
      ipNs(h.pod.ns, 'route', 'add', 'default', 'via', h.pod.gateway, 'dev', h.pod.dev);
    }
  }

  namespaces(): string[] {
    return this.lab.namespaces();
  }

  addNamespace(name: string): void {
    if (this.destroyed) throw new Error(`topology ${this.id} is destroyed`);
    this.lab.ns(name);
  }

  private service: string | undefined;
  serviceAddress(): string {
    if (!this.bridgeNs) throw new Error('topology: a service address needs a bridge (bridge: true)');
    if (!this.service) {
      const ip = this.underlayNet.replace(/\.0\/24$/, '.254');
      ipNs(this.bridgeNs, 'addr', 'add', `${ip}/24`, 'dev', `${this.id}-br`);
      this.service = ip;
    }
    return this.service;
  }

  setPodMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new Error(`topology: bad MTU ${mtu}`);
    for (const h of this.hosts) {
      ipNs(h.ns, 'link', 'set', h.podGatewayDev, 'mtu', String(mtu));
      ipNs(h.pod.ns, 'link', 'set', h.pod.dev, 'mtu', String(mtu));
    }
    this.podMtu = mtu;
  }

  ip(ns: string, ...args: string[]): string {
    return ipNs(ns, ...args);
  }

  exec(ns: string, cmd: string, args: string[] = [], opts: ShOptions = {}): string {
    return nsExec(ns, cmd, args, opts);
  }

  spawn(ns: string, cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error(`topology ${this.id} is destroyed`);
    return this.lab.spawn(ns, cmd, args, opts);
  }

  destroy(): void {
    live.delete(this);
    this.lab.cleanup();
  }
}

/**
 * Builds the topology (synchronously, about 50 `ip` calls). On failure everything made so
 * far is removed before the error is thrown.
 */
export function buildTopology(opts: TopologyOptions = {}): Topology {
  const topo = new TopologyImpl(opts);
  live.add(topo);
  try {
    topo.build();
  } catch (e) {
    try { topo.destroy(); } catch { /* report the build error */ }
    throw e;
  }
  return topo;
}

/** Destroys every topology of this process that is still alive. */
export function destroyAllTopologies(): void {
  for (const t of [...live]) {
    try {
      t.destroy();
    } catch (e) {
      process.stderr.write(`topology ${t.id}: ${(e as Error).message}\n`);
    }
  }
}
