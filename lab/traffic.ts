// Bounded measurements between pods: iperf3 TCP (Gbit/s, retransmits), iperf3 UDP at a given
// payload size and bitrate (packets/s, loss), ping latency (p50/p99 from per-packet times) and
// the CPU time of given processes over a run (for "CPU seconds per gigabit").
//
// Every process is bounded twice: a JS timer SIGKILLs its process group, and it runs under
// coreutils `timeout -s KILL` so it dies on its own even if this process is killed outright.
// Every process still running is killed when this process exits or gets SIGINT/SIGTERM
// (addCleanupHook); the topology's destroy() also kills whatever is left inside its namespaces.

import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

import { addCleanupHook, nsExec, sh } from './netns.js';
import { waitFor } from './wait.js';

/** Where a program runs (namespace) and the address it is reached at. PodInfo fits. */
export interface Endpoint {
  ns: string;
  ip: string;
}

// ---------------------------------------------------------------------------------------------
// Bounded processes

export interface BoundedResult {
  /** The command line, for messages. */
  cmd: string;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed because the time limit passed (or kill() was called). */
  timedOut: boolean;
  ms: number;
}

export interface BoundedProcess {
  /** PID of the process group leader (the `timeout` wrapper). */
  readonly pid: number | undefined;
  readonly done: Promise<BoundedResult>;
  /** SIGKILLs the whole process group now. */
  kill(): void;
}

export interface BoundedOptions {
  /** Hard limit in milliseconds (required: every load is bounded). */
  timeoutMs: number;
}

const running = new Set<ChildProcess>();
let exitHook = false;

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try { child.kill('SIGKILL'); } catch { /* gone */ }
  }
}

/** Kills every process started by this module that is still running. */
export function killAllTraffic(): void {
  for (const c of running) killGroup(c);
  running.clear();
}

/**
 * Starts `cmd args` inside namespace `ns` (or in the current one when ns is undefined), in its
 * own process group, limited to opts.timeoutMs.
 */
export function startBounded(ns: string | undefined, cmd: string, args: string[], opts: BoundedOptions): BoundedProcess {
  if (!(opts.timeoutMs > 0)) throw new Error('startBounded: timeoutMs must be positive');
  if (!exitHook) {
    exitHook = true;
    addCleanupHook(killAllTraffic);
  }
  // The `timeout` wrapper is the backstop (1 s after the JS timer).
  const limit = (Math.ceil(opts.timeoutMs / 1000) + 1).toString();
  const inner = ['timeout', '-s', 'KILL', limit, cmd, ...args];
  const argv = ns === undefined ? inner : ['ip', 'netns', 'exec', ns, ...inner];
  const line = [cmd, ...args].join(' ');
  const t0 = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child);
  }, opts.timeoutMs);
  const done = new Promise<BoundedResult>((resolve) => {
    let settled = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null, err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      running.delete(child);
      if (err) stderr += `\n${err.message}`;
      resolve({ cmd: line, code, signal, stdout, stderr, timedOut, ms: Date.now() - t0 });
    };
    child.once('error', (e) => finish(null, null, e));
    // 'close' (not 'exit'): all output has been read.
    child.once('close', (code, signal) => finish(code, signal));
  });
  return {
    pid: child.pid,
    done,
    kill: () => {
      timedOut = true;
      killGroup(child);
    },
  };
}

/** startBounded(...).done */
export function runBounded(ns: string | undefined, cmd: string, args: string[], opts: BoundedOptions): Promise<BoundedResult> {
  return startBounded(ns, cmd, args, opts).done;
}

function describe(r: BoundedResult): string {
  const how = r.timedOut ? `timed out after ${r.ms} ms` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  const err = r.stderr.trim();
  return `${r.cmd}: ${how}${err ? `: ${err.slice(-2000)}` : ''}`;
}

