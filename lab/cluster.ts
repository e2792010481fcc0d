// A whole flannel-style cluster on one machine: the topology's hosts and pods, an etcd in the
// bridge namespace holding flannel's network config, linend on every host, and each pod
// addressed inside its host's leased subnet (what the CNI plugin would do from subnet.env).
// The demo, the end-to-end tests and the reliability tests all build on this.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTopology, type HostInfo, type Topology } from './topology.js';
import { nsExec } from './netns.js';
import { startEtcdServer, type EtcdServer, type EtcdTLS } from './etcd.js';
import { linendPath } from './linend.js';
import { reachable, runBounded, startBounded, startIperfServer, type BoundedProcess } from './traffic.js';
import { waitFor } from './wait.js';
import { DEFAULT_ETCD_PREFIX } from '../src/subnet/lease.js';
import type { EngineName, OffloadSetting } from '../src/dataplane/engine.js';
import type { BackendType } from '../src/config/network.js';
import { parseDotenv } from '../src/config/subnetenv.js';

export const HEALTH_PORT = 8471;
export const ETCD_PREFIX = DEFAULT_ETCD_PREFIX;

export interface ClusterOptions {
  hosts: number;
  backend: BackendType;
  /** Network config to store instead of {Network, Backend: {Type}}; `null` stores none. */
  config?: Record<string, unknown> | null;
  engine?: EngineName;
  offload?: OffloadSetting;
  queues?: number;
  /** Extra linend flags for every node. */
  args?: string[];
  /** Start linend on every host right away (default true). */
  start?: boolean;
  /** Extra environment for every linend (on top of this process's), e.g. LINEN_DEBUG_HOOKS. */
  env?: Record<string, string>;
  /**
   * Run etcd with TLS and client-certificate authentication, and give every linend
   * --etcd-cafile/--etcd-certfile/--etcd-keyfile (the CA and the client certificate and key).
   * A function gets etcd's address, for the server certificate's subjectAltName.
   */
  tls?: EtcdTLS | ((etcdIp: string) => EtcdTLS);
}

export interface HttpResult { status: number; body: string }

export interface ClusterNode {
  readonly index: number;
  readonly host: HostInfo;
  readonly subnetFile: string;
  readonly process: ChildProcess | null;
  /** Everything linend wrote to stderr across all its runs. */
  log(): string;
  /**
   * Starts linend and waits for /readyz (unless wait is false). args are appended to the
   * cluster's (a repeated flag: the last one wins); env is added to the cluster's.
   */
  start(opts?: { wait?: boolean; args?: string[]; env?: Record<string, string> }): Promise<void>;
  /** Sends a signal and waits for the process to exit; resolves its exit code or signal. */
  stop(signal?: NodeJS.Signals): Promise<number | string | null>;
  alive(): boolean;
  /** FLANNEL_SUBNET from this node's subnet.env (e.g. 10.5.3.1/24), or null. */
  subnetEnv(): Record<string, string> | null;
  /** The pod's address after attachPod(). */
  podIp: string | null;
  /** Readdresses the pod and its gateway inside the node's leased subnet. */
  attachPod(): void;
  http(path: string): Promise<HttpResult>;
}

export interface Cluster {
  readonly topo: Topology;
  /** The TLS files etcd runs with, when ClusterOptions.tls was given. */
  readonly tls: EtcdTLS | null;
  readonly etcd: EtcdServer;
  readonly nodes: ClusterNode[];
  readonly etcdEndpoint: string;
  readonly network: string;
  /** Waits until every running node is ready and attaches the pods. */
  /** Waits for every running node's /readyz (each at most timeoutMs, default 120 s), then attaches its pod. */
  ready(timeoutMs?: number): Promise<void>;
  /** True when the pod of node a answers ping from the pod of node b. */
  reachable(from: number, to: number, timeoutSec?: number): Promise<boolean>;
  destroy(): Promise<void>;
}


