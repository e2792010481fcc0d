// The wasm core, fed byte arrays and checked byte for byte, in both modes.
import t from 'tap';
import { Harness, datagrams } from '../helpers/harness.js';
import {
  ip4, buildUdp, buildTcp, buildIcmpEcho, buildIp4, parseIp4, inetChecksum, l4ChecksumOk, bytes,
  vxlanHeader, ethHeader, concat, mac,
} from '../helpers/packets.js';

const OWN_MAC = mac('0a:58:0a:05:48:00');
const PEER_MAC = mac('c6:d2:32:6f:8f:44');
const PEER2_MAC = mac('8e:11:22:33:44:55');
const LOCAL = '10.5.72.0';

function udpCore(): Harness {
  const h = new Harness({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip4(LOCAL), prefixLen: 24 } });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20') });
  h.core.setRoute({ subnet: { ip: ip4('10.5.34.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.21') });
  return h;
}
function vxlanCore(vnetHdr = false): Harness {
  const h = new Harness({ mode: 'vxlan', port: 8472, mtu: 1450, subnet: { ip: ip4(LOCAL), prefixLen: 24 }, vni: 1, mac: OWN_MAC, vnetHdr });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
  h.core.setRoute({ subnet: { ip: ip4('10.5.34.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.21'), mac: PEER2_MAC });
  return h;
}
function decremented(p: Uint8Array): Uint8Array {
  const q = p.slice();
  q[8]--;
  q[10] = 0; q[11] = 0;
  const c = inetChecksum(q, 0, (q[0] & 15) * 4);
  q[10] = c >> 8; q[11] = c & 255;
  return q;
}

t.test('RFC 1071 checksum matches an independent implementation at every length', async (t) => {
  const h = udpCore();
  const base = h.core.layout.EG_SLOTS;
  for (const len of [0, 1, 2, 3, 19, 20, 31, 32, 33, 47, 64, 1399, 1500, 9001, 65535]) {
    const data = bytes(len, len + 7);
    h.mem.set(data, base + 1); // deliberately unaligned
    t.equal(h.core.exports.checksum(base + 1, len), inetChecksum(data), `length ${len}`);
  }
  const ones = new Uint8Array(65535).fill(0xff);
  h.mem.set(ones, base);
  t.equal(h.core.exports.checksum(base, ones.length), inetChecksum(ones), 'all-ones 64 KiB does not overflow');
});

t.test('UDP mode egress sends the bare inner packet, TTL decremented, to the peer on the local port', async (t) => {
  const h = udpCore();
  const p = buildUdp('10.5.72.5', '10.5.33.7', 4000, 5000, bytes(100));
  const { sends, tun } = h.egress([p]);
  t.equal(sends.length, 1);
  t.equal(tun.length, 0);
  t.same(sends[0].bytes, decremented(p), 'payload is the inner packet with TTL-1 and a patched checksum');
  t.equal(sends[0].addr, '192.168.1.20');
  t.equal(sends[0].port, 8285);
  t.equal(sends[0].segSize, 0);
  const ip = parseIp4(sends[0].bytes);
  t.ok(ip.headerOk);
  t.equal(ip.ttl, 63);
  t.ok(l4ChecksumOk(sends[0].bytes), 'inner UDP checksum untouched and valid');
  t.equal(h.counter('egress', 'forwarded'), 1);
  const pc = h.core.peerCounters({ ip: ip4('10.5.33.0'), prefixLen: 24 });
  t.equal(pc?.txPackets, 1n);
  t.equal(pc?.txBytes, BigInt(p.length));
});

t.test('incremental TTL update equals a full recompute across all checksums', async (t) => {
  const h = udpCore();
  let mismatches = 0;
  for (let id = 0; id < 2000; id++) {
    const p = buildUdp('10.5.72.5', '10.5.33.7', 4000, 5000, bytes(8, id), { id: id * 37, ttl: 2 + (id % 250) });
    const { sends } = h.egress([p]);
    if (inetChecksum(sends[0].bytes, 0, 20) !== 0) mismatches++;
  }
  t.equal(mismatches, 0);
});

t.test('VXLAN egress frames exactly as the kernel: flags 0x08, VNI, inner Ethernet, flow source port', async (t) => {
  const h = vxlanCore();
  const p = buildTcp('10.5.72.5', '10.5.34.9', 33000, 80, 1, 0x18, bytes(500));
  const { sends } = h.egress([p]);
  t.equal(sends.length, 1);
  const s = sends[0];
  t.same(s.bytes.subarray(0, 8), vxlanHeader(1), 'VXLAN header');
  t.same(s.bytes.subarray(8, 22), ethHeader(PEER2_MAC, OWN_MAC), 'inner Ethernet dst=peer VTEP, src=own, IPv4');
  t.same(s.bytes.subarray(22), p, 'inner packet as is: kernel VXLAN does not count the tunnel as a hop');
  t.equal(s.addr, '192.168.1.21');
  t.equal(s.port, 8472);
  t.ok(s.flowHash >= 32768 && s.flowHash < 60999, `flow hash ${s.flowHash} in the kernel's source port range`);
  const again = h.egress([p]).sends[0];
  t.equal(again.flowHash, s.flowHash, 'stable per flow');
  const ports = new Set<number>();
  for (let sp = 1000; sp < 1064; sp++) ports.add(h.egress([buildTcp('10.5.72.5', '10.5.34.9', sp, 80, 1, 0x10, bytes(10))]).sends[0].flowHash);
  t.ok(ports.size > 50, `64 flows spread over ${ports.size} flow hashes`);
});

t.test('VXLAN with a large VNI', async (t) => {
  const h = new Harness({ mode: 'vxlan', port: 8472, mtu: 1450, subnet: { ip: ip4(LOCAL), prefixLen: 24 }, vni: 0xabcdef, mac: OWN_MAC });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
  const { sends } = h.egress([buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(4))]);
  t.same(sends[0].bytes.subarray(0, 8), vxlanHeader(0xabcdef));
});