/** Waits until something listens on TCP `port` in `ns`; throws after timeoutMs or if `alive()` turns false. */
export async function waitForTcpListen(ns: string, port: number, timeoutMs = 5000, alive: () => boolean = () => true): Promise<void> {
  const took = await waitFor(() => {
    if (nsExec(ns, 'ss', ['-Hltn', `sport = :${port}`], { timeout: 5000 }).trim() !== '') return true;
    if (!alive()) throw new Error(`nothing listens on TCP ${port} in ${ns}: the server exited`);
    return false;
  }, timeoutMs, 20);
  if (took < 0) throw new Error(`nothing listens on TCP ${port} in ${ns} after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------------------------
// CPU time

let clkTck: number | undefined;

/** Clock ticks per second (getconf CLK_TCK; 100 on Linux in practice). */
export function clockTicksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(sh('getconf', ['CLK_TCK']).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** A process's or thread's name and CPU time, seconds, from a /proc/<pid>[/task/<tid>]/stat file. */
export interface TaskCpu {
  comm: string;
  user: number;
  system: number;
}

/** Reads one stat file (throws if it is gone or unreadable). */
export function readTaskCpu(statPath: string): TaskCpu {
  const stat = readFileSync(statPath, 'utf8');
  // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse ${statPath}`);
  const hz = clockTicksPerSecond();
  return { comm: stat.slice(stat.indexOf('(') + 1, close), user: utime / hz, system: stime / hz };
}

/** utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const t = readTaskCpu(`/proc/${pid}/stat`);
  return t.user + t.system;
}

/**
 * utime + stime of every thread of a process, seconds, summed by thread name (comm): the split
 * of a dataplane's time between its main thread and its workers. Threads that end vanish.
 */
export function threadCpuSeconds(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try {
      const t = readTaskCpu(`/proc/${pid}/task/${tid}/stat`);
      out[t.comm] = (out[t.comm] ?? 0) + t.user + t.system;
    } catch { /* thread ended */ }
  }
  return out;
}

/** Machine-wide CPU time by kind (sum over all CPUs), seconds, from the first line of /proc/stat. */
export interface SystemCpu {
  user: number;
  nice: number;
  system: number;
  idle: number;
  iowait: number;
  irq: number;
  softirq: number;
  steal: number;
}

export function systemCpuSeconds(): SystemCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const hz = clockTicksPerSecond();
  const at = (i: number): number => (v[i] ?? 0) / hz;
  return { user: at(0), nice: at(1), system: at(2), idle: at(3), iowait: at(4), irq: at(5), softirq: at(6), steal: at(7) };
}

export interface CpuUsage {
  wallSeconds: number;
  /** CPU seconds per PID over the window (NaN when the process vanished). */
  processSeconds: Record<number, number>;
  /** Sum of processSeconds (ignoring NaN). */
  processTotal: number;
  /** CPU seconds per PID and thread name over the window ("<pid>/<comm>"), for the split. */
  threadSeconds: Record<string, number>;
  /**
   * Machine-wide CPU seconds over the window, summed over all CPUs: busy = everything but idle
   * and iowait (user + nice + system + irq + softirq + steal: every process, the kernel's own
   * work and anything else running); softirq is where kernel forwarding runs.
   */
  system: { busy: number; softirq: number; system: number; user: number; nice: number; irq: number; steal: number; iowait: number; idle: number };
  /** CPUs of the machine (the window's CPU capacity is wallSeconds × cores). */
  cores: number;
  /** The machine's memory in use when the window closed, MiB (memUsedMiB). */
  memUsedMiB: number;
}

/** Measures CPU time of `pids` (and of the whole machine) from construction to stop(). */
export class CpuMeter {
  private readonly t0 = process.hrtime.bigint();
  private readonly start: Map<number, number>;
  private readonly sys0 = systemCpuSeconds();
  private readonly threads0: Map<number, Record<string, number>>;

  constructor(readonly pids: readonly number[] = []) {
    this.start = new Map(pids.map((p) => [p, safeCpu(p)]));
    this.threads0 = new Map(pids.map((p) => [p, threadCpuSeconds(p)]));
  }

