// WireGuard's control path on a fake clock: two WgControl instances, each over a real wasm core
// and the addon's crypto, exchange what they drain through each other's core (no sockets, no
// real waits). The timers: retransmit after REKEY-TIMEOUT plus jitter, give up after
// REKEY-ATTEMPT-TIME, rekey after REKEY-AFTER-TIME or REKEY-AFTER-MESSAGES, reject after
// REJECT-AFTER-TIME, a keepalive after KEEPALIVE-TIMEOUT of receiving only, persistent
// keepalives, a new handshake after KEEPALIVE-TIMEOUT + REKEY-TIMEOUT of sending unanswered, the
// initiator's last-minute handshake on receiving; and the packets staged while a handshake runs go out once it completes.
import { randomBytes } from "node:crypto";
import t, { type Test } from "tap";

import { Harness, datagrams } from "../helpers/harness.js";
import { ip4, buildUdp, bytes } from "../helpers/packets.js";
import { initCrypto, loadWgNative } from "../../src/wireguard/crypto.js";
import { WgDataPath } from "../../src/wireguard/datapath.js";
import { REKEY_TIMEOUT_JITTER_MS, WgControl } from "../../src/wireguard/control.js";
import {
  KEEPALIVE_TIMEOUT_MS, REJECT_AFTER_TIME_MS, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME_MS, REKEY_ATTEMPT_TIME_MS,
  REKEY_TIMEOUT_MS,
} from "../../src/wireguard/session.js";
import { LAYOUT as L } from "../../src/dataplane/abi.js";
import { wireguardMetrics } from "../../src/wireguard/metrics.js";

t.before(initCrypto);

const PORT = 51820;
const T0 = 1_000_000;
const TICK = 100;

interface Node { h: Harness; dp: WgDataPath; c: WgControl; route: number; ip: string; net: string; peerNet: string }

function node(own: string, peerNet: string, ip: string, keepalive: number): Node {
  const h = new Harness({ mode: "wireguard", port: PORT, mtu: 1420, subnet: { ip: ip4(own), prefixLen: 24 } });
  const route = h.core.setRoute({ subnet: { ip: ip4(peerNet), prefixLen: 24 }, publicIP: ip4("0.0.0.0") });
  const dp = new WgDataPath(h.core, loadWgNative());
  const c = new WgControl(dp, { privateKey: new Uint8Array(randomBytes(32)), presharedKey: new Uint8Array(32), persistentKeepalive: keepalive, startMs: T0 });
  return { h, dp, c, route, ip, net: own, peerNet };
}

function pair(keepalive = 0): { a: Node; b: Node } {
  const a = node("10.5.1.0", "10.5.2.0", "192.168.1.1", keepalive);
  const b = node("10.5.2.0", "10.5.1.0", "192.168.1.2", keepalive);
  a.c.setPeer({ route: a.route, publicKey: b.c.publicKey, addr: ip4(b.ip), port: PORT });
  b.c.setPeer({ route: b.route, publicKey: a.c.publicKey, addr: ip4(a.ip), port: PORT });
  a.dp.setEndpoint(a.route, ip4(b.ip), PORT);
  b.dp.setEndpoint(b.route, ip4(a.ip), PORT);
  return { a, b };
}

/** What `src` sends now: its control datagrams, then the staged packets a new session freed. */
function drainWire(src: Node, now: number): Uint8Array[] {
  const { messages, keepalives, installed } = src.c.drain();
  const out: Uint8Array[] = [];
  const n = src.dp.queueControl(messages, keepalives);
  const dv = new DataView(src.h.core.memory.buffer);
  for (let i = 0; i < n; i++) {
    const d = L.WG_OUT_DESC + i * L.DESC_SIZE;
    const at = dv.getUint32(d + L.D_OFFSET, true);
    out.push(new Uint8Array(src.h.core.memory.buffer.slice(at, at + dv.getUint32(d + L.D_LENGTH, true))));
  }
  if (installed && src.dp.releaseStaged(now) > 0) out.push(...src.h.outputs().sends.flatMap(datagrams));
  return out;
}