/** GET http://127.0.0.1:<port><path> inside a namespace. */
export async function httpIn(ns: string, port: number, path: string): Promise<HttpResult> {
  const r = await runBounded(ns, 'curl', ['-s', '-m', '5', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${port}${path}`], { timeoutMs: 15000 });
  const i = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(i + 1)) || 0, body: r.stdout.slice(0, i) };
}

export interface HttpProbe { status: number; sec: number }

/**
 * Probes http://127.0.0.1:<port><path> in `ns` `count` times, 100 ms apart, each bounded by
 * `limitSec`, from a process of its own: a caller busy with synchronous work (an etcd write)
 * does not hold the probes back. Resolves to each probe's status (0: no answer in time) and time.
 */
export function startHttpProber(ns: string, port: number, path: string, count: number, limitSec = 1): { done: Promise<HttpProbe[]>; kill(): void } {
  const p = startBounded(ns, 'sh', ['-c',
    `for i in $(seq ${count}); do curl -s -m ${limitSec} -o /dev/null -w '%{http_code} %{time_total}\\n' http://127.0.0.1:${port}${path}; sleep 0.1; done`],
  { timeoutMs: count * (limitSec + 0.5) * 1000 + 5000 });
  const done = p.done.then((r) => r.stdout.trim().split('\n').filter(Boolean).map((l) => {
    const [code, sec] = l.split(' ');
    return { status: Number(code) || 0, sec: Number(sec) };
  }));
  return { done, kill: () => p.kill() };
}

export async function buildCluster(o: ClusterOptions): Promise<Cluster> {
  const topo = buildTopology({ hosts: o.hosts, bridge: true });
  const dir = mkdtempSync(join(tmpdir(), `linen-cluster-${topo.id}-`));
  let etcd: EtcdServer | null = null;
  let tls: EtcdTLS | null = null;
  try {
    const ip = topo.serviceAddress();
    tls = o.tls === undefined ? null : typeof o.tls === 'function' ? o.tls(ip) : o.tls;
    etcd = await startEtcdServer({ ns: topo.bridgeNs, host: ip, ...(tls ? { tls } : {}) });
    const config = o.config === undefined ? { Network: topo.clusterNet, Backend: { Type: o.backend } } : o.config;
    if (config !== null) await etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify(config));
  } catch (e) {
    await etcd?.destroy();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const server = etcd;
  const control = [`--etcd-endpoints=${server.clientURL}`,
    ...(tls ? [`--etcd-cafile=${tls.caFile}`, `--etcd-certfile=${tls.clientCertFile}`, `--etcd-keyfile=${tls.clientKeyFile}`] : [])];
  const nodes: ClusterNode[] = topo.hosts.map((host, index) => makeNode(topo, control, dir, host, index, o));
  const cluster: Cluster = {
    topo, etcd: server, tls, nodes, etcdEndpoint: server.clientURL, network: topo.clusterNet,
    ...nodeSet(topo, dir, nodes, () => server.destroy()),
  };
  if (o.start !== false) await startAll(cluster);
  return cluster;
}

/**
 * What every lab cluster does with its nodes: wait for the running ones and address their pods,
 * ping between pods, and tear down (linend, then the control plane by `stopControl`, then the
 * namespaces and files).
 */
export function nodeSet(topo: Topology, dir: string, nodes: ClusterNode[], stopControl: () => Promise<void>): Pick<Cluster, 'ready' | 'reachable' | 'destroy'> {
  return {
    async ready(timeoutMs) {
      await Promise.all(nodes.filter((n) => n.alive()).map(async (n) => {
        await waitReady(n, timeoutMs);
        n.attachPod();
      }));
    },
    async reachable(from, to, timeoutSec = 2) {
      const target = nodes[to].podIp;
      if (!target) return false;
      return reachable(nodes[from].host.pod.ns, target, timeoutSec);
    },
    async destroy() {
      await Promise.all(nodes.map((n) => n.stop('SIGTERM').catch(() => null)));
      await stopControl();
      topo.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Starts linend on every node and waits for them; on failure tears the cluster down. */
export async function startAll(c: Pick<Cluster, 'nodes' | 'ready' | 'destroy'>): Promise<void> {
  try {
    for (const n of c.nodes) await n.start({ wait: false });
    await c.ready();
  } catch (e) {
    await c.destroy();
    throw e;
  }
}

async function waitReady(n: ClusterNode, timeoutMs = 120000): Promise<void> {
  const took = await waitFor(async () => {
    if (!n.alive()) throw new Error(`linend on host ${n.index + 1} exited:\n${n.log().slice(-3000)}`);
    return (await n.http('/readyz').catch(() => ({ status: 0, body: '' }))).status === 200;
  }, timeoutMs, 100);
  if (took < 0) throw new Error(`linend on host ${n.index + 1} not ready after ${timeoutMs / 1000} s:\n${n.log().slice(-3000)}`);
}

/**
 * One host's linend: `control` are the flags that say where its subnet and peers come from
 * (etcd, or the Kubernetes API), `env` its own environment on top of the cluster's.
 */
export function makeNode(topo: Topology, control: string[], dir: string, host: HostInfo, index: number,
  o: Pick<ClusterOptions, 'backend' | 'engine' | 'offload' | 'queues' | 'args' | 'env'>, nodeEnv: Record<string, string> = {}): ClusterNode {
  const subnetFile = join(dir, `subnet-${index + 1}.env`);
  let proc: ChildProcess | null = null;
  let exited: Promise<number | string | null> = Promise.resolve(null);
  let stderr = '';
  const node: ClusterNode = {
    index, host, subnetFile, podIp: null,
    get process() { return proc; },
    log: () => stderr,
    alive: () => proc !== null,
    async start(s = {}) {
      if (proc) throw new Error(`linend on host ${index + 1} is already running`);
      const args = [linendPath(), ...control, `--iface=${host.underlayDev}`,
        `--subnet-file=${subnetFile}`, `--healthz-ip=127.0.0.1`, `--healthz-port=${HEALTH_PORT}`,
        `--engine=${o.engine ?? 'native'}`, `--offload=${o.offload ?? 'auto'}`, `--queues=${o.queues ?? 1}`,
        ...(o.args ?? []), ...(s.args ?? [])];
      // WireGuard: every node its own key file (they share this machine's /run/flannel).
      const wgKey = o.backend === 'wireguard' ? { WIREGUARD_KEY_FILE: join(dir, `wgkey-${index + 1}`) } : undefined;
      const env = o.env || s.env || wgKey || Object.keys(nodeEnv).length > 0 ? { ...process.env, ...wgKey, ...o.env, ...nodeEnv, ...s.env } : undefined;
      const p = topo.spawn(host.ns, process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], ...(env ? { env } : {}) });
      proc = p;
      p.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.length > 400_000) stderr = stderr.slice(-200_000);
      });
      exited = new Promise((resolve) => p.once('exit', (code, sig) => {
        if (proc === p) proc = null;
        resolve(code ?? sig);
      }));
      if (s.wait !== false) {
        await waitReady(node);
        node.attachPod();
      }
    },
    async stop(signal = 'SIGTERM') {
      const p = proc;
      if (!p) return null;
      p.kill(signal);
      const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
    subnetEnv() {
      return existsSync(subnetFile) ? parseDotenv(readFileSync(subnetFile, 'utf8')) : null;
    },
    attachPod() {
      const env = node.subnetEnv();
      const m = env ? /^(\d+\.\d+\.\d+)\.(\d+)\/(\d+)$/.exec(env['FLANNEL_SUBNET'] ?? '') : null;
      if (!env || !m) throw new Error(`host ${index + 1}: no FLANNEL_SUBNET in ${subnetFile}`);
      const gateway = `${m[1]}.${m[2]}`;
      const pod = `${m[1]}.${Number(m[2]) + 1}`;
      const mtu = env['FLANNEL_MTU'] ?? '1450';
      topo.ip(host.ns, 'addr', 'flush', 'dev', host.podGatewayDev);
      topo.ip(host.ns, 'addr', 'add', `${gateway}/${m[3]}`, 'dev', host.podGatewayDev);
      topo.ip(host.ns, 'link', 'set', 'dev', host.podGatewayDev, 'mtu', mtu);
      topo.ip(host.pod.ns, 'addr', 'flush', 'dev', host.pod.dev);
      topo.ip(host.pod.ns, 'link', 'set', 'dev', host.pod.dev, 'mtu', mtu);
      topo.ip(host.pod.ns, 'addr', 'add', `${pod}/${m[3]}`, 'dev', host.pod.dev);
      topo.ip(host.pod.ns, 'route', 'replace', 'default', 'via', gateway);
      node.podIp = pod;
    },
    http: (path) => httpIn(host.ns, HEALTH_PORT, path),
  };
  return node;
}

