// WireGuard's batch data path in the wasm core with the addon's batch AEAD: type-4 framing,
// padding, counters, sealing before GSO joins; on ingress only what authenticated under a live
// session and is no replay reaches the TUN, TSO super-packets are split before sealing and
// merged after opening. The wire format is checked against the TypeScript session code, which
// test/e2e/wg-handshake.test.ts proves against wireguard-go. Packets for a peer without a
// session wait in the core (bounded, oldest dropped) until its handshake completes.
import { randomBytes } from "node:crypto";
import t from "tap";

import { Harness, datagrams, type Sent } from "../helpers/harness.js";
import { ip4, buildUdp, buildTcp, bytes, concat, parseIp4 } from "../helpers/packets.js";
import { initCrypto, loadWgNative } from "../../src/wireguard/crypto.js";
import { WgDataPath } from "../../src/wireguard/datapath.js";
import {
  consumeInitiation, consumeResponse, createInitiation, createResponse, LocalIdentity, RemoteIdentity,
  type TransportKeys,
} from "../../src/wireguard/noise.js";
import { TransportSession } from "../../src/wireguard/session.js";

t.before(initCrypto);

const PORT = 51820;
const slotIndex = (slot: number): number => ((randomBytes(4).readUInt32LE(0) << 10) | slot) >>> 0;

function handshake(): { initiator: TransportKeys; responder: TransportKeys } {
  const a = new LocalIdentity(new Uint8Array(randomBytes(32)));
  const b = new LocalIdentity(new Uint8Array(randomBytes(32)));
  const psk = new Uint8Array(randomBytes(32));
  const bOnA = new RemoteIdentity(a, b.publicKey, psk);
  const aOnB = new RemoteIdentity(b, a.publicKey, psk);
  const init = createInitiation(a, bOnA, 1, Date.now())!;
  const c = consumeInitiation(b, init.message, () => aOnB);
  if (typeof c === "string") throw new Error(c);
  const r = createResponse(c, 2, Date.now())!;
  const k = consumeResponse(a, init.pending, r.message);
  if (typeof k === "string") throw new Error(k);
  return { initiator: k, responder: r.keys };
}

interface Node { h: Harness; dp: WgDataPath; route: number; index: number }

function nodes(vnetHdr = false): { a: Node; b: Node; keys: ReturnType<typeof handshake> } {
  const io = loadWgNative();
  const mk = (own: string, peerNet: string, peerIp: string, vnet: boolean): { h: Harness; dp: WgDataPath; route: number } => {
    const h = new Harness({ mode: "wireguard", port: PORT, mtu: 1420, subnet: { ip: ip4(own), prefixLen: 24 }, vnetHdr: vnet });
    const route = h.core.setRoute({ subnet: { ip: ip4(peerNet), prefixLen: 24 }, publicIP: ip4(peerIp) });
    return { h, dp: new WgDataPath(h.core, io), route };
  };
  const keys = handshake();
  const a = { ...mk("10.5.1.0", "10.5.2.0", "192.168.1.2", vnetHdr), index: slotIndex(5) };
  const b = { ...mk("10.5.2.0", "10.5.1.0", "192.168.1.1", vnetHdr), index: slotIndex(9) };
  a.dp.openSession(a.index, b.index, a.route, keys.initiator);
  a.dp.setPeer(a.route, a.index, PORT);
  b.dp.openSession(b.index, a.index, b.route, keys.responder);
  b.dp.setPeer(b.route, b.index, PORT);
  return { a, b, keys };
}

const send = (n: Node, packets: Uint8Array[]): Sent[] => n.h.egress(packets, 0, () => n.dp.sealEgress()).sends;
const receive = (n: Node, grams: { data: Uint8Array; from?: string; port?: number; seg?: number }[]) => {
  let control: ReturnType<WgDataPath["openIngress"]> = [];
  const out = n.h.ingress(grams.map((g) => ({ from: "192.168.1.1", port: PORT, ...g })), 0,
    () => { control = n.dp.openIngress(grams.length); });
  return { ...out, control };
};

