// Segmentation offload in the core: TSO/USO super-packets split into wire packets, and TCP
// segments merged into super-packets for the TUN, checked byte for byte.
import t from 'tap';
import { Harness, datagrams } from '../helpers/harness.js';
import {
  ip4, buildTcp, buildUdp, parseIp4, inetChecksum, l4ChecksumOk, bytes, vxlanHeader, ethHeader,
  concat, mac,
} from '../helpers/packets.js';

const OWN_MAC = mac('0a:58:0a:05:48:00');
const PEER_MAC = mac('c6:d2:32:6f:8f:44');

function harness(mode: 'udp' | 'vxlan'): Harness {
  const h = new Harness({ mode, port: mode === 'udp' ? 8285 : 8472, mtu: mode === 'udp' ? 1472 : 1450, subnet: { ip: ip4('10.5.72.0'), prefixLen: 24 }, vni: 1, mac: OWN_MAC, vnetHdr: true });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
  return h;
}

function vnet(gsoType: number, gsoSize: number, csumOffset: number, hdrLen = 0): Uint8Array {
  const v = new Uint8Array(10);
  const dv = new DataView(v.buffer);
  v[0] = 1; v[1] = gsoType;
  dv.setUint16(2, hdrLen, true); dv.setUint16(4, gsoSize, true); dv.setUint16(6, 20, true); dv.setUint16(8, csumOffset, true);
  return v;
}


function tcpFields(p: Uint8Array): { seq: number; flags: number; payload: Uint8Array } {
  const ip = parseIp4(p);
  const tcp = ip.payload;
  const dv = new DataView(tcp.buffer, tcp.byteOffset);
  return { seq: dv.getUint32(4), flags: tcp[13], payload: tcp.subarray((tcp[12] >> 4) * 4) };
}

for (const mode of ['udp', 'vxlan'] as const) {
  t.test(`${mode}: a TSO super-packet becomes correct wire segments in UDP_SEGMENT bursts`, async (t) => {
    const h = harness(mode);
    const mss = mode === 'udp' ? 1432 : 1410;
    const data = bytes(60000, 3);
    const superPkt = buildTcp('10.5.72.5', '10.5.33.7', 40000, 5201, 0xfffff000, 0x18, data, { df: true, id: 0xfff0 });
    const { sends } = h.egress([concat(vnet(1, mss, 16, 40), superPkt)]);
    const framing = mode === 'udp' ? 0 : 22;
    const perSend = Math.min(64, Math.floor(65507 / (framing + 40 + mss)));
    const nseg = Math.ceil(data.length / mss);
    t.equal(sends.length, Math.ceil(nseg / perSend), `${nseg} segments in ${sends.length} sends`);
    for (const s of sends) {
      t.ok(s.bytes.length <= 65507, 'each burst within the UDP_SEGMENT payload limit');
      if (datagrams(s).length > 1) t.equal(s.segSize, framing + 40 + mss);
    }
    const segs = sends.flatMap(datagrams);
    t.equal(segs.length, nseg);
    const rebuilt: Uint8Array[] = [];
    let bad = 0;
    segs.forEach((d, i) => {
      if (mode === 'vxlan') {
        t.same(d.subarray(0, 8), vxlanHeader(1));
        t.same(d.subarray(8, 22), ethHeader(PEER_MAC, OWN_MAC));
      }
      const p = d.subarray(framing);
      const ip = parseIp4(p);
      const f = tcpFields(p);
      if (!ip.headerOk || !l4ChecksumOk(p) || ip.ttl !== (mode === 'udp' ? 63 : 64) || ip.id !== ((0xfff0 + i) & 0xffff) || ip.total !== p.length) bad++;
      if (f.seq !== ((0xfffff000 + i * mss) >>> 0)) bad++;
      const lastFlags = i === nseg - 1 ? 0x18 : 0x10;
      if (f.flags !== lastFlags) bad++;
      if (!ip.df) bad++;
      rebuilt.push(f.payload);
    });
    t.equal(bad, 0, 'every segment: header and TCP checksums, TTL, IP ID, length, sequence (wrapping), flags, DF');
    t.same(concat(...rebuilt), data, 'payload reassembles exactly');
    t.equal(h.counter('egress', 'forwarded'), nseg, 'forwarded counts wire packets');
  });
}