// ---------------------------------------------------------------------------------------------
// iperf3 between two nodes' pods, with intervals

export interface IperfRun {
  /** Bytes received per interval (the receiver's view when -J gives it, else the sender's). */
  intervals: number[];
  bytes: number;
  seconds: number;
  gbps: number;
  retransmits: number;
}

export interface IperfHandle {
  done: Promise<IperfRun>;
  kill(): void;
}

/**
 * Starts an iperf3 TCP run between two pods (server one-off), bounded: `seconds` of traffic,
 * intervals of `interval` seconds, killed after seconds + 30 s whatever happens.
 */
export async function startIperf(from: ClusterNode, to: ClusterNode, o: { seconds: number; interval?: number; port?: number; streams?: number }): Promise<IperfHandle> {
  const port = o.port ?? 5201;
  const ip = to.podIp;
  if (!ip) throw new Error(`host ${to.index + 1} has no pod address`);
  const timeoutMs = o.seconds * 1000 + 30_000;
  const server = await startIperfServer({ ns: to.host.pod.ns, ip }, port, timeoutMs);
  const client: BoundedProcess = startBounded(from.host.pod.ns, 'iperf3', ['-c', ip, '-p', String(port), '-J', '-t', String(o.seconds),
    '-i', String(o.interval ?? 1), '-P', String(o.streams ?? 1), '--connect-timeout', '3000'], { timeoutMs });
  const done = (async (): Promise<IperfRun> => {
    const r = await client.done;
    server.kill();
    await server.done;
    let j: { error?: string; intervals?: { sum: { bytes: number } }[]; end?: { sum_received?: { bytes: number; seconds: number; bits_per_second: number }; sum_sent?: { retransmits?: number } } };
    try {
      j = JSON.parse(r.stdout) as typeof j;
    } catch {
      throw new Error(`iperf3 printed no JSON (code ${r.code}, timed out ${r.timedOut}): ${r.stderr.slice(-500)}`);
    }
    if (j.error) throw new Error(`iperf3: ${j.error}`);
    const recv = j.end?.sum_received;
    return {
      intervals: (j.intervals ?? []).map((i) => i.sum.bytes),
      bytes: recv?.bytes ?? 0,
      seconds: recv?.seconds ?? 0,
      gbps: (recv?.bits_per_second ?? 0) / 1e9,
      retransmits: j.end?.sum_sent?.retransmits ?? 0,
    };
  })();
  return { done, kill: () => { client.kill(); server.kill(); } };
}