t.test("egress frames, pads and seals exactly as the protocol says; the peer's core delivers it", async (t) => {
  const { a, b, keys } = nodes();
  const p = buildUdp("10.5.1.5", "10.5.2.7", 4000, 5000, bytes(101));
  const sends = send(a, [p]);
  t.equal(sends.length, 1);
  const s = sends[0];
  t.equal(s.addr, "192.168.1.2");
  t.equal(s.port, PORT);
  t.equal(s.bytes.length, 16 + Math.ceil(p.length / 16) * 16 + 16, "header, padded packet, tag");
  const dv = new DataView(s.bytes.buffer, s.bytes.byteOffset);
  t.equal(dv.getUint32(0, true), 4, "type 4 with three zero bytes");
  t.equal(dv.getUint32(4, true), b.index, "the receiver's index");
  t.equal(dv.getBigUint64(8, true), 0n, "counter 0 first");
  const ts = new TransportSession(keys.responder, b.index, a.index, Date.now(), false);
  const plain = ts.open(s.bytes, Date.now());
  if (typeof plain === "string") throw new Error(plain);
  t.same(plain.subarray(0, p.length), p, "the TypeScript session opens it: the packet, TTL untouched");
  t.ok(plain.subarray(p.length).every((x) => x === 0), "zero padding");
  const { tun } = receive(b, [{ data: s.bytes }]);
  t.same(tun, [p], "the peer's core writes the packet to its TUN");
  t.equal(b.h.counter("ingress", "forwarded"), 1);
  t.equal(a.dp.sentOn(a.index), 1n);
  const next = send(a, [p, p, p]);
  t.equal(next.length, 1, "three equal messages joined into one GSO send after sealing");
  const parts = next.flatMap(datagrams);
  t.equal(parts.length, 3);
  t.same(parts.map((d) => new DataView(d.buffer, d.byteOffset).getBigUint64(8, true)), [1n, 2n, 3n]);
  t.same(receive(b, parts.map((data) => ({ data }))).tun, [p, p, p]);
  // Padding stops at the device MTU (1,420 here): a full-size packet gets none, one a byte short one byte.
  for (const size of [1420, 1419, 1405]) {
    const q = buildUdp("10.5.1.5", "10.5.2.7", 4000, 5000, bytes(size - 28));
    const [m] = send(a, [q]).flatMap(datagrams);
    t.equal(m.length, 16 + Math.min(1420, Math.ceil(size / 16) * 16) + 16, `a ${size}-byte packet: ${m.length - 32 - size} bytes of padding`);
    t.same(receive(b, [{ data: m }]).tun, [q], "and the peer delivers it");
  }
});

t.test("ingress refuses forgeries, replays, unknown indexes and spoofed sources; keepalives and handshakes", async (t) => {
  const { a, b, keys } = nodes();
  const p = buildUdp("10.5.1.5", "10.5.2.7", 4000, 5000, bytes(64));
  const [good] = send(a, [p]);
  const forged = good.bytes.slice();
  forged[40] ^= 1;
  let r = receive(b, [{ data: forged }]);
  t.same(r.tun, [], "a flipped bit never reaches the TUN");
  t.equal(b.h.counter("ingress", "wg_bad_mac"), 1);
  t.same(receive(b, [{ data: good.bytes }]).tun, [p], "the genuine message after the forgery is delivered");
  t.same(receive(b, [{ data: good.bytes }]).tun, [], "the same message again is not");
  t.equal(b.h.counter("ingress", "wg_replay"), 1);
  const unknown = good.bytes.slice();
  unknown[4] ^= 0x80;
  t.same(receive(b, [{ data: unknown }]).tun, []);
  t.equal(b.h.counter("ingress", "wg_unknown_session"), 1);
  t.same(receive(b, [{ data: good.bytes.subarray(0, 31) }]).tun, [], "truncated below header and tag");
  t.equal(b.h.counter("ingress", "malformed"), 1);

  const ts = new TransportSession(keys.initiator, a.index, b.index, Date.now(), true);
  for (let i = 0; i < 10; i++) ts.seal(new Uint8Array(0), Date.now()); // past the counters the core used
  const keepalive = ts.seal(new Uint8Array(0), Date.now())!;
  const spoofed = ts.seal(buildUdp("10.5.9.5", "10.5.2.7", 1, 2, bytes(8)), Date.now())!;
  const foreign = ts.seal(buildUdp("10.5.1.5", "10.5.7.7", 1, 2, bytes(8)), Date.now())!;
  r = receive(b, [{ data: keepalive }, { data: spoofed }, { data: foreign }]);
  t.same(r.tun, []);
  t.equal(b.h.counter("ingress", "wg_keepalive"), 1);
  t.equal(b.h.counter("ingress", "spoofed"), 1, "an inner source outside the session peer's allowed IPs");
  t.equal(b.h.counter("ingress", "foreign_destination"), 1);

  const init = new Uint8Array(148);
  init[0] = 1;
  r = receive(b, [{ data: init, from: "192.168.1.77", port: 40000 }]);
  t.equal(r.control.length, 1, "a handshake message goes to the control path");
  t.equal(r.control[0].addr, ip4("192.168.1.77"));
  t.equal(r.control[0].port, 40000);
  t.same(r.control[0].data, init);
  t.equal(b.h.counter("ingress", "wg_handshake"), 1);

  const roamed = ts.seal(p, Date.now())!;
  t.same(receive(b, [{ data: roamed, from: "192.168.1.99", port: 41000 }]).tun, [p]);
  t.equal(b.dp.peerPort(b.route), 41000, "the endpoint follows an authenticated datagram");
  b.dp.closeSession(b.index);
  t.same(receive(b, [{ data: ts.seal(p, Date.now())! }]).tun, [], "nothing after the session is closed");
});