t.test('longest prefix wins; add, replace and remove at run time', async (t) => {
  const h = udpCore();
  h.core.setRoute({ subnet: { ip: ip4('10.5.0.0'), prefixLen: 16 }, publicIP: ip4('192.168.1.99') });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.128'), prefixLen: 25 }, publicIP: ip4('192.168.1.50') });
  const dst = (d: string) => h.egress([buildUdp('10.5.72.5', d, 1, 2, bytes(4))]).sends[0]?.addr;
  t.equal(dst('10.5.33.1'), '192.168.1.20', '/24 beats /16');
  t.equal(dst('10.5.33.200'), '192.168.1.50', '/25 beats /24');
  t.equal(dst('10.5.99.1'), '192.168.1.99', '/16 catches the rest');
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.77') });
  t.equal(dst('10.5.33.1'), '192.168.1.77', 'replace takes effect at once (lookup cache invalidated)');
  t.ok(h.core.removeRoute({ ip: ip4('10.5.33.128'), prefixLen: 25 }));
  t.equal(dst('10.5.33.200'), '192.168.1.77', 'removing the /25 falls back to the /24');
  t.notOk(h.core.removeRoute({ ip: ip4('10.5.33.128'), prefixLen: 25 }), 'removing twice reports false');
  t.ok(h.core.removeRoute({ ip: ip4('10.5.0.0'), prefixLen: 16 }));
  t.equal(dst('10.5.99.1'), undefined, 'no route left');
  t.equal(h.core.setRoute({ subnet: { ip: ip4('10.5.33.77'), prefixLen: 24 }, publicIP: ip4('1.2.3.4') }), h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('1.2.3.4') }), 'host bits are masked');
  t.throws(() => h.core.setRoute({ subnet: { ip: 0, prefixLen: 33 }, publicIP: 0 }), /bad prefix length/);
});

