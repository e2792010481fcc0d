// WireGuard's primitives against published vectors (RFC 7748 X25519, RFC 8439 ChaCha20-Poly1305,
// RFC 7693 BLAKE2s, the BLAKE2 reference's keyed KAT), the addon's batch AEAD against
// node:crypto, and the Noise_IKpsk2 handshake, replay window and cookies between two instances.
import { randomBytes } from "node:crypto";
import t from "tap";

import { LAYOUT } from "../../src/dataplane/abi.js";
import {
  concat, dh, hash, initCrypto, loadWgNative, mac, open, openWithNonce, publicKeyOf, seal, sealWithNonce,
  xopen, xseal,
} from "../../src/wireguard/crypto.js";
import {
  consumeCookieReply, consumeInitiation, consumeResponse, CookieJar, createInitiation, createResponse,
  INITIAL_CHAIN_KEY, INITIAL_HASH, LocalIdentity, RemoteIdentity,
} from "../../src/wireguard/noise.js";
import { ReplayWindow, REPLAY_WINDOW, TransportSession } from "../../src/wireguard/session.js";
import { INIT_MAC2, messageType, MSG_COOKIE_REPLY } from "../../src/wireguard/messages.js";

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

t.before(initCrypto);

t.test("X25519: RFC 7748 section 5.2 and the section 6.1 Diffie-Hellman", async (t) => {
  t.equal(toHex(dh(hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
    hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))!),
  "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  const alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  t.equal(toHex(publicKeyOf(alice)), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  t.equal(toHex(publicKeyOf(bob)), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  t.equal(toHex(dh(alice, publicKeyOf(bob))!), shared);
  t.equal(toHex(dh(bob, publicKeyOf(alice))!), shared);
  t.equal(dh(alice, new Uint8Array(32)), null, "a low-order point gives no shared secret");
});