t.test("each session counts the bytes of whole messages sent and accepted, as wg show's transfer; nothing refused counts", async (t) => {
  const { a, b, keys } = nodes(true);
  const message = (len: number): number => 16 + Math.ceil(len / 16) * 16 + 16;
  const small = buildUdp("10.5.1.5", "10.5.2.7", 4000, 5000, bytes(101));
  const payload = bytes(14 * 1000);
  const superPacket = buildTcp("10.5.1.5", "10.5.2.7", 40000, 5201, 1000, 0x10, payload, { df: true });
  const segments = Math.ceil(payload.length / 1000);
  const wire = send(a, [concat(new Uint8Array(10), small), concat(vnet(1, 1000, 40), superPacket)]).flatMap(datagrams);
  t.equal(wire.length, 1 + segments);
  const wireBytes = wire.reduce((n, d) => n + d.length, 0);
  t.equal(wireBytes, message(small.length) + (segments - 1) * message(1040) + message(40 + payload.length - (segments - 1) * 1000));
  t.same(a.dp.sessionBytes(a.index), { rx: 0n, tx: BigInt(wireBytes) }, "sent: every message's bytes, header, padding and tag");
  const forged = wire[0].slice();
  forged[40] ^= 1;
  receive(b, [{ data: forged }, { data: wire[0] }, { data: wire[0] }]);
  t.same(b.dp.sessionBytes(b.index), { rx: BigInt(wire[0].length), tx: 0n }, "received: the genuine message once; the forgery and the replay not");
  receive(b, wire.slice(1).map((data) => ({ data })));
  const ts = new TransportSession(keys.initiator, a.index, b.index, Date.now(), true);
  for (let i = 0; i < 1 + segments; i++) ts.seal(new Uint8Array(0), Date.now());
  receive(b, [{ data: ts.seal(new Uint8Array(0), Date.now())! }]);
  t.same(b.dp.sessionBytes(b.index), { rx: BigInt(wireBytes + 32), tx: 0n }, "and every message after it, a keepalive's 32 bytes too");
  b.dp.closeSession(b.index);
  t.same(b.dp.sessionBytes(b.index), { rx: 0n, tx: 0n }, "a closed session holds nothing (the control path kept its total)");
});

function vnet(gsoType: number, gsoSize: number, hdrLen: number): Uint8Array {
  const v = new Uint8Array(10);
  const dv = new DataView(v.buffer);
  v[0] = 1; v[1] = gsoType;
  dv.setUint16(2, hdrLen, true); dv.setUint16(4, gsoSize, true); dv.setUint16(6, 20, true); dv.setUint16(8, 16, true);
  return v;
}