t.test('65,536 routes: every one found, removals exact, table stays consistent', async (t) => {
  const h = new Harness({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip4(LOCAL), prefixLen: 24 } });
  const e = h.core.exports;
  const N = 65536;
  for (let i = 0; i < N; i++) h.core.setRoute({ subnet: { ip: (0x0a000000 + i * 256) >>> 0, prefixLen: 24 }, publicIP: (0xc0a80000 + i) >>> 0 });
  t.equal(h.core.routeCount, N);
  let wrong = 0;
  for (let i = 0; i < N; i++) {
    const idx = e.routeLookup((0x0a000000 + i * 256 + 7) >>> 0);
    if (idx < 0 || h.dv.getUint32(h.core.layout.ROUTES + idx * h.core.layout.ROUTE_SIZE + h.core.layout.R_PUBLIC_IP, true) !== ((0xc0a80000 + i) >>> 0)) wrong++;
  }
  t.equal(wrong, 0, 'all lookups hit the right peer');
  for (let i = 0; i < N; i += 2) h.core.removeRoute({ ip: (0x0a000000 + i * 256) >>> 0, prefixLen: 24 });
  let bad = 0;
  for (let i = 0; i < N; i++) {
    const found = e.routeLookup((0x0a000000 + i * 256 + 1) >>> 0) >= 0;
    if (found !== (i % 2 === 1)) bad++;
  }
  t.equal(bad, 0, 'after removing every other route, exactly the rest remain');
  for (let i = 0; i < N; i += 2) h.core.setRoute({ subnet: { ip: (0x0a000000 + i * 256) >>> 0, prefixLen: 24 }, publicIP: 1 });
  t.equal(h.core.routeCount, N, 'freed entries are reused');
});

t.test('no route: ICMP net unreachable into the TUN, as flanneld builds it', async (t) => {
  const h = udpCore();
  const p = buildUdp('10.5.72.5', '10.99.0.1', 4000, 53, bytes(40));
  const { sends, tun } = h.egress([p]);
  t.equal(sends.length, 0);
  t.equal(tun.length, 1);
  const r = parseIp4(tun[0]);
  t.equal(r.src, LOCAL, 'source is the own subnet network address (the TUN address)');
  t.equal(r.dst, '10.5.72.5');
  t.equal(r.ttl, 8, "flanneld's TTL 8");
  t.equal(r.proto, 1);
  t.ok(r.headerOk);
  t.equal(r.total, 20 + 8 + 20 + 8);
  t.equal(r.payload[0], 3, 'type 3');
  t.equal(r.payload[1], 0, 'code 0 net unreachable');
  t.equal(inetChecksum(r.payload), 0, 'ICMP checksum valid');
  t.same(r.payload.subarray(8), p.subarray(0, 28), 'quotes the header and 8 bytes');
  t.equal(h.counter('egress', 'no_route'), 1);
  t.equal(h.counter('egress', 'icmp_sent'), 1);
});

t.test("net unreachable follows flanneld's exemptions", async (t) => {
  const h = udpCore();
  const icmp = buildIcmpEcho('10.5.72.5', '10.99.0.1', bytes(8));
  const frag = buildUdp('10.5.72.5', '10.99.0.1', 1, 2, bytes(16), { fragOffset: 1480 });
  const opts = buildUdp('10.5.72.5', '10.99.0.1', 1, 2, bytes(16), { options: new Uint8Array(40).fill(1) });
  const { tun } = h.egress([icmp, frag, opts]);
  t.equal(tun.length, 0, 'no ICMP about ICMP, non-first fragments or 60-byte headers');
  t.equal(h.counter('egress', 'no_route'), 3);
});

t.test('TTL expiry: time exceeded, into the TUN on egress and back to the peer on ingress', async (t) => {
  const h = udpCore();
  const p = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(16), { ttl: 1 });
  const eg = h.egress([p]);
  t.equal(eg.sends.length, 0);
  t.equal(eg.tun.length, 1);
  const r = parseIp4(eg.tun[0]);
  t.equal(r.payload[0], 11);
  t.equal(r.payload[1], 0);
  t.equal(r.dst, '10.5.72.5');
  t.equal(h.counter('egress', 'ttl_expired'), 1);
  const zero = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(16), { ttl: 0 });
  t.equal(h.egress([zero]).sends.length, 0, 'TTL 0 is not wrapped to 255 (flanneld quirk fixed)');

  const incoming = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(16), { ttl: 1 });
  const ing = h.ingress([{ data: incoming, from: '192.168.1.20' }]);
  t.equal(ing.tun.length, 0);
  t.equal(ing.sends.length, 1, 'time exceeded goes back through the tunnel');
  t.equal(ing.sends[0].addr, '192.168.1.20');
  const back = parseIp4(ing.sends[0].bytes);
  t.equal(back.dst, '10.5.33.7');
  t.equal(back.src, LOCAL);
  t.equal(back.payload[0], 11);
  t.ok(back.headerOk);
  t.equal(inetChecksum(back.payload), 0);
  const err = buildIp4({ src: '10.5.72.5', dst: '10.5.33.7', proto: 1, ttl: 1, payload: new Uint8Array([3, 1, 0, 0, 0, 0, 0, 0]) });
  t.equal(h.egress([err]).tun.length, 0, 'no ICMP error about an ICMP error');
});

