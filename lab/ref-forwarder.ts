// The C reference forwarder (lab/ref-forwarder.c) on both hosts of a two-host topology, set up
// as linen's UDP backend sets up its device (same MTU, own subnet's .0/32, route for the whole
// cluster network, same port): what perf-probe's c-ref-udp contender runs, to measure how fast
// the TUN/UDP design itself goes on this machine next to kernel VXLAN and linen. With
// --flanneld on one host it stands for a flanneld UDP node beside linen nodes.
import type { ChildProcess } from 'node:child_process';

import { UDP_DEFAULT_PORT } from '../src/config/network.js';
import { labToolBinary } from './c-tool.js';
import { linenTunnelMtu } from './linend.js';
import type { HostInfo, Topology } from './topology.js';
import { waitFor } from './wait.js';

/** The device name linen's UDP backend uses; each host is its own namespace. */
const DEVICE = 'flannel0';
const READY_MS = 10_000;
const STOP_MS = 5_000;

export interface RefForwarders {
  /** PIDs of the forwarder processes, host order. */
  pids(): number[];
  /** What each forwarder wrote to stderr (its counters, once stopped). */
  logs(): string[];
  /** SIGTERM (SIGKILL after 5 s) and waits for both to end. */
  stop(): Promise<void>;
}

/** Starts one forwarder per host, each sending everything to the other host; `extraArgs` go
 * to both (--no-verify, --no-ttl, --recv N, --flanneld). Resolves once both are ready. */
export async function startRefForwarders(topo: Topology, extraArgs: string[] = []): Promise<RefForwarders> {
  if (topo.hosts.length !== 2) throw new Error('ref-forwarder: needs exactly two hosts (one peer each)');
  return startForwarders(topo, topo.hosts.map((h, i) => ({ host: h, peer: topo.hosts[1 - i]! })), extraArgs);
}

/**
 * Host `host` set up as flanneld's UDP backend sets up a node: the forwarder's flanneld loop on
 * a TUN device with linen's UDP MTU, the host's pod subnet's .0/32 on it and the cluster
 * network routed to it, sending to the one peer `peer` (a flanneld UDP node with one peer).
 */
export function startFlanneldUdpNode(topo: Topology, host: HostInfo, peer: HostInfo): Promise<RefForwarders> {
  return startForwarders(topo, [{ host, peer }], ['--flanneld']);
}

async function startForwarders(topo: Topology, links: { host: HostInfo; peer: HostInfo }[], extraArgs: string[]): Promise<RefForwarders> {
  const bin = labToolBinary('ref-forwarder');
  const mtu = linenTunnelMtu('udp', topo.underlayMtu);
  const nodes = links.map(({ host: h, peer: other }) => {
    const args = ['--tun', DEVICE, '--listen', `${h.underlayIP}:${UDP_DEFAULT_PORT}`, '--peer', `${other.underlayIP}:${UDP_DEFAULT_PORT}`,
      '--addr', `${h.podSubnet.replace(/\/\d+$/, '')}/32`, '--mtu', String(mtu), '--route', topo.clusterNet, ...extraArgs];
    const child = topo.spawn(h.ns, bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = { child, stdout: '', stderr: '' };
    child.stdout?.on('data', (d: Buffer) => { out.stdout += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { out.stderr += d.toString(); });
    return out;
  });
  const exited = (c: ChildProcess): boolean => c.exitCode !== null || c.signalCode !== null;
  const stopAll = async (signal: NodeJS.Signals): Promise<void> => {
    await Promise.all(nodes.map(async ({ child }) => {
      if (exited(child)) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_MS);
      await gone;
      clearTimeout(timer);
    }));
  };
  const took = await waitFor(() => nodes.every((n) => {
    if (exited(n.child)) throw new Error(`ref-forwarder exited: ${n.stderr.trim()}`);
    return n.stdout.includes('ready');
  }), READY_MS).catch(async (e: unknown) => {
    await stopAll('SIGKILL');
    throw e;
  });
  if (took < 0) {
    await stopAll('SIGKILL');
    throw new Error(`ref-forwarder not ready after ${READY_MS} ms: ${nodes.map((n) => n.stderr.trim()).join(' | ')}`);
  }
  return {
    pids: () => nodes.map((n) => n.child.pid ?? 0).filter((p) => p > 0),
    logs: () => nodes.map((n) => n.stderr),
    stop: () => stopAll('SIGTERM'),
  };
}
