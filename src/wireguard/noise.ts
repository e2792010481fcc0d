// WireGuard's Noise_IKpsk2 handshake, its MACs and cookies, as the whitepaper specifies them.
// Per handshake, never per packet: the transport keys it yields go to the batch data path.
// Every function that reads a message returns a reason instead of throwing on bad input.
import { generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";

import {
  dh, equal, hash, kdf, KEY_LEN, mac, MAC_LEN, open, privateKeyObject, publicKeyOf, seal,
  xopen, xseal, XNONCE_LEN,
} from "./crypto.js";
import {
  COOKIE_NONCE, COOKIE_RECEIVER, COOKIE_REPLY_SIZE, COOKIE_SEALED, INIT_EPHEMERAL, INIT_MAC1, INIT_MAC2,
  INIT_SENDER, INIT_STATIC, INIT_TIMESTAMP, INITIATION_SIZE, MSG_COOKIE_REPLY, MSG_INITIATION, MSG_RESPONSE,
  readU32, RESP_EMPTY, RESP_EPHEMERAL, RESP_MAC1, RESP_MAC2, RESP_RECEIVER, RESP_SENDER, RESPONSE_SIZE, writeU32,
} from "./messages.js";

const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "ascii"));
const EMPTY = new Uint8Array(0);

export const CONSTRUCTION = text("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s");
export const IDENTIFIER = text("WireGuard v1 zx2c4 Jason@zx2c4.com");
const LABEL_MAC1 = text("mac1----");
const LABEL_COOKIE = text("cookie--");
const TIMESTAMP_LEN = 12;
/** A cookie is usable this long after it arrived, and a cookie secret lives this long. */
export const COOKIE_LIFETIME_MS = 120_000;

/** Hash(CONSTRUCTION) and Hash(Hash(CONSTRUCTION) || IDENTIFIER): the start of every handshake. */
export const INITIAL_CHAIN_KEY = hash(CONSTRUCTION);
export const INITIAL_HASH = hash(INITIAL_CHAIN_KEY, IDENTIFIER);

/** This node's static key pair and what follows from it. */
export class LocalIdentity {
  readonly publicKey: Uint8Array;
  readonly privateKey: KeyObject;
  /** Keys for MAC1 and cookie replies on messages sent to us. */
  readonly mac1Key: Uint8Array;
  readonly cookieKey: Uint8Array;
  /** H after mixing our public key: the responder's starting hash. */
  readonly initialHash: Uint8Array;

  constructor(readonly privateKeyBytes: Uint8Array) {
    this.publicKey = publicKeyOf(privateKeyBytes);
    this.privateKey = privateKeyObject(privateKeyBytes);
    this.mac1Key = hash(LABEL_MAC1, this.publicKey);
    this.cookieKey = hash(LABEL_COOKIE, this.publicKey);
    this.initialHash = hash(INITIAL_HASH, this.publicKey);
  }
}

/** What the handshake keeps about one remote peer. */
export class RemoteIdentity {
  readonly mac1Key: Uint8Array;
  readonly cookieKey: Uint8Array;
  readonly initialHash: Uint8Array;
  /** DH(our static, their static), or null for a low-order key (such a peer can never handshake). */
  readonly staticShared: Uint8Array | null;
  /** The greatest TAI64N timestamp accepted from this peer: replayed initiations are refused. */
  lastTimestamp: Uint8Array = new Uint8Array(TIMESTAMP_LEN);
  /** The last cookie this peer sent us and when (ms), for MAC2 on our next initiation. */
  cookie: { value: Uint8Array; at: number } | null = null;
  /** MAC1 of the last handshake message we sent this peer: a cookie reply must answer it. */
  lastSentMac1: Uint8Array | null = null;

  constructor(local: LocalIdentity, readonly publicKey: Uint8Array, readonly presharedKey: Uint8Array = new Uint8Array(KEY_LEN)) {
    if (publicKey.length !== KEY_LEN || presharedKey.length !== KEY_LEN) throw new Error("WireGuard keys are 32 bytes");
    this.mac1Key = hash(LABEL_MAC1, publicKey);
    this.cookieKey = hash(LABEL_COOKIE, publicKey);
    this.initialHash = hash(INITIAL_HASH, publicKey);
    this.staticShared = dh(local.privateKey, publicKey);
  }
}