t.test("a TSO super-packet is split before sealing and merged after opening", async (t) => {
  const { a, b, keys } = nodes(true);
  const mss = 1380;
  const data = bytes(60000, 3);
  const superPkt = buildTcp("10.5.1.5", "10.5.2.7", 40000, 5201, 1000, 0x10, data, { df: true });
  const sends = send(a, [concat(vnet(1, mss, 40), superPkt)]);
  const grams = sends.flatMap(datagrams);
  const nseg = Math.ceil(data.length / mss);
  t.equal(grams.length, nseg, `${nseg} transport messages in ${sends.length} GSO sends`);
  const ts = new TransportSession(keys.responder, b.index, a.index, Date.now(), false);
  const payload: Uint8Array[] = [];
  let bad = 0;
  for (const g of grams) {
    const plain = ts.open(g, Date.now());
    if (typeof plain === "string") { bad++; continue; }
    const ip = parseIp4(plain);
    if (!ip.headerOk) bad++;
    payload.push(ip.payload.subarray(20, ip.total - 20));
  }
  t.equal(bad, 0, "every segment opens and has a valid IP header");
  t.same(concat(...payload), data, "the segments carry the stream in order");
  const { tun } = receive(b, sends.map((s) => ({ data: s.bytes, seg: s.segSize })));
  t.ok(tun.length >= 1 && tun.length < nseg, `merged into ${tun.length} TUN writes`);
  const merged = concat(...tun.map((w) => { const ip = parseIp4(w.subarray(10)); return ip.payload.subarray(20, ip.total - 20); }));
  t.same(merged, data, "the merged writes carry the whole stream");
  t.equal(b.h.counter("ingress", "wg_bad_mac"), 0);
});

t.test("no session: packets wait in the core for the handshake, then go out in order", async (t) => {
  const { a, b } = nodes();
  a.dp.setPeer(a.route, 0, PORT);
  const pings = [1, 2, 3].map((i) => buildUdp("10.5.1.5", "10.5.2.7", 4000 + i, 5000, bytes(40 + i, i)));
  t.same(send(a, pings), [], "nothing goes out without a session");
  t.equal(a.h.counter("egress", "wg_staged"), 3);
  t.equal(a.h.counter("egress", "wg_no_session"), 0);
  t.equal(a.dp.stagedCount(), 3);
  t.same(a.dp.wants(), [a.route], "a handshake is asked for");
  t.equal(a.dp.releaseStaged(0), 0, "still no session: they keep waiting");
  t.equal(a.dp.stagedCount(), 3);

  a.dp.setPeer(a.route, a.index, PORT); // the handshake completed
  const queued = a.dp.releaseStaged(0);
  t.ok(queued >= 1, `${queued} sends queued`);
  const grams = a.h.outputs().sends.flatMap(datagrams);
  t.equal(grams.length, 3);
  t.same(receive(b, grams.map((data) => ({ data }))).tun, pings, "the peer gets them, in the order they were sent");
  t.equal(a.h.counter("egress", "forwarded"), 3);
  t.equal(a.dp.stagedCount(), 0);
  t.equal(a.dp.releaseStaged(0), 0, "nothing left");
});

t.test("staging is bounded: a peer's oldest packets make room, drops are counted", async (t) => {
  const { a, b } = nodes();
  a.dp.setPeer(a.route, 0, PORT);
  const total = 100;
  const perPeer = 64;
  const pkts = Array.from({ length: total }, (_, i) => buildUdp("10.5.1.5", "10.5.2.7", 1000 + i, 5000, bytes(20, i)));
  for (let i = 0; i < total; i += 50) send(a, pkts.slice(i, i + 50));
  t.equal(a.dp.stagedCount(), perPeer, "at most WG_STAGE_PER_PEER for one peer");
  t.equal(a.h.counter("egress", "wg_stage_dropped"), total - perPeer);
  const big = buildUdp("10.5.1.5", "10.5.2.7", 9, 9, bytes(2100));
  t.same(send(a, [big]), []);
  t.equal(a.h.counter("egress", "wg_no_session"), 1, "a packet too large to wait is dropped and counted");
  a.dp.setPeer(a.route, a.index, PORT);
  a.dp.releaseStaged(0);
  const grams = a.h.outputs().sends.flatMap(datagrams);
  t.same(receive(b, grams.map((data) => ({ data }))).tun, pkts.slice(total - perPeer), "the newest ones, in order");

  a.dp.setPeer(a.route, 0, PORT);
  send(a, pkts.slice(0, 5));
  t.equal(a.dp.dropStaged(a.route), 5, "dropped when the handshake is given up");
  t.equal(a.dp.stagedCount(), 0);
  t.equal(a.h.counter("egress", "wg_stage_dropped"), total - perPeer + 5);
});
