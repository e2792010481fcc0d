// Messages and shared-memory layout between the native engine (main thread) and its workers.
import type { MessagePort } from 'node:worker_threads';
import type { EngineOptions, EngineFeatures, EngineStats, PeerTraffic, SlottedRoute, WireguardReport } from './engine.js';
import type { CounterSnapshot } from './core.js';
import { PACKET_VERDICTS, DIRECTIONS, type PacketVerdictName } from './verdicts.js';
import type { PeerRoute } from '../peer-route.js';
import { PeerCounter, type Layout } from './abi.js';
import type { IPv4Net } from '../net.js';

export interface WorkerData {
  index: number;
  options: Omit<EngineOptions, 'mac'> & { mac: number[] };
  /** Decided by worker 0 and imposed on the others (multi-queue TUNs need identical flags). */
  features: EngineFeatures | null;
  eventFd: number;
  port: MessagePort;
  stats: SharedArrayBuffer;
  routes: SlottedRoute[];
}

export type { SlottedRoute };

export type ControlMessage =
  | { type: 'set'; route: PeerRoute; slot: number }
  | { type: 'remove'; subnet: IPv4Net; slot: number }
  /** Publish the counters now and then store seq in the stats' last word. */
  | { type: 'publish'; seq: number }
  | { type: 'stop' };

export type WorkerReport =
  /** fds: every descriptor the worker opened, closed by the main thread if the worker dies. */
  | { type: 'ready'; features: EngineFeatures; fds: number[] }
  /** A control message failed; the worker carries on. */
  | { type: 'error'; message: string }
  /** WireGuard mode, on every publish: the peers' handshake state and the control path's counters. */
  | ({ type: 'wireguard' } & WireguardReport)
  | { type: 'stopped' };

// Layout of the stats SharedArrayBuffer (u64 each): the I/O counters below, then the core's
// verdict counters (COUNTERS region copied as is), then PEER_SLOTS slots of PEER_WORDS words
// with each peer route's counters in the core's PeerCounter order, then one word: the seq of the last 'publish' request served. The main thread assigns
// the slots; a route beyond PEER_SLOTS is forwarded but not counted per peer.
export { IO_STATS, type IoStat } from './engine.js';
import { IO_STATS, type IoStat } from './engine.js';
export const STAT_HEARTBEAT = IO_STATS.indexOf('heartbeat_ms');
export const STAT_EXTRA = IO_STATS.length;
export const PEER_SLOTS = 4096;
export const PEER_WORDS = PeerCounter.Count;

/** Word indexes of that layout for a core whose counters take counterWords words. */
export interface StatsLayout {
  /** The core's verdict counters: [STAT_EXTRA, STAT_EXTRA + counterWords). */
  counterWords: number;
  /** First word of the per-peer slots (the words before it are summed as totals). */
  peers: number;
  /** The publish seq word. */
  seq: number;
  /** Words in all. */
  words: number;
}

export function statsLayout(core: Pick<Layout, 'COUNTER_DIRS' | 'COUNTER_SLOTS'>): StatsLayout {
  const counterWords = core.COUNTER_DIRS * core.COUNTER_SLOTS * 2; // packets and bytes
  const peers = STAT_EXTRA + counterWords;
  const seq = peers + PEER_SLOTS * PEER_WORDS;
  return { counterWords, peers, seq, words: seq + 1 };
}

/** EngineStats' counters, peers and I/O counters from the words of that layout: `word(i)` is
 * word i summed over every stats buffer counted (workers, and those that died before). The
 * per-peer traffic is the slots of `routes` (a route without a slot is not counted per peer). */
export function decodeStats(L: StatsLayout, word: (i: number) => bigint, routes: Iterable<SlottedRoute>): Pick<EngineStats, 'counters' | 'peers' | 'io'> {
  const peers: PeerTraffic[] = [];
  for (const { route, slot } of routes) {
    if (slot < 0 || slot >= PEER_SLOTS) continue;
    const at = L.peers + slot * PEER_WORDS;
    peers.push({
      subnet: route.subnet, txPackets: word(at + PeerCounter.TxPackets), txBytes: word(at + PeerCounter.TxBytes),
      rxPackets: word(at + PeerCounter.RxPackets), rxBytes: word(at + PeerCounter.RxBytes),
    });
  }
  const counters = {} as CounterSnapshot;
  const slotsPerDir = L.counterWords / 2 / DIRECTIONS.length;
  DIRECTIONS.forEach((dir, d) => {
    const byVerdict = {} as Record<PacketVerdictName, { packets: bigint; bytes: bigint }>;
    PACKET_VERDICTS.forEach((name, v) => {
      const at = STAT_EXTRA + (d * slotsPerDir + v) * 2;
      byVerdict[name] = { packets: word(at), bytes: word(at + 1) };
    });
    counters[dir] = byVerdict;
  });
  const io = Object.fromEntries(IO_STATS.map((name, i) => [name, word(i)])) as Record<IoStat, bigint>;
  return { counters, peers, io };
}