/** Delivers datagrams from `src` to `dst` through dst's core and control path; returns its TUN writes. */
function deliver(src: Node, dst: Node, grams: Uint8Array[], now: number): Uint8Array[] {
  if (grams.length === 0) return [];
  let control: ReturnType<WgDataPath["openIngress"]> = [];
  const { tun } = dst.h.ingress(grams.map((data) => ({ data, from: src.ip, port: PORT })), now,
    () => { control = dst.dp.openIngress(grams.length); });
  if (control.length > 0) dst.c.receive(control, now);
  return tun;
}

/** A packet from `src`'s pod to the peer's: through src's core, the handshake asked for when there is no session. */
function sendPacket(src: Node, p: Uint8Array, now: number): Uint8Array[] {
  const { sends } = src.h.egress([p], now, () => src.dp.sealEgress());
  const wants = src.dp.wants();
  if (wants.length > 0) src.c.want(wants, now);
  return sends.flatMap(datagrams);
}

const ping = (from: Node, i: number): Uint8Array => buildUdp(`${from.net.slice(0, -1)}5`, `${from.peerNet.slice(0, -1)}7`, 1000 + i, 7, bytes(32, i));

/** Runs both nodes' timers from `from` to `to` (TICK steps), the wire up or cut; returns b's and a's TUN writes. */
function run(n: { a: Node; b: Node }, from: number, to: number, connected = true): { atB: Uint8Array[]; atA: Uint8Array[] } {
  const atA: Uint8Array[] = [];
  const atB: Uint8Array[] = [];
  for (let now = from; now <= to; now += TICK) {
    n.a.c.tick(now);
    n.b.c.tick(now);
    const ab = drainWire(n.a, now);
    const ba = drainWire(n.b, now);
    if (!connected) continue;
    atB.push(...deliver(n.a, n.b, ab, now));
    atA.push(...deliver(n.b, n.a, ba, now));
  }
  return { atA, atB };
}

/** A fresh pair with a session from a to b (a initiated), at T0. */
function established(tt: Test, keepalive = 0): { a: Node; b: Node } {
  const n = pair(keepalive);
  const first = ping(n.a, 0);
  tt.same(sendPacket(n.a, first, T0), [], "no session yet: the packet waits");
  const { atB } = run(n, T0, T0 + 5 * TICK);
  tt.same(atB, [first], "the staged packet arrives once the handshake completes");
  tt.equal(n.a.c.events.handshakes_completed, 1);
  return n;
}

t.test("packets staged during a handshake all arrive, in order, and the reply needs no second handshake", async (t) => {
  const n = pair();
  const pings = [0, 1, 2].map((i) => ping(n.a, i));
  for (const p of pings) t.same(sendPacket(n.a, p, T0), []);
  t.equal(n.a.c.events.handshake_initiations_sent, 1, "one initiation for three packets");
  const { atB } = run(n, T0, T0 + 3 * TICK);
  t.same(atB, pings, "all three delivered in order");
  const reply = buildUdp("10.5.2.7", "10.5.1.5", 7, 1000, bytes(32, 9));
  const grams = sendPacket(n.b, reply, T0 + 4 * TICK);
  t.equal(grams.length, 1, "the responder sends at once: its session was confirmed");
  t.same(deliver(n.b, n.a, grams, T0 + 4 * TICK), [reply]);
  t.equal(n.a.c.events.handshake_initiations_sent + n.b.c.events.handshake_initiations_sent, 1);
  t.equal(n.a.h.counter("egress", "wg_staged"), 3);
});

