// A million random and mutated packets through ingress and egress, in both modes: nothing
// traps, nothing is written outside the packet's own slot, and every output stays inside the
// memory the core owns for it.
import t, { type Test } from 'tap';
import { Core, type CoreOptions } from '../../src/dataplane/core.js';
import { DescriptorView } from '../../src/dataplane/descriptors.js';
import { ip4, buildUdp, buildTcp, buildIcmpEcho, bytes, vxlanHeader, ethHeader, concat, mac } from '../helpers/packets.js';

const TOTAL = Number(process.env.LINEN_FUZZ_PACKETS ?? 1_000_000);
const IN_USE = 48;          // slots fed per batch; the rest must stay untouched
const CANARY = 0xa5;
const GUARD = 4096;         // bytes after each packet checked for stray writes
const canary = new Uint8Array(GUARD).fill(CANARY);
const OWN_MAC = mac('0a:58:0a:05:48:00');
const PEER_MAC = mac('c6:d2:32:6f:8f:44');

let rng = 0x12345678;
function rand(n: number): number {
  rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
  return rng % n;
}

function seeds(mode: 'udp' | 'vxlan'): Uint8Array[] {
  const inner = [
    buildTcp('10.5.33.7', '10.5.72.5', 80, 3000, 1, 0x18, bytes(600)),
    buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(40)),
    buildIcmpEcho('10.5.33.7', '10.5.72.5', bytes(56)),
    buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(1400), { df: true }),
    buildUdp('10.5.72.5', '10.99.1.1', 1, 2, bytes(30), { ttl: 1 }),
    buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(30), { options: new Uint8Array(12) }),
  ];
  if (mode === 'udp') return inner;
  return inner.map((p) => concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), p));
}

function mutate(seed: Uint8Array): Uint8Array {
  const kind = rand(6);
  if (kind === 0) return bytes(rand(1700), rand(1 << 30) + 1); // pure garbage
  let p: Uint8Array = seed.slice();
  const flips = 1 + rand(4);
  for (let i = 0; i < flips; i++) {
    const at = rand(Math.max(1, Math.min(p.length, 64)));
    if (kind === 1 || kind === 5) p[at] = rand(256);                  // header byte
    else if (kind === 2) p[rand(p.length)] ^= 1 << rand(8);             // anywhere
  }
  if (kind === 3) p = p.subarray(0, rand(p.length + 1));              // truncate
  if (kind === 4) p = concat(p, bytes(rand(200), 9));                  // extend
  if (kind === 5 && p.length > 4) { p[2] = rand(256); p[3] = rand(256); } // lying length fields
  return p;
}

