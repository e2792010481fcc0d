// npm run bench -- scale [--hosts N] [--backend vxlan|udp|host-gw] [--sample K] [--leases L] [--hostgw H] [--timeout S] [--out DIR]
//
// The control plane at scale: N hosts of the lab cluster (lab/cluster.ts: a namespace per host
// and per pod, one underlay bridge, etcd in the bridge namespace) start linend all at once
// against one empty etcd. Measured:
//   join       time from starting every linend until each routes every other node (from each
//              node's log: the "Peer … via" line that completed its set), then checked on
//              every node's /metrics (linen_peers = N - 1);
//   leases     create races lost (another node took the subnet between listing and create) and
//              whether every node still got a lease; leases in etcd, subnets held twice;
//   resources  etcd's CPU seconds (over the join and in all) and its RSS (now and peak), from
//              /proc of the etcd pid; RSS of every linend, and their CPU over the join;
//   reach      every pod pings the pods of K other hosts (a fixed sample, not all N² pairs);
//   leave      one node stops (SIGTERM: linend keeps its lease, as flanneld does) and its etcd
//              lease is revoked (what expiry does: the key goes); time until every other node
//              dropped its route (each node's "Peer … removed" line), checked on /metrics.
// Then everything is removed, also on Ctrl-C (lab/netns.ts teardownOnSignal).
// With --leases L, then the control plane alone at L leases (the etcd-scale reliability test's
// scenario, figures only): two hosts in 10.0.0.0/8; host 1 runs, L fake vxlan leases are
// written, time until host 1 routes them all; host 2 starts: time until ready and until it
// routes them all; RSS of both and of etcd.
// With --hostgw H, then host-gw at H peers: one host-gw node runs, H host-gw leases with PublicIPs
// on its own network are written; time until the kernel has all H routes (goal: within 2 s of
// the write), /healthz probed every 100 ms from before the write until well after (each must
// answer within 1 s); then 10 of the routes are deleted behind linend's back: time until the
// 10 s check put them back, and the main-thread time of that check and of the next one, which
// finds all H (linen_route_check_seconds; goal: under 50 ms).
//
// Results: <out>/<timestamp>-scale.json and <out>/latest-scale.json, and a table on the terminal.
// Exit status: 0 when every check held, 1 when one failed (the results are still written), 2 on
// bad usage, 130 when interrupted.

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { buildCluster, HEALTH_PORT, startHttpProber, type Cluster, type ClusterNode } from '../lab/cluster.js';
import { ETCD, putMany } from '../lab/etcd.js';
import { etcdLeases, hostGwFakeLeases, keyLease, leaseKey, WIDE_NETWORK, wideFakeLeases } from '../lab/leases.js';
import { leaseRaces, peerRemovedAt, routedCountAt } from '../lab/linend-log.js';
import { metrics } from '../lab/metrics.js';
import { leftovers, nsExec, sh, teardownOnSignal } from '../lab/netns.js';
import { mapPool } from '../lab/pool.js';
import { peakRssKiB, rssKiB } from '../lab/proc.js';
import { percentile, processCpuSeconds, systemCpuSeconds, type SystemCpu } from '../lab/traffic.js';
import { waitFor } from '../lab/wait.js';
import { repoRoot } from '../src/paths.js';
import { writeFileAtomic } from '../src/config/subnetenv.js';
import { fmtNum } from './format.js';
import { machineFacts, type MachineFacts } from './suite.js';

const USAGE = 'usage: npm run bench -- scale [--hosts N] [--backend vxlan|udp|host-gw] [--sample K] [--leases L] [--hostgw H] [--timeout S] [--out DIR]';

/** What one linend needs, with room (about 75 MB RSS each today), checked against MemAvailable before anything starts. */
const MIB_PER_NODE = 120;
/** Hosts' metrics scraped at once (each scrape is an `ip netns exec … curl`). */
const SCRAPE_WIDTH = 4;
const PING_WIDTH = 8;
/** The window over which CPU at rest is measured after the join. */
const IDLE_WINDOW_MS = 10_000;