t.test("retransmits every REKEY-TIMEOUT plus jitter, gives up after REKEY-ATTEMPT-TIME and drops what waited", async (t) => {
  const n = pair();
  sendPacket(n.a, ping(n.a, 0), T0);
  const sentAt: number[] = [T0];
  let seen = 1;
  const step = 10;
  for (let now = T0; now <= T0 + REKEY_ATTEMPT_TIME_MS + 2 * REKEY_TIMEOUT_MS; now += step) {
    n.a.c.tick(now);
    drainWire(n.a, now); // the wire is cut: nothing arrives
    if (n.a.c.events.handshake_initiations_sent > seen) { seen = n.a.c.events.handshake_initiations_sent; sentAt.push(now); }
  }
  const gaps = sentAt.slice(1).map((x, i) => x - sentAt[i]);
  t.comment(`retransmission gaps (ms): ${gaps.join(" ")}`);
  t.ok(gaps.every((g) => g >= REKEY_TIMEOUT_MS && g <= REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MS + step), "each 5 s plus at most 333 ms");
  t.ok(new Set(gaps).size > 1, "the jitter varies");
  t.ok(sentAt[sentAt.length - 1] - T0 < REKEY_ATTEMPT_TIME_MS + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MS, "none after 90 s");
  t.ok(sentAt[sentAt.length - 1] - T0 >= REKEY_ATTEMPT_TIME_MS - REKEY_TIMEOUT_MS - REKEY_TIMEOUT_JITTER_MS, "attempts until 90 s");
  t.equal(n.a.c.events.handshake_attempts_given_up, 1);
  t.equal(n.a.dp.stagedCount(), 0, "the waiting packet is dropped");
  t.equal(n.a.h.counter("egress", "wg_stage_dropped"), 1);
  // New traffic starts a new run of attempts.
  const later = T0 + REKEY_ATTEMPT_TIME_MS + 3 * REKEY_TIMEOUT_MS;
  sendPacket(n.a, ping(n.a, 1), later);
  t.equal(n.a.c.events.handshake_initiations_sent, seen + 1);
  const { atB } = run(n, later, later + 3 * TICK);
  t.equal(atB.length, 1, "and it completes once the peer answers");
});

t.test("an idle session is not rekeyed on time: the initiator's first data after REKEY-AFTER-TIME starts the rekey", async (t) => {
  const n = established(t);
  run(n, T0 + 6 * TICK, T0 + REKEY_AFTER_TIME_MS + 30_000);
  t.equal(n.a.c.events.rekeys, 0, "nothing sent: no rekey at 120 s, nor 30 s later");
  t.equal(n.a.c.events.handshake_initiations_sent, 1, "no initiation at all since the first handshake");
  const at = T0 + REKEY_AFTER_TIME_MS + 30_000 + TICK;
  t.equal(deliver(n.a, n.b, sendPacket(n.a, ping(n.a, 9), at), at).length, 1, "data still goes on the old session");
  run(n, at + TICK, at + 5 * TICK);
  t.equal(n.a.c.events.rekeys, 1, "sending on it rekeys");
  t.equal(n.a.c.events.handshakes_completed, 2);
  t.equal(n.b.c.events.rekeys, 0, "the responder does not rekey on time");
});

t.test("the initiator sending at REKEY-AFTER-TIME rekeys; keys are rejected after REJECT-AFTER-TIME", async (t) => {
  const n = established(t);
  run(n, T0 + 6 * TICK, T0 + REKEY_AFTER_TIME_MS - TICK);
  t.equal(n.a.c.events.rekeys, 0, "no rekey before 120 s");
  sendPacket(n.a, ping(n.a, 4), T0 + REKEY_AFTER_TIME_MS + 2 * TICK); // lost; sending is what counts
  run(n, T0 + REKEY_AFTER_TIME_MS + 2 * TICK, T0 + REKEY_AFTER_TIME_MS + 5 * TICK);
  t.equal(n.a.c.events.rekeys, 1, "the initiator rekeys at 120 s");
  t.equal(n.b.c.events.rekeys, 0, "the responder does not rekey on time");
  t.equal(n.a.c.events.handshakes_completed, 2);
  const p = ping(n.a, 5);
  const now = T0 + REKEY_AFTER_TIME_MS + 6 * TICK;
  t.same(deliver(n.a, n.b, sendPacket(n.a, p, now), now), [p], "traffic on the new session");

  // Cut the wire: the rekey at 240 s fails; the session from 120 s is rejected at 300 s.
  const base = T0 + REKEY_AFTER_TIME_MS;
  run(n, now + TICK, base + REJECT_AFTER_TIME_MS - 2 * TICK, false);
  t.equal(n.a.c.events.sessions_expired, 1, "the session before it expired (180 s after it began)");
  const q = ping(n.a, 6);
  t.equal(sendPacket(n.a, q, base + REJECT_AFTER_TIME_MS - TICK).length, 1, "still sending just before 180 s");
  // The session began when the response came back, a few ticks after `base`.
  run(n, base + REJECT_AFTER_TIME_MS, base + REJECT_AFTER_TIME_MS + 5 * TICK, false);
  t.ok(n.a.c.events.sessions_expired >= 2, "rejected at 180 s");
  t.same(sendPacket(n.a, q, base + REJECT_AFTER_TIME_MS + 6 * TICK), [], "after 180 s nothing is sent on it: the packet waits");
  t.equal(n.a.dp.stagedCount(), 1);
});

