// Hostile WireGuard input against the core's data path and the control path: random, truncated
// and oversized datagrams, forged tags, replays, unknown indexes, mangled handshake messages and
// floods of initiations (answered with cookie replies under load, held to a per-source budget).
// Nothing throws, nothing unauthenticated reaches the TUN, the control path's state stays
// bounded, and the counters say what was refused.
import { randomBytes } from "node:crypto";
import t from "tap";

import { Harness } from "../helpers/harness.js";
import { ip4, buildUdp, bytes } from "../helpers/packets.js";
import { initCrypto, loadWgNative } from "../../src/wireguard/crypto.js";
import { WgDataPath } from "../../src/wireguard/datapath.js";
import { UNDER_LOAD_BATCH, WgControl } from "../../src/wireguard/control.js";
import { consumeCookieReply, createInitiation, LocalIdentity, RemoteIdentity } from "../../src/wireguard/noise.js";
import { MSG_COOKIE_REPLY, MSG_RESPONSE } from "../../src/wireguard/messages.js";
import { MAX_SOURCES } from "../../src/wireguard/ratelimit.js";
import { LAYOUT } from "../../src/dataplane/abi.js";

const WG_CONTROL_CAP = LAYOUT.WG_CONTROL_CAP;

t.before(initCrypto);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s; };
}

t.test("random, truncated, oversized and forged datagrams: no crash, nothing delivered, all counted", async (t) => {
  const h = new Harness({ mode: "wireguard", port: 51820, mtu: 1420, subnet: { ip: ip4("10.5.2.0"), prefixLen: 24 } });
  const route = h.core.setRoute({ subnet: { ip: ip4("10.5.1.0"), prefixLen: 24 }, publicIP: ip4("192.168.1.1") });
  const dp = new WgDataPath(h.core, loadWgNative());
  const index = ((7 << 10) | 3) >>> 0;
  dp.openSession(index, 99, route, { send: new Uint8Array(randomBytes(32)), receive: new Uint8Array(randomBytes(32)) });
  dp.setPeer(route, index, 51820);
  const r = rng(1);
  const valid = buildUdp("10.5.1.5", "10.5.2.7", 1, 2, bytes(100));
  let delivered = 0;
  let handshakes = 0;
  const rounds = 300;
  for (let round = 0; round < rounds; round++) {
    const grams = [];
    for (let i = 0; i < 16; i++) {
      const kind = r() % 6;
      let d: Uint8Array;
      if (kind === 0) d = new Uint8Array(randomBytes(r() % 200));
      else if (kind === 1) d = new Uint8Array(randomBytes(1 + (r() % 65000)));
      else {
        // A transport message naming the live session (or a near miss) with a forged tag.
        d = new Uint8Array(16 + 16 + ((valid.length + 15) & ~15));
        const dv = new DataView(d.buffer);
        dv.setUint32(0, kind === 5 ? 1 + (r() % 3) : 4, true);
        dv.setUint32(4, kind === 3 ? r() : index, true);
        dv.setBigUint64(8, BigInt(r()), true);
        d.set(valid, 16);
        if (kind === 4) d = d.subarray(0, r() % d.length);
      }
      grams.push({ data: d, from: "192.168.1.1", port: 51820 });
    }
    const out = h.ingress(grams, 0, () => { handshakes += dp.openIngress(grams.length).length; });
    delivered += out.tun.length;
  }
  t.equal(delivered, 0, "no unauthenticated packet reached the TUN");
  const c = h.core.counters().ingress;
  const refused = ["wg_bad_mac", "wg_unknown_session", "malformed", "wg_handshake"] as const;
  const total = refused.reduce((s, k) => s + Number(c[k].packets), 0);
  t.comment(`refused: ${refused.map((k) => `${k}=${c[k].packets}`).join(" ")}, handed to the control path: ${handshakes}`);
  t.equal(total, rounds * 16, "every datagram counted under one refusal");
  t.ok(Number(c.wg_bad_mac.packets) > 0 && Number(c.wg_unknown_session.packets) > 0 && Number(c.malformed.packets) > 0);
});

t.test("the control path takes mangled handshakes and an initiation flood without growing", async (t) => {
  const h = new Harness({ mode: "wireguard", port: 51820, mtu: 1420, subnet: { ip: ip4("10.5.2.0"), prefixLen: 24 } });
  const route = h.core.setRoute({ subnet: { ip: ip4("10.5.1.0"), prefixLen: 24 }, publicIP: ip4("192.168.1.1") });
  const dp = new WgDataPath(h.core, loadWgNative());
  const ownKey = new Uint8Array(randomBytes(32));
  const control = new WgControl(dp, { privateKey: ownKey, presharedKey: new Uint8Array(32), persistentKeepalive: 0 });
  const peerKey = new Uint8Array(randomBytes(32));
  const peer = new LocalIdentity(peerKey);
  control.setPeer({ route, publicKey: peer.publicKey, addr: ip4("192.168.1.1"), port: 51820 });
  const us = new RemoteIdentity(peer, control.publicKey);
  const r = rng(2);
  const now = Date.now();
  for (let i = 0; i < 500; i++) {
    const init = createInitiation(peer, us, i + 1, now + i)!.message;
    const m = init.slice();
    if (i % 3 === 1) m[8 + (r() % 100)] ^= 1 << (r() % 8);
    const random = new Uint8Array(randomBytes([148, 92, 64][i % 3]));
    random[0] = 1 + (i % 3); random[1] = random[2] = random[3] = 0;
    control.receive([{ data: m, addr: ip4("192.168.1.1"), port: 51820 }, { data: random, addr: ip4("192.168.1.66"), port: 4000 }], now + i);
    control.tick(now + i);
  }
  const sent = control.drain();
  t.comment(JSON.stringify(control.events));
  t.ok(control.events.handshake_bad_mac > 0, "mangled and random messages fail MAC1 first");
  t.ok(control.events.handshake_responses_sent > 0, "genuine initiations are answered");
  t.ok(sent.messages.length <= 500, "one response at most per genuine initiation");
  t.equal(control.status().length, 1);
  // Every initiation replaced the unconfirmed session before it: one slot in use, not hundreds.
  let live = 0;
  for (let slot = 0; slot < 1024; slot++) {
    const s = h.core.exports as unknown as { wgSessionAddr(n: number): number };
    if (new DataView(h.core.memory.buffer).getUint32(s.wgSessionAddr(slot), true) !== 0) live++;
  }
  t.equal(live, 1, "sessions stay bounded under a flood");
});

