// The benchmark suite: every contender, one after another, on a fresh two-host topology
// (lab/topology.ts), measured the same way:
//
//   - TCP throughput, 1 stream and 4 streams (iperf3 -J, congestion control pinned to cubic);
//   - UDP packet rate at 64- and 1400-byte payloads with loss (iperf3 -u, unlimited bitrate);
//   - round-trip latency p50/p99 over a burst of pings;
//   - CPU seconds per gigabit over the single-stream TCP run: the linend processes for linen,
//     machine-wide softirq+sys time for the kernel paths (labelled as such in the results).
//
// Each measurement is repeated `runs` times; the results hold every run, the median and the
// spread (min/max), and each contender's ratio to kernel VXLAN measured in the same run.
// A contender that fails to start is recorded as failed with its error, and the suite goes on.

import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  hostGwContender, kernelVxlanContender, refForwarderContender, startContender, wireguardGoContender, type Contender, type ContenderHandle,
} from './contenders.js';
import { linenContender } from './linen.js';
import { nsExec, sh } from '../lab/netns.js';
import { buildTopology, type Topology } from '../lab/topology.js';
import { udpLossFreeRate, type RateSearchResult } from '../lab/rate-search.js';
import { tcpRr, type RrResult } from '../lab/rr.js';
import { addClusterIpService, serviceAddressFor } from '../lab/service.js';
import {
  CpuMeter, iperfTcp, iperfUdp, memUsedMiB, ping, type CpuUsage, type IperfTcpResult, type IperfUdpResult, type PingResult,
} from '../lab/traffic.js';

/** iperf3's port (the lab's default), which the emulated service forwards. */
const IPERF_PORT = 5201;

// ---------------------------------------------------------------------------------------------
// Metrics

export type MetricKey =
  | 'tcp1Gbps' | 'tcp4Gbps' | 'tcp8Gbps' | 'tcp1ReverseGbps' | 'tcpBidirGbps'
  | 'svcTcp1Gbps' | 'svcTcp8Gbps' | 'svcUdp1400Pps'
  | 'udp64Pps' | 'udp64LossPct' | 'udp64JitterMs' | 'udp64LossFreePps'
  | 'udp1400Pps' | 'udp1400LossPct' | 'udp1400JitterMs' | 'udp1400LossFreePps'
  | 'rttP50Ms' | 'rttP99Ms' | 'rrTps'
  | 'cpuPerGbit' | 'kernelCpuPerGbit' | 'tcpRetransmits'
  | 'dataplaneRssMiB' | 'idleCpuPct' | 'idleMemMiB';

export interface MetricDef {
  key: MetricKey;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  /** Whether a ratio to kernel VXLAN is meaningful (not for loss percentages or counts, often 0). */
  ratio: boolean;
  /** The report's chart this metric is drawn in (bench/charts.ts). */
  chart: 'tcp' | 'service' | 'udp' | 'lossfree' | 'loss' | 'latency' | 'rr' | 'cpu' | 'resources';
}

export const METRICS: readonly MetricDef[] = [
  { key: 'tcp1Gbps', label: 'TCP, 1 stream', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'tcp' },
  { key: 'tcp4Gbps', label: 'TCP, 4 streams', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'tcp' },
  { key: 'tcp8Gbps', label: 'TCP, 8 streams', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'tcp' },
  { key: 'tcp1ReverseGbps', label: 'TCP, 1 stream, reverse (-R)', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'tcp' },
  { key: 'tcpBidirGbps', label: 'TCP, bidirectional (--bidir), both ways', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'tcp' },
  { key: 'svcTcp1Gbps', label: 'pod-to-service TCP, 1 stream', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'service' },
  { key: 'svcTcp8Gbps', label: 'pod-to-service TCP, 8 streams', unit: 'Gbit/s', better: 'higher', ratio: true, chart: 'service' },
  { key: 'svcUdp1400Pps', label: 'pod-to-service UDP 1400 B, received', unit: 'packets/s', better: 'higher', ratio: true, chart: 'service' },
  { key: 'udp64Pps', label: 'UDP 64 B, received (unlimited rate)', unit: 'packets/s', better: 'higher', ratio: true, chart: 'udp' },
  { key: 'udp64LossPct', label: 'UDP 64 B, loss (unlimited rate)', unit: '%', better: 'lower', ratio: false, chart: 'loss' },
  { key: 'udp64JitterMs', label: 'UDP 64 B, jitter (unlimited rate)', unit: 'ms', better: 'lower', ratio: true, chart: 'loss' },
  { key: 'udp64LossFreePps', label: 'UDP 64 B, highest rate with < 1 % loss', unit: 'packets/s', better: 'higher', ratio: true, chart: 'lossfree' },
  { key: 'udp1400Pps', label: 'UDP 1400 B, received (unlimited rate)', unit: 'packets/s', better: 'higher', ratio: true, chart: 'udp' },
  { key: 'udp1400LossPct', label: 'UDP 1400 B, loss (unlimited rate)', unit: '%', better: 'lower', ratio: false, chart: 'loss' },
  { key: 'udp1400JitterMs', label: 'UDP 1400 B, jitter (unlimited rate)', unit: 'ms', better: 'lower', ratio: true, chart: 'loss' },
  { key: 'udp1400LossFreePps', label: 'UDP 1400 B, highest rate with < 1 % loss', unit: 'packets/s', better: 'higher', ratio: true, chart: 'lossfree' },
  { key: 'rttP50Ms', label: 'RTT p50 (ping)', unit: 'ms', better: 'lower', ratio: true, chart: 'latency' },
  { key: 'rttP99Ms', label: 'RTT p99 (ping)', unit: 'ms', better: 'lower', ratio: true, chart: 'latency' },
  { key: 'rrTps', label: 'TCP request/response, 1 connection', unit: 'transactions/s', better: 'higher', ratio: true, chart: 'rr' },
  { key: 'cpuPerGbit', label: 'all CPU of the machine per Gbit (TCP, 1 stream)', unit: 'CPU s/Gbit', better: 'lower', ratio: true, chart: 'cpu' },
  { key: 'kernelCpuPerGbit', label: 'kernel CPU per Gbit (softirq+sys, machine-wide)', unit: 'CPU s/Gbit', better: 'lower', ratio: true, chart: 'cpu' },
  { key: 'tcpRetransmits', label: 'TCP retransmits (1 stream run)', unit: 'segments', better: 'lower', ratio: false, chart: 'resources' },
  { key: 'dataplaneRssMiB', label: 'RSS of the forwarding processes, all nodes (after load)', unit: 'MiB', better: 'lower', ratio: false, chart: 'resources' },
  { key: 'idleCpuPct', label: 'idle baseline: machine CPU busy, no traffic', unit: '% of all cores', better: 'lower', ratio: true, chart: 'resources' },
  { key: 'idleMemMiB', label: 'idle baseline: machine memory used, no traffic', unit: 'MiB', better: 'lower', ratio: true, chart: 'resources' },
];