t.test("either side rekeys after REKEY-AFTER-MESSAGES", async (t) => {
  const n = established(t);
  const status = n.b.c.status()[0];
  const slot = status.sessionIndex & ((1 << L.WG_SLOT_BITS) - 1);
  const s = (n.b.h.core.exports as unknown as { wgSessionAddr(n: number): number }).wgSessionAddr(slot);
  new DataView(n.b.h.core.memory.buffer).setBigUint64(s + L.WG_S_SEND_COUNTER, REKEY_AFTER_MESSAGES, true);
  run(n, T0 + 6 * TICK, T0 + 10 * TICK);
  t.equal(n.b.c.events.rekeys, 1, "the responder rekeys once 2^60 messages went out");
  t.equal(n.b.c.events.handshakes_completed, 2);
});

t.test("a keepalive after KEEPALIVE-TIMEOUT of receiving only; none for a keepalive", async (t) => {
  const n = established(t);
  const start = T0 + 6 * TICK;
  const kaB = n.b.c.events.keepalives_sent;
  const kaA = n.a.c.events.keepalives_sent;
  t.equal(deliver(n.a, n.b, sendPacket(n.a, ping(n.a, 1), start), start).length, 1);
  run(n, start + TICK, start + KEEPALIVE_TIMEOUT_MS - TICK);
  t.equal(n.b.c.events.keepalives_sent, kaB, "not before 10 s");
  run(n, start + KEEPALIVE_TIMEOUT_MS, start + KEEPALIVE_TIMEOUT_MS + 2 * TICK);
  t.equal(n.b.c.events.keepalives_sent, kaB + 1, "one at 10 s of receiving only");
  run(n, start + KEEPALIVE_TIMEOUT_MS + 3 * TICK, start + 4 * KEEPALIVE_TIMEOUT_MS);
  t.equal(n.b.c.events.keepalives_sent, kaB + 1, "and only one");
  t.equal(n.a.c.events.keepalives_sent, kaA, "a keepalive is not answered with one");
  const reply = buildUdp("10.5.2.7", "10.5.1.5", 7, 1000, bytes(8));
  const t2 = start + 5 * KEEPALIVE_TIMEOUT_MS;
  deliver(n.a, n.b, sendPacket(n.a, ping(n.a, 2), t2), t2);
  n.b.c.tick(t2); // b has seen the data before it answers
  deliver(n.b, n.a, sendPacket(n.b, reply, t2 + TICK), t2 + TICK);
  run(n, t2 + 2 * TICK, t2 + 2 * KEEPALIVE_TIMEOUT_MS);
  t.equal(n.b.c.events.keepalives_sent, kaB + 1, "no keepalive when data went back");
});

t.test("persistent keepalives every PersistentKeepaliveInterval, traffic or not", async (t) => {
  const n = established(t, 25);
  const before = n.a.c.events.keepalives_sent;
  run(n, T0 + 6 * TICK, T0 + 6 * TICK + 100_000);
  const sent = n.a.c.events.keepalives_sent - before;
  t.ok(sent >= 3 && sent <= 5, `${sent} keepalives in 100 s at 25 s`);
});

