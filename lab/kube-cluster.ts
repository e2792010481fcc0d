// A flannel-style cluster in kube mode on one machine: the topology's hosts and pods, the lab
// Kubernetes API server running in the bridge namespace (the hosts reach it on the underlay),
// one Node per host with the host's pod subnet as its podCIDR, the network config in a
// net-conf.json file, and linend --kube-subnet-mgr on every host (NODE_NAME set). kubectl
// runs in the bridge namespace against the same server.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot } from '../src/paths.js';
import type { EngineName } from '../src/dataplane/engine.js';
import { buildTopology, type Topology } from './topology.js';
import { makeNode, nodeSet, startAll, type ClusterNode, type ClusterOptions } from './cluster.js';
import { kubeconfigYaml, type KubeObject } from './kube-api.js';
import { runBounded } from './traffic.js';

export interface KubeApiProcess {
  readonly url: string;
  /** A kubeconfig for kubectl in the bridge namespace. */
  readonly kubeconfig: string;
  /** Calls a KubeApiServer method in the server process. */
  call<T = unknown>(op: string, ...args: unknown[]): Promise<T>;
  node(name: string): Promise<KubeObject | null>;
  /** kubectl in the bridge namespace; rejects with kubectl's stderr on failure. */
  kubectl(...args: string[]): Promise<string>;
  /** Ends the server process. */
  close(): Promise<void>;
}

/** Starts the lab API server as a process in `ns`, listening on host (any free port). */
export async function startKubeApi(topo: Topology, ns: string, host: string, dir: string): Promise<KubeApiProcess> {
  const main = join(repoRoot(), 'dist', 'lab', 'kube-api-main.js');
  const child: ChildProcess = topo.spawn(ns, process.execPath, [main, host, '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`lab API server did not start in 30 s: ${stderr}`)), 30_000);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const m = /^listening (\S+)$/.exec(line);
      if (m !== null) {
        clearTimeout(timer);
        resolve(m[1]!);
        return;
      }
      try {
        const r = JSON.parse(line) as { id: number; result?: unknown; error?: string };
        const p = pending.get(r.id);
        pending.delete(r.id);
        if (r.error !== undefined) p?.reject(new Error(r.error));
        else p?.resolve(r.result);
      } catch {
        // not an answer
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`lab API server exited (${code}): ${stderr}`));
      for (const p of pending.values()) p.reject(new Error(`lab API server exited (${code}): ${stderr}`));
    });
  });
  const kubeconfig = join(dir, 'kubectl.kubeconfig');
  writeFileSync(kubeconfig, kubeconfigYaml(url));
  const call = <T>(op: string, ...args: unknown[]): Promise<T> => new Promise<T>((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    child.stdin!.write(JSON.stringify({ id, op, args }) + '\n');
  });
  return {
    url,
    kubeconfig,
    call,
    node: (name) => call<KubeObject | null>('node', name),
    async kubectl(...args) {
      const r = await runBounded(ns, 'kubectl', ['--kubeconfig', kubeconfig, ...args], { timeoutMs: 60_000 });
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.code}`}`);
      return r.stdout;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

export interface KubeClusterOptions {
  hosts: number;
  backend: ClusterOptions['backend'];
  /** net-conf.json contents instead of {Network, Backend: {Type}}. */
  config?: Record<string, unknown>;
  engine?: EngineName;
  /** Extra linend flags for every node. */
  args?: string[];
  /** Start linend on every host right away (default true). */
  start?: boolean;
}

export interface KubeCluster {
  readonly topo: Topology;
  readonly api: KubeApiProcess;
  readonly nodes: ClusterNode[];
  /** The Node name of each host. */
  readonly nodeNames: string[];
  readonly network: string;
  readonly netConfPath: string;
  ready(): Promise<void>;
  reachable(from: number, to: number, timeoutSec?: number): Promise<boolean>;
  destroy(): Promise<void>;
}

export const kubeNodeName = (index: number): string => `node-${index + 1}`;

export async function buildKubeCluster(o: KubeClusterOptions): Promise<KubeCluster> {
  const topo = buildTopology({ hosts: o.hosts, bridge: true });
  const dir = mkdtempSync(join(tmpdir(), `linen-kube-${topo.id}-`));
  let api: KubeApiProcess | null = null;
  try {
    api = await startKubeApi(topo, topo.bridgeNs!, topo.serviceAddress(), dir);
    for (const [i, h] of topo.hosts.entries()) {
      await api.call('addNode', kubeNodeName(i), { podCIDR: h.podSubnet, addresses: [{ type: 'InternalIP', address: h.underlayIP }] });
    }
  } catch (e) {
    await api?.close();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const server = api;
  const netConfPath = join(dir, 'net-conf.json');
  writeFileSync(netConfPath, JSON.stringify(o.config ?? { Network: topo.clusterNet, Backend: { Type: o.backend } }));
  const control = ['--kube-subnet-mgr', `--kube-api-url=${server.url}`, `--net-config-path=${netConfPath}`];
  const nodes = topo.hosts.map((h, i) => makeNode(topo, control, dir, h, i, o, { NODE_NAME: kubeNodeName(i) }));
  const cluster: KubeCluster = {
    topo, api: server, nodes, nodeNames: topo.hosts.map((_, i) => kubeNodeName(i)), network: topo.clusterNet, netConfPath,
    ...nodeSet(topo, dir, nodes, () => server.close()),
  };
  if (o.start !== false) await startAll(cluster);
  return cluster;
}
