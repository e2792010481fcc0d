// Data-path scaling runs (npm run bench -- --scaling):
//
//  1. Route-table size against egress ns/packet in the wasm core (bench/micro.ts's approach:
//     a Core, batches of 64 packets, no I/O). The table holds N /24 peers; every batch goes to
//     64 destinations drawn at random among them (a pool of 8,192 precomputed random
//     destinations, walked in order, so that for large N the core's small lookup cache misses
//     as it would with many busy peers). Before each batch the harness rewrites each packet's
//     destination, TTL and header checksum (two 4-byte stores per packet); that constant cost
//     is measured on its own and reported as harnessNsPerPacket; nsPerPacket excludes it.
//
//  2. Workers: linen VXLAN (native engine, offloads on) with linend --queues 1 and 2, against
//     4-stream TCP throughput on the same two-host topology as the suite.

import { Core, type Mode } from '../src/dataplane/core.js';
import { linenContender } from './linen.js';
import { runContender, summarize, type ContenderResult, type SuiteSettings, type Summary } from './suite.js';

export const ROUTE_TABLE_SIZES = [10, 100, 1000, 10000, 65536] as const;

export interface RouteScalingPoint {
  mode: Mode;
  routes: number;
  packetBytes: number;
  /** Core only (harness cost subtracted): median over timed samples, and their spread. */
  nsPerPacket: number;
  min: number;
  max: number;
  /** Inter-quartile range of the samples (what the chart's whiskers show: robust to preemption). */
  p25: number;
  p75: number;
  samples: number;
  /** The per-packet cost of the harness's header rewrite, measured alone (subtracted above). */
  harnessNsPerPacket: number;
}

export interface QueueScalingPoint {
  queues: number;
  contender: string;
  status: 'ok' | 'failed';
  error?: string;
  tcp4Gbps: Summary | null;
  /** CPU seconds per Gbit of the linend processes over the 4-stream runs. */
  cpuPerGbit: Summary | null;
  runs: ContenderResult['runs'];
}

export interface ScalingResults {
  routeTable: {
    batch: number;
    packetBytes: number;
    destinationPool: number;
    note: string;
    points: RouteScalingPoint[];
  };
  queues: {
    mode: 'vxlan';
    streams: number;
    durationSec: number;
    runs: number;
    points: QueueScalingPoint[];
  };
  seconds: number;
}

