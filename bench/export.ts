// Other shapes of a run's results: knb's (InfraBuilder k8s-bench-suite) scenario names and units,
// so that linen's figures can sit beside published knb CNI benchmarks, and YAML of any value.
//
// knb's JSON (its -o json) is, per benchmark: metadata {name, generator, version, date,
// server-node, client-node, socket-buffer-size} and data {cpu, kernel, k8s-version, mtu, idle,
// pod2pod {tcp, udp}, pod2svc {tcp, udp}}, each scenario {bandwidth (Mbit/s, iperf3 receiver),
// client and server {cpu {total, user, nice, system, iowait, steal} (percent of the node, as
// sar reports it: system includes irq and softirq), ram (MB used, as free -m)}}. knb runs one
// stream of TCP and UDP at -b 0 with iperf3's default datagram size; here TCP is the 1-stream
// run and UDP the 1400-byte one. Both simulated hosts share one machine, so client and server
// carry the same machine-wide figures.
import type { ContenderResult, IdleRun, MachineFacts, MetricKey, RunRecord, SuiteSettings } from './suite.js';
import type { CpuUsage } from '../lab/traffic.js';

export interface KnbCpu { total: number; user: number; nice: number; system: number; iowait: number; steal: number }
export interface KnbSide { cpu: KnbCpu; ram: number }
export interface KnbScenario { bandwidth: number; client: KnbSide; server: KnbSide }
export interface KnbDocument {
  metadata: { name: string; generator: string; version: string; date: string; 'server-node': string; 'client-node': string; 'socket-buffer-size': string };
  data: {
    cpu: string; kernel: string; 'k8s-version': string; mtu: string;
    idle: KnbScenario;
    pod2pod: { tcp: KnbScenario; udp: KnbScenario };
    pod2svc: { tcp: KnbScenario; udp: KnbScenario };
  };
}

export interface KnbExport {
  generator: string;
  note: string;
  results: KnbDocument[];
}

const r2 = (x: number): number => (Number.isFinite(x) ? Math.round(x * 100) / 100 : NaN);

function cpuOf(u: CpuUsage | undefined): KnbCpu {
  if (!u) return { total: NaN, user: NaN, nice: NaN, system: NaN, iowait: NaN, steal: NaN };
  const cap = u.wallSeconds * u.cores;
  const p = (x: number): number => r2((100 * x) / cap);
  const s = u.system;
  const c = { user: p(s.user), nice: p(s.nice), system: p(s.system + s.irq + s.softirq), iowait: p(s.iowait), steal: p(s.steal) };
  return { total: r2(c.user + c.nice + c.system + c.iowait + c.steal), ...c };
}

function idleCpu(i: IdleRun | undefined): KnbCpu {
  if (!i) return cpuOf(undefined);
  const c = i.cpuPct;
  const v = { user: r2(c.user), nice: r2(c.nice), system: r2(c.system + c.irq + c.softirq), iowait: r2(c.iowait), steal: r2(c.steal) };
  return { total: r2(v.user + v.nice + v.system + v.iowait + v.steal), ...v };
}

/** The run whose value of `key` is the median one (the one knb would have shown). */
function medianRun(c: ContenderResult, key: MetricKey): RunRecord | undefined {
  const runs = c.runs.filter((r) => Number.isFinite(r.values[key])).sort((a, b) => a.values[key] - b.values[key]);
  return runs[runs.length >> 1];
}

function scenario(mbps: number, cpu: KnbCpu, ram: number): KnbScenario {
  const side = { cpu, ram: Math.round(ram) };
  return { bandwidth: r2(mbps), client: side, server: side };
}

/** What the export reads of a run's results (BenchResults fits). */
export interface ExportInput {
  startedAt: string;
  machine: MachineFacts;
  settings?: SuiteSettings;
  contenders: readonly ContenderResult[];
}