  stop(): CpuUsage {
    const wallSeconds = Number(process.hrtime.bigint() - this.t0) / 1e9;
    const sys1 = systemCpuSeconds();
    const processSeconds: Record<number, number> = {};
    let processTotal = 0;
    for (const [pid, s0] of this.start) {
      const d = safeCpu(pid) - s0;
      processSeconds[pid] = d;
      if (Number.isFinite(d)) processTotal += d;
    }
    const threadSeconds: Record<string, number> = {};
    for (const [pid, t0] of this.threads0) {
      for (const [name, s1] of Object.entries(threadCpuSeconds(pid))) threadSeconds[`${pid}/${name}`] = s1 - (t0[name] ?? 0);
    }
    const d = (k: keyof SystemCpu): number => sys1[k] - this.sys0[k];
    const busy = d('user') + d('nice') + d('system') + d('irq') + d('softirq') + d('steal');
    return {
      wallSeconds, processSeconds, processTotal, threadSeconds, cores: cpus().length, memUsedMiB: memUsedMiB(),
      system: { busy, softirq: d('softirq'), system: d('system'), user: d('user'), nice: d('nice'), irq: d('irq'), steal: d('steal'), iowait: d('iowait'), idle: d('idle') },
    };
  }
}

function safeCpu(pid: number): number {
  try {
    return processCpuSeconds(pid);
  } catch {
    return NaN;
  }
}

/** Memory in use on the whole machine, MiB: MemTotal − MemAvailable (what `free` calls used). */
export function memUsedMiB(): number {
  const info = readFileSync('/proc/meminfo', 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(info)?.[1] ?? NaN);
  return (kib('MemTotal') - kib('MemAvailable')) / 1024;
}

/** CPU seconds spent per gigabit moved: cpuSeconds / (gbps × seconds). */
export function cpuSecondsPerGigabit(cpuSeconds: number, gbps: number, seconds: number): number {
  return cpuSeconds / (gbps * seconds);
}

// ---------------------------------------------------------------------------------------------
// iperf3

export interface IperfCommon {
  /** Where the client runs (only ns is used). */
  from: { ns: string };
  /** Where the server runs and the address the client connects to. */
  to: Endpoint;
  /** Test length (-t); default 5. */
  seconds?: number;
  /** Parallel streams (-P); default 1. */
  streams?: number;
  /** Server port (-p); default 5201. */
  port?: number;
  /** Seconds omitted at the start (-O); default 0. */
  omitSeconds?: number;
  /** Server sends, client receives (-R). */
  reverse?: boolean;
  /** Both directions at once (--bidir, iperf3 ≥ 3.7). */
  bidir?: boolean;
  /** Address the client connects to, when not to.ip (e.g. a service address DNATed to it). */
  connectTo?: string;
  /**
   * TCP congestion control (-C), e.g. 'cubic'. Default: the system's (bbr on this machine,
   * where it gives markedly lower veth numbers than cubic); pin it for comparable runs.
   */
  congestion?: string;
  /** Processes whose CPU time is measured over the client's run (e.g. the dataplane daemons). */
  cpuPids?: number[];
  /** Extra client arguments. */
  clientArgs?: string[];
  /** Hard limit for the whole run; default (seconds + omit) × 1000 + 15 000. */
  timeoutMs?: number;
}

export interface IperfTcpResult {
  /** Receiver throughput, Gbit/s (what the benchmark reports); with bidir, both directions added. */
  gbps: number;
  /** With bidir: the server-to-client direction alone (gbps − this = client to server). */
  reverseGbps?: number;
  /** Sender throughput, Gbit/s. */
  senderGbps: number;
  /** TCP retransmits counted by the sender. */
  retransmits: number;
  bytesReceived: number;
  seconds: number;
  streams: number;
  /** Congestion control used by the sender (from iperf3's JSON). */
  congestion: string;
  /** iperf3's own CPU utilisation (percent of one CPU, host_total) at both ends. */
  iperfCpu: { local: number; remote: number };
  cpu: CpuUsage;
  /** iperf3's own JSON report (-J), as printed. */
  raw: unknown;
}