/**
 * What cpuPerGbit counts: the same for every contender (schema 2). Schema 1 charged linen its
 * linend processes and the kernel paths softirq+sys; the per-process split is detail now.
 */
export type CpuBasis = 'machine-wide busy CPU (user+nice+system+irq+softirq+steal, every process)';
export const CPU_BASIS: CpuBasis = 'machine-wide busy CPU (user+nice+system+irq+softirq+steal, every process)';

export interface Summary {
  median: number;
  min: number;
  max: number;
  /** Runs that produced a value. */
  n: number;
  values: number[];
}

/** Median and spread of the finite values; null when there are none. */
export function summarize(values: readonly number[]): Summary | null {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return null;
  const s = [...v].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length, values: [...v] };
}

// ---------------------------------------------------------------------------------------------
// Results

/**
 * Where the machine's CPU went over a run, seconds (summed over all cores): the split behind
 * cpuPerGbit. dataplane: the contender's own processes (linend; 0 for the kernel paths), by
 * thread name in dataplaneThreads; iperf3: both ends, from iperf3's own report; softirq and irq
 * from /proc/stat; rest: busy minus those (kernel threads, other processes); idle: the cores'
 * unused time. The parts overlap: without IRQ time accounting the kernel charges softirq work
 * done in a process's context to that process too (iperf3's and linend's system time) and to
 * softirq in /proc/stat, so rest goes negative by about that overlap. busy has no overlap.
 */
export interface CpuSplit {
  wallSeconds: number; cores: number; busy: number;
  dataplane: number; dataplaneThreads: Record<string, number>; iperf3: number; softirq: number; irq: number; rest: number; idle: number;
}
export interface TcpRun {
  gbps: number; senderGbps: number; retransmits: number; bytesReceived: number; seconds: number;
  streams: number; congestion: string; iperfCpu: { local: number; remote: number }; cpu: CpuUsage; cpuSplit: CpuSplit;
  direction: 'forward' | 'reverse' | 'bidir'; reverseGbps?: number; target: 'pod' | 'service';
  /** iperf3's JSON report as it printed it. */
  raw: unknown;
}
export interface UdpRun {
  payloadBytes: number; sentPackets: number; receivedPackets: number; lostPackets: number; lossPercent: number;
  packetsPerSecond: number; sentPacketsPerSecond: number; gbps: number; jitterMs: number; seconds: number;
  target: 'pod' | 'service'; cpu: CpuUsage;
  raw: unknown;
}
export interface RrRun extends RrResult {}
/** The contender at rest (after its warm-up, before the run's traffic). */
export interface IdleRun {
  seconds: number;
  /** Machine CPU by kind, percent of all cores (as sar and knb report it). */
  cpuPct: { total: number; user: number; nice: number; system: number; iowait: number; steal: number; irq: number; softirq: number };
  /** The contender's processes' CPU over the window, seconds. */
  dataplaneCpuSeconds: number;
  memUsedMiB: number;
  rss: ProcessMemory[];
}
/** A process's memory; one that has exited reads 0 with exited: true (it holds nothing). */
export interface ProcessMemory { pid: number; rssMiB: number; hwmMiB: number; exited?: boolean }
export interface PingRun {
  count: number; transmitted: number; received: number; lossPercent: number;
  rttMs: PingResult['rttMs'];
}

