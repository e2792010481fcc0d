// Hostile WireGuard input against the core's data path and the control path: random, truncated
// and oversized datagrams, forged tags, replays, unknown indexes, mangled handshake messages and
// a flood of initiations. Nothing throws, nothing unauthenticated reaches the TUN, the control
// path's state stays bounded, and the counters say what was refused.
import { randomBytes } from "node:crypto";
import t from "tap";

import { Harness } from "../helpers/harness.js";
import { ip4, buildUdp, bytes } from "../helpers/packets.js";
import { initCrypto, loadWgNative } from "../../src/wireguard/crypto.js";
import { WgDataPath } from "../../src/wireguard/datapath.js";
import { WgControl } from "../../src/wireguard/control.js";
import { createInitiation, LocalIdentity, RemoteIdentity } from "../../src/wireguard/noise.js";

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