export interface IperfUdpOptions extends IperfCommon {
  /** UDP payload bytes per datagram (-l). The IP packet is 28 bytes larger. */
  payloadBytes: number;
  /** Target bitrate (-b): bits/s or iperf3 syntax ("1G"); 0 = unlimited. */
  bitrate: number | string;
}

export interface IperfUdpResult {
  sentPackets: number;
  lostPackets: number;
  receivedPackets: number;
  lossPercent: number;
  /** Datagrams received per second. */
  packetsPerSecond: number;
  /** Datagrams sent per second. */
  sentPacketsPerSecond: number;
  /** Payload goodput at the receiver, Gbit/s. */
  gbps: number;
  jitterMs: number;
  seconds: number;
  payloadBytes: number;
  iperfCpu: { local: number; remote: number };
  cpu: CpuUsage;
  /** iperf3's own JSON report (-J), as printed. */
  raw: unknown;
}

/* Parts of iperf3 -J output that are read. */
interface IperfSum {
  seconds?: number;
  bytes?: number;
  bits_per_second?: number;
  retransmits?: number;
  jitter_ms?: number;
  lost_packets?: number;
  packets?: number;
  lost_percent?: number;
}
interface IperfJson {
  error?: string;
  start?: { test_start?: { protocol?: string } };
  end?: {
    sum_sent?: IperfSum;
    sum_received?: IperfSum;
    sum_sent_bidir_reverse?: IperfSum;
    sum_received_bidir_reverse?: IperfSum;
    sum?: IperfSum;
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
    sender_tcp_congestion?: string;
  };
}

/**
 * Starts a one-off iperf3 server (-s -1) bound to `to` and resolves once it listens (within
 * 5 s); it is killed when that fails. Bounded by timeoutMs.
 */
export async function startIperfServer(to: Endpoint, port: number, timeoutMs: number): Promise<BoundedProcess> {
  const server = startBounded(to.ns, 'iperf3', ['-s', '-1', '-B', to.ip, '-p', String(port)], { timeoutMs });
  let serverExited = false;
  void server.done.then(() => { serverExited = true; });
  try {
    await waitForTcpListen(to.ns, port, 5000, () => !serverExited);
  } catch (e) {
    server.kill();
    await server.done;
    throw e;
  }
  return server;
}

async function iperf(opts: IperfCommon, proto: 'tcp' | 'udp', protoArgs: string[]): Promise<{ json: IperfJson; cpu: CpuUsage }> {
  const seconds = opts.seconds ?? 5;
  const omit = opts.omitSeconds ?? 0;
  const port = opts.port ?? 5201;
  const timeoutMs = opts.timeoutMs ?? (seconds + omit) * 1000 + 15_000;
  const deadline = Date.now() + timeoutMs;
  const server = await startIperfServer(opts.to, port, timeoutMs);
  try {
    const args = ['-c', opts.connectTo ?? opts.to.ip, '-p', String(port), '-J', '-t', String(seconds), '-P', String(opts.streams ?? 1),
      '--connect-timeout', '3000', ...(opts.congestion ? ['-C', opts.congestion] : []), ...(omit ? ['-O', String(omit)] : []), ...(opts.reverse ? ['-R'] : []), ...(opts.bidir ? ['--bidir'] : []),
      ...(proto === 'udp' ? ['-u'] : []), ...protoArgs, ...(opts.clientArgs ?? [])];
    const meter = new CpuMeter(opts.cpuPids ?? []);
    const r = await runBounded(opts.from.ns, 'iperf3', args, { timeoutMs: Math.max(1000, deadline - Date.now()) });
    const cpu = meter.stop();
    let json: IperfJson;
    try {
      json = JSON.parse(r.stdout) as IperfJson;
    } catch {
      throw new Error(`iperf3 client printed no JSON: ${describe(r)}${r.stdout ? `\nstdout: ${r.stdout.slice(0, 2000)}` : ''}`);
    }
    if (json.error) throw new Error(`iperf3: ${json.error} (${describe(r)})`);
    if (r.code !== 0) throw new Error(describe(r));
    // The one-off server exits by itself once the test is over.
    await Promise.race([server.done, sleep(3000)]);
    return { json, cpu };
  } finally {
    server.kill();
    await server.done;
  }
}

