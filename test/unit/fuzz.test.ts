// A million random and mutated packets through ingress and egress, in both modes: nothing
// traps, nothing is written outside the packet's own slot, and every output stays inside the
// memory the core owns for it. Then generated lease keys and values of every shape through the
// lease parsers and the lease watcher: nothing throws, only exact keys name a subnet, an
// accepted value survives a round trip, and no input takes long.
import t, { type Test } from 'tap';
import { Core, type CoreOptions } from '../../src/dataplane/core.js';
import { DescriptorView } from '../../src/dataplane/descriptors.js';
import { decodeLeaseAttrs, decodeVxlanBackendData, encodeLeaseAttrs, etcdKeys, leaseFromKV, makeSubnetKey, parseSubnetKey, sameLeaseAttrs } from '../../src/subnet/lease.js';
import type { Registry, WatchEvent } from '../../src/subnet/registry.js';
import { LeaseWatcher } from '../../src/subnet/watcher.js';
import { memoryLogger } from '../../src/log.js';
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

function seeds(mode: 'udp' | 'vxlan' | 'wireguard'): Uint8Array[] {
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

const LEASE_INPUTS = Number(process.env.LINEN_FUZZ_LEASES ?? 20_000);
const KEYS = etcdKeys('/coreos.com/network');

const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;
// Long runs repeat a short random piece: cheap to make, still every digit.
const digits = (n: number): string => {
  const piece = Array.from({ length: Math.min(n, 16) }, () => String(rand(10))).join('');
  return piece.repeat(Math.ceil(n / Math.max(1, piece.length))).slice(0, n);
};
const octet = (): string => pick([String(rand(256)), String(rand(1000)), `0${rand(10)}`, '', digits(1 + rand(6)), '-1', '1e2']);

/** A subnet key name of some shape: valid, near-valid, hostile or garbage. */
function keyName(): string {
  const v4 = `${octet()}.${octet()}.${octet()}.${octet()}`;
  const len = pick([String(rand(33)), String(rand(100)), `0${rand(10)}`, '', digits(1 + rand(8))]);
  const v6 = pick(['fd00::', 'fd00:5:0:48::', 'FD00::', ':::', 'fd00::1:2:3:4:5:6:7', 'x']);
  const shapes = [
    () => `${rand(256)}.${rand(256)}.${rand(256)}.${rand(256)}-${rand(32)}`,
    () => `${v4}-${len}`,
    () => `${v4}-${len}&${v6}-${rand(200)}`,
    () => `${pick(['x', 'evil-', '1', '/', '../', ' '])}${v4}-${len}`,
    () => `${v4}-${len}${pick(['x', '/', ' ', '\n', '&', '-24', '\u0000'])}`,
    () => `${pick(['a/', 'subnets/', '/'])}${v4}-${len}`,
    () => digits(rand(200_000)),
    () => '1.'.repeat(rand(50_000)),
    () => '10.5.1.0-24'.repeat(rand(5000)),
    () => String.fromCharCode(...Array.from({ length: rand(80) }, () => rand(0x3000))),
    () => `${v4.replace(/\./g, pick(['x', '..', ':']))}-${len}`,
  ];
  return pick(shapes)();
}

/** A JSON value of random shape and depth (strings, numbers, nesting up to `depth`). */
function jsonValue(depth: number): unknown {
  const k = rand(depth > 0 ? 8 : 5);
  if (k === 0) return null;
  if (k === 1) return rand(2) === 0;
  if (k === 2) return pick([rand(1 << 30), -rand(100), 1.5, 1e300, 2 ** 53 + 2]);
  if (k === 3) return pick(['192.0.2.1', '10.5.1.1', '0.0.0.0', '255.255.255.255', '::1', '', 'c6:d2:32:6f:8f:44', 'x'.repeat(rand(2000))]);
  if (k === 4) return `${rand(300)}.${rand(300)}.${rand(300)}.${rand(300)}`;
  if (k === 5) return Array.from({ length: rand(4) }, () => jsonValue(depth - 1));
  const o: Record<string, unknown> = {};
  for (let i = rand(5); i > 0; i--) {
    o[pick(['PublicIP', 'publicip', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data', 'VNI', 'VtepMAC', 'x'])] = jsonValue(depth - 1);
  }
  return o;
}

/** A lease value of some shape: valid, wrong types, deep, long, truncated or not JSON. */
function leaseValue(): string {
  const good = JSON.stringify({ PublicIP: `192.0.2.${rand(256)}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:58:0a:00:00:05' } });
  const shapes = [
    () => good,
    () => JSON.stringify(jsonValue(3 + rand(4))),
    () => JSON.stringify({ PublicIP: jsonValue(1), BackendType: jsonValue(1), BackendData: jsonValue(3) }),
    () => { const n = rand(20_000); return '['.repeat(n) + ']'.repeat(n); },
    () => { const n = rand(3000); return `{"PublicIP":"192.0.2.1","BackendData":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`; },
    () => good.slice(0, rand(good.length)),
    () => good.replace(/./g, (c) => (rand(20) === 0 ? String.fromCharCode(rand(128)) : c)),
    () => `{"PublicIP":"${'\\"'.repeat(rand(50_000))}"}`,
    () => ' '.repeat(rand(100_000)),
    () => String.fromCharCode(...Array.from({ length: rand(200) }, () => rand(0x3000))),
  ];
  return pick(shapes)();
}

t.test('fuzz: lease keys and values of every shape', async (t) => {
  const log = memoryLogger(0).log;
  const watcher = new LeaseWatcher({ registry: { keys: KEYS } as unknown as Registry, ownSubnet: null, accept: 'all', log });
  let threw = 0, keysAccepted = 0, notExact = 0, valuesAccepted = 0, roundTripsLost = 0, slowest = 0, slowestWhat = '';
  for (let i = 0; i < LEASE_INPUTS; i++) {
    const name = keyName();
    const key = rand(4) === 0 ? `${KEYS.subnets}${pick(['/x/', 'x/', '//'])}${name}` : `${KEYS.subnets}/${name}`;
    const value = leaseValue();
    const t0 = process.hrtime.bigint();
    try {
      const sk = parseSubnetKey(key);
      if (sk !== null) {
        keysAccepted++;
        // Only the canonical name of a subnet (and its dual-stack form) is a subnet key's last
        // segment (whether the key sits right under subnets/ is the watcher's check, below).
        const v4 = makeSubnetKey(sk.subnet);
        const last = key.slice(key.lastIndexOf('/') + 1);
        if (last !== v4 && !last.startsWith(`${v4}&`)) notExact++;
      }
      const attrs = decodeLeaseAttrs(value);
      if (attrs.ok) {
        valuesAccepted++;
        const again = decodeLeaseAttrs(encodeLeaseAttrs(attrs.value));
        if (!again.ok || !sameLeaseAttrs(again.value, attrs.value)) roundTripsLost++;
        decodeVxlanBackendData(attrs.value.backendData);
      }
      const r = leaseFromKV(key, value, '0', i + 2);
      const ev: WatchEvent = rand(5) === 0
        ? { type: 'delete', key, revision: i + 2, subnet: parseSubnetKey(key)?.subnet ?? null }
        : r.ok ? { type: 'put', key, revision: i + 2, lease: r.value } : { type: 'invalid', key, revision: i + 2, error: r.error };
      watcher.applyEvents([ev], i + 2);
    } catch (e) {
      if (threw++ === 0) t.fail(`threw on key ${JSON.stringify(key.slice(0, 80))} value ${JSON.stringify(value.slice(0, 80))}: ${(e as Error).message}`);
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (ms > slowest) [slowest, slowestWhat] = [ms, `key of ${key.length} characters, value of ${value.length}`];
  }
  const peersExact = [...watcher.peers().values()].every((p) => p.key === `${KEYS.subnets}/${makeSubnetKey(p.subnet)}` || p.key.startsWith(`${KEYS.subnets}/${makeSubnetKey(p.subnet)}&`));
  t.comment(`figures: lease_inputs=${LEASE_INPUTS} keys_accepted=${keysAccepted} values_accepted=${valuesAccepted} peers=${watcher.peers().size} slowest_ms=${slowest.toFixed(2)} (${slowestWhat})`);
  t.equal(threw, 0, 'nothing threw');
  t.equal(notExact, 0, 'every accepted key is the exact name of its subnet');
  t.equal(roundTripsLost, 0, 'every accepted value decodes the same after encoding');
  t.ok(keysAccepted > 0 && valuesAccepted > 0, 'some keys and values were valid (the generator reaches the accepting paths)');
  t.ok(peersExact, "every peer the watcher holds came from its subnet's exact key");
  t.ok(slowest < 1000, `no input took long (slowest ${slowest.toFixed(2)} ms)`);
});