t.test('fragmentation needed for DF packets over the tunnel MTU; non-DF packets pass', async (t) => {
  const h = udpCore();
  const big = buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600), { df: true });
  const { sends, tun } = h.egress([big]);
  t.equal(sends.length, 0);
  t.equal(tun.length, 1);
  const r = parseIp4(tun[0]);
  t.equal(r.payload[0], 3);
  t.equal(r.payload[1], 4, 'code 4 fragmentation needed');
  t.equal((r.payload[6] << 8) | r.payload[7], 1472, 'next-hop MTU');
  t.equal(h.counter('egress', 'too_big'), 1);
  const fits = buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1472 - 40), { df: true });
  t.equal(h.egress([fits]).sends.length, 1, 'exactly the MTU fits');
  const nodf = buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600));
  t.equal(h.egress([nodf]).sends.length, 1, 'without DF the packet is forwarded (the outer datagram fragments)');
});

t.test('ICMP errors are rate limited: burst 50, then 1000 per second', async (t) => {
  const h = udpCore();
  const pkts = Array.from({ length: 64 }, (_, i) => buildUdp('10.5.72.5', '10.99.0.1', 1000 + i, 2, bytes(4)));
  t.equal(h.egress(pkts, 1000).tun.length, 50);
  t.equal(h.counter('egress', 'icmp_rate_limited'), 14);
  t.equal(h.egress(pkts.slice(0, 10), 1005).tun.length, 5, '5 ms later, 5 more');
});

t.test('UDP mode ingress: a peer packet reaches the TUN with TTL decremented', async (t) => {
  const h = udpCore();
  const p = buildTcp('10.5.33.7', '10.5.72.5', 80, 33000, 1, 0x10, bytes(1000));
  const { tun, sends } = h.ingress([{ data: p, from: '192.168.1.20' }]);
  t.equal(sends.length, 0);
  t.equal(tun.length, 1);
  t.same(tun[0], decremented(p));
  t.equal(h.core.peerCounters({ ip: ip4('10.5.33.0'), prefixLen: 24 })?.rxPackets, 1n);
});

t.test('ingress anti-spoofing: unknown sender or inner source outside its subnet', async (t) => {
  const h = udpCore();
  const p = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(10));
  t.equal(h.ingress([{ data: p, from: '192.168.1.66' }]).tun.length, 0, 'outer source is not a peer');
  t.equal(h.ingress([{ data: p, from: '192.168.1.21' }]).tun.length, 0, "another peer's subnet");
  const foreign = buildUdp('172.16.0.1', '10.5.72.5', 1, 2, bytes(10));
  t.equal(h.ingress([{ data: foreign, from: '192.168.1.20' }]).tun.length, 0, 'source outside the network');
  t.equal(h.counter('ingress', 'spoofed'), 3);
  t.equal(h.counter('ingress', 'forwarded'), 0);
});