/** Every figure of a scale run: the JSON's `figures` and the terminal table, in this order. */
export const SCALE_FIGURES = [
  { key: 'hosts', label: 'hosts (linend nodes)', unit: '', digits: 0 },
  { key: 'buildSec', label: 'build: namespaces, underlay, etcd', unit: 's', digits: 1 },
  { key: 'joinAllRoutedSec', label: 'join: every node routes every other', unit: 's', digits: 2 },
  { key: 'joinNodeP50Sec', label: 'join: a node routes all others, median', unit: 's', digits: 2 },
  { key: 'nodesRoutingAll', label: 'nodes with linen_peers = hosts-1 (/metrics)', unit: '', digits: 0 },
  { key: 'leaseRacesLost', label: 'lease create races lost', unit: '', digits: 0 },
  { key: 'leaseRacesResolved', label: 'lease races resolved (loser got a lease)', unit: '', digits: 0 },
  { key: 'nodesWithoutLease', label: 'nodes that gave up on a lease', unit: '', digits: 0 },
  { key: 'leasesInEtcd', label: 'leases in etcd', unit: '', digits: 0 },
  { key: 'subnetsHeldTwice', label: 'subnets held by two nodes', unit: '', digits: 0 },
  { key: 'etcdCpuSecJoin', label: 'etcd CPU over the join', unit: 's', digits: 2 },
  { key: 'etcdCpuSecTotal', label: 'etcd CPU in all (start to leave)', unit: 's', digits: 2 },
  { key: 'etcdRssMiB', label: 'etcd RSS after the join', unit: 'MiB', digits: 1 },
  { key: 'etcdPeakRssMiB', label: 'etcd peak RSS (VmHWM)', unit: 'MiB', digits: 1 },
  { key: 'linendRssTotalMiB', label: 'linend RSS, all nodes', unit: 'MiB', digits: 0 },
  { key: 'linendRssMeanMiB', label: 'linend RSS per node, mean', unit: 'MiB', digits: 1 },
  { key: 'linendRssMaxMiB', label: 'linend RSS per node, max', unit: 'MiB', digits: 1 },
  { key: 'linendCpuSecJoin', label: 'linend CPU over the join, all nodes', unit: 's', digits: 1 },
  { key: 'machineBusySecJoin', label: 'machine CPU busy over the join (all cores)', unit: 's', digits: 1 },
  { key: 'linendIdleCpuPct', label: 'linend CPU at rest after the join, all nodes', unit: '% of a core', digits: 1 },
  { key: 'etcdIdleCpuPct', label: 'etcd CPU at rest after the join', unit: '% of a core', digits: 1 },
  { key: 'machineIdleBusyPct', label: 'machine CPU busy at rest (every process)', unit: '% of a core', digits: 1 },
  { key: 'reachPairs', label: 'reachability: pod pairs pinged (sample)', unit: '', digits: 0 },
  { key: 'reachOk', label: 'reachability: pairs that answered', unit: '', digits: 0 },
  { key: 'leaveRouteDroppedMaxMs', label: 'leave: every other node dropped the route', unit: 'ms', digits: 1 },
  { key: 'leaveRouteDroppedP50Ms', label: 'leave: a node dropped the route, median', unit: 'ms', digits: 1 },
  { key: 'leaveRevokeCallMs', label: 'leave: etcdctl lease revoke call (in the above)', unit: 'ms', digits: 0 },
  { key: 'nodesDroppedRoute', label: 'nodes with linen_peers = hosts-2 after leave', unit: '', digits: 0 },
] as const;

export type ScaleFigureKey = (typeof SCALE_FIGURES)[number]['key'];

/** The control plane at --leases L: the JSON's `controlPlane` and the table's second part. */
export const LEASE_FIGURES = [
  { key: 'leases', label: 'fake leases written to etcd', unit: '', digits: 0 },
  { key: 'listingMB', label: 'their keys and values', unit: 'MB', digits: 1 },
  { key: 'writeSec', label: 'write (transactions of 128 puts, 8 at once)', unit: 's', digits: 2 },
  { key: 'followSec', label: 'a running node routes them all, after the write', unit: 's', digits: 2 },
  { key: 'joinReadySec', label: 'a new node: start to ready', unit: 's', digits: 2 },
  { key: 'joinRoutedSec', label: 'a new node: start to routing them all', unit: 's', digits: 2 },
  { key: 'rssJoinerMiB', label: 'RSS of the new node', unit: 'MiB', digits: 0 },
  { key: 'rssRunningMiB', label: 'RSS of the running node', unit: 'MiB', digits: 0 },
  { key: 'etcdRssMiB', label: 'etcd RSS', unit: 'MiB', digits: 0 },
] as const;

export type LeaseFigureKey = (typeof LEASE_FIGURES)[number]['key'];