const BATCH = 64;
const POOL = 8192;
const PEER_MAC = Uint8Array.from([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
const OWN_MAC = Uint8Array.from([0x0a, 0x58, 0xac, 0x10, 0x00, 0x00]);
const ip = (a: number, b: number, c: number, d: number): number => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
/** Route i: 10.x.y.0/24 (65,536 of them fill 10.0.0.0/8). Local subnet 172.16.0.0/24 is outside. */
const routeNet = (i: number): number => (ip(10, 0, 0, 0) + i * 256) >>> 0;
const SRC = ip(172, 16, 0, 5);

/** Deterministic PRNG (mulberry32) so that every run draws the same destinations. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function ipv4HeaderChecksum(words: number[]): number {
  let sum = 0;
  for (const w of words) sum += w;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

interface Bench {
  /** One round: rewrite headers, run egress on a batch. */
  round(): void;
  /** One round of the rewrite alone. */
  harness(): void;
}

function prepare(core: Core, routes: number, size: number): Bench {
  const L = core.layout;
  const dv = new DataView(core.memory.buffer);
  const rnd = prng(0x5eed + routes);
  // Pool of destinations with the header words that depend on them: [TTL|proto|checksum] at +8
  // and the destination at +16.
  const word8 = new Uint32Array(POOL);
  const dsts = new Uint32Array(POOL);
  for (let k = 0; k < POOL; k++) {
    const r = Math.floor(rnd() * routes);
    const dst = (routeNet(r) + 2 + Math.floor(rnd() * 250)) >>> 0;
    const words = [0x4500, size, 0, 0x4000, (64 << 8) | 17, 0, SRC >>> 16, SRC & 0xffff, dst >>> 16, dst & 0xffff];
    const csum = ipv4HeaderChecksum(words);
    word8[k] = (((64 << 24) | (17 << 16) | csum) >>> 0);
    dsts[k] = dst;
  }
  const at: number[] = [];
  for (let i = 0; i < BATCH; i++) {
    const d = L.EG_IN_DESC + i * L.DESC_SIZE;
    const off = dv.getUint32(d, true);
    // IPv4 + UDP header, the variable words are written per round.
    dv.setUint8(off, 0x45); dv.setUint8(off + 1, 0); dv.setUint16(off + 2, size); dv.setUint32(off + 4, 0x00004000);
    dv.setUint32(off + 12, SRC);
    dv.setUint16(off + 20, 40000 + i); dv.setUint16(off + 22, 5201); dv.setUint16(off + 24, size - 20); dv.setUint16(off + 26, 0);
    dv.setUint32(d + 4, size, true);
    at.push(off);
  }
  let k = 0;
  const rewrite = (): void => {
    for (let i = 0; i < BATCH; i++) {
      const off = at[i]!;
      dv.setUint32(off + 8, word8[k]!);
      dv.setUint32(off + 16, dsts[k]!);
      k = (k + 1) & (POOL - 1);
    }
  };
  const egress = core.exports.egress;
  return {
    round: () => { rewrite(); egress(BATCH, 0); },
    harness: rewrite,
  };
}

/** ns per call of fn, median over `samples` timed samples of about `sampleMs` each, and spread. */
function time(fn: () => void, samples: number, sampleMs: number): { median: number; min: number; max: number; p25: number; p75: number; n: number } {
  // Warm up (let the JIT settle), then calibrate: rounds per sample.
  const warm = Date.now() + 150;
  while (Date.now() < warm) for (let i = 0; i < 64; i++) fn();
  let reps = 64;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms >= sampleMs / 2 || reps > 1 << 24) {
      reps = Math.max(1, Math.round((reps * sampleMs) / Math.max(ms, 0.001)));
      break;
    }
    reps *= 4;
  }
  const per: number[] = [];
  for (let s = 0; s < samples; s++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) fn();
    per.push(Number(process.hrtime.bigint() - t0) / reps);
  }
  const sum = summarize(per)!;
  const sorted = [...per].sort((a, b) => a - b);
  const q = (f: number): number => sorted[Math.min(sorted.length - 1, Math.round(f * (sorted.length - 1)))]!;
  return { median: sum.median, min: sum.min, max: sum.max, p25: q(0.25), p75: q(0.75), n: sum.n };
}

export interface RouteScalingOptions {
  sizes?: readonly number[];
  modes?: readonly Mode[];
  packetBytes?: number;
  samples?: number;
  sampleMs?: number;
  log?: (line: string) => void;
}