t.test('USO: a UDP super-packet is split with per-segment UDP length and checksum', async (t) => {
  const h = harness('udp');
  const data = bytes(5000, 5);
  const superPkt = buildUdp('10.5.72.5', '10.5.33.7', 4433, 4433, data);
  const { sends } = h.egress([concat(vnet(5, 1200, 6), superPkt)]);
  const segs = sends.flatMap(datagrams);
  t.equal(segs.length, 5);
  let ok = 0;
  for (const s of segs) {
    const ip = parseIp4(s);
    const udpLen = (ip.payload[4] << 8) | ip.payload[5];
    if (ip.headerOk && l4ChecksumOk(s) && udpLen === ip.payload.length) ok++;
  }
  t.equal(ok, 5);
  t.same(concat(...segs.map((s) => parseIp4(s).payload.subarray(8))), data);
});

t.test('super-packets that lie are refused; too-big segments with DF get frag needed', async (t) => {
  const h = harness('vxlan');
  const tcp = buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(3000), { df: true });
  const udp = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(3000));
  t.equal(h.egress([concat(vnet(1, 1000, 16), udp)]).sends.length, 0, 'TCPV4 type on a UDP packet');
  t.equal(h.egress([concat(vnet(5, 1000, 6), tcp)]).sends.length, 0, 'UDP_L4 type on a TCP packet');
  t.equal(h.egress([concat(vnet(1, 0, 16), tcp)]).sends.length, 0, 'zero gso_size');
  t.equal(h.counter('egress', 'malformed'), 3);
  const r = h.egress([concat(vnet(1, 1460, 16), tcp)]);
  t.equal(r.sends.length, 0);
  t.equal(r.tun.length, 1);
  const icmp = parseIp4(r.tun[0].subarray(10));
  t.equal(icmp.payload[0], 3);
  t.equal(icmp.payload[1], 4);
  t.equal((icmp.payload[6] << 8) | icmp.payload[7], 1450);
});

// --- ingress merge ---------------------------------------------------------------------

function segment(seq: number, len: number, flags = 0x10, sport = 5201, seed = seq): Uint8Array {
  return buildTcp('10.5.33.7', '10.5.72.5', sport, 40000, seq, flags, bytes(len, seed), { df: true });
}
function fromPeer(pkts: Uint8Array[]): { data: Uint8Array; from: string }[] {
  return pkts.map((p) => ({ data: p, from: '192.168.1.20' }));
}
function vnetOf(w: Uint8Array) {
  const dv = new DataView(w.buffer, w.byteOffset);
  return { flags: w[0], gsoType: w[1], hdrLen: dv.getUint16(2, true), gsoSize: dv.getUint16(4, true), csumStart: dv.getUint16(6, true), csumOffset: dv.getUint16(8, true) };
}
// What the kernel does with a NEEDS_CSUM packet: complete the checksum at csumAt (TCP's by
// default, 20 + 16) from csum_start 20, seeded with what the field holds.
function kernelComplete(p: Uint8Array, csumAt = 36): Uint8Array {
  const q = p.slice();
  const seed = (q[csumAt] << 8) | q[csumAt + 1];
  q[csumAt] = 0; q[csumAt + 1] = 0;
  const c = inetChecksum(q, 20, q.length, seed);
  q[csumAt] = c >> 8; q[csumAt + 1] = c & 255;
  return q;
}

t.test('ingress merges consecutive segments of a flow into one GSO write', async (t) => {
  const h = harness('udp');
  const segs = [0, 1, 2, 3, 4, 5].map((i) => segment(1000 + i * 1400, i === 5 ? 700 : 1400));
  const { tun } = h.ingress(fromPeer(segs));
  t.equal(tun.length, 1, 'one TUN write');
  const w = tun[0];
  const v = vnetOf(w);
  t.same(v, { flags: 1, gsoType: 1, hdrLen: 40, gsoSize: 1400, csumStart: 20, csumOffset: 16 });
  const p = w.subarray(10);
  const ip = parseIp4(p);
  t.equal(ip.total, 40 + 5 * 1400 + 700);
  t.equal(p.length, ip.total);
  t.ok(ip.headerOk);
  t.equal(ip.ttl, 63);
  t.ok(l4ChecksumOk(kernelComplete(p)), 'the kernel-completed TCP checksum is right');
  t.same(tcpFields(p).payload, concat(...segs.map((s) => tcpFields(s).payload)));
  t.equal(h.counter('ingress', 'forwarded'), 6);
});