/** One iperf3 TCP run from `from` to `to` (server one-off, client -J). */
export async function iperfTcp(opts: IperfCommon): Promise<IperfTcpResult> {
  const { json, cpu } = await iperf(opts, 'tcp', []);
  const sent = json.end?.sum_sent;
  const recv = json.end?.sum_received;
  if (!sent || !recv || recv.bits_per_second === undefined) throw new Error('iperf3 TCP: JSON has no end.sum_sent/sum_received');
  const back = opts.bidir ? json.end?.sum_received_bidir_reverse : undefined;
  const backSent = opts.bidir ? json.end?.sum_sent_bidir_reverse : undefined;
  if (opts.bidir && back?.bits_per_second === undefined) throw new Error('iperf3 TCP --bidir: JSON has no end.sum_received_bidir_reverse');
  return {
    gbps: (recv.bits_per_second + (back?.bits_per_second ?? 0)) / 1e9,
    ...(back ? { reverseGbps: (back.bits_per_second ?? 0) / 1e9 } : {}),
    senderGbps: ((sent.bits_per_second ?? 0) + (backSent?.bits_per_second ?? 0)) / 1e9,
    retransmits: (sent.retransmits ?? 0) + (backSent?.retransmits ?? 0),
    bytesReceived: (recv.bytes ?? 0) + (back?.bytes ?? 0),
    seconds: recv.seconds ?? sent.seconds ?? 0,
    streams: opts.streams ?? 1,
    congestion: json.end?.sender_tcp_congestion ?? opts.congestion ?? '',
    iperfCpu: { local: json.end?.cpu_utilization_percent?.host_total ?? NaN, remote: json.end?.cpu_utilization_percent?.remote_total ?? NaN },
    cpu,
    raw: json,
  };
}

/** One iperf3 UDP run at a payload size and bitrate: packets/s and loss as seen by the receiver. */
export async function iperfUdp(opts: IperfUdpOptions): Promise<IperfUdpResult> {
  if (!Number.isInteger(opts.payloadBytes) || opts.payloadBytes < 16 || opts.payloadBytes > 65507) {
    throw new Error(`iperfUdp: bad payloadBytes ${opts.payloadBytes}`);
  }
  const { json, cpu } = await iperf(opts, 'udp', ['-l', String(opts.payloadBytes), '-b', String(opts.bitrate)]);
  // iperf3 ≤ 3.12 reports UDP totals in end.sum (packets sent by the client, lost as counted by
  // the server); newer versions also give end.sum_sent / end.sum_received.
  const sum = json.end?.sum_received ?? json.end?.sum;
  const sentSum = json.end?.sum_sent ?? json.end?.sum;
  if (!sum || sum.packets === undefined) throw new Error('iperf3 UDP: JSON has no end.sum with packets');
  const seconds = sum.seconds ?? opts.seconds ?? 5;
  const sentPackets = sentSum?.packets ?? sum.packets;
  const lostPackets = Math.max(0, sum.lost_packets ?? 0);
  const receivedPackets = Math.max(0, sum.packets - lostPackets);
  return {
    sentPackets,
    lostPackets,
    receivedPackets,
    lossPercent: sum.lost_percent ?? (sum.packets ? (100 * lostPackets) / sum.packets : 0),
    packetsPerSecond: receivedPackets / seconds,
    sentPacketsPerSecond: sentPackets / seconds,
    gbps: (receivedPackets * opts.payloadBytes * 8) / seconds / 1e9,
    jitterMs: sum.jitter_ms ?? NaN,
    seconds,
    payloadBytes: opts.payloadBytes,
    iperfCpu: { local: json.end?.cpu_utilization_percent?.host_total ?? NaN, remote: json.end?.cpu_utilization_percent?.remote_total ?? NaN },
    cpu,
    raw: json,
  };
}

// ---------------------------------------------------------------------------------------------
// ping