/** Route-table size against egress ns/packet in the wasm core. */
export function runRouteScaling(o: RouteScalingOptions = {}): ScalingResults['routeTable'] {
  const log = o.log ?? ((l: string) => console.log(l));
  const sizes = [...(o.sizes ?? ROUTE_TABLE_SIZES)].sort((a, b) => a - b);
  const size = o.packetBytes ?? 64;
  const samples = o.samples ?? 61;
  const sampleMs = o.sampleMs ?? 5;
  const points: RouteScalingPoint[] = [];
  for (const mode of o.modes ?? (['udp', 'vxlan'] as const)) {
    const core = new Core({ mode, port: mode === 'udp' ? 8285 : 8472, mtu: 1450, subnet: { ip: ip(172, 16, 0, 0), prefixLen: 24 }, vni: 1, mac: OWN_MAC });
    let have = 0;
    for (const n of sizes) {
      // Tables grow in place: routes 0..n-1 (each a /24 via its own peer).
      for (; have < n; have++) core.setRoute({ subnet: { ip: routeNet(have), prefixLen: 24 }, publicIP: ip(100, 64 + (have >>> 16), (have >>> 8) & 255, have & 255), mac: PEER_MAC });
      if (core.routeCount !== n) throw new Error(`scaling: core holds ${core.routeCount} routes, wanted ${n}`);
      const b = prepare(core, n, size);
      // Packets forwarded by one round (sends may be fewer: neighbours to one peer share a send).
      const forwarded = (): number => {
        const before = core.counters().egress.forwarded.packets;
        b.round();
        return Number(core.counters().egress.forwarded.packets - before);
      };
      const first = forwarded();
      if (first !== BATCH) throw new Error(`scaling: ${mode} with ${n} routes forwarded ${first} of ${BATCH} packets`);
      const harness = time(b.harness, samples, sampleMs);
      const t = time(b.round, samples, sampleMs);
      if (forwarded() !== BATCH) throw new Error(`scaling: ${mode} with ${n} routes dropped packets`);
      const h = harness.median / BATCH;
      const p: RouteScalingPoint = {
        mode, routes: n, packetBytes: size,
        nsPerPacket: t.median / BATCH - h, min: t.min / BATCH - h, max: t.max / BATCH - h,
        p25: t.p25 / BATCH - h, p75: t.p75 / BATCH - h, samples: t.n, harnessNsPerPacket: h,
      };
      points.push(p);
      log(`routes ${mode.padEnd(5)} ${String(n).padStart(6)} peers: ${p.nsPerPacket.toFixed(1).padStart(6)} ns/packet ` +
        `[p25–p75 ${p.p25.toFixed(1)}–${p.p75.toFixed(1)}, min ${p.min.toFixed(1)}] (harness ${h.toFixed(1)} ns/packet subtracted)`);
    }
  }
  return {
    batch: BATCH, packetBytes: size, destinationPool: POOL, points,
    note: `egress, batches of ${BATCH} ${size}-byte IPv4/UDP packets, /24 routes, destinations drawn at random among ` +
      `all N peers (pool of ${POOL}); median of ${samples} timed samples of ~${sampleMs} ms, spread p25–p75; ` +
      `header-rewrite harness cost measured alone and subtracted`,
  };
}

export interface QueueScalingOptions {
  queues?: readonly number[];
  runs: number;
  durationSec: number;
  settings: SuiteSettings;
  log?: (line: string) => void;
}

/** linen VXLAN with 1 and 2 queues against 4-stream TCP throughput. */
export async function runQueueScaling(o: QueueScalingOptions): Promise<ScalingResults['queues']> {
  const log = o.log ?? ((l: string) => console.log(l));
  const points: QueueScalingPoint[] = [];
  // Only the 4-stream TCP run: no UDP, no ping, no single stream.
  const s: SuiteSettings = {
    ...o.settings, runs: o.runs, durationSec: o.durationSec, tcpStreams: [4], udpPayloads: [], pingCount: 0, secondary: false,
  };
  for (const queues of o.queues ?? [1, 2]) {
    const c = linenContender({ mode: 'vxlan', offload: 'on', queues, underlayMtu: s.underlayMtu });
    const res = await runContender({ ...c, name: `${c.name} --queues ${queues}`, setup: c.setup }, s, log);
    const gbps = res.runs.map((r) => r.tcp4?.gbps ?? NaN);
    const cpu = res.runs.map((r) => {
      const t = r.tcp4;
      if (!t || !(t.bytesReceived > 0)) return NaN;
      return t.cpu.processTotal / ((t.bytesReceived * 8) / 1e9);
    });
    const tcp4 = summarize(gbps);
    points.push({
      queues, contender: c.name, status: tcp4 ? res.status : 'failed',
      ...(res.error || !tcp4 ? { error: res.error ?? res.errors[0]?.error ?? 'no result' } : {}),
      tcp4Gbps: tcp4, cpuPerGbit: summarize(cpu), runs: res.runs,
    });
  }
  return { mode: 'vxlan', streams: 4, durationSec: o.durationSec, runs: o.runs, points };
}