/** host-gw at --hostgw H peers: the JSON's `hostGw` and the table's last part. */
export const HOSTGW_FIGURES = [
  { key: 'peers', label: 'host-gw leases written to etcd', unit: '', digits: 0 },
  { key: 'writeSec', label: 'write (transactions of 128 puts, 8 at once)', unit: 's', digits: 2 },
  { key: 'routedSec', label: 'every peer routed in the kernel, after the write (goal 2 s)', unit: 's', digits: 2 },
  { key: 'routedFromStartSec', label: 'every peer routed, from the start of the write', unit: 's', digits: 2 },
  { key: 'healthzProbes', label: '/healthz probes over the write and the routing', unit: '', digits: 0 },
  { key: 'healthzFailed', label: '/healthz probes without a 200 within 1 s', unit: '', digits: 0 },
  { key: 'healthzMaxMs', label: '/healthz slowest answer', unit: 'ms', digits: 0 },
  { key: 'restoredSec', label: '10 routes deleted: all put back after (check every 10 s)', unit: 's', digits: 1 },
  { key: 'checkRestoreMs', label: 'that check, putting 10 back: main-thread time', unit: 'ms', digits: 2 },
  { key: 'checkMs', label: 'a check of every route: main-thread time (goal 50 ms)', unit: 'ms', digits: 2 },
  { key: 'rssMiB', label: 'RSS of the host-gw node', unit: 'MiB', digits: 0 },
] as const;

export type HostGwFigureKey = (typeof HOSTGW_FIGURES)[number]['key'];

export interface ScaleNodeRecord {
  host: number;
  subnet: string | null;
  /** Seconds from the start of the join until this node routed every other node. */
  routedAllSec: number | null;
  racesLost: number;
  rssMiB: number | null;
  /** Milliseconds from the revoke until this node dropped the leaving node's route. */
  droppedLeaverMs: number | null;
}

export interface ScaleResults {
  schema: 1;
  kind: 'scale';
  startedAt: string;
  finishedAt: string;
  durationSec: number;
  argv: string[];
  machine: MachineFacts;
  settings: { hosts: number; backend: string; engine: 'native'; sample: number; leases: number; hostGwPeers?: number; timeoutSec: number; etcd: string; topology: string };
  /** Every SCALE_FIGURES key; null where that step failed or did not run. */
  figures: Record<ScaleFigureKey, number | null>;
  /** With --leases: every LEASE_FIGURES key (null where that step failed); else null. */
  controlPlane: Record<LeaseFigureKey, number | null> | null;
  /** With --hostgw: every HOSTGW_FIGURES key (null where that step failed); else absent or null. */
  hostGw?: Record<HostGwFigureKey, number | null> | null;
  nodes: ScaleNodeRecord[];
  leave: { host: number; subnet: string } | null;
  /** Reachability pairs that did not answer (twice), "from>to" host numbers. */
  unreachable: string[];
  /** What was left of the run's namespaces and devices after the teardown (empty when clean). */
  leftovers: { namespaces: string[]; links: string[] } | null;
  errors: string[];
  notes: string[];
}

function fail(msg: string): never {
  console.error(`bench scale: ${msg}\n${USAGE}`);
  process.exit(2);
}

function intOption(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) fail(`--${name} must be a whole number from ${min} to ${max}, got "${v}"`);
  return n;
}

function memAvailableMiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 1024 : Infinity;
}

/** CPU seconds the whole machine was busy (all cores; not idle, not waiting for I/O). */
const busy = (x: SystemCpu): number => x.user + x.nice + x.system + x.irq + x.softirq + x.steal;
const median = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50);
const mib = (kib: number): number => kib / 1024;
const ownSubnet = (n: ClusterNode): string | null => n.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.\d+\/(\d+)$/, '.0/$1') ?? null;

/** The K hosts host i pings: spread evenly over the others, the same in every run of this size. */
export function reachSample(i: number, hosts: number, k: number): number[] {
  const out: number[] = [];
  const step = hosts / (k + 1);
  for (let j = 1; out.length < Math.min(k, hosts - 1) && j <= hosts; j++) {
    const to = (i + Math.max(1, Math.round(j * step))) % hosts;
    if (to !== i && !out.includes(to)) out.push(to);
  }
  for (let to = (i + 1) % hosts; out.length < Math.min(k, hosts - 1); to = (to + 1) % hosts) if (to !== i && !out.includes(to)) out.push(to);
  return out;
}

/** linen_peers on every node in `nodes` (NaN where /metrics did not answer). */
async function peerCounts(nodes: ClusterNode[]): Promise<number[]> {
  return mapPool(nodes, SCRAPE_WIDTH, async (n) => (await metrics(n).catch(() => null))?.get('linen_peers') ?? NaN);
}