t.test('VXLAN ingress accepts a kernel-built frame and drops every deviation', async (t) => {
  const h = vxlanCore();
  const inner = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(64));
  const good = concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), inner);
  const r = h.ingress([{ data: good, from: '192.168.1.20', port: 8472 }]);
  t.equal(r.tun.length, 1);
  t.same(r.tun[0], inner);
  const cases: [string, Uint8Array, string][] = [
    ['wrong VNI', concat(vxlanHeader(2), ethHeader(OWN_MAC, PEER_MAC), inner), 'wrong_vni'],
    ['I flag missing', concat(vxlanHeader(1, 0x00), ethHeader(OWN_MAC, PEER_MAC), inner), 'bad_vxlan_flags'],
    ['extra flag (GBP)', concat(vxlanHeader(1, 0x88), ethHeader(OWN_MAC, PEER_MAC), inner), 'bad_vxlan_flags'],
    ['reserved byte 1', concat(Uint8Array.from([8, 1, 0, 0, 0, 0, 1, 0]), ethHeader(OWN_MAC, PEER_MAC), inner), 'bad_vxlan_flags'],
    ['reserved byte 7', concat(Uint8Array.from([8, 0, 0, 0, 0, 0, 1, 1]), ethHeader(OWN_MAC, PEER_MAC), inner), 'bad_vxlan_flags'],
    ['wrong inner dst MAC', concat(vxlanHeader(1), ethHeader(PEER2_MAC, PEER_MAC), inner), 'wrong_mac'],
    ['own MAC as source', concat(vxlanHeader(1), ethHeader(OWN_MAC, OWN_MAC), inner), 'wrong_mac'],
    ['multicast source MAC', concat(vxlanHeader(1), ethHeader(OWN_MAC, mac('01:00:5e:00:00:01')), inner), 'wrong_mac'],
    ['IPv6 ethertype', concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC, 0x86dd), inner), 'not_ipv4'],
    ['ARP ethertype', concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC, 0x0806), inner), 'not_ipv4'],
    ['truncated header', good.subarray(0, 30), 'malformed'],
  ];
  for (const [name, data, verdict] of cases) {
    const before = h.counter('ingress', verdict as 'wrong_vni');
    const out = h.ingress([{ data, from: '192.168.1.20', port: 8472 }]);
    t.equal(out.tun.length, 0, `${name}: dropped`);
    t.equal(h.counter('ingress', verdict as 'wrong_vni'), before + 1, `${name}: counted as ${verdict}`);
  }
});

t.test('malformed IPv4 is dropped and counted, never forwarded', async (t) => {
  const h = udpCore();
  const good = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(50));
  const badSum = good.slice(); badSum[10] ^= 0xff;
  const lying = good.slice(); lying[2] = 0x05; lying[3] = 0xdc; // total length 1500 > buffer
  const tiny = good.slice(); tiny[2] = 0; tiny[3] = 10; // total < header
  const shortIhl = good.slice(); shortIhl[0] = 0x44;
  const v6 = good.slice(); v6[0] = 0x60;
  const { sends } = h.egress([badSum, lying, tiny, shortIhl, good.subarray(0, 19), new Uint8Array(0), v6]);
  t.equal(sends.length, 0);
  t.equal(h.counter('egress', 'malformed'), 6);
  t.equal(h.counter('egress', 'not_ipv4'), 1);
  // Trailing bytes beyond the IP total length are not sent.
  const padded = concat(good, new Uint8Array(30));
  const s = h.egress([padded]).sends[0];
  t.equal(s.bytes.length, good.length);
});

t.test('UDP GRO receive: back-to-back datagrams are split on the segment size', async (t) => {
  const h = udpCore();
  const a = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(92, 1));
  const b = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(92, 2));
  const c = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(40, 3));
  const { tun } = h.ingress([{ data: concat(a, b, c), from: '192.168.1.20', seg: a.length }]);
  t.equal(tun.length, 3);
  t.same(tun[0], decremented(a));
  t.same(tun[1], decremented(b));
  t.same(tun[2], decremented(c));
});