export interface RunRecord {
  run: number;
  idle?: IdleRun;
  tcp1?: TcpRun;
  tcp4?: TcpRun;
  tcp8?: TcpRun;
  tcp1Reverse?: TcpRun;
  tcpBidir?: TcpRun;
  udp64?: UdpRun;
  udp1400?: UdpRun;
  udp64Search?: RateSearchResult;
  udp1400Search?: RateSearchResult;
  ping?: PingRun;
  rr?: RrRun;
  /** The forwarding processes after the run's TCP and UDP load (empty for kernel paths). */
  rss?: ProcessMemory[];
  svcTcp1?: TcpRun;
  svcTcp8?: TcpRun;
  svcUdp1400?: UdpRun;
  /** Per-run values of every metric (NaN where the measurement failed). */
  values: Record<MetricKey, number>;
  /** Measurements of this run that failed, with their error. */
  errors: { step: string; error: string }[];
}

export interface ContenderResult {
  name: string;
  description: string;
  tunnelMtu: number;
  status: 'ok' | 'failed';
  /** Why the contender failed (it could not start, or no measurement succeeded). */
  error?: string;
  /** Measurement errors (the contender may still be 'ok' when some runs worked). */
  errors: { run: number; step: string; error: string }[];
  info: Record<string, unknown>;
  cpuBasis: CpuBasis;
  metrics: Record<MetricKey, Summary | null>;
  /** median ÷ kernel-vxlan's median, per metric (null: not meaningful or no reference). */
  ratioToKernelVxlan: Record<MetricKey, number | null>;
  runs: RunRecord[];
  seconds: number;
}

export interface MachineFacts {
  kernel: string;
  cpuModel: string;
  /** "cpu MHz" of /proc/cpuinfo (current clock of the first CPU; a VM reports its nominal one). */
  cpuMHz: number;
  cores: number;
  memTotalMiB: number;
  /** systemd-detect-virt (e.g. kvm, none), or the hypervisor flag of /proc/cpuinfo. */
  virtualization: string;
  /** ethtool -k of the simulated underlay (a veth in the first contender's topology): on/off per feature. */
  underlayOffloads?: Record<string, string>;
  node: string;
  linenCommit: string;
  linenDirty: boolean;
  iperf3: string;
  defaultCongestion: string;
  loadavgAtStart: number[];
  /** Filled in when the run ends. */
  loadavgAtEnd?: number[];
  hostname: string;
}

export interface SuiteSettings {
  quick: boolean;
  runs: number;
  /** iperf3 seconds per run of the main figures (TCP 1/4/8 streams, UDP at unlimited rate). */
  durationSec: number;
  /** Seconds of the secondary runs: reverse, bidirectional, pod-to-service, request/response. */
  shortSec: number;
  /** Seconds of each probe of the UDP loss-free rate search, and the most probes per size. */
  searchStepSec: number;
  searchSteps: number;
  /** Seconds of the idle baseline (no traffic) per run. */
  idleSec: number;
  /** Loss below which a UDP rate passes, percent. */
  lossFreeMaxLossPct: number;
  /**
   * The runs beyond TCP at 1/4/8 streams, UDP at an unlimited rate and ping: the idle baseline,
   * reverse and bidirectional TCP, the UDP loss-free search, request/response, pod to service.
   * The scaling runs turn them off.
   */
  secondary: boolean;
  tcpStreams: number[];
  congestion: string;
  udpPayloads: number[];
  /** iperf3 -b for the UDP runs ("0" = unlimited). */
  udpBitrate: string;
  /**
   * iperf3 -w for the UDP runs (socket buffers at both ends). With the default ~208 KB the
   * receiving iperf3 drops packets whenever it is descheduled on this shared 2-core machine,
   * on every path alike; 4 MB leaves the loss to the dataplane.
   */
  udpSocketBuffer: string;
  pingCount: number;
  pingIntervalSec: number;
  /** Request/response size, bytes. */
  rrBytes: number;
  underlayMtu: number;
  linenQueues: number;
  reference: string;
  only?: string[];
}

export interface SuiteResults {
  settings: SuiteSettings;
  contenders: ContenderResult[];
}

// ---------------------------------------------------------------------------------------------
// Machine facts

import { repoRoot } from '../src/paths.js';

/** A command's trimmed stdout, or '' when it fails. */
function tryRun(cmd: string, args: string[], cwd?: string): string {
  try {
    return sh(cmd, args, { cwd, timeout: 10_000 }).trim();
  } catch {
    return '';
  }
}