t.test("a flood of initiations: cookie replies under load, a per-source limit, bounded state; a real peer still gets through", async (t) => {
  const h = new Harness({ mode: "wireguard", port: 51820, mtu: 1420, subnet: { ip: ip4("10.5.2.0"), prefixLen: 24 } });
  const route = h.core.setRoute({ subnet: { ip: ip4("10.5.1.0"), prefixLen: 24 }, publicIP: ip4("192.168.1.1") });
  const dp = new WgDataPath(h.core, loadWgNative());
  const t0 = 5_000_000;
  const control = new WgControl(dp, { privateKey: new Uint8Array(randomBytes(32)), presharedKey: new Uint8Array(32), persistentKeepalive: 0, startMs: t0 });
  const peer = new LocalIdentity(new Uint8Array(randomBytes(32)));
  control.setPeer({ route, publicKey: peer.publicKey, addr: ip4("192.168.1.1"), port: 51820 });
  const us = new RemoteIdentity(peer, control.publicKey);
  // Attackers know our public key (it is in our lease), so their MAC1 is right; they are no peer of ours.
  const attackers = Array.from({ length: 8 }, (_, i) => {
    const a = new LocalIdentity(new Uint8Array(randomBytes(32)));
    return createInitiation(a, new RemoteIdentity(a, control.publicKey), i + 1, t0)!.message;
  });
  const r = rng(3);
  const legit = { addr: ip4("192.168.1.1"), port: 51820 };
  let maxOut = 0;
  let replyToPeer: Uint8Array | null = null;
  let answered = 0;
  const batches = 200;
  const perBatch = WG_CONTROL_CAP;
  for (let b = 0; b < batches; b++) {
    const now = t0 + b * 10;
    const batch = Array.from({ length: perBatch - 1 }, (_, i) => ({ data: attackers[i % attackers.length], addr: (r() | 0x01000000) >>> 0, port: r() & 0xffff }));
    // The real peer initiates now and then; once it holds our cookie its MAC2 is right.
    if (b % 50 === 0) batch.push({ data: createInitiation(peer, us, 1000 + b, now)!.message, ...legit });
    control.receive(batch, now);
    control.tick(now);
    const { messages } = control.drain();
    maxOut = Math.max(maxOut, messages.length);
    for (const m of messages) {
      if (m.addr !== legit.addr) continue;
      if (m.data[0] === MSG_COOKIE_REPLY) { replyToPeer = m.data; t.ok(consumeCookieReply(us, m.data, now), "the peer takes our cookie"); }
      if (m.data[0] === MSG_RESPONSE) answered++;
    }
  }
  const e = control.events;
  t.comment(JSON.stringify({ cookie_replies_sent: e.cookie_replies_sent, handshake_rate_limited: e.handshake_rate_limited, handshake_unknown_peer: e.handshake_unknown_peer, responses: e.handshake_responses_sent }));
  t.ok(replyToPeer, "the real peer got a cookie reply first");
  t.ok(answered >= 1, "the real peer's initiation with MAC2 is answered during the flood");
  t.ok(e.cookie_replies_sent >= batches * (perBatch - 1) - perBatch, "the flood is answered with cookies, counted");
  t.ok(e.handshake_unknown_peer <= UNDER_LOAD_BATCH, "almost no flooded initiation reached a Diffie-Hellman");
  t.ok(maxOut <= perBatch, "at most one reply per message of a batch");

  // One source with a valid cookie sending as fast as it can: held to its budget.
  const before = e.handshake_rate_limited;
  const base = t0 + batches * 10 + 5_000;
  for (let i = 0; i < 100; i++) control.receive([{ data: createInitiation(peer, us, 5000 + i, base + i)!.message, ...legit }], base + i * 10);
  t.ok(e.handshake_rate_limited - before >= 70, `100 initiations in 1 s from one source: ${e.handshake_rate_limited - before} refused`);

  // Many sources, not under load: the limiter's table stops at its bound and empties when they go quiet.
  const quiet = base + 10_000;
  for (let i = 0; i < MAX_SOURCES + 200; i += 4) {
    control.receive([0, 1, 2, 3].map((k) => ({ data: attackers[k], addr: (0x0a000000 + i + k) >>> 0, port: 1 })), quiet);
  }
  t.equal(control.limitedSources, MAX_SOURCES, "the limiter tracks at most MAX_SOURCES sources");
  control.tick(quiet + 2_000);
  t.equal(control.limitedSources, 0, "idle sources are forgotten");
});