t.test('virtio_net_hdr: partial checksums are completed on egress; writes carry a zero header', async (t) => {
  const h = vxlanCore(true);
  const p = buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x18, bytes(333));
  // As the kernel hands it over with TUN_F_CSUM: the TCP checksum field holds the pseudo-header sum.
  const partial = p.slice();
  const src = ip4('10.5.72.5'), dst = ip4('10.5.33.7'), l4 = p.length - 20;
  let ps = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + 6 + l4;
  while (ps > 0xffff) ps = (ps & 0xffff) + (ps >>> 16);
  partial[36] = ps >> 8; partial[37] = ps & 255;
  const vnet = new Uint8Array(10);
  vnet[0] = 1; vnet[6] = 20; vnet[8] = 16; // NEEDS_CSUM, csum_start 20, csum_offset 16
  const { sends } = h.egress([concat(vnet, partial)]);
  t.equal(sends.length, 1);
  t.same(sends[0].bytes.subarray(22), p, 'checksum completed to the full value');
  const inner = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(64));
  const { tun } = h.ingress([{ data: concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), inner), from: '192.168.1.20' }]);
  t.same(tun[0], concat(new Uint8Array(10), inner));
  const badStart = vnet.slice(); badStart[6] = 400 & 255; badStart[7] = 400 >> 8;
  t.equal(h.egress([concat(badStart, partial)]).sends.length, 0, 'csum_start outside the packet is malformed');
});

t.test('a full batch: 64 packets in, 64 datagrams out, in order', async (t) => {
  const h = udpCore();
  const pkts = Array.from({ length: 64 }, (_, i) => buildUdp('10.5.72.5', i % 2 ? '10.5.33.1' : '10.5.34.1', i, 2, bytes(20 + i, i)));
  const { sends } = h.egress(pkts);
  t.equal(sends.length, 64);
  sends.forEach((s, i) => {
    if (s.addr !== (i % 2 ? '192.168.1.20' : '192.168.1.21')) t.fail(`datagram ${i} to ${s.addr}`);
    if (s.bytes.length !== pkts[i].length) t.fail(`datagram ${i} length`);
  });
  t.equal(h.counter('egress', 'forwarded'), 64);
});

t.test('equal datagrams to one peer leave as one UDP_SEGMENT send; order and bytes are kept', async (t) => {
  const h = udpCore();
  const same = (i: number, n = 100) => buildUdp('10.5.72.5', '10.5.33.7', 1000 + i, 2, bytes(n, i));
  const pkts = [
    same(0), same(1), same(2), same(3, 60), // a run of 4: a shorter datagram may end a run
    same(4), buildUdp('10.5.72.5', '10.5.34.9', 1, 2, bytes(100)), // another peer in between: no run
    same(5), same(6), same(7, 120), same(8, 120), // a longer datagram starts a new run
    ...Array.from({ length: 50 }, (_, i) => same(20 + i, 1444)), // 50 × 1472 bytes: over 65,507, two sends
    // over the tunnel MTU without DF: forwarded for the kernel to fragment, never a GSO segment
    buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600)), buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600)),
  ];
  const { sends } = h.egress(pkts);
  t.same(sends.map((s) => [s.segSize, datagrams(s).length]),
    [[128, 4], [0, 1], [0, 1], [128, 2], [148, 2], [1472, 44], [1472, 6], [0, 1], [0, 1]]);
  t.ok(sends.every((s) => s.bytes.length <= 65507), 'no send over the UDP limit');
  t.same(sends.map((s) => s.addr), ['192.168.1.20', '192.168.1.20', '192.168.1.21', ...Array(6).fill('192.168.1.20')]);
  const flat = sends.flatMap(datagrams);
  t.equal(flat.length, pkts.length, 'every packet leaves exactly once');
  flat.forEach((b, i) => { if (!Buffer.from(b).equals(Buffer.from(decremented(pkts[i])))) t.fail(`datagram ${i} differs`); });
  t.equal(h.counter('egress', 'forwarded'), pkts.length, 'counters still count packets');
});

t.test('VXLAN: a run keeps one flow hash (one send socket); another flow to the same peer starts a new send', async (t) => {
  const h = vxlanCore();
  const flow = (sport: number, i: number) => buildTcp('10.5.72.5', '10.5.33.7', sport, 80, i, 0x10, bytes(0));
  const { sends } = h.egress([flow(1, 1), flow(1, 2), flow(1, 3), flow(2, 1), flow(2, 2)]);
  const one = h.egress([flow(1, 1)]).sends[0].flowHash;
  const two = h.egress([flow(2, 1)]).sends[0].flowHash;
  // The two flows' hashes are seeded: they differ but for a rare collision.
  t.same(sends.map((s) => [s.segSize, datagrams(s).length]), one !== two ? [[62, 3], [62, 2]] : [[62, 5]], 'ACK-sized frames: 22 + 40 bytes');
  t.same(sends.map((s) => s.flowHash), one !== two ? [one, two] : [one]);
});