export interface TransportKeys {
  send: Uint8Array;
  receive: Uint8Array;
}

/** The initiator's state between sending an initiation and consuming its response. */
export interface PendingInitiation {
  localIndex: number;
  ephemeral: KeyObject;
  chainKey: Uint8Array;
  hash: Uint8Array;
  peer: RemoteIdentity;
}

/** TAI64N of `ms` (Unix milliseconds): 2^62 + seconds, then nanoseconds, big-endian. */
export function tai64n(ms: number): Uint8Array {
  const out = Buffer.alloc(TIMESTAMP_LEN);
  out.writeBigUInt64BE(0x4000000000000000n + BigInt(Math.floor(ms / 1000)));
  out.writeUInt32BE((ms % 1000) * 1_000_000, 8);
  return new Uint8Array(out);
}

function ephemeralKeyPair(): { priv: KeyObject; pub: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { priv: privateKey, pub: new Uint8Array(Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url")) };
}

/** Writes MAC1 (and MAC2 when a fresh cookie is held) over a handshake message. */
function writeMacs(msg: Uint8Array, mac1At: number, peer: RemoteIdentity, now: number): void {
  const m1 = mac(peer.mac1Key, msg.subarray(0, mac1At));
  msg.set(m1, mac1At);
  peer.lastSentMac1 = m1;
  const c = peer.cookie;
  if (c && now - c.at < COOKIE_LIFETIME_MS) msg.set(mac(c.value, msg.subarray(0, mac1At + MAC_LEN)), mac1At + MAC_LEN);
}

/** Builds a handshake initiation (148 bytes) to `peer` from `localIndex`. */
export function createInitiation(local: LocalIdentity, peer: RemoteIdentity, localIndex: number, now: number):
  { message: Uint8Array; pending: PendingInitiation } | null {
  if (!peer.staticShared) return null;
  const msg = new Uint8Array(INITIATION_SIZE);
  msg[0] = MSG_INITIATION;
  writeU32(msg, INIT_SENDER, localIndex);
  const e = ephemeralKeyPair();
  let c = kdf(1, INITIAL_CHAIN_KEY, e.pub)[0];
  let h = hash(peer.initialHash, e.pub);
  msg.set(e.pub, INIT_EPHEMERAL);
  const es = dh(e.priv, peer.publicKey);
  if (!es) return null;
  let k: Uint8Array;
  [c, k] = kdf(2, c, es);
  const sealedStatic = seal(k, 0n, local.publicKey, h);
  msg.set(sealedStatic, INIT_STATIC);
  h = hash(h, sealedStatic);
  [c, k] = kdf(2, c, peer.staticShared);
  const sealedTime = seal(k, 0n, tai64n(now), h);
  msg.set(sealedTime, INIT_TIMESTAMP);
  h = hash(h, sealedTime);
  writeMacs(msg, INIT_MAC1, peer, now);
  return { message: msg, pending: { localIndex, ephemeral: e.priv, chainKey: c, hash: h, peer } };
}

/** Why a handshake message was not accepted (each has a counter). */
export type HandshakeRefusal = "bad_mac" | "unknown_peer" | "decrypt" | "replayed_timestamp" | "unknown_index";

/** The responder's view of a valid initiation. */
export interface ConsumedInitiation {
  peer: RemoteIdentity;
  remoteIndex: number;
  remoteEphemeral: Uint8Array;
  chainKey: Uint8Array;
  hash: Uint8Array;
  timestamp: Uint8Array;
}

/** MAC1 of a handshake message sent to us is right (checked before any DH: it costs one hash). */
export function validMac1(local: LocalIdentity, msg: Uint8Array): boolean {
  const at = msg[0] === MSG_INITIATION ? INIT_MAC1 : RESP_MAC1;
  return equal(mac(local.mac1Key, msg.subarray(0, at)), msg.subarray(at, at + MAC_LEN));
}

/**
 * Reads an initiation. `findPeer` maps the initiator's decrypted static key to a known peer.
 * The peer's timestamp is only advanced by acceptInitiation, once the caller has decided to
 * answer (so that a flood cannot move it).
 */
export function consumeInitiation(local: LocalIdentity, msg: Uint8Array, findPeer: (publicKey: Uint8Array) => RemoteIdentity | undefined):
  ConsumedInitiation | HandshakeRefusal {
  if (msg.length !== INITIATION_SIZE || msg[0] !== MSG_INITIATION) return "decrypt";
  if (!validMac1(local, msg)) return "bad_mac";
  const remoteEphemeral = msg.slice(INIT_EPHEMERAL, INIT_EPHEMERAL + KEY_LEN);
  let c = kdf(1, INITIAL_CHAIN_KEY, remoteEphemeral)[0];
  let h = hash(local.initialHash, remoteEphemeral);
  const es = dh(local.privateKey, remoteEphemeral);
  if (!es) return "decrypt";
  let k: Uint8Array;
  [c, k] = kdf(2, c, es);
  const sealedStatic = msg.subarray(INIT_STATIC, INIT_TIMESTAMP);
  const staticKey = open(k, 0n, sealedStatic, h);
  if (!staticKey) return "decrypt";
  h = hash(h, sealedStatic);
  const peer = findPeer(staticKey);
  if (!peer || !peer.staticShared) return "unknown_peer";
  [c, k] = kdf(2, c, peer.staticShared);
  const sealedTime = msg.subarray(INIT_TIMESTAMP, INIT_MAC1);
  const timestamp = open(k, 0n, sealedTime, h);
  if (!timestamp) return "decrypt";
  if (Buffer.compare(timestamp, peer.lastTimestamp) <= 0) return "replayed_timestamp";
  h = hash(h, sealedTime);
  return { peer, remoteIndex: readU32(msg, INIT_SENDER), remoteEphemeral, chainKey: c, hash: h, timestamp };
}

/** Builds the response to a consumed initiation and derives the responder's transport keys. */
export function createResponse(init: ConsumedInitiation, localIndex: number, now: number):
  { message: Uint8Array; keys: TransportKeys } | null {
  const peer = init.peer;
  const msg = new Uint8Array(RESPONSE_SIZE);
  msg[0] = MSG_RESPONSE;
  writeU32(msg, RESP_SENDER, localIndex);
  writeU32(msg, RESP_RECEIVER, init.remoteIndex);
  const e = ephemeralKeyPair();
  msg.set(e.pub, RESP_EPHEMERAL);
  let c = kdf(1, init.chainKey, e.pub)[0];
  let h = hash(init.hash, e.pub);
  const ee = dh(e.priv, init.remoteEphemeral);
  const se = dh(e.priv, peer.publicKey);
  if (!ee || !se) return null;
  c = kdf(1, c, ee)[0];
  c = kdf(1, c, se)[0];
  let tau: Uint8Array, k: Uint8Array;
  [c, tau, k] = kdf(3, c, peer.presharedKey);
  h = hash(h, tau);
  const sealedEmpty = seal(k, 0n, EMPTY, h);
  msg.set(sealedEmpty, RESP_EMPTY);
  writeMacs(msg, RESP_MAC1, peer, now);
  peer.lastTimestamp = init.timestamp;
  const [t1, t2] = kdf(2, c, EMPTY);
  return { message: msg, keys: { send: t2, receive: t1 } };
}

/** Reads the response to our pending initiation; the initiator's transport keys. */
export function consumeResponse(local: LocalIdentity, pending: PendingInitiation, msg: Uint8Array): TransportKeys | HandshakeRefusal {
  if (msg.length !== RESPONSE_SIZE || msg[0] !== MSG_RESPONSE) return "decrypt";
  if (!validMac1(local, msg)) return "bad_mac";
  if (readU32(msg, RESP_RECEIVER) !== pending.localIndex) return "unknown_index";
  const peer = pending.peer;
  const remoteEphemeral = msg.subarray(RESP_EPHEMERAL, RESP_EPHEMERAL + KEY_LEN);
  let c = kdf(1, pending.chainKey, remoteEphemeral)[0];
  let h = hash(pending.hash, remoteEphemeral);
  const ee = dh(pending.ephemeral, remoteEphemeral);
  const se = dh(local.privateKey, remoteEphemeral);
  if (!ee || !se) return "decrypt";
  c = kdf(1, c, ee)[0];
  c = kdf(1, c, se)[0];
  let tau: Uint8Array, k: Uint8Array;
  [c, tau, k] = kdf(3, c, peer.presharedKey);
  h = hash(h, tau);
  if (!open(k, 0n, msg.subarray(RESP_EMPTY, RESP_MAC1), h)) return "decrypt";
  const [t1, t2] = kdf(2, c, EMPTY);
  return { send: t1, receive: t2 };
}

/** The sender index of a response (which peer's index it names is the caller's table). */
export function responseIndexes(msg: Uint8Array): { sender: number; receiver: number } {
  return { sender: readU32(msg, RESP_SENDER), receiver: readU32(msg, RESP_RECEIVER) };
}

/**
 * Cookies under load: a random secret replaced every two minutes; the cookie for a source is
 * MAC(secret, source address bytes). While busy, a handshake message whose MAC2 is not the
 * sender's current cookie is answered with a cookie reply instead of being processed.
 */
export class CookieJar {
  private secret: Uint8Array = new Uint8Array(randomBytes(KEY_LEN));
  private secretAt: number;

  constructor(private readonly local: LocalIdentity, now: number) {
    this.secretAt = now;
  }

  private cookieFor(source: Uint8Array, now: number): Uint8Array {
    if (now - this.secretAt >= COOKIE_LIFETIME_MS) {
      this.secret = new Uint8Array(randomBytes(KEY_LEN));
      this.secretAt = now;
    }
    return mac(this.secret, source);
  }

  /** MAC2 of a handshake message from `source` (address and port bytes) is its current cookie's. */
  validMac2(msg: Uint8Array, source: Uint8Array, now: number): boolean {
    const at = msg[0] === MSG_INITIATION ? INIT_MAC2 : RESP_MAC2;
    return equal(mac(this.cookieFor(source, now), msg.subarray(0, at)), msg.subarray(at, at + MAC_LEN));
  }

  /** The cookie reply (64 bytes) to a handshake message from `source`. */
  reply(msg: Uint8Array, source: Uint8Array, now: number): Uint8Array {
    const senderIndex = readU32(msg, INIT_SENDER); // the sender index sits at 4 in both types
    const mac1At = msg[0] === MSG_INITIATION ? INIT_MAC1 : RESP_MAC1;
    const out = new Uint8Array(COOKIE_REPLY_SIZE);
    out[0] = MSG_COOKIE_REPLY;
    writeU32(out, COOKIE_RECEIVER, senderIndex);
    const nonce = new Uint8Array(randomBytes(XNONCE_LEN));
    out.set(nonce, COOKIE_NONCE);
    out.set(xseal(this.local.cookieKey, nonce, this.cookieFor(source, now), msg.subarray(mac1At, mac1At + MAC_LEN)), COOKIE_SEALED);
    return out;
  }
}

/** Reads a cookie reply from `peer`; stores its cookie for MAC2. False when it does not open. */
export function consumeCookieReply(peer: RemoteIdentity, msg: Uint8Array, now: number): boolean {
  if (msg.length !== COOKIE_REPLY_SIZE || msg[0] !== MSG_COOKIE_REPLY || !peer.lastSentMac1) return false;
  const cookie = xopen(peer.cookieKey, msg.subarray(COOKIE_NONCE, COOKIE_SEALED), msg.subarray(COOKIE_SEALED), peer.lastSentMac1);
  if (!cookie || cookie.length !== MAC_LEN) return false;
  peer.cookie = { value: cookie, at: now };
  return true;
}

/** A receiver index for a new session: random, never 0 and not in use. */
export function freshIndex(inUse: (i: number) => boolean): number {
  for (;;) {
    const i = randomBytes(4).readUInt32LE(0);
    if (i !== 0 && !inUse(i)) return i;
  }
}