export function scaleTable(r: ScaleResults): string[] {
  const w = Math.max(...[...SCALE_FIGURES, ...LEASE_FIGURES, ...HOSTGW_FIGURES].map((f) => f.label.length)) + 2;
  const row = (f: { label: string; unit: string; digits: number }, v: number | null): string =>
    `  ${f.label.padEnd(w)}${fmtNum(v, f.digits).padStart(10)} ${f.unit}`.trimEnd();
  const lines = [`scale run: ${r.settings.hosts} hosts, linen ${r.settings.backend} (${r.settings.engine} engine), ${r.settings.etcd}`];
  for (const f of SCALE_FIGURES) lines.push(row(f, r.figures[f.key]));
  const cp = r.controlPlane;
  if (cp) {
    lines.push(`control plane at ${r.settings.leases} leases (2 hosts, linen vxlan, 10.0.0.0/8):`);
    for (const f of LEASE_FIGURES) lines.push(row(f, cp[f.key]));
  }
  const hg = r.hostGw;
  if (hg) {
    lines.push(`host-gw at ${r.settings.hostGwPeers ?? 0} peers (one host-gw node, 10.0.0.0/8):`);
    for (const f of HOSTGW_FIGURES) lines.push(row(f, hg[f.key]));
  }
  for (const e of r.errors) lines.push(`  FAILED: ${e.split('\n')[0]!.slice(0, 200)}`);
  return lines;
}

