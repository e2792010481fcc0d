// linen as a contender: linend in every host namespace, wired by hand with static peers
// (no etcd), in either mode and with either engine.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { repoRoot } from '../src/dataplane/native.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Contender, ContenderHandle } from './contenders.js';
import type { Topology } from '../lab/topology.js';

export interface LinenContenderOptions {
  mode: 'udp' | 'vxlan';
  engine?: 'native' | 'dgram';
  offload?: 'auto' | 'on' | 'off';
  queues?: number;
  underlayMtu?: number;
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

export interface LinenHandle extends ContenderHandle {
  readonly nodes: LinenNode[];
  /** Kills one node's linend (SIGKILL) and waits for it to go. */
  kill(index: number): Promise<void>;
  /** Starts one node's linend again with the same file and flags, and waits until it is ready. */
  restart(index: number): Promise<void>;
}

export function linendPath(): string {
  return join(repoRoot(), 'dist', 'src', 'cli.js');
}

export const vtepMacFor = (index: number): string => `0a:58:0a:00:00:${(index + 1).toString(16).padStart(2, '0')}`;

export function linenContender(o: LinenContenderOptions): Contender & { setup(topo: Topology): Promise<LinenHandle> } {
  const engine = o.engine ?? 'native';
  const offload = o.offload ?? 'auto';
  const overhead = o.mode === 'udp' ? 28 : 50;
  const name = `linen-${o.mode}` + (engine === 'dgram' ? '-dgram' : offload === 'off' ? '-nooffload' : '');
  return {
    name,
    description: `linen ${o.mode === 'udp' ? 'UDP (flannel wire format)' : 'VXLAN'} mode, ${engine} engine` +
      (engine === 'native' ? `, offloads ${offload}` : ', one packet per call'),
    tunnelMtu: (o.underlayMtu ?? 1500) - overhead,
    async setup(topo) {
      const dir = mkdtempSync(join(tmpdir(), `linen-${topo.id}-`));
      const nodes: LinenNode[] = [];
      const start = (i: number): LinenNode => {
        const h = topo.hosts[i];
        const file = join(dir, `host${i + 1}.json`);
        const args = [linendPath(), '--static-peers', file, '--subnet-file', join(dir, `host${i + 1}.env`), '--iface', h.underlayDev, '--engine', engine,
          '--offload', offload, '--queues', String(o.queues ?? 1), ...(o.args ?? [])];
        let stderr = '';
        const child = topo.spawn(h.ns, process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
        return { ns: h.ns, file, args, child, log: () => stderr };
      };
      topo.hosts.forEach((h, i) => {
        const peers = topo.hosts.filter((p) => p !== h).map((p) => ({
          Subnet: p.podSubnet, PublicIP: p.underlayIP, VtepMAC: vtepMacFor(p.index - 1),
        }));
        writeFileSync(join(dir, `host${i + 1}.json`), JSON.stringify({
          Network: topo.clusterNet, Backend: { Type: o.mode }, Subnet: h.podSubnet, VtepMAC: vtepMacFor(i), Peers: peers,
        }, null, 2));
        nodes.push(start(i));
      });
      const ready = async (n: LinenNode): Promise<void> => {
        // Generous: on a loaded 2-core machine a worker thread and its wasm compile can be slow.
        const deadline = Date.now() + 90000;
        while (!n.log().includes('Static peers:')) {
          if (n.child.exitCode !== null || n.child.signalCode !== null) throw new Error(`linend in ${n.ns} exited:\n${n.log()}`);
          if (Date.now() > deadline) throw new Error(`linend in ${n.ns} not ready after 90 s:\n${n.log()}`);
          await new Promise((r) => setTimeout(r, 50));
        }
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
        info: { engine, offload, mode: o.mode },
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
    },
  };
}

/** The linen contenders the benchmark runs, in report order. */
export function linenContenders(underlayMtu = 1500): Contender[] {
  return [
    linenContender({ mode: 'udp', underlayMtu }),
    linenContender({ mode: 'vxlan', underlayMtu }),
    linenContender({ mode: 'udp', offload: 'off', underlayMtu }),
    linenContender({ mode: 'vxlan', offload: 'off', underlayMtu }),
    linenContender({ mode: 'udp', engine: 'dgram', underlayMtu }),
    linenContender({ mode: 'vxlan', engine: 'dgram', underlayMtu }),
  ];
}