t.test('VXLAN mode leaves the TTL alone, as the kernel does, but never forwards TTL 0', async (t) => {
  const h = vxlanCore();
  const one = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(16), { ttl: 1 });
  const out = h.egress([one]);
  t.equal(out.sends.length, 1, 'TTL 1 is forwarded (the host already counted its hop)');
  t.equal(parseIp4(out.sends[0].bytes.subarray(22)).ttl, 1);
  const zero = buildUdp('10.5.72.5', '10.5.33.7', 1, 2, bytes(16), { ttl: 0 });
  t.equal(h.egress([zero]).sends.length, 0, 'TTL 0 is dropped');
  const inZero = concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(16), { ttl: 0 }));
  t.equal(h.ingress([{ data: inZero, from: '192.168.1.20' }]).tun.length, 0);
  t.equal(h.counter('egress', 'ttl_expired') + h.counter('ingress', 'ttl_expired'), 2);
});

t.test("ingress completes a peer's partial (offload) TCP and UDP checksums", async (t) => {
  for (const vnetHdr of [false, true]) {
    const h = new Harness({ mode: 'vxlan', port: 8472, mtu: 1450, subnet: { ip: ip4(LOCAL), prefixLen: 24 }, vni: 1, mac: OWN_MAC, vnetHdr });
    h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
    const partial = (p: Uint8Array, at: number): Uint8Array => {
      // What a sending kernel leaves for the NIC: the folded pseudo-header sum.
      const q = p.slice();
      const src = ip4('10.5.33.7'), dst = ip4('10.5.72.5'), len = q.length - 20;
      let ps = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + q[9] + len;
      while (ps > 0xffff) ps = (ps & 0xffff) + (ps >>> 16);
      q[at] = ps >> 8; q[at + 1] = ps & 255;
      return q;
    };
    const tcp = buildTcp('10.5.33.7', '10.5.72.5', 80, 3000, 1, 0x18, bytes(700));
    const udp = buildUdp('10.5.33.7', '10.5.72.5', 53, 3000, bytes(300));
    const frames = [partial(tcp, 36), partial(udp, 26)].map((p) => concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), p));
    const { tun } = h.ingress(frames.map((data) => ({ data, from: '192.168.1.20' })));
    const inner = tun.map((w) => (vnetHdr ? w.subarray(10) : w));
    t.same(inner, [tcp, udp], `${vnetHdr ? 'with' : 'without'} vnet header: both written with full, valid checksums`);
    t.ok(inner.every((p) => l4ChecksumOk(p)));
    t.equal(h.counter('ingress', 'checksum_completed'), 2);
    const ok = h.ingress([{ data: concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), tcp), from: '192.168.1.20' }]);
    t.same(vnetHdr ? ok.tun[0].subarray(10) : ok.tun[0], tcp, 'a complete checksum is left as it is');
    t.equal(h.counter('ingress', 'checksum_completed'), 2);
  }
});

t.test('ingress delivers only to the own subnet: anything else a peer sends is foreign_destination', async (t) => {
  for (const make of [udpCore, () => vxlanCore()]) {
    const h = make();
    const vx = h.core.mode === 'vxlan';
    const wrap = (p: Uint8Array) => (vx ? concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), p) : p);
    const port = vx ? 8472 : 8285;
    const from = (dst: string) => h.ingress([{ data: wrap(buildUdp('10.5.33.7', dst, 1, 2, bytes(20))), from: '192.168.1.20', port }]).tun.length;
    for (const dst of ['169.254.169.254', '10.5.34.9', '10.5.73.1', '10.5.71.255', '8.8.8.8', '127.0.0.1', '255.255.255.255', '224.0.0.1']) {
      t.equal(from(dst), 0, `${h.core.mode}: to ${dst} dropped`);
    }
    t.equal(h.counter('ingress', 'foreign_destination'), 8, `${h.core.mode}: counted as foreign_destination`);
    for (const dst of ['10.5.72.0', '10.5.72.5', '10.5.72.255']) t.equal(from(dst), 1, `${h.core.mode}: to ${dst} (own /24) delivered`);
    t.equal(h.counter('ingress', 'forwarded'), 3);
  }
  const wide = new Harness({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip4('10.6.0.0'), prefixLen: 20 } });
  wide.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20') });
  const to = (dst: string) => wide.ingress([{ data: buildUdp('10.5.33.7', dst, 1, 2, bytes(20)), from: '192.168.1.20' }]).tun.length;
  t.equal(to('10.6.15.200'), 1, 'a /20 subnet: its last block delivered');
  t.equal(to('10.6.16.1'), 0, 'a /20 subnet: the next one is foreign');
});

