// Shared pieces of the reliability tests (test/reliability/): reading linend's /metrics and
// /proc, waiting for conditions, cutting a host off from etcd, bounded iperf3 runs with their
// per-interval figures, fake peer leases in etcd, the kernel's UDP counters of a namespace.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ETCD_PREFIX, type Cluster, type ClusterNode } from '../../bench/cluster.js';
import { startBounded, waitForTcpListen, type BoundedProcess } from '../../bench/traffic.js';
import { nsExec } from '../../bench/topology.js';
import { linkCounters } from '../../bench/kernel.js';

/** LINEN_LONG_TESTS=1 runs the long versions. */
export const LONG = process.env.LINEN_LONG_TESTS === '1';

// ---------------------------------------------------------------------------------------------
// Metrics

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export class Metrics {
  constructor(readonly samples: Sample[]) {}

  static parse(text: string): Metrics {
    const out: Sample[] = [];
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) continue;
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) labels[l[1]!] = l[2]!;
      out.push({ name: m[1]!, labels, value: Number(m[3]) });
    }
    return new Metrics(out);
  }

  /** The first sample of `name` whose labels include `labels`, or undefined when there is none. */
  find(name: string, labels: Record<string, string> = {}): number | undefined {
    return this.samples.find((s) => s.name === name && Object.entries(labels).every(([k, want]) => s.labels[k] === want))?.value;
  }

  /** Sum of the samples of `name` whose labels include `labels`. */
  get(name: string, labels: Record<string, string> = {}): number {
    let v = 0;
    for (const s of this.samples) {
      if (s.name !== name) continue;
      if (Object.entries(labels).every(([k, want]) => s.labels[k] === want)) v += s.value;
    }
    return v;
  }

  /** The peer routes as "subnet via public_ip", sorted. */
  routes(): string[] {
    return this.samples.filter((s) => s.name === 'linen_peer_route' && s.value === 1)
      .map((s) => `${s.labels.subnet} via ${s.labels.public_ip}`).sort();
  }

  /**
   * Counts by verdict for one direction: the packets' outcomes (linen_packets_total{verdict})
   * and the side events (linen_events_total{event}), in one record keyed by verdict name.
   */
  verdicts(direction: 'egress' | 'ingress'): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of this.samples) {
      if (s.labels.direction !== direction) continue;
      if (s.name === 'linen_packets_total') out[s.labels.verdict!] = s.value;
      else if (s.name === 'linen_events_total') out[s.labels.event!] = s.value;
    }
    return out;
  }
}

export async function metrics(n: ClusterNode): Promise<Metrics> {
  const r = await n.http('/metrics');
  if (r.status !== 200) throw new Error(`host ${n.index + 1}: /metrics answered ${r.status}`);
  return Metrics.parse(r.body);
}

/** Per-verdict difference b - a. */
export function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Open descriptors of a process with what they point to (fd -> readlink target). */
export function fdTargets(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try { out.set(fd, readlinkSync(`/proc/${pid}/fd/${fd}`)); } catch { /* closed meanwhile */ }
  }
  return out;
}

/**
 * The process's descriptors at rest: the smallest of `samples` readings 200 ms apart (a health
 * request being answered or an iptables check running holds a descriptor or three for a
 * moment; a leak shows in every reading). Returns the count and the targets of that reading.
 */
export async function fdsAtRest(pid: number, samples = 6): Promise<{ count: number; targets: Map<string, string> }> {
  let best: Map<string, string> | null = null;
  for (let i = 0; i < samples; i++) {
    const m = fdTargets(pid);
    if (best === null || m.size < best.size) best = m;
    await sleep(200);
  }
  return { count: best!.size, targets: best! };
}

/** What changed between two fdTargets() readings, for messages. */
export function fdDiff(a: Map<string, string>, b: Map<string, string>): string {
  const kind = (t: string): string => t.replace(/\[\d+\]$/, '[]').replace(/^\/.*/, 'file');
  const count = (m: Map<string, string>): Map<string, number> => {
    const c = new Map<string, number>();
    for (const t of m.values()) c.set(kind(t), (c.get(kind(t)) ?? 0) + 1);
    return c;
  };
  const ca = count(a), cb = count(b);
  const parts: string[] = [];
  for (const k of new Set([...ca.keys(), ...cb.keys()])) {
    const d = (cb.get(k) ?? 0) - (ca.get(k) ?? 0);
    if (d !== 0) parts.push(`${k} ${d > 0 ? '+' : ''}${d}`);
  }
  return parts.join(', ') || 'same kinds';
}

