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

import { hostGwContender, kernelVxlanContender, startContender, type Contender, type ContenderHandle } from './contenders.js';
import { linenContender } from './linen.js';
import { sh } from '../lab/netns.js';
import { buildTopology, type Topology } from '../lab/topology.js';
import { iperfTcp, iperfUdp, ping, type CpuUsage, type IperfTcpResult, type IperfUdpResult, type PingResult } from '../lab/traffic.js';

// ---------------------------------------------------------------------------------------------
// Metrics

export type MetricKey =
  | 'tcp1Gbps' | 'tcp4Gbps'
  | 'udp64Pps' | 'udp64LossPct' | 'udp1400Pps' | 'udp1400LossPct'
  | 'rttP50Ms' | 'rttP99Ms'
  | 'cpuPerGbit' | 'kernelCpuPerGbit';

export interface MetricDef {
  key: MetricKey;
  label: string;
  unit: string;
  better: 'higher' | 'lower';
  /** Whether a ratio to kernel VXLAN is meaningful (not for loss percentages, often 0). */
  ratio: boolean;
}

export const METRICS: readonly MetricDef[] = [
  { key: 'tcp1Gbps', label: 'TCP, 1 stream', unit: 'Gbit/s', better: 'higher', ratio: true },
  { key: 'tcp4Gbps', label: 'TCP, 4 streams', unit: 'Gbit/s', better: 'higher', ratio: true },
  { key: 'udp64Pps', label: 'UDP 64 B, received', unit: 'packets/s', better: 'higher', ratio: true },
  { key: 'udp64LossPct', label: 'UDP 64 B, loss', unit: '%', better: 'lower', ratio: false },
  { key: 'udp1400Pps', label: 'UDP 1400 B, received', unit: 'packets/s', better: 'higher', ratio: true },
  { key: 'udp1400LossPct', label: 'UDP 1400 B, loss', unit: '%', better: 'lower', ratio: false },
  { key: 'rttP50Ms', label: 'RTT p50', unit: 'ms', better: 'lower', ratio: true },
  { key: 'rttP99Ms', label: 'RTT p99', unit: 'ms', better: 'lower', ratio: true },
  { key: 'cpuPerGbit', label: 'forwarding CPU per Gbit (see basis)', unit: 'CPU s/Gbit', better: 'lower', ratio: true },
  { key: 'kernelCpuPerGbit', label: 'kernel CPU per Gbit (softirq+sys, machine-wide)', unit: 'CPU s/Gbit', better: 'lower', ratio: true },
];

/** What cpuPerGbit counts for a contender. */
export type CpuBasis = 'linend processes (utime+stime, all threads)' | 'system softirq+sys time (machine-wide; kernel path)';
export const CPU_BASIS_LINEN: CpuBasis = 'linend processes (utime+stime, all threads)';
export const CPU_BASIS_KERNEL: CpuBasis = 'system softirq+sys time (machine-wide; kernel path)';

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

export interface TcpRun {
  gbps: number; senderGbps: number; retransmits: number; bytesReceived: number; seconds: number;
  streams: number; congestion: string; iperfCpu: { local: number; remote: number }; cpu: CpuUsage;
}
export interface UdpRun {
  payloadBytes: number; sentPackets: number; receivedPackets: number; lostPackets: number; lossPercent: number;
  packetsPerSecond: number; sentPacketsPerSecond: number; gbps: number; jitterMs: number; seconds: number;
}
export interface PingRun {
  count: number; transmitted: number; received: number; lossPercent: number;
  rttMs: PingResult['rttMs'];
}

export interface RunRecord {
  run: number;
  tcp1?: TcpRun;
  tcp4?: TcpRun;
  udp64?: UdpRun;
  udp1400?: UdpRun;
  ping?: PingRun;
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
  cores: number;
  node: string;
  linenCommit: string;
  linenDirty: boolean;
  iperf3: string;
  defaultCongestion: string;
  loadavgAtStart: number[];
  hostname: string;
}