t.test('UDP GRO buffer of a TCP stream merges too', async (t) => {
  const h = harness('udp');
  const segs = [0, 1, 2, 3].map((i) => segment(i * 1000, 1000));
  const { tun } = h.ingress([{ data: concat(...segs), from: '192.168.1.20', seg: segs[0].length }]);
  t.equal(tun.length, 1);
  t.equal(parseIp4(tun[0].subarray(10)).total, 40 + 4000);
});

t.test('VXLAN ingress merges', async (t) => {
  const h = harness('vxlan');
  const segs = [0, 1, 2].map((i) => segment(i * 1000, 1000));
  const frames = segs.map((s) => concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), s));
  const { tun } = h.ingress(frames.map((f) => ({ data: f, from: '192.168.1.20' })));
  t.equal(tun.length, 1);
  t.equal(vnetOf(tun[0]).gsoType, 1);
  t.ok(l4ChecksumOk(kernelComplete(tun[0].subarray(10))));
});

t.test('merge rules: flows, gaps, short segments, PSH, flags, bad checksums', async (t) => {
  const h = harness('udp');
  // Two interleaved flows each merge on their own.
  let r = h.ingress(fromPeer([segment(0, 500, 0x10, 1), segment(0, 500, 0x10, 2), segment(500, 500, 0x10, 1), segment(500, 500, 0x10, 2)]));
  t.equal(r.tun.length, 2, 'interleaved flows: two writes');
  t.ok(r.tun.every((w) => parseIp4(w.subarray(10)).total === 1040));
  // A gap starts a new item.
  r = h.ingress(fromPeer([segment(0, 500), segment(500, 500), segment(2000, 500)]));
  t.equal(r.tun.length, 2, 'sequence gap: two writes');
  // A short segment ends the item; the next segment starts a new one.
  r = h.ingress(fromPeer([segment(0, 500), segment(500, 300), segment(800, 500)]));
  t.equal(r.tun.length, 2, 'nothing follows a short segment');
  // PSH is carried to the head and closes the item.
  r = h.ingress(fromPeer([segment(0, 500), segment(500, 500, 0x18), segment(1000, 500)]));
  t.equal(r.tun.length, 2);
  t.equal(r.tun[0][10 + 33], 0x18, 'merged head carries PSH');
  // FIN is never merged, and nothing of the flow may overtake it.
  r = h.ingress(fromPeer([segment(0, 500), segment(500, 500, 0x11), segment(1000, 500)]));
  t.equal(r.tun.length, 3, 'FIN written alone between items');
  t.equal(parseIp4(r.tun[1].subarray(10)).total, 540);
  t.same(vnetOf(r.tun[1]).gsoType, 0, 'a lone packet gets a zero vnet header');
  // A corrupt checksum is never merged.
  const bad = segment(500, 500); bad[60] ^= 1;
  r = h.ingress(fromPeer([segment(0, 500), bad, segment(1000, 500)]));
  t.equal(r.tun.length, 3, 'bad checksum: not merged');
  // Merging off: one write per packet.
  h.core.exports.setIngressMerge(0);
  r = h.ingress(fromPeer([segment(0, 500), segment(500, 500)]));
  t.equal(r.tun.length, 2);
});

t.test('a merged write never exceeds 64 KiB', async (t) => {
  const h = harness('udp');
  const segs = Array.from({ length: 60 }, (_, i) => segment(i * 1400, 1400));
  const { tun } = h.ingress(fromPeer(segs));
  t.ok(tun.length >= 2);
  for (const w of tun) t.ok(w.length - 10 <= 65535);
  t.equal(tun.reduce((s, w) => s + parseIp4(w.subarray(10)).total - 40, 0), 60 * 1400, 'no byte lost');
});