function runConfig(t: Test, name: string, opts: CoreOptions, packets: number): void {
  const core = new Core(opts);
  core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
  core.setRoute({ subnet: { ip: ip4('10.5.0.0'), prefixLen: 16 }, publicIP: ip4('192.168.1.30'), mac: PEER_MAC });
  const L = core.layout;
  const mem = new Uint8Array(core.memory.buffer);
  const desc = new DescriptorView(core.memory.buffer, L);
  const hashStart = L.ROUTES + L.MAX_ROUTES * L.ROUTE_SIZE;
  const hashBefore = mem.slice(hashStart, L.REGION_END);
  const routeHead = mem.slice(L.ROUTES, L.ROUTES + 2 * L.ROUTE_SIZE);
  // The slots past IN_USE in both rings are never written in this run, nor the split area
  // beyond what one batch can use, nor the gap up to the route table.
  const unused: [number, number][] = [
    [L.EG_SLOTS + IN_USE * L.SLOT_STRIDE, L.IN_SLOTS],
    [L.IN_SLOTS + IN_USE * L.SLOT_STRIDE, L.SPLIT_AREA],
    [L.SPLIT_AREA + L.SPLIT_SIZE, L.ROUTES],
  ];
  for (const [a, b] of unused) mem.fill(CANARY, a, b);
  const udpSeeds = seeds(opts.mode);
  const egressSeeds = seeds('udp').map((p) => (opts.vnetHdr ? concat(new Uint8Array(10), p) : p));
  if (opts.vnetHdr) {
    // TSO and USO super-packets as the TUN hands them over.
    const gso = (type: number, size: number, off: number) => Uint8Array.from([1, type, 0, 0, size & 255, size >> 8, 20, 0, off, 0]);
    egressSeeds.push(concat(gso(1, 1000, 16), buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 7, 0x18, bytes(6000), { df: true })));
    egressSeeds.push(concat(gso(5, 500, 6), buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(3000))));
  }
  let done = 0, trapped = 0, strayWrites = 0, badOutputs = 0;
  let now = 0;

  const inSlot = (off: number, len: number, slots: number): boolean => {
    const i = Math.floor((off - slots) / L.SLOT_STRIDE);
    return i >= 0 && i < IN_USE && off + len <= slots + (i + 1) * L.SLOT_STRIDE;
  };
  const icmpArea = L.ZERO_VNET; // the zero vnet header, the vnet scratch and the ICMP area
  const inIcmpArea = (off: number, len: number) =>
    (off >= icmpArea && off + len <= L.EG_SLOTS) || (off >= L.SPLIT_AREA && off + len <= L.SPLIT_AREA + L.SPLIT_SIZE);

  while (done < packets) {
    for (const dir of ['egress', 'ingress'] as const) {
      const table = dir === 'egress' ? L.EG_IN_DESC : L.IN_IN_DESC;
      const slots = dir === 'egress' ? L.EG_SLOTS : L.IN_SLOTS;
      const src = dir === 'egress' ? egressSeeds : udpSeeds;
      const ends: number[] = [];
      for (let i = 0; i < IN_USE; i++) {
        const d = desc.at(table, i);
        const off = desc.offset(d);
        const p = mutate(src[rand(src.length)]);
        mem.set(p, off);
        mem.fill(CANARY, off + p.length, off + p.length + GUARD);
        ends.push(off + p.length);
        // Now and then the descriptor lies about the length, or about GRO segmentation.
        const lie = rand(50) === 0;
        desc.setLength(d, lie ? 0xffffffff - rand(100) : p.length);
        desc.setAddr(d, ip4('192.168.1.0') + (rand(3) === 0 ? rand(256) : 20));
        desc.setPort(d, rand(16) === 0 ? rand(65536) : opts.port);
        desc.setSegSize(d, rand(8) === 0 ? rand(2000) : 0);
      }
      const checkOutputs = (): void => {
        for (let i = 0; i < core.sendCount; i++) {
          const d = desc.at(L.SEND_DESC, i);
          const off = desc.offset(d), len = desc.length(d);
          if (!(inSlot(off, len, slots) || inIcmpArea(off, len)) || len > 65535) badOutputs++;
        }
        for (let i = 0; i < core.tunWriteCount; i++) {
          const { first, count } = desc.tunWrite(L.TUN_WRITES, i);
          for (let k = 0; k < count; k++) {
            const { offset: off, length: len } = desc.iovec(L.IOVECS, first + k);
            const vnetScratch = len === 10 && off >= L.IOVECS && off < icmpArea;
            if (!(vnetScratch || inSlot(off, len, slots) || inIcmpArea(off, len))) badOutputs++;
          }
        }
      };
      try {
        if (dir === 'egress') {
          core.egress(IN_USE, now);
          checkOutputs();
        } else {
          // As a worker does: resume where the core stopped once the outputs are flushed.
          for (let next = 0; next < IN_USE;) {
            const before = next;
            next = core.ingress(IN_USE, now, next);
            checkOutputs();
            if (next <= before) { trapped++; break; }
          }
        }
      } catch {
        trapped++;
      }
      now += 1;
      for (let i = 0; i < IN_USE; i++) {
        const e = ends[i];
        const limit = Math.min(e + GUARD, slots + (i + 1) * L.SLOT_STRIDE);
        if (Buffer.compare(mem.subarray(e, limit), canary.subarray(0, limit - e)) !== 0) strayWrites++;
      }
      done += IN_USE;
    }
  }
  let unusedChanged = 0;
  for (const [a, b] of unused) if (mem.subarray(a, b).some((x) => x !== CANARY)) unusedChanged++;
  const c = core.counters();
  const counted = (['egress', 'ingress'] as const).reduce((s, d) =>
    s + Object.entries(c[d]).filter(([n]) => n !== 'icmp_sent').reduce((x, [, v]) => x + Number(v.packets), 0), 0);
  t.equal(trapped, 0, `${name}: no trap in ${done} packets`);
  t.equal(strayWrites, 0, `${name}: no write past any packet's end`);
  t.equal(badOutputs, 0, `${name}: every output lies inside its slot, the ICMP area or the split area`);
  t.equal(unusedChanged, 0, `${name}: unused slots and the split area untouched`);
  t.same(mem.subarray(hashStart, L.REGION_END), hashBefore, `${name}: route hash unchanged`);
  t.same(mem.subarray(L.ROUTES, L.ROUTES + 24), routeHead.subarray(0, 24), `${name}: route entry unchanged`);
  t.ok(counted >= done * 0.99, `${name}: every packet has a verdict (${counted} of ${done}; GRO splits may add)`);
  t.ok(Number(c.egress.malformed.packets) + Number(c.ingress.malformed.packets) > 0, `${name}: malformed input seen and counted`);
}

t.test('fuzz', async (t) => {
  const share = Math.ceil(TOTAL / 4);
  const base = { subnet: { ip: ip4('10.5.72.0'), prefixLen: 24 }, mac: OWN_MAC, vni: 1 };
  runConfig(t, 'udp', { ...base, mode: 'udp', port: 8285, mtu: 1472 }, share);
  runConfig(t, 'vxlan', { ...base, mode: 'vxlan', port: 8472, mtu: 1450 }, share);
  runConfig(t, 'udp+vnet', { ...base, mode: 'udp', port: 8285, mtu: 1472, vnetHdr: true }, share);
  runConfig(t, 'vxlan+vnet', { ...base, mode: 'vxlan', port: 8472, mtu: 1450, vnetHdr: true }, share);
});
