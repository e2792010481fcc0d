// What the benchmark compares: each contender makes pod-to-pod traffic flow across the
// topology (lab/topology.ts) in its own way and undoes it on stop().
//
//   const topo = buildTopology();
//   const h = await startContender(kernelVxlanContender(), topo);   // sets the pod MTU, then setup()
//   ... measure (lab/traffic.ts), with cpuPids = h.pids() ...
//   await h.stop(); topo.destroy();
//
// Contenders run one at a time on a topology; stop() must leave it as built (pods unreachable
// from each other), so the next contender starts from the same state.

import { VXLAN_DEFAULT_PORT, VXLAN_DEFAULT_VNI, VXLAN_MTU_OVERHEAD, WIREGUARD_MTU_OVERHEAD } from '../src/config/network.js';
import { setupHostGw, setupKernelVxlan, type KernelVxlanNode } from '../lab/kernel.js';
import { linenTunnelMtu } from '../lab/linend.js';
import { startRefForwarders } from '../lab/ref-forwarder.js';
import { setupWireguardGo } from '../lab/wireguard-go.js';
import type { Topology } from '../lab/topology.js';

export interface ContenderHandle {
  /** Undoes everything setup() did (kills its processes, removes its devices and routes). Idempotent. */
  stop(): Promise<void>;
  /**
   * PIDs of the userspace dataplane processes (one per host) whose CPU time is charged to this
   * contender: "CPU seconds per gigabit". Empty for kernel paths (their cost is softirq time:
   * see systemCpu in lab/traffic.ts).
   */
  pids(): number[];
  /**
   * PIDs of every process the contender runs on the hosts (for their memory), forwarding or
   * not: linend in host-gw mode keeps routes and forwards nothing. Default: pids().
   */
  daemons?(): number[];
  /** Details for the report (e.g. VTEP MACs, device names). */
  info: Record<string, unknown>;
}

export interface Contender {
  /** Short stable name used on the command line and in results, e.g. "kernel-vxlan". */
  readonly name: string;
  /** One line for the report. */
  readonly description: string;
  /** MTU of the pod interfaces with this contender (flannel's FLANNEL_MTU). */
  readonly tunnelMtu: number;
  /**
   * Makes pod-to-pod traffic flow on `topo`. Called after the pod MTU has been set to
   * tunnelMtu (startContender does that). On failure it must undo what it did before throwing.
   */
  setup(topo: Topology): Promise<ContenderHandle>;
}

/** Sets the pod MTU to the contender's tunnel MTU, then runs its setup. */
export async function startContender<H extends ContenderHandle>(
  c: { readonly tunnelMtu: number; setup(topo: Topology): Promise<H> }, topo: Topology,
): Promise<H> {
  topo.setPodMtu(c.tunnelMtu);
  return c.setup(topo);
}

// ---------------------------------------------------------------------------------------------
// Kernel and C contenders (no linen code; the linen ones are in bench/linen.ts, the suite's list
// in bench/suite.ts)

export interface KernelContenderOptions {
  /** Underlay MTU the topology is built with; default 1500. */
  underlayMtu?: number;
}

/** Plain routing (flannel's host-gw backend): S via P dev <underlay> on every host. */
export function hostGwContender(opts: KernelContenderOptions = {}): Contender {
  const mtu = opts.underlayMtu ?? 1500;
  return {
    name: 'host-gw',
    description: 'plain routing (flannel host-gw): pod subnets routed via the peer hosts\' underlay IPs',
    tunnelMtu: mtu,
    async setup(topo) {
      const h = setupHostGw(topo);
      return { stop: async () => h.stop(), pids: () => [], info: {} };
    },
  };
}

export interface KernelVxlanContenderOptions extends KernelContenderOptions {
  /** Default 1. */
  vni?: number;
  /** Default 8472. */
  port?: number;
}