export function machineFacts(): MachineFacts {
  const root = repoRoot();
  let cpuModel = cpus()[0]?.model ?? '';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpuModel = m[1]!.trim();
  } catch { /* keep os.cpus() */ }
  let cpuMHz = NaN;
  let virtualization = tryRun('systemd-detect-virt', []);
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    cpuMHz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1] ?? NaN);
    if (!virtualization) virtualization = /^flags\s*:.*\bhypervisor\b/m.test(info) ? 'a hypervisor (cpuinfo flag)' : 'none found';
  } catch { /* unknown */ }
  let memTotalMiB = NaN;
  try { memTotalMiB = Number(/^MemTotal:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? NaN) / 1024; } catch { /* unknown */ }
  let defaultCongestion = '';
  try { defaultCongestion = readFileSync('/proc/sys/net/ipv4/tcp_congestion_control', 'utf8').trim(); } catch { /* unknown */ }
  return {
    kernel: tryRun('uname', ['-r']),
    cpuModel,
    cpuMHz,
    cores: cpus().length,
    memTotalMiB: Math.round(memTotalMiB),
    virtualization,
    node: process.version,
    linenCommit: tryRun('git', ['rev-parse', 'HEAD'], root) || 'unknown',
    linenDirty: tryRun('git', ['status', '--porcelain', '--untracked-files=no'], root) !== '',
    iperf3: tryRun('iperf3', ['--version']).split('\n')[0] ?? '',
    defaultCongestion,
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    hostname: tryRun('hostname', []),
  };
}

// ---------------------------------------------------------------------------------------------
// Contenders

export const REFERENCE = 'kernel-vxlan';

