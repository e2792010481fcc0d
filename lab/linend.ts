// linend with static peers (no etcd) on every host of a topology, in either mode and with
// either engine: what the benchmark's linen contenders (bench/linen.ts) and the data path tests
// run. Also where the built linend lives.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UDP_MTU_OVERHEAD, VXLAN_MTU_OVERHEAD, WIREGUARD_MTU_OVERHEAD, type BackendType } from '../src/config/network.js';
import { generatePrivateKey, publicKeyOf } from '../src/wireguard/crypto.js';
import { repoRoot } from '../src/paths.js';
import type { EngineName, OffloadSetting } from '../src/dataplane/engine.js';
import type { Topology } from './topology.js';
import { waitFor } from './wait.js';

export interface StaticLinenOptions {
  /** The backend: an overlay mode, or host-gw (kernel routes only, no data plane). */
  mode: BackendType;
  engine?: EngineName;
  offload?: OffloadSetting;
  queues?: number;
  /** Extra linend flags. */
  args?: string[];
}

export interface LinenNode {
  ns: string;
  /** Static peers file this node was started with. */
  file: string;
  args: string[];
  child: ChildProcess;
  /** Everything linend wrote to stderr so far. */
  log(): string;
}

export interface StaticLinen {
  readonly nodes: LinenNode[];
  /** PIDs of the running linend processes. */
  pids(): number[];
  /** Kills one node's linend (SIGKILL) and waits for it to go. */
  kill(index: number): Promise<void>;
  /** Starts one node's linend again with the same file and flags, and waits until it is ready. */
  restart(index: number): Promise<void>;
  /** SIGTERM to every linend (SIGKILL after 5 s), then removes the peers files. */
  stop(): Promise<void>;
}

export function linendPath(): string {
  return join(repoRoot(), 'dist', 'src', 'node', 'cli.js');
}

export const vtepMacFor = (index: number): string => `0a:58:0a:00:00:${(index + 1).toString(16).padStart(2, '0')}`;

/** The pod MTU linend gives (FLANNEL_MTU): the underlay MTU less what the mode adds. */
export function linenTunnelMtu(mode: StaticLinenOptions['mode'], underlayMtu = 1500): number {
  return underlayMtu - (mode === 'udp' ? UDP_MTU_OVERHEAD : mode === 'vxlan' ? VXLAN_MTU_OVERHEAD : mode === 'wireguard' ? WIREGUARD_MTU_OVERHEAD : 0);
}

/**
 * Writes a static peers file per host (every other host as a peer) and starts linend in every
 * host namespace (tracked by the topology, so destroy() kills it); resolves when all are ready.
 */
export async function startStaticLinen(topo: Topology, o: StaticLinenOptions): Promise<StaticLinen> {
  const engine = o.engine ?? 'native';
  const offload = o.offload ?? 'auto';
  const dir = mkdtempSync(join(tmpdir(), `linen-${topo.id}-`));
  const nodes: LinenNode[] = [];
  // WireGuard: each host's key file, written before start as a provisioned node would have it.
  const keys = topo.hosts.map(() => generatePrivateKey());
  const keyFile = (i: number): string => join(dir, `host${i + 1}.wgkey`);
  if (o.mode === 'wireguard') keys.forEach((k, i) => writeFileSync(keyFile(i), Buffer.from(k).toString('base64'), { mode: 0o400 }));
  const start = (i: number): LinenNode => {
    const h = topo.hosts[i];
    const file = join(dir, `host${i + 1}.json`);
    const args = [linendPath(), '--static-peers', file, '--subnet-file', join(dir, `host${i + 1}.env`), '--iface', h.underlayDev, '--engine', engine,
      '--offload', offload, '--queues', String(o.queues ?? 1), ...(o.args ?? [])];
    let stderr = '';
    const env = o.mode === 'wireguard' ? { ...process.env, WIREGUARD_KEY_FILE: keyFile(i) } : process.env;
    const child = topo.spawn(h.ns, process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    return { ns: h.ns, file, args, child, log: () => stderr };
  };
  topo.hosts.forEach((h, i) => {
    const peers = topo.hosts.filter((p) => p !== h).map((p) => ({
      Subnet: p.podSubnet, PublicIP: p.underlayIP, VtepMAC: vtepMacFor(p.index - 1),
      ...(o.mode === 'wireguard' ? { PublicKey: Buffer.from(publicKeyOf(keys[p.index - 1])).toString('base64') } : {}),
    }));
    writeFileSync(join(dir, `host${i + 1}.json`), JSON.stringify({
      Network: topo.clusterNet, Backend: { Type: o.mode }, Subnet: h.podSubnet, VtepMAC: vtepMacFor(i), Peers: peers,
    }, null, 2));
    nodes.push(start(i));
  });
  const ready = async (n: LinenNode): Promise<void> => {
    // Generous: on a loaded 2-core machine a worker thread and its wasm compile can be slow.
    const took = await waitFor(() => {
      if (n.log().includes('Static peers:')) return true;
      if (n.child.exitCode !== null || n.child.signalCode !== null) throw new Error(`linend in ${n.ns} exited:\n${n.log()}`);
      return false;
    }, 90000);
    if (took < 0) throw new Error(`linend in ${n.ns} not ready after 90 s:\n${n.log()}`);
  };
  const stopNode = async (n: LinenNode, signal: NodeJS.Signals): Promise<void> => {
    if (n.child.exitCode !== null || n.child.signalCode !== null) return;
    const gone = new Promise<void>((r) => n.child.once('exit', () => r()));
    n.child.kill(signal);
    const timer = setTimeout(() => n.child.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(timer);
  };
  try {
    await Promise.all(nodes.map(ready));
  } catch (e) {
    await Promise.all(nodes.map((n) => stopNode(n, 'SIGKILL')));
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    nodes,
    pids: () => nodes.map((n) => n.child.pid ?? 0).filter((p) => p > 0),
    kill: (i) => stopNode(nodes[i], 'SIGKILL'),
    async restart(i) {
      nodes[i] = start(i);
      await ready(nodes[i]);
    },
    async stop() {
      await Promise.all(nodes.map((n) => stopNode(n, 'SIGTERM')));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