t.test("ChaCha20-Poly1305: RFC 8439 section 2.8.2", async (t) => {
  const key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const iv = hex("070000004041424344454647");
  const aad = hex("50515253c0c1c2c3c4c5c6c7");
  const plain = new Uint8Array(Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."));
  const expected = hex(`d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b
    1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116
    1ae10b594f09e26a7e902ecbd0600691`);
  t.equal(toHex(sealWithNonce(key, iv, plain, aad)), toHex(expected));
  t.same(openWithNonce(key, iv, expected, aad), plain);
  const tampered = expected.slice();
  tampered[5] ^= 1;
  t.equal(openWithNonce(key, iv, tampered, aad), null, "a flipped bit does not authenticate");
});

t.test("BLAKE2s: RFC 7693 appendix B, the keyed reference KAT, 16-byte MAC, the protocol's constants", async (t) => {
  t.equal(toHex(hash(new Uint8Array(Buffer.from("abc")))), "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982");
  const key = new Uint8Array(32).map((_, i) => i);
  const w = loadWgNative();
  t.equal(toHex(w.wgMac(key, new Uint8Array(0), 32)), "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49");
  t.equal(toHex(w.wgMac(key, Uint8Array.of(0), 32)), "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1");
  // A 16-byte output is not a truncation: the length is in BLAKE2s's parameter block.
  t.equal(mac(key, new Uint8Array(0)).length, 16);
  t.not(toHex(mac(key, new Uint8Array(0))), toHex(w.wgMac(key, new Uint8Array(0), 32)).slice(0, 32));
  t.equal(toHex(INITIAL_CHAIN_KEY), "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36");
  t.equal(toHex(INITIAL_HASH), "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3");
  t.throws(() => w.wgMac(new Uint8Array(33), new Uint8Array(0), 16), /1 to 32 bytes/);
});

t.test("the addon's batch AEAD agrees with node:crypto both ways and refuses forgeries", async (t) => {
  const w = loadWgNative();
  const L = LAYOUT;
  const mem = new Uint8Array(65536);
  const view = new DataView(mem.buffer);
  const key = new Uint8Array(randomBytes(32));
  mem.set(key, 0);
  const sizes = [0, 1, 15, 16, 1420, 9000];
  const table = 60000;
  let at = 64;
  const plains: Uint8Array[] = [];
  sizes.forEach((n, i) => {
    const p = new Uint8Array(randomBytes(n));
    plains.push(p);
    mem.set(p, at);
    const e = table + i * L.WG_ENTRY_SIZE;
    view.setUint32(e + L.WG_E_KEY, 0, true);
    view.setUint32(e + L.WG_E_DATA, at, true);
    view.setUint32(e + L.WG_E_LENGTH, n, true);
    view.setBigUint64(e + L.WG_E_COUNTER, BigInt(i) * 0x100000001n, true);
    at += n + L.WG_TAG_LEN;
  });
  t.equal(w.wgSealBatch(mem.buffer, table, sizes.length), sizes.length);
  at = 64;
  sizes.forEach((n, i) => {
    const sealed = mem.slice(at, at + n + L.WG_TAG_LEN);
    t.same(open(key, BigInt(i) * 0x100000001n, sealed, new Uint8Array(0)), plains[i], `${n} bytes open in node:crypto`);
    t.equal(toHex(sealed), toHex(seal(key, BigInt(i) * 0x100000001n, plains[i], new Uint8Array(0))));
    at += n + L.WG_TAG_LEN;
  });
  mem[64 + 1 + 16] ^= 0x80; // entry 1's only byte of ciphertext
  t.equal(w.wgOpenBatch(mem, table, sizes.length), sizes.length - 1, "one forgery refused");
  t.equal(view.getUint32(table + L.WG_ENTRY_SIZE + L.WG_E_STATUS, true), 0);
  t.equal(mem[64 + 16], 0, "the refused payload is zeroed");
  at = 64;
  sizes.forEach((n, i) => {
    if (i !== 1) t.same(mem.slice(at, at + n), plains[i]);
    at += n + L.WG_TAG_LEN;
  });
  view.setUint32(table + L.WG_E_DATA, 65530, true);
  t.equal(w.wgSealBatch(mem, table, 1), 0, "an entry past the memory's end fails alone");
  t.throws(() => w.wgOpenBatch(mem, 65530, 2), /outside the memory/);
});

t.test("the batch AEAD follows key changes: within a batch, and a key rewritten in place between batches", async (t) => {
  const w = loadWgNative();
  const L = LAYOUT;
  const mem = new Uint8Array(65536);
  const view = new DataView(mem.buffer);
  const keys = [0, 1].map(() => new Uint8Array(randomBytes(32)));
  mem.set(keys[0], 0);
  mem.set(keys[1], 32);
  const table = 60000;
  const fill = (which: number[]): Uint8Array[] => which.map((k, i) => {
    const p = new Uint8Array(randomBytes(100 + i));
    const at = 1024 + i * 256;
    mem.set(p, at);
    const e = table + i * L.WG_ENTRY_SIZE;
    view.setUint32(e + L.WG_E_KEY, k * 32, true);
    view.setUint32(e + L.WG_E_DATA, at, true);
    view.setUint32(e + L.WG_E_LENGTH, p.length, true);
    view.setBigUint64(e + L.WG_E_COUNTER, BigInt(i), true);
    return p;
  });
  const check = (which: number[], plains: Uint8Array[], keyOf: (k: number) => Uint8Array, what: string): void => {
    t.equal(w.wgSealBatch(mem.buffer, table, which.length), which.length);
    const ok = which.every((k, i) => toHex(mem.slice(1024 + i * 256, 1024 + i * 256 + plains[i].length + 16)) ===
      toHex(seal(keyOf(k), BigInt(i), plains[i], new Uint8Array(0))));
    t.ok(ok, `${what}: each message sealed under its own key`);
  };
  const order = [0, 0, 1, 0, 1, 1, 0];
  check(order, fill(order), (k) => keys[k], "keys alternating in one batch");
  const fresh = new Uint8Array(randomBytes(32));
  mem.set(fresh, 0); // a new session in the same slot
  check([0, 0], fill([0, 0]), () => fresh, "a key rewritten at the same address");
  // Open: a forgery between two messages under the same key does not spoil the second.
  const plains = fill([1, 1, 1]);
  t.equal(w.wgSealBatch(mem.buffer, table, 3), 3);
  mem[1024 + 256 + 5] ^= 1;
  t.equal(w.wgOpenBatch(mem.buffer, table, 3), 2);
  t.same(mem.slice(1024 + 512, 1024 + 512 + plains[2].length), plains[2], "the message after the forgery opens");
});

t.test("XChaCha20-Poly1305 (libsodium) round trip and refusal", async (t) => {
  const key = new Uint8Array(randomBytes(32));
  const nonce = new Uint8Array(randomBytes(24));
  const aad = new Uint8Array(randomBytes(16));
  const c = xseal(key, nonce, Uint8Array.of(1, 2, 3), aad);
  t.same(xopen(key, nonce, c, aad), Uint8Array.of(1, 2, 3));
  t.equal(xopen(key, nonce, c, new Uint8Array(16)), null);
});

function pair() {
  const a = new LocalIdentity(new Uint8Array(randomBytes(32)));
  const b = new LocalIdentity(new Uint8Array(randomBytes(32)));
  const psk = new Uint8Array(randomBytes(32));
  return { a, b, psk, bOnA: new RemoteIdentity(a, b.publicKey, psk), aOnB: new RemoteIdentity(b, a.publicKey, psk) };
}

t.test("Noise_IKpsk2 between two instances: keys agree, transport works, replays refused", async (t) => {
  const { a, b, bOnA, aOnB } = pair();
  const now = Date.now();
  const init = createInitiation(a, bOnA, 11, now)!;
  t.equal(messageType(init.message), 1);
  const consumed = consumeInitiation(b, init.message, (k) => (Buffer.compare(k, a.publicKey) === 0 ? aOnB : undefined));
  if (typeof consumed === "string") throw new Error(consumed);
  t.equal(consumed.remoteIndex, 11);
  const resp = createResponse(consumed, 22, now)!;
  const keys = consumeResponse(a, init.pending, resp.message);
  if (typeof keys === "string") throw new Error(keys);
  t.equal(toHex(keys.send), toHex(resp.keys.receive));
  t.equal(toHex(keys.receive), toHex(resp.keys.send));
  t.equal(consumeInitiation(b, init.message, () => aOnB), "replayed_timestamp", "the same initiation twice is refused");
  const bad = init.message.slice();
  bad[50] ^= 1;
  t.equal(consumeInitiation(b, bad, () => aOnB), "bad_mac");

  const sa = new TransportSession(keys, 11, 22, now, true);
  const sb = new TransportSession(resp.keys, 22, 11, now, false);
  const m = sa.seal(Uint8Array.of(0x45, 1, 2), now)!;
  t.equal(m.length, 16 + 16 + 16, "padded to 16 bytes");
  const p = sb.open(m, now);
  t.same(p instanceof Uint8Array ? p.subarray(0, 3) : p, Uint8Array.of(0x45, 1, 2));
  t.equal(sb.open(m, now), "replay");
  t.equal(sb.open(sa.seal(new Uint8Array(0), now)!.map((x, i) => (i === 20 ? x ^ 1 : x)), now), "decrypt");
  t.equal(sb.open(sa.seal(new Uint8Array(0), now)!, now + 180_001), "expired", "keys older than 180 s are refused");
  t.equal(sa.seal(new Uint8Array(0), now + 180_001), null, "and not used to send");

  const other = pair();
  const wrongPsk = new RemoteIdentity(b, a.publicKey, other.psk);
  const init2 = createInitiation(a, bOnA, 12, now + 1)!;
  const c2 = consumeInitiation(b, init2.message, () => wrongPsk);
  if (typeof c2 === "string") throw new Error(c2);
  t.equal(consumeResponse(a, init2.pending, createResponse(c2, 23, now)!.message), "decrypt", "a PSK mismatch fails the response");
});

t.test("replay window: in order, reordered inside the window, too old, duplicates", async (t) => {
  const w = new ReplayWindow();
  let accepted = 0;
  for (let i = 0n; i < 100n; i++) if (w.accept(i * 2n)) accepted++;
  t.equal(accepted, 100);
  t.ok(w.accept(1n), "a hole inside the window");
  t.notOk(w.accept(1n));
  t.notOk(w.accept(198n));
  t.ok(w.accept(10_000n));
  t.notOk(w.accept(10_000n - BigInt(REPLAY_WINDOW)), "older than the window");
  t.ok(w.accept(10_000n - 100n));
  t.ok(w.accept(1n << 40n), "a jump far ahead clears the ring");
  t.ok(w.accept((1n << 40n) - 1n));
  t.notOk(w.accept(10_000n - 99n));
});

t.test("cookies: a busy responder's reply gives the initiator a MAC2 it then accepts", async (t) => {
  const { a, b, bOnA } = pair();
  const now = Date.now();
  const jar = new CookieJar(b, now);
  const source = Uint8Array.of(10, 0, 0, 1, 0xca, 0x6c);
  const first = createInitiation(a, bOnA, 1, now)!;
  t.notOk(jar.validMac2(first.message, source, now), "no cookie yet");
  const reply = jar.reply(first.message, source, now);
  t.equal(messageType(reply), MSG_COOKIE_REPLY);
  t.ok(consumeCookieReply(bOnA, reply, now));
  const second = createInitiation(a, bOnA, 2, now + 1)!;
  t.notOk(concat(second.message.subarray(INIT_MAC2)).every((x) => x === 0), "MAC2 is set");
  t.ok(jar.validMac2(second.message, source, now + 1));
  t.notOk(jar.validMac2(second.message, Uint8Array.of(10, 0, 0, 2, 0xca, 0x6c), now + 1), "bound to the source address");
  t.notOk(consumeCookieReply(bOnA, reply, now), "a reply to an older MAC1 does not open");
});
