// The packets the core produces, written to a pcap with the outer headers the kernel would add,
// and dissected by tshark: every layer decodes, nothing is malformed, no checksum is bad.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Harness, datagrams } from '../helpers/harness.js';
import {
  ip4, buildUdp, buildTcp, buildIcmpEcho, buildIp4, inetChecksum, bytes, ethHeader,
  concat, mac,
} from '../helpers/packets.js';

const OWN_MAC = mac('0a:58:0a:05:48:00');
const PEER_MAC = mac('c6:d2:32:6f:8f:44');
const SELF_PUBLIC = '192.168.1.10';

// Outer IPv4 + UDP, as the host's UDP socket would build them (checksum included).
function outer(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Uint8Array {
  const u = new Uint8Array(8 + payload.length);
  const v = new DataView(u.buffer);
  v.setUint16(0, sport); v.setUint16(2, dport); v.setUint16(4, u.length);
  u.set(payload, 8);
  const s = ip4(src), d = ip4(dst);
  let c = inetChecksum(u, 0, u.length, (s >>> 16) + (s & 0xffff) + (d >>> 16) + (d & 0xffff) + 17 + u.length);
  if (c === 0) c = 0xffff;
  v.setUint16(6, c);
  return buildIp4({ src, dst, proto: 17, payload: u, ttl: 64 });
}

function pcap(frames: Uint8Array[]): Buffer {
  const hdr = Buffer.alloc(24);
  hdr.writeUInt32LE(0xa1b2c3d4, 0); hdr.writeUInt16LE(2, 4); hdr.writeUInt16LE(4, 6);
  hdr.writeUInt32LE(262144, 16); hdr.writeUInt32LE(1, 20); // LINKTYPE_ETHERNET
  const parts: Buffer[] = [hdr];
  frames.forEach((f, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(1700000000 + i, 0); r.writeUInt32LE(f.length, 8); r.writeUInt32LE(f.length, 12);
    parts.push(r, Buffer.from(f));
  });
  return Buffer.concat(parts);
}

const ether = (ip: Uint8Array) => concat(ethHeader(mac('02:00:00:00:00:02'), mac('02:00:00:00:00:01')), ip);

function dissect(file: string): string[][] {
  const out = execFileSync('tshark', [
    '-r', file, '-n',
    '-o', 'ip.check_checksum:TRUE', '-o', 'udp.check_checksum:TRUE', '-o', 'tcp.check_checksum:TRUE',
    '-o', 'tcp.analyze_sequence_numbers:FALSE',
    '-d', 'udp.port==8285,ip', '-d', 'udp.port==8472,vxlan',
    '-T', 'fields', '-E', 'separator=|',
    '-e', 'frame.protocols', '-e', 'ip.checksum.status', '-e', 'udp.checksum.status',
    '-e', 'tcp.checksum.status', '-e', 'icmp.checksum.status', '-e', '_ws.malformed',
    '-e', '_ws.expert.severity', '-e', 'vxlan.vni', '-e', 'icmp.type', '-e', 'icmp.code',
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return out.trim().split('\n').map((l) => l.split('|'));
}

t.test('tshark decodes every layer of what the core produces, with good checksums', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'linen-pcap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const frames: Uint8Array[] = [];
  const expect: { stack: RegExp; icmp?: string; vni?: string }[] = [];

  for (const mode of ['udp', 'vxlan'] as const) {
    const port = mode === 'udp' ? 8285 : 8472;
    const h = new Harness({ mode, port, mtu: mode === 'udp' ? 1472 : 1450, subnet: { ip: ip4('10.5.72.0'), prefixLen: 24 }, vni: 1, mac: OWN_MAC });
    h.core.setRoute({ subnet: { ip: ip4('10.5.33.0'), prefixLen: 24 }, publicIP: ip4('192.168.1.20'), mac: PEER_MAC });
    const inner = [
      buildTcp('10.5.72.5', '10.5.33.7', 33000, 80, 12345, 0x18, bytes(1000)),
      buildUdp('10.5.72.5', '10.5.33.7', 40001, 40002, bytes(60)),
      buildIcmpEcho('10.5.72.5', '10.5.33.7', bytes(56)),
    ];
    const wire = mode === 'udp' ? 'eth:ethertype:ip:udp:ip' : 'eth:ethertype:ip:udp:vxlan:eth:ethertype:ip';
    // What reaches the wire: a UDP_SEGMENT send is cut into its datagrams by the kernel; the
    // VXLAN source port is the flow hash's socket's, modelled here by the hash itself.
    for (const s of h.egress(inner).sends) {
      for (const d of datagrams(s)) frames.push(ether(outer(SELF_PUBLIC, s.addr, mode === 'udp' ? port : s.flowHash, s.port, d)));
    }
    expect.push({ stack: new RegExp(`^${wire}:tcp`), vni: mode === 'vxlan' ? '1' : undefined });
    expect.push({ stack: new RegExp(`^${wire}:udp`) });
    expect.push({ stack: new RegExp(`^${wire}:icmp`), icmp: '8' });

    // ICMP errors the core writes into the TUN: net unreachable, frag needed, and in UDP mode
    // (where the tunnel counts as a hop, as in flanneld) time exceeded.
    const errs = h.egress([
      buildUdp('10.5.72.5', '10.99.0.1', 4000, 53, bytes(40)),
      buildTcp('10.5.72.5', '10.5.33.7', 1, 2, 1, 0x10, bytes(1600), { df: true }),
      ...(mode === 'udp' ? [buildUdp('10.5.72.5', '10.5.33.7', 4000, 53, bytes(40), { ttl: 1 })] : []),
    ]).tun;
    t.equal(errs.length, mode === 'udp' ? 3 : 2, `${mode}: ICMP errors`);
    for (const e of errs) frames.push(ether(e));
    expect.push({ stack: /^eth:ethertype:ip:icmp:ip:udp/, icmp: '3' });
    expect.push({ stack: /^eth:ethertype:ip:icmp:ip:tcp/, icmp: '3' });
    if (mode === 'udp') {
      expect.push({ stack: /^eth:ethertype:ip:icmp:ip:udp/, icmp: '11' });
      // Time exceeded sent back to a peer through the tunnel.
      const incoming = buildUdp('10.5.33.7', '10.5.72.5', 1, 2, bytes(16), { ttl: 1 });
      const back = h.ingress([{ data: incoming, from: '192.168.1.20', port }]).sends;
      t.equal(back.length, 1, `${mode}: time exceeded to the peer`);
      frames.push(ether(outer(SELF_PUBLIC, back[0].addr, port, port, back[0].bytes)));
      expect.push({ stack: new RegExp(`^${wire}:icmp:ip:udp`), icmp: '11' });
    }
  }

  const file = join(dir, 'core.pcap');
  writeFileSync(file, pcap(frames));
  const rows = dissect(file);
  t.equal(rows.length, frames.length, 'tshark read every frame');
  rows.forEach((r, i) => {
    const [protocols, ipSum, udpSum, tcpSum, icmpSum, malformed, severity, vni, icmpType] = r;
    const e = expect[i];
    t.match(protocols, e.stack, `frame ${i + 1}: ${protocols}`);
    t.notOk(malformed, `frame ${i + 1}: not malformed`);
    for (const [name, v] of [['ip', ipSum], ['udp', udpSum], ['tcp', tcpSum], ['icmp', icmpSum]]) {
      t.notOk((v ?? '').split(',').includes('0'), `frame ${i + 1}: no bad ${name} checksum (${v})`);
    }
    t.ok(ipSum.split(',')[0] === '1', `frame ${i + 1}: outer IP checksum verified good`);
    const sev = (severity ?? '').split(',').filter(Boolean).map(Number);
    t.ok(sev.every((s) => s < 0x600000), `frame ${i + 1}: no expert warnings or errors (${severity})`);
    if (e.vni) t.equal(vni, e.vni, `frame ${i + 1}: VNI`);
    if (e.icmp) t.equal(icmpType.split(',')[0], e.icmp, `frame ${i + 1}: ICMP type`);
  });
});