/** Threads of a process. */
export function threadCount(pid: number): number {
  const m = /Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN);
}

export function pidOf(n: ClusterNode): number {
  const pid = n.process?.pid;
  if (pid === undefined) throw new Error(`linend on host ${n.index + 1} is not running`);
  return pid;
}

/**
 * Polls `what` every `everyMs` until it returns true; resolves the milliseconds it took, or
 * -1 after timeoutMs.
 */
export async function waitFor(what: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 50): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await what()) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) return -1;
    await sleep(everyMs);
  }
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

// ---------------------------------------------------------------------------------------------
// etcd

/** Every key under <prefix>/subnets with its value. */
export async function etcdLeases(c: Cluster): Promise<Map<string, string>> {
  const out = await c.etcd.ctl('get', '--prefix', `${ETCD_PREFIX}/subnets`);
  const lines = out.split('\n');
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < lines.length; i += 2) if (lines[i]) m.set(lines[i]!, lines[i + 1]!);
  return m;
}

/** The key's etcd lease id (hex, as etcdctl wants it) or null when it has none / is missing. */
export async function keyLease(c: Cluster, key: string): Promise<string | null> {
  const text = await c.etcd.ctl('get', key, '-w', 'json');
  const m = /"lease":(\d+)/.exec(text);
  return m ? BigInt(m[1]!).toString(16) : null;
}

/** Remaining and granted TTL of an etcd lease (hex id). */
export async function leaseTTL(c: Cluster, id: string): Promise<{ ttl: number; granted: number }> {
  const j = JSON.parse(await c.etcd.ctl('lease', 'timetolive', id, '-w', 'json')) as { ttl: number; 'granted-ttl': number };
  return { ttl: j.ttl, granted: j['granted-ttl'] };
}

/** `etcdctl lease grant N`: the new lease id (hex). */
export async function grantLease(c: Cluster, seconds: number): Promise<string> {
  const out = await c.etcd.ctl('lease', 'grant', String(seconds));
  const m = /lease ([0-9a-f]+) granted/.exec(out);
  if (!m) throw new Error(`etcdctl lease grant: ${out}`);
  return m[1]!;
}

/** The current etcd revision. */
export async function etcdRevision(c: Cluster): Promise<number> {
  const j = JSON.parse(await c.etcd.ctl('get', `${ETCD_PREFIX}/config`, '-w', 'json')) as { header: { revision: number } };
  return j.header.revision;
}

/** A lease value in flanneld's format for a fake peer. */
export function leaseValue(backend: 'udp' | 'vxlan', publicIp: string, mac = '0a:58:0a:aa:bb:cc'): string {
  return backend === 'udp'
    ? `{"PublicIP":"${publicIp}","PublicIPv6":null}`
    : `{"PublicIP":"${publicIp}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;
}

/** 10.y.<third>.0/24 inside the cluster network, and its etcd key. */
export function fakeSubnet(c: Cluster, third: number): { subnet: string; key: string } {
  const y = c.network.split('.')[1];
  return { subnet: `10.${y}.${third}.0/24`, key: `${ETCD_PREFIX}/subnets/10.${y}.${third}.0-24` };
}

/** What linen should route to: every valid peer lease in etcd except the node's own subnet, "subnet via ip". */
export async function expectedRoutes(c: Cluster, own: ClusterNode): Promise<string[]> {
  const ownSubnet = own.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24');
  const out: string[] = [];
  for (const [k, v] of await etcdLeases(c)) {
    const m = /(\d+\.\d+\.\d+\.\d+)-(\d+)$/.exec(k);
    if (!m) continue;
    const subnet = `${m[1]}/${m[2]}`;
    if (subnet === ownSubnet) continue;
    try {
      const j = JSON.parse(v) as { PublicIP?: unknown };
      if (typeof j.PublicIP === 'string') out.push(`${subnet} via ${j.PublicIP}`);
    } catch { /* not a lease */ }
  }
  return out.sort();
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

// ---------------------------------------------------------------------------------------------
// iperf3 with intervals

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
  const server = startBounded(to.host.pod.ns, 'iperf3', ['-s', '-1', '-B', ip, '-p', String(port)], { timeoutMs });
  let serverGone = false;
  void server.done.then(() => { serverGone = true; });
  await waitForTcpListen(to.host.pod.ns, port, 5000, () => !serverGone);
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
export async function bothWays(c: Cluster, a: number, b: number): Promise<boolean> {
  const [x, y] = await Promise.all([c.reachable(a, b, 2), c.reachable(b, a, 2)]);
  return x && y;
}