t.test('UDP mode ingress only from the flannel port; VXLAN from any source port', async (t) => {
  const h = udpCore();
  const p = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(20));
  t.equal(h.ingress([{ data: p, from: '192.168.1.20', port: 8285 }]).tun.length, 1, 'from 8285: delivered');
  t.equal(h.ingress([{ data: p, from: '192.168.1.20', port: 40000 }]).tun.length, 0, 'from another port: dropped');
  t.equal(h.ingress([{ data: concat(p, p), from: '192.168.1.20', port: 53, seg: p.length }]).tun.length, 0, 'a GRO batch from another port: dropped');
  t.equal(h.counter('ingress', 'wrong_source_port'), 3, 'each datagram counted as wrong_source_port');
  const v = vxlanCore();
  const frame = concat(vxlanHeader(1), ethHeader(OWN_MAC, PEER_MAC), p);
  t.equal(v.ingress([{ data: frame, from: '192.168.1.20', port: 51234 }]).tun.length, 1, 'VXLAN: a flow-hash source port is fine');
  t.equal(v.counter('ingress', 'wrong_source_port'), 0);
});

t.test('ICMP errors are rate limited per source: one pod cannot starve the others', async (t) => {
  const h = udpCore();
  const flood = Array.from({ length: 64 }, (_, i) => buildUdp('10.5.72.5', '10.99.0.1', 1000 + i, 2, bytes(4)));
  t.equal(h.egress(flood, 1000).tun.length, 50, 'the flooding pod gets its burst of 50');
  const other = Array.from({ length: 10 }, (_, i) => buildUdp('10.5.72.6', '10.99.0.1', 1000 + i, 2, bytes(4)));
  t.equal(h.egress(other, 1000).tun.length, 10, 'another pod still gets every error, in the same millisecond');
  t.equal(h.egress(flood.slice(0, 10), 1000).tun.length, 0, 'the flooding pod stays limited');
  const big = buildTcp('10.5.72.7', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600), { df: true });
  t.equal(h.egress([big], 1000).tun.length, 1, 'a third pod gets its fragmentation-needed');
  t.equal(h.counter('egress', 'icmp_rate_limited'), 24);
});

t.test('ICMP errors go only to sources in the own subnet or the cluster network', async (t) => {
  const h = new Harness({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip4(LOCAL), prefixLen: 24 }, network: { ip: ip4('10.5.0.0'), prefixLen: 16 } });
  h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20') });
  const unreachable = (src: string) => h.egress([buildUdp(src, '10.99.0.1', 1, 2, bytes(8))]).tun.length;
  t.equal(unreachable('10.5.72.5'), 1, 'own pod: net unreachable');
  t.equal(unreachable('10.5.40.5'), 1, 'an address of the cluster network (e.g. a host route): net unreachable');
  t.equal(unreachable('172.16.0.5'), 0, 'a source outside the cluster network: nothing');
  t.equal(unreachable('8.8.8.8'), 0, 'a forged public source: nothing');
  const big = (src: string) => h.egress([buildTcp(src, '10.5.33.7', 1, 2, 1, 0x10, bytes(1600), { df: true })]).tun.length;
  t.equal(big('10.5.72.5'), 1, 'own pod: fragmentation needed');
  t.equal(big('192.0.2.1'), 0, 'a source outside: no fragmentation needed either');
  t.equal(h.counter('egress', 'no_route'), 4, 'the packets are still counted');
  t.equal(h.counter('egress', 'too_big'), 2);
  t.equal(h.counter('egress', 'icmp_sent'), 3);
});