t.test("wg show's view through /metrics: each peer's key, endpoint, allowed IPs, last handshake and bytes each way", async (t) => {
  const n = pair();
  n.a.c.setPeer({ route: n.a.route, publicKey: n.b.c.publicKey, addr: ip4(n.b.ip), port: PORT, allowedIps: "10.5.2.0/24" });
  const before = n.a.c.status()[0];
  t.equal(before.lastHandshakeMs, 0, "no handshake yet");
  const p = ping(n.a, 0);
  sendPacket(n.a, p, T0);
  run(n, T0, T0 + 5 * TICK);
  const reply = buildUdp("10.5.2.7", "10.5.1.5", 7, 1000, bytes(100));
  deliver(n.b, n.a, sendPacket(n.b, reply, T0 + 6 * TICK), T0 + 6 * TICK);
  const s = n.a.c.status()[0];
  t.equal(s.publicKey, Buffer.from(n.b.c.publicKey).toString("base64"));
  t.equal(s.endpoint, `${n.b.ip}:${PORT}`);
  t.equal(s.allowedIps, "10.5.2.0/24");
  t.ok(s.lastHandshakeMs > T0 && s.lastHandshakeMs <= T0 + 5 * TICK, "the handshake's time");
  // wg show's transfer: whole messages, handshakes included (initiation 148, response 92 bytes).
  const message = (len: number): number => 16 + Math.ceil(len / 16) * 16 + 16;
  t.equal(s.txBytes, 148 + 32 + message(p.length), "bytes sent: the initiation, the keepalive that confirms the session, the staged packet's message");
  t.equal(s.rxBytes, 92 + message(reply.length), "bytes received: the response and the reply's message");
  const other = n.b.c.status()[0];
  t.same([other.rxBytes, other.txBytes], [s.txBytes, s.rxBytes], "the peer counted the same bytes the other way");
  const own = Buffer.from(n.a.c.publicKey).toString("base64");
  const m = wireguardMetrics({ publicKey: own, listenPort: PORT, peers: n.a.c.status(), events: n.a.c.events });
  const find = (name: string) => m.find((x) => x.name === name);
  t.same(find("linen_wireguard_interface_info")?.labels, { public_key: own, listen_port: String(PORT) }, "wg show's interface: our public key and listening port");
  t.equal(find("linen_wireguard_interface_info")?.value, 1);
  t.same(find("linen_wireguard_peer_last_handshake_seconds")?.labels, { public_key: s.publicKey, endpoint: s.endpoint, allowed_ips: "10.5.2.0/24" });
  t.equal(find("linen_wireguard_peer_last_handshake_seconds")?.value, Math.floor(s.lastHandshakeMs / 1000));
  t.equal(find("linen_wireguard_peer_receive_bytes_total")?.value, s.rxBytes);
  t.equal(find("linen_wireguard_peer_transmit_bytes_total")?.value, s.txBytes);
  t.equal(m.find((x) => x.labels?.event === "handshakes_completed")?.value, 1);
  // The session expires and is closed: what it carried stays in the totals (a passive keepalive
  // after the reply, 32 bytes, is all that adds).
  const keepalives = n.a.c.events.keepalives_sent;
  run(n, T0 + 7 * TICK, T0 + REJECT_AFTER_TIME_MS + 10 * TICK);
  t.ok(n.a.c.events.sessions_expired >= 1, "the session expired");
  const later = n.a.c.status()[0];
  t.same([later.rxBytes, later.txBytes], [s.rxBytes, s.txBytes + 32 * (n.a.c.events.keepalives_sent - keepalives)],
    "the totals hold after its session was closed");
});