export interface KernelVxlanHandle extends ContenderHandle {
  /** The flannel.<VNI> node of each host, in topology order (vtepMAC, dev, ...). */
  readonly nodes: readonly KernelVxlanNode[];
}

export interface KernelVxlanContender extends Contender {
  setup(topo: Topology): Promise<KernelVxlanHandle>;
}

/** Linux kernel VXLAN, flannel.<VNI> on every host exactly as flanneld sets it up. */
export function kernelVxlanContender(opts: KernelVxlanContenderOptions = {}): KernelVxlanContender {
  const mtu = (opts.underlayMtu ?? 1500) - VXLAN_MTU_OVERHEAD;
  return {
    name: 'kernel-vxlan',
    description: `Linux kernel VXLAN as flanneld configures it (flannel.${opts.vni ?? VXLAN_DEFAULT_VNI}, port ${opts.port ?? VXLAN_DEFAULT_PORT}, MTU ${mtu})`,
    tunnelMtu: mtu,
    async setup(topo) {
      const mesh = setupKernelVxlan(topo, { vni: opts.vni, port: opts.port });
      const nodes = [...mesh.nodes];
      return {
        stop: async () => mesh.stop(),
        pids: () => [],
        nodes,
        info: { nodes: nodes.map((n) => ({ ns: n.ns, dev: n.dev, vni: n.vni, port: n.port, vtepMAC: n.vtepMAC, mtu: n.mtu })) },
      };
    },
  };
}

export interface RefForwarderContenderOptions extends KernelContenderOptions {
  /** flanneld's UDP backend loop (one read() and one sendto() per packet) instead of linen's design. */
  flanneld?: boolean;
}

/**
 * lab/ref-forwarder.c on both hosts, with linen's UDP device set-up and wire format: by default
 * a minimal C forwarder with linen's kernel interfaces (the ceiling of the TUN/UDP design on
 * this machine), with `flanneld` flanneld's UDP backend loop rebuilt in C. Its processes' CPU is
 * charged as linen's is.
 */
export function refForwarderContender(opts: RefForwarderContenderOptions = {}): Contender {
  const args = opts.flanneld ? ['--flanneld'] : [];
  return {
    name: opts.flanneld ? 'c-flanneld-udp' : 'c-ref-udp',
    description: opts.flanneld
      ? 'flanneld\'s UDP backend loop in C (lab/ref-forwarder.c --flanneld): one TUN read() and one sendto() per packet'
      : 'the C reference forwarder (lab/ref-forwarder.c): linen\'s kernel interfaces (TSO reads, UDP GSO and GRO, merged TUN writes) without linen',
    tunnelMtu: linenTunnelMtu('udp', opts.underlayMtu),
    async setup(topo) {
      const ref = await startRefForwarders(topo, args);
      return { stop: () => ref.stop(), pids: () => ref.pids(), info: { forwarder: 'lab/ref-forwarder.c', args } };
    },
  };
}

/**
 * Debian's wireguard-go on both hosts, each device set up as flanneld's wireguard backend sets
 * up the kernel's (lab/wireguard-go.ts): what a flannel wireguard node runs where the kernel has
 * no WireGuard module. Its processes' CPU is charged as linen's is.
 */
export function wireguardGoContender(opts: KernelContenderOptions = {}): Contender {
  const mtu = (opts.underlayMtu ?? 1500) - WIREGUARD_MTU_OVERHEAD;
  return {
    name: 'wireguard-go',
    description: `Debian's wireguard-go, each device set up as flanneld's wireguard backend sets up the kernel's (port 51820, MTU ${mtu}, no PSK)`,
    tunnelMtu: mtu,
    async setup(topo) {
      const mesh = await setupWireguardGo(topo);
      return { stop: () => mesh.stop(), pids: () => mesh.pids(), info: { devices: mesh.nodes.map((n) => ({ ns: n.ns, dev: n.dev })) } };
    },
  };
}