export interface PingOptions {
  from: { ns: string };
  /** Destination address (or an Endpoint). */
  to: string | { ip: string };
  /** Echo requests (-c); default 3. */
  count?: number;
  /** Seconds between pings (-i); default 0.2 (root may go much lower). */
  intervalSec?: number;
  /** Seconds to wait for each reply (-W); default 2. */
  waitSec?: number;
  /**
   * Keep sending until `count` replies or a deadline of count × interval + 3 s (-w), as a
   * latency burst wants; default false (exactly `count` requests).
   */
  deadline?: boolean;
  /** ICMP payload bytes (-s); default 56. */
  payloadBytes?: number;
  /** Hard limit; default: with deadline, 2 s past it; without, (count + 5) s. */
  timeoutMs?: number;
}

export interface PingResult {
  /** Every one of `count` requests was answered (and ping exited 0). */
  ok: boolean;
  transmitted: number;
  received: number;
  lossPercent: number;
  /** Round-trip times in milliseconds (NaN when nothing came back). */
  rttMs: { min: number; avg: number; p50: number; p90: number; p99: number; max: number };
  /** Per-packet round-trip times, ms, in arrival order (duplicates excluded). */
  samples: number[];
  /** TTL of the first reply, or null. */
  ttl: number | null;
  /** What ping printed (stdout and stderr), for messages. */
  out: string;
}

/** Nearest-rank percentile of an ascending array (p in 0..100). NaN for an empty array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Parses iputils ping output (not -q): per-packet times, the summary counts, the first TTL. */
export function parsePing(out: string): Omit<PingResult, 'ok'> {
  const samples: number[] = [];
  for (const line of out.split('\n')) {
    if (line.includes('(DUP!)')) continue;
    const m = /\btime=([\d.]+) ms/.exec(line);
    if (m) samples.push(Number(m[1]));
  }
  const s = /(\d+) packets transmitted, (\d+) received/.exec(out);
  const transmitted = s ? Number(s[1]) : samples.length;
  const received = s ? Number(s[2]) : samples.length;
  const sorted = [...samples].sort((a, b) => a - b);
  const avg = sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : NaN;
  const ttl = /\bttl=(\d+)/.exec(out);
  return {
    transmitted,
    received,
    lossPercent: transmitted ? (100 * (transmitted - received)) / transmitted : 100,
    rttMs: {
      min: sorted[0] ?? NaN, avg, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99),
      max: sorted[sorted.length - 1] ?? NaN,
    },
    samples,
    ttl: ttl ? Number(ttl[1]) : null,
    out,
  };
}

/**
 * `ping` from a namespace: `count` echo requests `intervalSec` apart; bounded in time. A ping
 * that gets no answer is a result (ok false, `out` says why); only the hard limit throws.
 */
export async function ping(opts: PingOptions): Promise<PingResult> {
  const count = opts.count ?? 3;
  const interval = opts.intervalSec ?? 0.2;
  const dst = typeof opts.to === 'string' ? opts.to : opts.to.ip;
  const deadlineSec = Math.ceil(count * interval) + 3;
  const timeoutMs = opts.timeoutMs ?? (opts.deadline ? (deadlineSec + 2) * 1000 : (count + 5) * 1000);
  const args = ['-n', '-c', String(count), '-i', String(interval), '-W', String(opts.waitSec ?? 2),
    ...(opts.deadline ? ['-w', String(deadlineSec)] : []), '-s', String(opts.payloadBytes ?? 56), dst];
  const r = await runBounded(opts.from.ns, 'ping', args, { timeoutMs });
  if (r.timedOut) throw new Error(describe(r));
  const result = parsePing(r.stdout + r.stderr);
  return { ok: r.code === 0 && result.received === count, ...result };
}

/** True when one ping from `ns` to `ip` is answered within `waitSec` (default 1). */
export async function reachable(ns: string, ip: string, waitSec = 1): Promise<boolean> {
  return (await ping({ from: { ns }, to: ip, count: 1, waitSec })).ok;
}