t.test("a new handshake after KEEPALIVE-TIMEOUT + REKEY-TIMEOUT of sending data and hearing nothing back", async (t) => {
  const n = established(t);
  const quiet = KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS;
  // The peer is there: its keepalive (10 s after our data) counts as hearing back.
  const s1 = T0 + 6 * TICK;
  t.equal(deliver(n.a, n.b, sendPacket(n.a, ping(n.a, 1), s1), s1).length, 1);
  run(n, s1 + TICK, s1 + 2 * quiet);
  t.equal(n.a.c.events.handshake_initiations_sent, 1, "no new handshake while the peer answers (a keepalive is enough)");
  // A request answered within one tick: the requester still owes a keepalive, else the peer
  // that answered would hear nothing and start a handshake.
  const r = s1 + 2 * quiet + TICK;
  t.equal(deliver(n.a, n.b, sendPacket(n.a, ping(n.a, 3), r), r).length, 1);
  const answer = buildUdp("10.5.2.7", "10.5.1.5", 7, 1000, bytes(8));
  t.equal(deliver(n.b, n.a, sendPacket(n.b, answer, r), r).length, 1);
  run(n, r + TICK, r + 2 * quiet);
  t.equal(n.b.c.events.handshake_initiations_sent, 0, "no new handshake from the peer that answered");

  // The peer goes silent: the data we send gets nothing back.
  const s2 = r + 2 * quiet + TICK;
  t.equal(sendPacket(n.a, ping(n.a, 2), s2).length, 1, "sent on the current session");
  run(n, s2 + TICK, s2 + quiet - TICK, false);
  t.equal(n.a.c.events.handshake_initiations_sent, 1, "none before 15 s");
  run(n, s2 + quiet, s2 + quiet + REKEY_TIMEOUT_JITTER_MS + 2 * TICK, false);
  t.equal(n.a.c.events.handshake_initiations_sent, 2, "one at 15 s plus jitter");
  t.equal(n.a.c.events.rekeys, 0, "not a rekey on time or messages");
  // Once the peer is back, the handshake completes.
  const s3 = s2 + quiet + REKEY_TIMEOUT_JITTER_MS + 3 * TICK;
  run(n, s3, s3 + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MS + 3 * TICK);
  t.equal(n.a.c.events.handshakes_completed, 2, "the new handshake completes");
  t.equal(n.b.c.events.handshake_initiations_sent, 0, "the peer that received only does not start one");
});

t.test("the initiator starts a new run of attempts when a message arrives on a session older than REJECT-AFTER-TIME - KEEPALIVE-TIMEOUT - REKEY-TIMEOUT", async (t) => {
  const n = established(t);
  const lastMinute = REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS;
  run(n, T0 + 6 * TICK, T0 + REKEY_AFTER_TIME_MS - TICK);
  // From 120 s our messages are lost; the peer's still arrive. a sends nothing, so it does not rekey on time.
  const initiationsAt: number[] = [];
  let seen = n.a.c.events.handshake_initiations_sent;
  const end = T0 + lastMinute + REKEY_ATTEMPT_TIME_MS + 3 * REKEY_TIMEOUT_MS;
  for (let now = T0 + REKEY_AFTER_TIME_MS; now <= end; now += TICK) {
    n.a.c.tick(now);
    n.b.c.tick(now);
    drainWire(n.a, now); // lost
    deliver(n.b, n.a, drainWire(n.b, now), now);
    if (now === T0 + lastMinute + 10 * TICK) {
      const reply = buildUdp("10.5.2.7", "10.5.1.5", 7, 1000, bytes(8));
      t.equal(deliver(n.b, n.a, sendPacket(n.b, reply, now), now).length, 1, "the peer's data arrives after 165 s");
    }
    if (n.a.c.events.handshake_initiations_sent > seen) { seen = n.a.c.events.handshake_initiations_sent; initiationsAt.push(now - T0); }
  }
  t.comment(`initiations at (s): ${initiationsAt.map((x) => x / 1000).join(" ")}`);
  const last = initiationsAt[initiationsAt.length - 1];
  t.ok(last >= lastMinute + REKEY_ATTEMPT_TIME_MS - REKEY_TIMEOUT_MS - REKEY_TIMEOUT_JITTER_MS,
    "attempts go on for 90 s from that message, not from the rekey at 120 s");
  t.ok(last < lastMinute + 10 * TICK + REKEY_ATTEMPT_TIME_MS + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MS, "then give up");
  t.equal(n.a.c.events.handshake_attempts_given_up, 1);
});