/** Pods of a and b reach each other (both directions). */
export async function bothWays(c: Pick<Cluster, 'reachable'>, a: number, b: number): Promise<boolean> {
  const [x, y] = await Promise.all([c.reachable(a, b, 2), c.reachable(b, a, 2)]);
  return x && y;
}

// ---------------------------------------------------------------------------------------------
// Cutting a host off from etcd

export interface Partition {
  /** Removes the rule (idempotent). */
  heal(): void;
}

/**
 * Drops (or rejects with a TCP reset) everything the host sends to etcd, with one iptables
 * rule in the host's own namespace; with kill, also destroys its open connections to etcd
 * (ss -K) so that the client has to connect again. heal() removes the rule.
 */
export function partitionFromEtcd(c: Cluster, n: ClusterNode, o: { reject?: boolean; kill?: boolean } = {}): Partition {
  const [, host, port] = /^https?:\/\/([^:/]+):(\d+)/.exec(c.etcdEndpoint) ?? [];
  if (!host || !port) throw new Error(`cannot parse ${c.etcdEndpoint}`);
  const target = o.reject ? ['REJECT', '--reject-with', 'tcp-reset'] : ['DROP'];
  const comment = ['-m', 'comment', '--comment', 'linen-reliability-partition'];
  // Both ways: with only the requests dropped, etcd would still push watch events in.
  const rules = [
    ['OUTPUT', '-d', host, '-p', 'tcp', '--dport', port, ...comment, '-j', ...target],
    ['INPUT', '-s', host, '-p', 'tcp', '--sport', port, ...comment, '-j', 'DROP'],
  ];
  for (const r of rules) nsExec(n.host.ns, 'iptables', ['-w', '-I', ...r]);
  if (o.kill) nsExec(n.host.ns, 'ss', ['-K', 'dst', host, 'dport', '=', port]);
  let healed = false;
  return {
    heal() {
      if (healed) return;
      healed = true;
      for (const r of rules) nsExec(n.host.ns, 'iptables', ['-w', '-D', ...r]);
    },
  };
}
