// Nanoseconds per packet in the wasm core alone: egress and ingress, UDP and VXLAN mode,
// 64- and 1400-byte packets, batches of 64, measured with the `benchmark` package.
import Benchmark from 'benchmark';
import { Core, type Mode } from '../src/dataplane/core.js';

export interface MicroResult { mode: Mode; direction: 'egress' | 'ingress'; size: number; nsPerPacket: number; rme: number; samples: number }

const BATCH = 64;
const OWN_MAC = Uint8Array.from([0x0a, 0x58, 0x0a, 0x05, 0x48, 0x00]);
const PEER_MAC = Uint8Array.from([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
const ip = (a: number, b: number, c: number, d: number) => ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;

// Writes an IPv4/UDP packet of `size` bytes (TTL 255, valid header checksum) at `at`.
function writePacket(dv: DataView, at: number, size: number, src: number, dst: number, sport: number): void {
  dv.setUint8(at, 0x45); dv.setUint8(at + 1, 0); dv.setUint16(at + 2, size); dv.setUint32(at + 4, 0x40000000);
  dv.setUint8(at + 8, 255); dv.setUint8(at + 9, 17); dv.setUint16(at + 10, 0);
  dv.setUint32(at + 12, src); dv.setUint32(at + 16, dst);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += dv.getUint16(at + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  dv.setUint16(at + 10, ~sum & 0xffff);
  dv.setUint16(at + 20, sport); dv.setUint16(at + 22, 5201); dv.setUint16(at + 24, size - 20); dv.setUint16(at + 26, 0);
}

function setup(mode: Mode, direction: 'egress' | 'ingress', size: number): () => void {
  const core = new Core({ mode, port: mode === 'udp' ? 8285 : 8472, mtu: 1450, subnet: { ip: ip(10, 5, 72, 0), prefixLen: 24 }, vni: 1, mac: OWN_MAC });
  // A realistic table: 1,000 peers, one /24 each.
  for (let i = 0; i < 1000; i++) core.setRoute({ subnet: { ip: ip(10, 5, 0, 0) + i * 256, prefixLen: 24 }, publicIP: ip(192, 168, i >> 8, i & 255), mac: PEER_MAC });
  const L = core.layout;
  const dv = new DataView(core.memory.buffer);
  const table = direction === 'egress' ? L.EG_IN_DESC : L.IN_IN_DESC;
  const ipAt: number[] = [];
  const saved: number[] = [];
  for (let i = 0; i < BATCH; i++) {
    const d = table + i * L.DESC_SIZE;
    const off = dv.getUint32(d, true);
    const peer = 7 + (i % 8);
    let at = off;
    let len = size;
    if (direction === 'ingress' && mode === 'vxlan') {
      dv.setUint32(off, 0x08000000); dv.setUint32(off + 4, 1 << 8);
      for (let k = 0; k < 6; k++) { dv.setUint8(off + 8 + k, OWN_MAC[k]); dv.setUint8(off + 14 + k, PEER_MAC[k]); }
      dv.setUint16(off + 20, 0x0800);
      at = off + 22; len = size + 22;
    }
    if (direction === 'egress') writePacket(dv, at, size, ip(10, 5, 72, 5), ip(10, 5, peer, 9), 1000 + i);
    else writePacket(dv, at, size, ip(10, 5, peer, 9), ip(10, 5, 72, 5), 1000 + i);
    dv.setUint32(d + 4, len, true);
    dv.setUint32(d + 8, ((192 << 0) | (168 << 8) | (0 << 16) | (peer << 24)) >>> 0, true);
    dv.setUint16(d + L.D_PORT, mode === 'udp' ? 8285 : 8472, false); // UDP mode accepts only the flannel port
    ipAt.push(at + 8);
    saved.push(dv.getUint32(at + 8));
  }
  const run = direction === 'egress' ? core.exports.egress : (n: number, now: number) => { core.exports.ingress(n, now, 0); };
  return () => {
    // Undo the TTL decrement of the previous round (4 bytes per packet) so every round forwards.
    for (let i = 0; i < BATCH; i++) dv.setUint32(ipAt[i], saved[i]);
    run(BATCH, 0);
    if (core.exports.sendCount() + core.exports.tunWriteCount() !== BATCH) throw new Error('micro: packets were dropped');
  };
}

export function runMicro(log: (s: string) => void = console.log): MicroResult[] {
  const results: MicroResult[] = [];
  const suite = new Benchmark.Suite();
  for (const mode of ['udp', 'vxlan'] as const) {
    for (const direction of ['egress', 'ingress'] as const) {
      for (const size of [64, 1400]) {
        const fn = setup(mode, direction, size);
        suite.add(`${mode} ${direction} ${size}B`, fn, { minSamples: 20, maxTime: 1.5 });
        suite.on('cycle', function noop() { /* results collected below */ });
        (suite as unknown as { _linen?: unknown })._linen = undefined;
        results.push({ mode, direction, size, nsPerPacket: 0, rme: 0, samples: 0 });
      }
    }
  }
  suite.run();
  suite.forEach((b: Benchmark, i: number) => {
    results[i].nsPerPacket = 1e9 / b.hz / BATCH;
    results[i].rme = b.stats.rme;
    results[i].samples = b.stats.sample.length;
  });
  log('wasm core, batch of 64 packets, 1,000 routes');
  log('mode   direction  size    ns/packet   ±%');
  for (const r of results) {
    log(`${r.mode.padEnd(6)} ${r.direction.padEnd(10)} ${String(r.size).padStart(4)}B ${r.nsPerPacket.toFixed(1).padStart(10)} ${r.rme.toFixed(1).padStart(6)}`);
  }
  return results;
}