export function knbExport(r: ExportInput): KnbExport {
  const m = r.machine;
  const results = r.contenders.filter((c) => c.status === 'ok').map((c): KnbDocument => {
    const idle = medianRun(c, 'idleCpuPct')?.idle;
    const ram = idle?.memUsedMiB ?? NaN;
    const tcp = medianRun(c, 'tcp1Gbps')?.tcp1;
    const udp = medianRun(c, 'udp1400Pps')?.udp1400;
    const stcp = medianRun(c, 'svcTcp1Gbps')?.svcTcp1;
    const sudp = medianRun(c, 'svcUdp1400Pps')?.svcUdp1400;
    const mem = (u: CpuUsage | undefined): number => u?.memUsedMiB ?? ram;
    return {
      metadata: {
        name: `linen-bench-${c.name}`, generator: 'linen bench (knb-compatible export)', version: m.linenCommit.slice(0, 12),
        date: r.startedAt.slice(0, 19).replace('T', ' '), 'server-node': 'host 2 (network namespace)', 'client-node': 'host 1 (network namespace)',
        'socket-buffer-size': r.settings?.udpSocketBuffer ?? 'auto',
      },
      data: {
        cpu: m.cpuModel, kernel: m.kernel, 'k8s-version': 'none (simulated hosts)', mtu: String(c.tunnelMtu),
        idle: scenario(0, idleCpu(idle), ram),
        pod2pod: {
          tcp: scenario((tcp?.gbps ?? NaN) * 1000, cpuOf(tcp?.cpu), mem(tcp?.cpu)),
          udp: scenario((udp?.gbps ?? NaN) * 1000, cpuOf(udp?.cpu), mem(udp?.cpu)),
        },
        pod2svc: {
          tcp: scenario((stcp?.gbps ?? NaN) * 1000, cpuOf(stcp?.cpu), mem(stcp?.cpu)),
          udp: scenario((sudp?.gbps ?? NaN) * 1000, cpuOf(sudp?.cpu), mem(sudp?.cpu)),
        },
      },
    };
  });
  return {
    generator: 'linen bench',
    note: 'One knb document per contender. bandwidth: Mbit/s received (TCP: 1 stream; UDP: 1400-byte datagrams at an unlimited rate). ' +
      'cpu: percent of the whole machine (sar-style: system includes irq and softirq); ram: MB in use on the machine. ' +
      'Both simulated hosts share one machine, so client and server show the same machine-wide figures.',
    results,
  };
}

// ---------------------------------------------------------------------------------------------
// YAML

const PLAIN_KEY = /^[A-Za-z_][\w.-]*$/;

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (typeof v === 'boolean') return String(v);
  return JSON.stringify(String(v));
}

/** YAML of a JSON-like value (non-finite numbers become null, as in the JSON). */
export function toYaml(v: unknown, indent = 0): string {
  const pad = ' '.repeat(indent);
  if (Array.isArray(v)) {
    if (v.length === 0) return `${pad}[]\n`;
    return v.map((x) => {
      if (x !== null && typeof x === 'object' && Object.keys(x).length) {
        const body = toYaml(x, indent + 2);
        return `${pad}- ${body.slice(indent + 2)}`;
      }
      return `${pad}- ${x !== null && typeof x === 'object' ? (Array.isArray(x) ? '[]' : '{}') : scalar(x)}\n`;
    }).join('');
  }
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return `${pad}{}\n`;
    return entries.map(([k, x]) => {
      const key = PLAIN_KEY.test(k) ? k : JSON.stringify(k);
      if (x !== null && typeof x === 'object' && Object.keys(x).length) return `${pad}${key}:\n${toYaml(x, indent + 2)}`;
      return `${pad}${key}: ${x !== null && typeof x === 'object' ? (Array.isArray(x) ? '[]' : '{}') : scalar(x)}\n`;
    }).join('');
  }
  return `${pad}${scalar(v)}\n`;
}
