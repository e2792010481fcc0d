// The Prometheus text format of /metrics: the data plane's counters (packets and bytes by
// direction and outcome, I/O, per-peer traffic), then every other part's samples, grouped into
// families with their HELP and TYPE lines.
import { PACKET_VERDICTS, DIRECTIONS, isOutcome } from '../dataplane/verdicts.js';
import type { EngineStats, IoStat } from '../dataplane/engine.js';
import { formatCIDR, netKey, type IPv4Net, type NetKey } from '../net.js';
import type { Metric } from '../metric.js';

export interface MetricsSource {
  engine(): EngineStats | null;
  /** Called before each scrape so the engine's counters are current. */
  refresh?(): Promise<void>;
  /** Extra gauges and counters: name -> value (and optional help/type). */
  extra(): Metric[];
}

/**
 * Where each data-plane I/O counter is exported: operations, errors (labelled with the
 * operation that failed, so errors/operations is a ratio per op) and wake-ups are separate
 * metrics, since they do not add up. null: not exported.
 */
const IO_METRICS: Record<IoStat, { name: string; op?: string } | null> = {
  tun_reads: { name: 'linen_io_operations_total', op: 'tun_reads' },
  tun_writes: { name: 'linen_io_operations_total', op: 'tun_writes' },
  udp_sends: { name: 'linen_io_operations_total', op: 'udp_sends' },
  udp_receives: { name: 'linen_io_operations_total', op: 'udp_receives' },
  send_errors: { name: 'linen_io_errors_total', op: 'udp_sends' },
  tun_write_errors: { name: 'linen_io_errors_total', op: 'tun_writes' },
  wakeups: { name: 'linen_wakeups_total' },
  heartbeat_ms: null,
};

const HELP: Record<string, string> = {
  linen_packets_total: 'Packets handled by the data plane, by direction and outcome (forwarded or the drop reason); the outcomes of a direction add up to the packets handled.',
  linen_bytes_total: 'Bytes of inner IPv4 packets handled, by direction and outcome.',
  linen_events_total: 'Side events of the data plane, counted beside a packet\'s outcome: ICMP errors sent, ICMP errors not sent (rate limit), partial checksums completed.',
  linen_io_operations_total: 'Data-plane I/O operations: TUN reads and writes (a super-packet is one), UDP sends (a datagram or a GSO burst) and receives (a GRO batch is one).',
  linen_io_errors_total: 'Data-plane I/O that failed, by the operation: sends the kernel refused (udp_sends; a datagram or a GSO burst each), writes the TUN refused (tun_writes; a packet or a merged super-packet each).',
  linen_wakeups_total: 'Times a data-plane worker loop woke: poll() returning in a worker; each socket, TUN read or timer event with --engine dgram.',
};

function line(name: string, labels: Record<string, string> | undefined, value: number | bigint): string {
  const l = labels && Object.keys(labels).length
    ? '{' + Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',') + '}'
    : '';
  return `${name}${l} ${value.toString()}\n`;
}

/** A number that sorts subnets by address, then prefix length. */
const subnetOrder = (n: IPv4Net): number => (n.ip >>> 0) * 64 + n.prefixLen;

/**
 * The Prometheus text for one scrape. Per-peer series (linen_peer_*) are exported for at most
 * peerMetricsLimit peers, the ones with the lowest subnet addresses (a stable choice: a peer's
 * series do not come and go with traffic); linen_peer_metrics_omitted_peers says how many were left out.
 */
export function renderMetrics(src: MetricsSource, peerMetricsLimit: number): string {
  const families = new Map<string, { help: string; type: Metric['type']; samples: string[] }>();
  const add = (m: Metric): void => {
    let f = families.get(m.name);
    if (!f) families.set(m.name, (f = { help: m.help, type: m.type, samples: [] }));
    f.samples.push(line(m.name, m.labels, m.value));
  };
  const stats = src.engine();
  const extra = src.extra();
  const peerStats = stats ? stats.peers.map((p) => ({ subnet: formatCIDR(p.subnet), key: netKey(p.subnet), p })) : [];
  const allPeers = new Map<NetKey, IPv4Net>();
  for (const n of [...peerStats.map((x) => x.p.subnet), ...extra.flatMap((m) => (m.peer ? [m.peer] : []))]) allPeers.set(netKey(n), n);
  const shown = new Set([...allPeers].sort(([, a], [, b]) => subnetOrder(a) - subnetOrder(b)).slice(0, Math.max(0, peerMetricsLimit)).map(([k]) => k));
  if (stats) {
    for (const kind of ['packets', 'bytes'] as const) {
      const name = `linen_${kind}_total`;
      for (const dir of DIRECTIONS) {
        for (const v of PACKET_VERDICTS) {
          const value = stats.counters[dir][v][kind];
          if (isOutcome(v)) add({ name, help: HELP[name]!, type: 'counter', value, labels: { direction: dir, verdict: v } });
          else if (kind === 'packets') add({ name: 'linen_events_total', help: HELP['linen_events_total']!, type: 'counter', value, labels: { direction: dir, event: v } });
        }
      }
    }
    for (const [stat, value] of Object.entries(stats.io) as [IoStat, bigint][]) {
      const to = IO_METRICS[stat];
      if (to) add({ name: to.name, help: HELP[to.name]!, type: 'counter', value, labels: to.op ? { op: to.op } : undefined });
    }
    for (const [what, help, tx, rx] of [
      ['packets', 'Packets forwarded to (egress) and accepted from (ingress) each peer subnet (within --peer-metrics-limit).', 'txPackets', 'rxPackets'],
      ['bytes', 'Bytes of inner IPv4 packets forwarded to and accepted from each peer subnet (within --peer-metrics-limit).', 'txBytes', 'rxBytes'],
    ] as const) {
      const name = `linen_peer_${what}_total`;
      families.set(name, { help, type: 'counter', samples: [] });
      for (const { subnet, key, p } of peerStats) {
        if (!shown.has(key)) continue;
        add({ name, help, type: 'counter', value: p[tx], labels: { subnet, direction: 'egress' } });
        add({ name, help, type: 'counter', value: p[rx], labels: { subnet, direction: 'ingress' } });
      }
    }
    add({ name: 'linen_workers', help: 'Data-plane worker threads running.', type: 'gauge', value: stats.workers });
    add({ name: 'linen_worker_restarts_total', help: 'Data-plane workers that died and were restarted.', type: 'counter', value: stats.workerRestarts });
  }
  add({ name: 'linen_peer_metrics_omitted_peers', help: 'Peers whose per-peer series (linen_peer_*) are left out because of --peer-metrics-limit.', type: 'gauge', value: allPeers.size - shown.size });
  for (const m of extra) if (!m.peer || shown.has(netKey(m.peer))) add(m);
  let out = '';
  for (const [name, f] of families) out += `# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n${f.samples.join('')}`;
  return out;
}