export interface SuiteSettings {
  quick: boolean;
  runs: number;
  /** iperf3 seconds per run (TCP and UDP). */
  durationSec: number;
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
  let defaultCongestion = '';
  try { defaultCongestion = readFileSync('/proc/sys/net/ipv4/tcp_congestion_control', 'utf8').trim(); } catch { /* unknown */ }
  return {
    kernel: tryRun('uname', ['-r']),
    cpuModel,
    cores: cpus().length,
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
    linenContender({ mode: 'udp', offload: 'on', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', offload: 'on', underlayMtu, queues }),
    linenContender({ mode: 'udp', offload: 'off', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', offload: 'off', underlayMtu, queues }),
    linenContender({ mode: 'udp', engine: 'dgram', underlayMtu, queues }),
    linenContender({ mode: 'vxlan', engine: 'dgram', underlayMtu, queues }),
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

function tcpRun(r: IperfTcpResult): TcpRun {
  return {
    gbps: r.gbps, senderGbps: r.senderGbps, retransmits: r.retransmits, bytesReceived: r.bytesReceived,
    seconds: r.seconds, streams: r.streams, congestion: r.congestion, iperfCpu: r.iperfCpu, cpu: r.cpu,
  };
}

function udpRun(r: IperfUdpResult): UdpRun {
  return {
    payloadBytes: r.payloadBytes, sentPackets: r.sentPackets, receivedPackets: r.receivedPackets, lostPackets: r.lostPackets,
    lossPercent: r.lossPercent, packetsPerSecond: r.packetsPerSecond, sentPacketsPerSecond: r.sentPacketsPerSecond,
    gbps: r.gbps, jitterMs: r.jitterMs, seconds: r.seconds,
  };
}

/** Resolves the option defaults (quick: 1 run; full: 3 runs; 5-second iperf runs). */
export function resolveSettings(o: SuiteOptions): SuiteSettings {
  const quick = o.quick ?? false;
  return {
    quick,
    runs: o.runs ?? (quick ? 1 : 3),
    durationSec: o.durationSec ?? 5,
    tcpStreams: [1, 4],
    congestion: 'cubic',
    udpPayloads: [64, 1400],
    udpBitrate: o.udpBitrate ?? '0',
    udpSocketBuffer: '4M',
    pingCount: o.pingCount ?? 1000,
    pingIntervalSec: o.pingIntervalSec ?? 0.001,
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

/** Measures one contender (already started on `topo`) `runs` times. */
async function measure(
  c: Contender, topo: Topology, handle: ContenderHandle, s: SuiteSettings, step: (what: string) => void,
): Promise<RunRecord[]> {
  const [a, b] = topo.hosts as [Topology['hosts'][number], Topology['hosts'][number]];
  const from = { ns: a.pod.ns };
  const to = { ns: b.pod.ns, ip: b.pod.ip };
  const records: RunRecord[] = [];
  const isKernel = handle.pids().length === 0;
  // One unrecorded second of traffic first, the same for every contender: a userspace path's
  // code is compiled to its fast tier during its first moments of traffic, which would
  // otherwise land in run 1.
  const w0 = Date.now();
  await iperfTcp({ from, to, seconds: 1, streams: 1, congestion: s.congestion }).catch(() => null);
  step(`${c.name} warm-up: 1 s of TCP, not recorded (${((Date.now() - w0) / 1000).toFixed(1)} s)`);
  for (let run = 1; run <= s.runs; run++) {
    const rec: RunRecord = { run, values: NAN_VALUES(), errors: [] };
    const tag = `${c.name} run ${run}/${s.runs}`;
    const attempt = async (name: string, fn: () => Promise<string>): Promise<void> => {
      const t0 = Date.now();
      try {
        const msg = await fn();
        step(`${tag} ${name}: ${msg} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        rec.errors.push({ step: name, error: errText(e) });
        step(`${tag} ${name}: FAILED: ${errText(e).split('\n')[0]}`);
      }
    };
    for (const streams of s.tcpStreams) {
      await attempt(`tcp x${streams}`, async () => {
        const r = await iperfTcp({
          from, to, seconds: s.durationSec, streams, congestion: s.congestion, cpuPids: handle.pids(),
        });
        const tr = tcpRun(r);
        if (streams === 1) {
          rec.tcp1 = tr;
          rec.values.tcp1Gbps = r.gbps;
          const gigabits = (r.bytesReceived * 8) / 1e9;
          const kernelCpu = r.cpu.system.softirq + r.cpu.system.system;
          rec.values.kernelCpuPerGbit = gigabits > 0 ? kernelCpu / gigabits : NaN;
          rec.values.cpuPerGbit = gigabits > 0 ? (isKernel ? kernelCpu : r.cpu.processTotal) / gigabits : NaN;
          return `${fmt(r.gbps)} Gbit/s, ${r.retransmits} retransmits, ${r.congestion}, ` +
            `${fmt(rec.values.cpuPerGbit, 3)} CPU s/Gbit (${isKernel ? 'softirq+sys' : 'linend'})`;
        }
        rec.tcp4 = tr;
        rec.values.tcp4Gbps = r.gbps;
        return `${fmt(r.gbps)} Gbit/s, ${r.retransmits} retransmits`;
      });
    }
    for (const size of s.udpPayloads) {
      await attempt(`udp ${size}B`, async () => {
        const r = await iperfUdp({ from, to, seconds: s.durationSec, payloadBytes: size, bitrate: s.udpBitrate,
          clientArgs: s.udpSocketBuffer ? ['-w', s.udpSocketBuffer] : [],
        });
        const ur = udpRun(r);
        if (size === 64) {
          rec.udp64 = ur;
          rec.values.udp64Pps = r.packetsPerSecond;
          rec.values.udp64LossPct = r.lossPercent;
        } else {
          rec.udp1400 = ur;
          rec.values.udp1400Pps = r.packetsPerSecond;
          rec.values.udp1400LossPct = r.lossPercent;
        }
        return `${fmt(r.packetsPerSecond / 1000, 1)} kpps received, ${fmt(r.lossPercent, 1)}% loss`;
      });
    }
    if (s.pingCount > 0) await attempt(`ping x${s.pingCount}`, async () => {
      const p = await ping({ from, to: to.ip, count: s.pingCount, intervalSec: s.pingIntervalSec, waitSec: 1, deadline: true });
      if (p.received === 0) throw new Error(`no ping replies (${p.transmitted} sent): ${p.out.trim().slice(-2000)}`);
      rec.ping = { count: s.pingCount, transmitted: p.transmitted, received: p.received, lossPercent: p.lossPercent, rttMs: p.rttMs };
      rec.values.rttP50Ms = p.rttMs.p50;
      rec.values.rttP99Ms = p.rttMs.p99;
      return `p50 ${fmt(p.rttMs.p50, 3)} ms, p99 ${fmt(p.rttMs.p99, 3)} ms, ${p.received}/${p.transmitted} replies`;
    });
    records.push(rec);
  }
  return records;
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
    cpuBasis: c.name.startsWith('linen') ? CPU_BASIS_LINEN : CPU_BASIS_KERNEL,
    metrics: emptyMetrics(), ratioToKernelVxlan: emptyRatios(), runs: [], seconds: 0,
  };
  let topo: Topology | undefined;
  let handle: ContenderHandle | undefined;
  try {
    topo = buildTopology({ underlayMtu: s.underlayMtu });
    handle = await startContender(c, topo);
    res.cpuBasis = handle.pids().length > 0 ? CPU_BASIS_LINEN : CPU_BASIS_KERNEL;
    res.info = { ...handle.info, topology: topo.id, podMtu: topo.podMtu, pids: handle.pids().length };
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