/** Every contender of the suite, in report order. */
export function suiteContenders(underlayMtu = 1500, queues = 1): Contender[] {
  return [
    hostGwContender({ underlayMtu }),
    linenContender({ mode: 'host-gw', underlayMtu, queues }),
    kernelVxlanContender({ underlayMtu }),
    refForwarderContender({ underlayMtu }),
    refForwarderContender({ underlayMtu, flanneld: true }),
    linenContender({ mode: 'udp', offload: 'on', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', offload: 'on', underlayMtu, queues }),
    linenContender({ mode: 'udp', offload: 'off', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', offload: 'off', underlayMtu, queues }),
    linenContender({ mode: 'udp', engine: 'dgram', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', engine: 'dgram', underlayMtu, queues }),
    wireguardGoContender({ underlayMtu }),
    // One worker: a session's send counter is one sequence.
    linenContender({ mode: 'wireguard', offload: 'on', underlayMtu, queues: 1 }),
  ];
}

// ---------------------------------------------------------------------------------------------
// Running

export interface SuiteOptions {
  quick?: boolean;
  runs?: number;
  durationSec?: number;
  /** Contender names to run (the reference is added unless noReference). */
  only?: string[];
  noReference?: boolean;
  pingCount?: number;
  pingIntervalSec?: number;
  udpBitrate?: string;
  underlayMtu?: number;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Contenders to use instead of suiteContenders() (tests). */
  contenders?: Contender[];
}

const NAN_VALUES = (): Record<MetricKey, number> =>
  Object.fromEntries(METRICS.map((m) => [m.key, NaN])) as Record<MetricKey, number>;

function errText(e: unknown): string {
  const s = e instanceof Error ? e.message : String(e);
  return s.length > 4000 ? `${s.slice(0, 4000)}…` : s;
}

const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/** The CPU split of a run (see CpuSplit); iperf3's share from its own utilisation report. */
export function cpuSplit(cpu: CpuUsage, iperfCpu: { local: number; remote: number }, seconds: number): CpuSplit {
  const iperf3 = ((Number.isFinite(iperfCpu.local) ? iperfCpu.local : 0) + (Number.isFinite(iperfCpu.remote) ? iperfCpu.remote : 0)) / 100 * seconds;
  const dataplane = cpu.processTotal;
  const { busy, softirq, irq, idle } = cpu.system;
  return {
    wallSeconds: cpu.wallSeconds, cores: cpu.cores, busy, dataplane, dataplaneThreads: cpu.threadSeconds, iperf3, softirq, irq,
    rest: busy - dataplane - iperf3 - softirq - irq, idle,
  };
}

function tcpRun(r: IperfTcpResult, direction: TcpRun['direction'], target: TcpRun['target']): TcpRun {
  return {
    gbps: r.gbps, senderGbps: r.senderGbps, retransmits: r.retransmits, bytesReceived: r.bytesReceived,
    seconds: r.seconds, streams: r.streams, congestion: r.congestion, iperfCpu: r.iperfCpu, cpu: r.cpu,
    cpuSplit: cpuSplit(r.cpu, r.iperfCpu, r.seconds), direction, ...(r.reverseGbps !== undefined ? { reverseGbps: r.reverseGbps } : {}),
    target, raw: r.raw,
  };
}

function udpRun(r: IperfUdpResult, target: UdpRun['target']): UdpRun {
  return {
    payloadBytes: r.payloadBytes, sentPackets: r.sentPackets, receivedPackets: r.receivedPackets, lostPackets: r.lostPackets,
    lossPercent: r.lossPercent, packetsPerSecond: r.packetsPerSecond, sentPacketsPerSecond: r.sentPacketsPerSecond,
    gbps: r.gbps, jitterMs: r.jitterMs, seconds: r.seconds, target, cpu: r.cpu, raw: r.raw,
  };
}

/**
 * Resolves the option defaults. quick: 1 run, secondary runs of 1 s, a 3-probe UDP search of
 * 1 s each and a 1-second idle window (CI runs it; every figure, short); full: 3 runs, 5 s
 * runs, 5 probes of 2 s, 3 s idle.
 */
export function resolveSettings(o: SuiteOptions): SuiteSettings {
  const quick = o.quick ?? false;
  const durationSec = o.durationSec ?? 5;
  return {
    quick,
    runs: o.runs ?? (quick ? 1 : 3),
    durationSec,
    shortSec: quick ? Math.max(1, Math.floor(durationSec / 2)) : durationSec,
    searchStepSec: quick ? 1 : 2,
    searchSteps: quick ? 3 : 5,
    idleSec: quick ? 1 : 3,
    lossFreeMaxLossPct: 1,
    secondary: true,
    tcpStreams: [1, 4, 8],
    congestion: 'cubic',
    udpPayloads: [64, 1400],
    udpBitrate: o.udpBitrate ?? '0',
    udpSocketBuffer: '4M',
    pingCount: o.pingCount ?? 1000,
    pingIntervalSec: o.pingIntervalSec ?? 0.001,
    rrBytes: 1,
    underlayMtu: o.underlayMtu ?? 1500,
    linenQueues: 1,
    reference: REFERENCE,
    ...(o.only ? { only: o.only } : {}),
  };
}

/** Picks the contenders named in `only` (plus the reference); throws on an unknown name. */
export function selectContenders(all: Contender[], only: string[] | undefined, noReference = false): Contender[] {
  if (!only || only.length === 0) return all;
  const known = new Set(all.map((c) => c.name));
  const unknown = only.filter((n) => !known.has(n));
  if (unknown.length) throw new Error(`unknown contender(s): ${unknown.join(', ')}; known: ${[...known].join(', ')}`);
  const want = new Set(only);
  if (!noReference && known.has(REFERENCE)) want.add(REFERENCE);
  return all.filter((c) => want.has(c.name));
}

/** Resident memory of each process (MiB); a process that is gone reads 0, marked exited. */
function processMemory(pids: readonly number[]): ProcessMemory[] {
  return pids.map((pid) => {
    try {
      const st = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
      return { pid, rssMiB: kib('VmRSS') / 1024, hwmMiB: kib('VmHWM') / 1024 };
    } catch {
      return { pid, rssMiB: 0, hwmMiB: 0, exited: true };
    }
  });
}

const totalRss = (m: readonly ProcessMemory[]): number => m.reduce((a, p) => a + p.rssMiB, 0);

/** The machine with no traffic for `seconds`: CPU by kind, memory, the contender's processes. */
async function idleBaseline(seconds: number, daemons: readonly number[], dataplane: readonly number[]): Promise<IdleRun> {
  const meter = new CpuMeter(dataplane);
  await sleep(seconds * 1000);
  const cpu = meter.stop();
  const cap = cpu.wallSeconds * cpu.cores;
  const pct = (x: number): number => (100 * x) / cap;
  const sy = cpu.system;
  return {
    seconds: cpu.wallSeconds,
    cpuPct: {
      total: pct(sy.busy), user: pct(sy.user), nice: pct(sy.nice), system: pct(sy.system), iowait: pct(sy.iowait),
      steal: pct(sy.steal), irq: pct(sy.irq), softirq: pct(sy.softirq),
    },
    dataplaneCpuSeconds: cpu.processTotal,
    memUsedMiB: memUsedMiB(),
    rss: processMemory(daemons),
  };
}

/** The steps of one run, each recorded or failed on its own. */
type Attempt = (name: string, fn: () => Promise<string>) => Promise<void>;

function attempter(rec: RunRecord, tag: string, step: (what: string) => void): Attempt {
  return async (name, fn) => {
    const t0 = Date.now();
    try {
      const msg = await fn();
      step(`${tag} ${name}: ${msg} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      rec.errors.push({ step: name, error: errText(e) });
      step(`${tag} ${name}: FAILED: ${errText(e).split('\n')[0]}`);
    }
  };
}

/**
 * Measures one contender (already started on `topo`) `runs` times: pod to pod first, then,
 * with the ClusterIP service programmed on the sending host, pod to service (last, so that
 * the NAT and conntrack it brings never touch the pod-to-pod figures).
 */
async function measure(
  c: Contender, topo: Topology, handle: ContenderHandle, s: SuiteSettings, step: (what: string) => void,
): Promise<RunRecord[]> {
  const [a, b] = topo.hosts as [Topology['hosts'][number], Topology['hosts'][number]];
  const from = { ns: a.pod.ns };
  const to = { ns: b.pod.ns, ip: b.pod.ip };
  const records: RunRecord[] = [];
  const dataplane = handle.pids();
  const daemons = handle.daemons?.() ?? dataplane;
  // One unrecorded second of traffic first, the same for every contender: a userspace path's
  // code is compiled to its fast tier during its first moments of traffic, which would
  // otherwise land in run 1.
  const w0 = Date.now();
  await iperfTcp({ from, to, seconds: 1, streams: 1, congestion: s.congestion }).catch(() => null);
  step(`${c.name} warm-up: 1 s of TCP, not recorded (${((Date.now() - w0) / 1000).toFixed(1)} s)`);
  const udpArgs = s.udpSocketBuffer ? ['-w', s.udpSocketBuffer] : [];
  for (let run = 1; run <= s.runs; run++) {
    const rec: RunRecord = { run, values: NAN_VALUES(), errors: [] };
    const attempt = attempter(rec, `${c.name} run ${run}/${s.runs}`, step);
    if (s.secondary) await attempt(`idle ${s.idleSec} s`, async () => {
      const idle = await idleBaseline(s.idleSec, daemons, dataplane);
      rec.idle = idle;
      rec.values.idleCpuPct = idle.cpuPct.total;
      rec.values.idleMemMiB = idle.memUsedMiB;
      return `machine ${fmt(idle.cpuPct.total, 1)} % busy, ${fmt(idle.memUsedMiB, 0)} MiB used` +
        (daemons.length ? `, dataplane RSS ${fmt(totalRss(idle.rss), 1)} MiB` : '');
    });
    for (const streams of s.tcpStreams) {
      await attempt(`tcp x${streams}`, async () => {
        const r = await iperfTcp({ from, to, seconds: s.durationSec, streams, congestion: s.congestion, cpuPids: dataplane });
        const tr = tcpRun(r, 'forward', 'pod');
        if (streams === 1) {
          rec.tcp1 = tr;
          rec.values.tcp1Gbps = r.gbps;
          rec.values.tcpRetransmits = r.retransmits;
          const gigabits = (r.bytesReceived * 8) / 1e9;
          rec.values.cpuPerGbit = gigabits > 0 ? r.cpu.system.busy / gigabits : NaN;
          rec.values.kernelCpuPerGbit = gigabits > 0 ? (r.cpu.system.softirq + r.cpu.system.system) / gigabits : NaN;
          const sp = tr.cpuSplit;
          return `${fmt(r.gbps)} Gbit/s, ${r.retransmits} retransmits, ${r.congestion}, ${fmt(rec.values.cpuPerGbit, 3)} CPU s/Gbit ` +
            `(machine; of ${fmt(sp.busy)} CPU s: dataplane ${fmt(sp.dataplane)}, iperf3 ${fmt(sp.iperf3)}, softirq ${fmt(sp.softirq)}, rest ${fmt(sp.rest)})`;
        }
        if (streams === 4) { rec.tcp4 = tr; rec.values.tcp4Gbps = r.gbps; }
        if (streams === 8) { rec.tcp8 = tr; rec.values.tcp8Gbps = r.gbps; }
        return `${fmt(r.gbps)} Gbit/s, ${r.retransmits} retransmits`;
      });
    }
    if (s.secondary) await attempt('tcp x1 reverse (-R)', async () => {
      const r = await iperfTcp({ from, to, seconds: s.shortSec, streams: 1, congestion: s.congestion, reverse: true, cpuPids: dataplane });
      rec.tcp1Reverse = tcpRun(r, 'reverse', 'pod');
      rec.values.tcp1ReverseGbps = r.gbps;
      return `${fmt(r.gbps)} Gbit/s, ${r.retransmits} retransmits`;
    });
    if (s.secondary) await attempt('tcp x1 bidirectional', async () => {
      const r = await iperfTcp({ from, to, seconds: s.shortSec, streams: 1, congestion: s.congestion, bidir: true, cpuPids: dataplane });
      rec.tcpBidir = tcpRun(r, 'bidir', 'pod');
      rec.values.tcpBidirGbps = r.gbps;
      return `${fmt(r.gbps)} Gbit/s both ways (${fmt(r.gbps - (r.reverseGbps ?? 0))} out, ${fmt(r.reverseGbps ?? NaN)} back)`;
    });
    for (const size of s.udpPayloads) {
      const key = size === 64 ? 'udp64' : 'udp1400';
      let unlimited: IperfUdpResult | undefined;
      await attempt(`udp ${size}B`, async () => {
        const r = await iperfUdp({ from, to, seconds: s.durationSec, payloadBytes: size, bitrate: s.udpBitrate, clientArgs: udpArgs, cpuPids: dataplane });
        unlimited = r;
        rec[key] = udpRun(r, 'pod');
        rec.values[`${key}Pps`] = r.packetsPerSecond;
        rec.values[`${key}LossPct`] = r.lossPercent;
        rec.values[`${key}JitterMs`] = r.jitterMs;
        return `${fmt(r.packetsPerSecond / 1000, 1)} kpps received, ${fmt(r.lossPercent, 1)}% loss, jitter ${fmt(r.jitterMs, 3)} ms`;
      });
      if (s.secondary) await attempt(`udp ${size}B loss-free rate`, async () => {
        if (!unlimited) throw new Error('no unlimited-rate run to start from');
        const sr = await udpLossFreeRate({
          from, to, seconds: s.searchStepSec, payloadBytes: size, clientArgs: udpArgs, unlimited, steps: s.searchSteps,
          maxLossPercent: s.lossFreeMaxLossPct,
        });
        rec[`${key}Search`] = sr;
        rec.values[`${key}LossFreePps`] = sr.lossFreePps;
        return `${fmt(sr.lossFreePps / 1000, 1)} kpps with < ${s.lossFreeMaxLossPct}% loss (${sr.foundBy}; probes ` +
          `${sr.probes.map((p) => `${fmt(p.offeredPps / 1000, 0)}k:${fmt(p.lossPercent, 1)}%`).join(' ') || 'none'})`;
      });
    }
    rec.rss = processMemory(daemons);
    rec.values.dataplaneRssMiB = totalRss(rec.rss);
    if (s.pingCount > 0) await attempt(`ping x${s.pingCount}`, async () => {
      const p = await ping({ from, to: to.ip, count: s.pingCount, intervalSec: s.pingIntervalSec, waitSec: 1, deadline: true });
      if (p.received === 0) throw new Error(`no ping replies (${p.transmitted} sent): ${p.out.trim().slice(-2000)}`);
      rec.ping = { count: s.pingCount, transmitted: p.transmitted, received: p.received, lossPercent: p.lossPercent, rttMs: p.rttMs };
      rec.values.rttP50Ms = p.rttMs.p50;
      rec.values.rttP99Ms = p.rttMs.p99;
      return `p50 ${fmt(p.rttMs.p50, 3)} ms, p99 ${fmt(p.rttMs.p99, 3)} ms, ${p.received}/${p.transmitted} replies`;
    });
    if (s.secondary) await attempt(`tcp request/response ${s.rrBytes} B`, async () => {
      const r = await tcpRr({ from, to, seconds: s.shortSec, bytes: s.rrBytes });
      rec.rr = r;
      rec.values.rrTps = r.tps;
      return `${fmt(r.tps, 0)} transactions/s, p50 ${fmt(r.latencyUs.p50, 1)} us, p99 ${fmt(r.latencyUs.p99, 1)} us`;
    });
    records.push(rec);
  }

  if (!s.secondary) return records;
  // Pod to service: kube-proxy's DNAT on the sending host, then the same path.
  const serviceIp = serviceAddressFor(topo);
  let svc: ReturnType<typeof addClusterIpService> | undefined;
  const svcError = ((): string | undefined => {
    try {
      svc = addClusterIpService(a.ns, serviceIp, to.ip, [IPERF_PORT]);
      return undefined;
    } catch (e) {
      return `ClusterIP service setup: ${errText(e)}`;
    }
  })();
  try {
    for (const rec of records) {
      const attempt = attempter(rec, `${c.name} run ${rec.run}/${s.runs} service`, step);
      if (svcError) {
        rec.errors.push({ step: 'service', error: svcError });
        continue;
      }
      for (const streams of [1, 8]) {
        await attempt(`tcp x${streams}`, async () => {
          const r = await iperfTcp({ from, to, connectTo: serviceIp, seconds: s.shortSec, streams, congestion: s.congestion, cpuPids: dataplane });
          if (streams === 1) { rec.svcTcp1 = tcpRun(r, 'forward', 'service'); rec.values.svcTcp1Gbps = r.gbps; }
          else { rec.svcTcp8 = tcpRun(r, 'forward', 'service'); rec.values.svcTcp8Gbps = r.gbps; }
          return `${fmt(r.gbps)} Gbit/s via ${serviceIp}, ${r.retransmits} retransmits`;
        });
      }
      await attempt('udp 1400B', async () => {
        const r = await iperfUdp({ from, to, connectTo: serviceIp, seconds: s.shortSec, payloadBytes: 1400, bitrate: s.udpBitrate, clientArgs: udpArgs, cpuPids: dataplane });
        rec.svcUdp1400 = udpRun(r, 'service');
        rec.values.svcUdp1400Pps = r.packetsPerSecond;
        return `${fmt(r.packetsPerSecond / 1000, 1)} kpps received, ${fmt(r.lossPercent, 1)}% loss`;
      });
    }
  } finally {
    svc?.remove();
  }
  return records;
}

/** The offload features of a device that matter to these paths (`ethtool -k`), on/off. */
export function underlayOffloads(ns: string, dev: string): Record<string, string> {
  const want = new Set(['rx-checksumming', 'tx-checksumming', 'scatter-gather', 'tcp-segmentation-offload', 'generic-segmentation-offload',
    'generic-receive-offload', 'rx-gro-hw', 'rx-udp-gro-forwarding', 'rx-gro-list', 'tx-udp-segmentation']);
  const out: Record<string, string> = {};
  let text = '';
  try { text = nsExec(ns, 'ethtool', ['-k', dev], { timeout: 10_000 }); } catch { return out; }
  for (const line of text.split('\n')) {
    const m = /^\s*([\w-]+):\s+(\S+)(.*)$/.exec(line);
    if (m && want.has(m[1]!)) out[m[1]!] = `${m[2]}${m[3]!.includes('[fixed]') ? ' (fixed)' : ''}`;
  }
  return out;
}

/** Reads what linend said about its features (vnet_hdr, offloads, GSO/GRO), when it is linen. */
function linenFeatures(handle: ContenderHandle): string[] {
  const nodes = (handle as { nodes?: { log?: () => string }[] }).nodes;
  if (!Array.isArray(nodes)) return [];
  const lines: string[] = [];
  for (const n of nodes) {
    const line = n.log?.().split('\n').find((l) => l.includes('vnet_hdr='));
    if (line) lines.push(line.trim());
  }
  return lines;
}

function emptyMetrics(): Record<MetricKey, Summary | null> {
  return Object.fromEntries(METRICS.map((m) => [m.key, null])) as Record<MetricKey, Summary | null>;
}
function emptyRatios(): Record<MetricKey, number | null> {
  return Object.fromEntries(METRICS.map((m) => [m.key, null])) as Record<MetricKey, number | null>;
}

/** Runs one contender on a fresh topology; never throws (failures are recorded). */
export async function runContender(c: Contender, s: SuiteSettings, step: (line: string) => void): Promise<ContenderResult> {
  const t0 = Date.now();
  const res: ContenderResult = {
    name: c.name, description: c.description, tunnelMtu: c.tunnelMtu, status: 'ok', errors: [], info: {},
    cpuBasis: CPU_BASIS,
    metrics: emptyMetrics(), ratioToKernelVxlan: emptyRatios(), runs: [], seconds: 0,
  };
  let topo: Topology | undefined;
  let handle: ContenderHandle | undefined;
  try {
    topo = buildTopology({ underlayMtu: s.underlayMtu });
    handle = await startContender(c, topo);
    res.info = {
      ...handle.info, topology: topo.id, podMtu: topo.podMtu, pids: handle.pids().length, serviceIp: serviceAddressFor(topo),
      underlayOffloads: underlayOffloads(topo.hosts[0]!.ns, topo.hosts[0]!.underlayDev),
    };
    const features = linenFeatures(handle);
    if (features.length) res.info.features = features;
    step(`${c.name}: started (pod MTU ${topo.podMtu}${handle.pids().length ? `, linend pids ${handle.pids().join(' ')}` : ''})`);
    res.runs = await measure(c, topo, handle, s, step);
  } catch (e) {
    res.status = 'failed';
    res.error = errText(e);
    step(`${c.name}: FAILED: ${res.error.split('\n')[0]}`);
  } finally {
    try {
      await handle?.stop();
    } catch (e) {
      res.errors.push({ run: 0, step: 'stop', error: errText(e) });
    }
    try {
      topo?.destroy();
    } catch (e) {
      res.errors.push({ run: 0, step: 'cleanup', error: errText(e) });
    }
  }
  for (const r of res.runs) for (const e of r.errors) res.errors.push({ run: r.run, ...e });
  for (const m of METRICS) res.metrics[m.key] = summarize(res.runs.map((r) => r.values[m.key]));
  if (res.status === 'ok' && METRICS.every((m) => res.metrics[m.key] === null)) {
    res.status = 'failed';
    res.error = `every measurement failed; first error: ${res.errors[0]?.error ?? 'unknown'}`;
  }
  res.seconds = (Date.now() - t0) / 1000;
  return res;
}

/** Fills in each contender's ratio to the reference's medians. */
export function computeRatios(results: ContenderResult[]): void {
  const ref = results.find((r) => r.name === REFERENCE && r.status === 'ok');
  for (const r of results) {
    for (const m of METRICS) {
      const v = r.metrics[m.key]?.median;
      const base = ref?.metrics[m.key]?.median;
      r.ratioToKernelVxlan[m.key] = m.ratio && v !== undefined && base !== undefined && base !== 0 && Number.isFinite(v / base)
        ? v / base : null;
    }
  }
}

/** Runs every selected contender one after another. */
export async function runSuite(o: SuiteOptions = {}): Promise<SuiteResults> {
  const log = o.log ?? ((l: string) => console.log(l));
  const settings = resolveSettings(o);
  const all = o.contenders ?? suiteContenders(settings.underlayMtu, settings.linenQueues);
  const chosen = selectContenders(all, o.only, o.noReference);
  if (o.only && !o.only.includes(REFERENCE) && chosen.some((c) => c.name === REFERENCE)) {
    log(`(${REFERENCE} added as the reference for ratios; --no-reference skips it)`);
  }
  const t0 = Date.now();
  const clock = (): string => {
    const s = Math.round((Date.now() - t0) / 1000);
    return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
  };
  const contenders: ContenderResult[] = [];
  for (const [i, c] of chosen.entries()) {
    log(`[${clock()}] (${i + 1}/${chosen.length}) ${c.name}: ${c.description}`);
    contenders.push(await runContender(c, settings, (l) => log(`[${clock()}]   ${l}`)));
  }
  computeRatios(contenders);
  return { settings, contenders };
}