// UDP merge (USO writes): only with a TUN that takes them.
function udpHarness(udpMerge = true): Harness {
  const h = new Harness({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip4('10.5.72.0'), prefixLen: 24 }, vnetHdr: true, udpMerge });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20') });
  return h;
}
function datagram(len: number, seed: number, sport = 5201): Uint8Array {
  return buildUdp('10.5.33.7', '10.5.72.5', sport, 40000, bytes(len, seed));
}
t.test('ingress merges equal UDP datagrams of a flow into one USO write', async (t) => {
  const h = udpHarness();
  const dgs = [0, 1, 2, 3, 4].map((i) => datagram(i === 4 ? 400 : 1000, i));
  const { tun } = h.ingress(fromPeer(dgs));
  t.equal(tun.length, 1, 'one TUN write');
  t.same(vnetOf(tun[0]), { flags: 1, gsoType: 5, hdrLen: 28, gsoSize: 1000, csumStart: 20, csumOffset: 6 });
  const p = tun[0].subarray(10);
  const ip = parseIp4(p);
  t.equal(ip.total, 28 + 4400);
  t.equal(p.length, ip.total);
  t.ok(ip.headerOk);
  t.equal(ip.ttl, 63);
  t.equal((p[24] << 8) | p[25], 8 + 4400, 'UDP length of the whole super-packet');
  t.ok(l4ChecksumOk(kernelComplete(p, 26)), 'the checksum seed is the pseudo-header sum of the whole');
  t.same(p.subarray(28), concat(...dgs.map((d) => d.subarray(28))), 'payloads back to back, in order');
  t.equal(h.counter('ingress', 'forwarded'), 5);
});

t.test('UDP merge rules: flows, lengths, checksums, fragments, other protocols, off', async (t) => {
  const h = udpHarness();
  let r = h.ingress(fromPeer([datagram(500, 1, 1), datagram(500, 2, 2), datagram(500, 3, 1), datagram(500, 4, 2)]));
  t.same(r.tun.map((w) => parseIp4(w.subarray(10)).total), [1028, 1028], 'interleaved flows: a write each');
  r = h.ingress(fromPeer([datagram(500, 1), datagram(300, 2), datagram(500, 3)]));
  t.same(r.tun.map((w) => parseIp4(w.subarray(10)).total), [828, 528], 'nothing follows a shorter datagram');
  r = h.ingress(fromPeer([datagram(500, 1), datagram(600, 2), datagram(600, 3)]));
  t.same(r.tun.map((w) => parseIp4(w.subarray(10)).total), [528, 1228], 'a longer datagram starts a new write');
  const bad = datagram(500, 2); bad[100] ^= 1;
  r = h.ingress(fromPeer([datagram(500, 1), bad, datagram(500, 3)]));
  t.equal(r.tun.length, 3, 'a corrupt datagram is written alone (for the pod to drop), never merged');
  t.equal(vnetOf(r.tun[1]).gsoType, 0);
  const noSum = (s: number) => { const d = datagram(500, s); d[26] = 0; d[27] = 0; return d; };
  r = h.ingress(fromPeer([noSum(1), noSum(2)]));
  t.equal(r.tun.length, 1, 'datagrams without a checksum (0) merge');
  const frag = buildUdp('10.5.33.7', '10.5.72.5', 5201, 40000, bytes(500, 9), { mf: true });
  r = h.ingress(fromPeer([datagram(500, 1), frag, datagram(500, 3)]));
  t.equal(r.tun.length, 3, 'a fragment is written alone and nothing of the flow overtakes it');
  const tcp = buildTcp('10.5.33.7', '10.5.72.5', 5201, 40000, 1, 0x10, bytes(472, 5));
  r = h.ingress(fromPeer([datagram(500, 1), tcp, datagram(500, 3)]));
  t.same(r.tun.map((w) => vnetOf(w).gsoType), [5, 0], 'TCP with the same ports is another flow');
  r = udpHarness(false).ingress(fromPeer([datagram(500, 1), datagram(500, 2)]));
  t.equal(r.tun.length, 2, 'without USO writes: one write per datagram');
  // two UDP GRO buffers of 40 datagrams each (a GRO buffer holds at most 64 KiB)
  const many = Array.from({ length: 80 }, (_, i) => datagram(1400, i));
  const gro = (part: Uint8Array[]) => ({ data: concat(...part), from: '192.168.1.20', seg: part[0].length });
  r = h.ingress([gro(many.slice(0, 40)), gro(many.slice(40))]);
  t.ok(r.tun.length >= 2 && r.tun.every((w) => w.length - 10 <= 65535), 'a merged write never exceeds 64 KiB');
  t.same(concat(...r.tun.map((w) => w.subarray(10 + 28))), concat(...many.map((d) => d.subarray(28))), 'no byte lost, in order');
});