export async function runScale(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: false, strict: true,
      options: {
        hosts: { type: 'string' }, backend: { type: 'string' }, sample: { type: 'string' }, leases: { type: 'string' }, hostgw: { type: 'string' }, timeout: { type: 'string' },
        out: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail((e as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const hosts = intOption('hosts', values.hosts, 20, 2, 250);
  const backend = values.backend ?? 'vxlan';
  if (backend !== 'vxlan' && backend !== 'udp' && backend !== 'host-gw') fail(`--backend must be vxlan, udp or host-gw, not "${backend}"`);
  const sample = intOption('sample', values.sample, 3, 1, 249);
  const leaseCount = intOption('leases', values.leases, 0, 0, 65_000);
  const hostGwPeers = intOption('hostgw', values.hostgw, 0, 0, 65_000);
  const timeoutSec = intOption('timeout', values.timeout, Math.max(120, hosts * 3), 10, 3600);
  const outDir = values.out ?? join(repoRoot(), 'bench', 'results');
  if (process.getuid?.() !== 0) fail('needs root (network namespaces)');
  const needMiB = hosts * MIB_PER_NODE + 1024;
  if (memAvailableMiB() < needMiB) {
    console.error(`bench scale: ${hosts} hosts need about ${needMiB} MiB of memory (${MIB_PER_NODE} per linend and 1 GiB besides); ` +
      `${memAvailableMiB().toFixed(0)} MiB is available`);
    return 1;
  }

  const t0 = Date.now();
  const clock = (): string => {
    const s = Math.round((Date.now() - t0) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  };
  const log = (l: string): void => console.log(`[${clock()}] ${l}`);
  const figures = Object.fromEntries(SCALE_FIGURES.map((f) => [f.key, null])) as Record<ScaleFigureKey, number | null>;
  figures.hosts = hosts;
  const r: ScaleResults = {
    schema: 1, kind: 'scale', startedAt: new Date(t0).toISOString(), finishedAt: '', durationSec: 0, argv: ['scale', ...argv],
    machine: machineFacts(),
    settings: { hosts, backend, engine: 'native', sample, leases: leaseCount, ...(hostGwPeers > 0 ? { hostGwPeers } : {}), timeoutSec, etcd: sh(ETCD, ['--version']).split('\n')[0] ?? 'etcd', topology: '' },
    figures, controlPlane: null, nodes: [], leave: null, unreachable: [], leftovers: null, errors: [],
    notes: [
      'Every linend, etcd and the pings share this machine\'s cores: the join time is mostly start-up CPU (N Node processes at once).',
      'Join and leave times come from each linend\'s own log lines (klog, microseconds, the machine clock): "Peer … via" once its ' +
      'set of routes was complete, "Peer … removed" for the leaving node; /metrics (linen_peers) confirms both on every node.',
      'The leave time counts from just before `etcdctl lease revoke` is started, so it includes that process\'s start (leaveRevokeCallMs is the whole call).',
    ],
  };

  let cluster: Cluster | null = null;
  const teardown = async (): Promise<void> => {
    const c = cluster;
    cluster = null;
    if (c) await c.destroy();
  };
  const signals = teardownOnSignal(teardown, 'Interrupted: tearing down');
  const check = (): void => {
    if (signals.interrupted) throw new Error('interrupted');
  };

  console.log(`linen bench scale: ${hosts} hosts, ${r.machine.cpuModel}, ${r.machine.cores} cores, ${memAvailableMiB().toFixed(0)} MiB available, ` +
    `linen ${r.machine.linenCommit.slice(0, 12)}${r.machine.linenDirty ? '+dirty' : ''}`);
  try {
    log(`building ${hosts} hosts (2 namespaces each), the underlay bridge and etcd`);
    const c = await buildCluster({ hosts, backend, start: false });
    cluster = c;
    r.settings.topology = c.topo.id;
    figures.buildSec = (Date.now() - t0) / 1000;
    log(`cluster ${c.topo.id} built in ${figures.buildSec.toFixed(1)} s; etcd pid ${c.etcd.pid}`);
    check();
    const etcdPid = c.etcd.pid;
    if (etcdPid === null) throw new Error('etcd is not running');
    const etcdCpu0 = processCpuSeconds(etcdPid);

    // Join: every linend at once.
    const sys0 = systemCpuSeconds();
    const j0 = Date.now();
    await Promise.all(c.nodes.map((n) => n.start({ wait: false })));
    const pids = c.nodes.map((n) => n.process?.pid ?? 0);
    const linendCpu = (): number => pids.reduce((s, p) => s + processCpuSeconds(p), 0);
    log(`started ${hosts} linend; waiting until each routes the other ${hosts - 1} (at most ${timeoutSec} s)`);
    const routedAt: (number | null)[] = c.nodes.map(() => null);
    let lastReport = Date.now();
    let joined = -1;
    const subnets = c.nodes.map(() => null as string | null);
    try {
      joined = await waitFor(() => {
        check();
        for (const n of c.nodes) {
          if (!n.alive()) throw new Error(`linend on host ${n.index + 1} exited during the join:\n${n.log().slice(-2000)}`);
          routedAt[n.index] ??= routedCountAt(n.log(), hosts - 1);
        }
        if (Date.now() - lastReport > 10_000) {
          lastReport = Date.now();
          log(`  ${routedAt.filter((x) => x !== null).length} of ${hosts} nodes route every other`);
        }
        return routedAt.every((x) => x !== null);
      }, timeoutSec * 1000, 250);
    } finally {
      // Also when the join failed: what it cost and the races on the way say why.
      const sys1 = systemCpuSeconds();
      figures.etcdCpuSecJoin = processCpuSeconds(etcdPid) - etcdCpu0;
      figures.linendCpuSecJoin = c.nodes.every((n) => n.alive()) ? linendCpu() : null;
      figures.machineBusySecJoin = busy(sys1) - busy(sys0);
      const races = c.nodes.map((n) => leaseRaces(n.log()));
      figures.leaseRacesLost = races.reduce((s, x) => s + x.lost, 0);
      figures.nodesWithoutLease = races.filter((x) => x.gaveUp).length;
      c.nodes.forEach((n, i) => { subnets[i] = ownSubnet(n); });
      figures.leaseRacesResolved = races.reduce((s, x, i) => s + (subnets[i] !== null && !x.gaveUp ? x.lost : 0), 0);
      r.nodes = c.nodes.map((n, i) => ({
        host: n.index + 1, subnet: subnets[i] ?? null, routedAllSec: routedAt[i] === null ? null : (routedAt[i]! - j0) / 1000,
        racesLost: races[i]!.lost, rssMiB: null, droppedLeaverMs: null,
      }));
    }
    if (joined < 0) {
      throw new Error(`after ${timeoutSec} s only ${routedAt.filter((x) => x !== null).length} of ${hosts} nodes route every other ` +
        `(hosts still short: ${routedAt.map((x, i) => (x === null ? i + 1 : 0)).filter(Boolean).slice(0, 20).join(' ')})`);
    }
    const times = routedAt.map((x) => (x! - j0) / 1000);
    figures.joinAllRoutedSec = Math.max(...times);
    figures.joinNodeP50Sec = median(times);
    log(`every node routes every other ${figures.joinAllRoutedSec.toFixed(2)} s after the start (median node ${figures.joinNodeP50Sec.toFixed(2)} s); ` +
      `${figures.leaseRacesLost} lease race(s) lost`);

    const counts = await peerCounts(c.nodes);
    figures.nodesRoutingAll = counts.filter((x) => x === hosts - 1).length;
    const leases = await etcdLeases(c);
    figures.leasesInEtcd = leases.size;
    const held = subnets.filter((s): s is string => s !== null);
    figures.subnetsHeldTwice = held.length - new Set(held).size;
    if (figures.nodesRoutingAll !== hosts) r.errors.push(`/metrics: ${hosts - figures.nodesRoutingAll} node(s) do not report ${hosts - 1} peers: ${counts.join(' ')}`);
    if (figures.leasesInEtcd !== hosts || figures.subnetsHeldTwice !== 0) {
      r.errors.push(`${figures.leasesInEtcd} leases in etcd for ${hosts} hosts, ${figures.subnetsHeldTwice} subnet(s) held twice`);
    }
    check();

    // Resources after the join.
    for (const n of c.nodes) n.attachPod();
    const rss = pids.map((p) => mib(rssKiB(p)));
    r.nodes.forEach((x, i) => { x.rssMiB = rss[i]!; });
    figures.linendRssTotalMiB = rss.reduce((s, x) => s + x, 0);
    figures.linendRssMeanMiB = figures.linendRssTotalMiB / hosts;
    figures.linendRssMaxMiB = Math.max(...rss);
    figures.etcdRssMiB = mib(rssKiB(etcdPid));
    log(`linend RSS ${figures.linendRssTotalMiB.toFixed(0)} MiB in all (${figures.linendRssMeanMiB.toFixed(1)} per node); etcd ${figures.etcdRssMiB.toFixed(1)} MiB`);

    // CPU at rest: timers (lease renewal checks, --iptables-resync) and watches, nothing else.
    const idle0 = { linend: linendCpu(), etcd: processCpuSeconds(etcdPid), machine: busy(systemCpuSeconds()), at: Date.now() };
    await sleep(IDLE_WINDOW_MS);
    const idleSec = (Date.now() - idle0.at) / 1000;
    figures.machineIdleBusyPct = (100 * (busy(systemCpuSeconds()) - idle0.machine)) / idleSec;
    figures.linendIdleCpuPct = (100 * (linendCpu() - idle0.linend)) / idleSec;
    figures.etcdIdleCpuPct = (100 * (processCpuSeconds(etcdPid) - idle0.etcd)) / idleSec;
    log(`at rest over ${idleSec.toFixed(0)} s: linend ${figures.linendIdleCpuPct.toFixed(1)} % of a core (all nodes), etcd ${figures.etcdIdleCpuPct.toFixed(1)} %, ` +
      `the machine ${figures.machineIdleBusyPct.toFixed(1)} %`);
    check();

    // Reachability over a fixed sample of pairs; a pair that does not answer is tried once more.
    const pairs = c.nodes.flatMap((n) => reachSample(n.index, hosts, sample).map((to) => [n.index, to] as const));
    log(`reachability: ${pairs.length} pod pairs (each host to ${Math.min(sample, hosts - 1)} others)`);
    const ok = await mapPool(pairs, PING_WIDTH, async ([a, b]) => (await c.reachable(a, b, 2)) || c.reachable(a, b, 2));
    figures.reachPairs = pairs.length;
    figures.reachOk = ok.filter(Boolean).length;
    r.unreachable = pairs.filter((_, i) => !ok[i]).map(([a, b]) => `${a + 1}>${b + 1}`);
    if (r.unreachable.length) r.errors.push(`${r.unreachable.length} pod pair(s) unreachable: ${r.unreachable.slice(0, 20).join(' ')}`);
    check();

    // Leave: the last host stops, its lease goes as on expiry.
    const leaver = c.nodes[hosts - 1]!;
    const subnet = subnets[hosts - 1];
    if (!subnet) throw new Error(`host ${hosts} has no subnet`);
    r.leave = { host: hosts, subnet };
    const key = leaseKey(subnet);
    const lease = await keyLease(c, key);
    await leaver.stop('SIGTERM');
    const l0 = Date.now();
    await (lease === null ? c.etcd.ctl('del', key) : c.etcd.ctl('lease', 'revoke', lease));
    figures.leaveRevokeCallMs = Date.now() - l0;
    const others = c.nodes.slice(0, hosts - 1);
    const droppedAt: (number | null)[] = others.map(() => null);
    const dropped = await waitFor(() => {
      check();
      others.forEach((n, i) => { droppedAt[i] ??= peerRemovedAt(n.log(), subnet); });
      return droppedAt.every((x) => x !== null);
    }, 60_000, 50);
    others.forEach((_, i) => { r.nodes[i]!.droppedLeaverMs = droppedAt[i] === null ? null : droppedAt[i]! - l0; });
    if (dropped < 0) throw new Error(`60 s after the revoke, ${droppedAt.filter((x) => x === null).length} node(s) still route ${subnet}`);
    const lat = droppedAt.map((x) => x! - l0);
    figures.leaveRouteDroppedMaxMs = Math.max(...lat);
    figures.leaveRouteDroppedP50Ms = median(lat);
    const after = await peerCounts(others);
    figures.nodesDroppedRoute = after.filter((x) => x === hosts - 2).length;
    if (figures.nodesDroppedRoute !== hosts - 1) r.errors.push(`/metrics after the leave: ${after.join(' ')} peers (want ${hosts - 2})`);
    log(`host ${hosts} left (${subnet}): every other node dropped its route ${figures.leaveRouteDroppedMaxMs.toFixed(1)} ms after the revoke ` +
      `(median ${figures.leaveRouteDroppedP50Ms.toFixed(1)} ms)`);
    figures.etcdCpuSecTotal = processCpuSeconds(etcdPid) - etcdCpu0;
    figures.etcdPeakRssMiB = mib(peakRssKiB(etcdPid));
  } catch (e) {
    if (signals.interrupted) return new Promise<number>(() => undefined); // the signal handler tears down and exits
    r.errors.push((e as Error).message);
    log(`FAILED: ${(e as Error).message.split('\n')[0]}`);
  }

  log('tearing down');
  const id = r.settings.topology;
  await teardown();
  if (id) {
    r.leftovers = leftovers(id);
    if (r.leftovers.namespaces.length + r.leftovers.links.length) r.errors.push(`left after teardown: ${JSON.stringify(r.leftovers)}`);
  }
  /** One step after the scale run on a 2-host cluster of its own (in WIDE_NETWORK): its failure
   * is recorded, and its cluster torn down in any case. */
  const extraStep = async (name: string, backend: 'vxlan' | 'host-gw', body: (c: Cluster) => Promise<void>): Promise<void> => {
    try {
      const c = await buildCluster({ hosts: 2, backend, start: false, config: { ...WIDE_NETWORK, Backend: { Type: backend } } });
      cluster = c;
      await body(c);
    } catch (e) {
      if (signals.interrupted) await new Promise<never>(() => undefined); // the signal handler tears down and exits
      r.errors.push(`${name}: ${(e as Error).message}`);
      log(`${name} FAILED: ${(e as Error).message.split('\n')[0]}`);
    }
    const stepId = cluster?.topo.id;
    await teardown();
    if (stepId) {
      const left = leftovers(stepId);
      if (left.namespaces.length + left.links.length) r.errors.push(`left after the ${name} teardown: ${JSON.stringify(left)}`);
    }
  };
  if (leaseCount > 0) {
    const cp = Object.fromEntries(LEASE_FIGURES.map((f) => [f.key, null])) as Record<LeaseFigureKey, number | null>;
    r.controlPlane = cp;
    log(`control plane: ${leaseCount} leases, 2 hosts`);
    await extraStep('control plane', 'vxlan', (c) => leaseScale(c, leaseCount, cp, log, check));
  }
  if (hostGwPeers > 0) {
    const hg = Object.fromEntries(HOSTGW_FIGURES.map((f) => [f.key, null])) as Record<HostGwFigureKey, number | null>;
    r.hostGw = hg;
    log(`host-gw: ${hostGwPeers} peers, one host-gw node`);
    await extraStep('host-gw', 'host-gw', (c) => hostGwScale(c, hostGwPeers, hg, log, check));
  }
  r.finishedAt = new Date().toISOString();
  r.durationSec = (Date.now() - t0) / 1000;

  mkdirSync(outDir, { recursive: true });
  const text = JSON.stringify(r, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n';
  const json = join(outDir, `${r.startedAt.replace(/[:]/g, '-').replace(/\..*$/, '')}-scale.json`);
  await writeFileAtomic(json, text);
  await writeFileAtomic(join(outDir, 'latest-scale.json'), text);
  console.log('');
  for (const l of scaleTable(r)) console.log(l);
  console.log('');
  console.log(`results: ${json}`);
  console.log(`         ${join(outDir, 'latest-scale.json')}`);
  console.log(`total time: ${r.durationSec.toFixed(0)} s`);
  return r.errors.length ? 1 : 0;
}

/** The control plane at `count` leases on a 2-host cluster in WIDE_NETWORK (see the top of this file). */
async function leaseScale(c: Cluster, count: number, cp: Record<LeaseFigureKey, number | null>, log: (l: string) => void, check: () => void): Promise<void> {
  const [a, b] = c.nodes as [ClusterNode, ClusterNode];
  await a.start();
  const fakes = wideFakeLeases(count, ownSubnet(a) ?? undefined);
  const peersOf = async (n: ClusterNode): Promise<number> => (await metrics(n).catch(() => null))?.get('linen_peers') ?? NaN;
  cp.leases = fakes.length;
  cp.listingMB = fakes.reduce((s, f) => s + f.key.length + f.value.length, 0) / 1e6;
  const w0 = Date.now();
  putMany(c.topo.bridgeNs!, [c.etcdEndpoint], fakes.map((f) => [f.key, f.value]));
  const w1 = Date.now();
  cp.writeSec = (w1 - w0) / 1000;
  check();
  if (await waitFor(async () => (await peersOf(a)) === fakes.length, 120_000, 250) < 0) throw new Error(`host 1 does not route ${fakes.length} peers after 120 s`);
  cp.followSec = (Date.now() - w1) / 1000;
  check();
  const j0 = Date.now();
  await b.start({ wait: false });
  const ready = await waitFor(async () => {
    if (!b.alive()) throw new Error(`the joining node exited:\n${b.log().slice(-2000)}`);
    return (await b.http('/readyz').catch(() => ({ status: 0 }))).status === 200;
  }, 120_000, 100);
  if (ready < 0) throw new Error('the joining node is not ready after 120 s');
  cp.joinReadySec = (Date.now() - j0) / 1000;
  if (await waitFor(async () => (await peersOf(b)) === fakes.length + 1, 120_000, 250) < 0) throw new Error(`host 2 does not route ${fakes.length + 1} peers after 120 s`);
  cp.joinRoutedSec = (Date.now() - j0) / 1000;
  cp.rssJoinerMiB = mib(rssKiB(b.process!.pid!));
  cp.rssRunningMiB = mib(rssKiB(a.process!.pid!));
  cp.etcdRssMiB = mib(rssKiB(c.etcd.pid!));
  log(`control plane: ${fakes.length} leases written in ${cp.writeSec.toFixed(1)} s, followed in ${cp.followSec.toFixed(1)} s; ` +
    `a new node ready in ${cp.joinReadySec.toFixed(1)} s, routing them all in ${cp.joinRoutedSec.toFixed(1)} s (RSS ${cp.rssJoinerMiB.toFixed(0)} MiB)`);
}

/** How many /healthz probes (100 ms apart, each bounded by 1 s): from before the write until after the routing. */
const HEALTHZ_PROBES = 100;

/** host-gw at `count` peers, on the first host of a 2-host cluster (the topology's least). */
async function hostGwScale(c: Cluster, count: number, hg: Record<HostGwFigureKey, number | null>, log: (l: string) => void, check: () => void): Promise<void> {
  const a = c.nodes[0]!;
  const h = c.topo.hosts[0]!;
  await a.start();
  const fakes = hostGwFakeLeases(count, c.topo.underlayNet, ownSubnet(a) ?? undefined);
  hg.peers = fakes.length;
  const routed = (): number => nsExec(h.ns, 'ip', ['-4', 'route', 'show', 'dev', h.underlayDev]).split('\n').filter((l) => / via /.test(l) && l.startsWith('10.')).length;
  const gauge = async (name: string): Promise<number> => (await metrics(a).catch(() => null))?.get(name) ?? NaN;
  const prober = startHttpProber(h.ns, HEALTH_PORT, '/healthz', HEALTHZ_PROBES);
  await sleep(500);
  const w0 = Date.now();
  putMany(c.topo.bridgeNs!, [c.etcdEndpoint], fakes.map((f) => [f.key, f.value]));
  const w1 = Date.now();
  hg.writeSec = (w1 - w0) / 1000;
  check();
  if (await waitFor(() => routed() === fakes.length, 120_000, 20) < 0) throw new Error(`host 1 has ${routed()} of ${fakes.length} routes after 120 s`);
  const w2 = Date.now();
  hg.routedSec = (w2 - w1) / 1000;
  hg.routedFromStartSec = (w2 - w0) / 1000;
  const probes = await prober.done;
  hg.healthzProbes = probes.length;
  hg.healthzFailed = probes.filter((p) => p.status !== 200).length;
  hg.healthzMaxMs = Math.max(0, ...probes.map((p) => p.sec * 1000));
  check();
  const restored0 = await gauge('linen_routes_restored_total');
  for (let i = 1; i <= 10; i++) nsExec(h.ns, 'ip', ['route', 'del', fakes[i]!.route.split(' ')[0]!]);
  const d0 = Date.now();
  if (await waitFor(async () => (await gauge('linen_routes_restored_total')) - restored0 >= 10 && routed() === fakes.length, 60_000, 100) < 0) {
    throw new Error('the 10 deleted routes are not back after 60 s');
  }
  hg.restoredSec = (Date.now() - d0) / 1000;
  hg.checkRestoreMs = (await gauge('linen_route_check_seconds')) * 1000;
  await sleep(10_500); // the next check, which finds every route
  hg.checkMs = (await gauge('linen_route_check_seconds')) * 1000;
  hg.rssMiB = mib(rssKiB(a.process!.pid!));
  log(`host-gw: ${fakes.length} leases written in ${hg.writeSec.toFixed(1)} s, all routed ${hg.routedSec.toFixed(2)} s after; ` +
    `/healthz ${hg.healthzProbes - hg.healthzFailed}/${hg.healthzProbes} (slowest ${hg.healthzMaxMs.toFixed(0)} ms); ` +
    `check ${hg.checkMs.toFixed(2)} ms of main thread (${hg.checkRestoreMs.toFixed(2)} ms putting 10 back after ${hg.restoredSec.toFixed(1)} s)`);
}
