// WireGuard's primitives, none written here: X25519, ChaCha20-Poly1305, BLAKE2s-256 and
// HMAC-BLAKE2s from node:crypto (OpenSSL); keyed BLAKE2s with a 16-byte output (MAC1, MAC2) from
// OpenSSL's BLAKE2SMAC through the addon, since Node's API has no keyed BLAKE2s; and
// XChaCha20-Poly1305 (cookie replies only) from libsodium's npm build, since OpenSSL has no
// XChaCha20. The npm build is JavaScript/wasm, so a node still needs nothing but Node.
import {
  createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createPublicKey,
  diffieHellman, generateKeyPairSync, timingSafeEqual, type KeyObject,
} from "node:crypto";
import { createRequire } from "node:module";

import { loadNative, type NativeIO } from "../addon/native.js";

export const KEY_LEN = 32;
export const TAG_LEN = 16;
export const MAC_LEN = 16;
export const XNONCE_LEN = 24;

/** The addon's WireGuard functions (native/linen_wg.c); the crypt table's layout is WG_ENTRY_SIZE and
 * WG_E_* of the core's layout (src/dataplane/abi.ts). */
export interface WgNative {
  wgMac(key: Uint8Array, data: Uint8Array, length: number): Uint8Array;
  /** Seals (in place, tag after the payload) every entry of the crypt table; returns how many. */
  wgSealBatch(memory: ArrayBuffer | Uint8Array, table: number, count: number): number;
  /** Opens in place; an entry that fails authentication gets status 0 and a zeroed payload. */
  wgOpenBatch(memory: ArrayBuffer | Uint8Array, table: number, count: number): number;
}

export function loadWgNative(): NativeIO & WgNative {
  return loadNative() as NativeIO & WgNative;
}

interface Sodium {
  ready: Promise<void>;
  crypto_aead_xchacha20poly1305_ietf_encrypt(m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): Uint8Array;
  crypto_aead_xchacha20poly1305_ietf_decrypt(nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): Uint8Array;
}

let sodium: Sodium | undefined;

/** Loads libsodium (its wasm starts asynchronously); call once before any cookie operation. */
export async function initCrypto(): Promise<void> {
  if (sodium) return;
  const s = createRequire(import.meta.url)("libsodium-wrappers") as Sodium;
  await s.ready;
  sodium = s;
}

function needSodium(): Sodium {
  if (!sodium) throw new Error("linen: WireGuard cookies need initCrypto() to have completed");
  return sodium;
}

const b64url = (b: Uint8Array): string => Buffer.from(b).toString("base64url");

/** A private key as an X25519 KeyObject (clamping is X25519's own). */
export function privateKeyObject(priv: Uint8Array): KeyObject {
  const pub = publicKeyOf(priv);
  return createPrivateKey({ key: { kty: "OKP", crv: "X25519", d: b64url(priv), x: b64url(pub) }, format: "jwk" });
}

function publicKeyObject(pub: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "X25519", x: b64url(pub) }, format: "jwk" });
}

export function generatePrivateKey(): Uint8Array {
  const { privateKey } = generateKeyPairSync("x25519");
  const jwk = privateKey.export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.d as string, "base64url"));
}

export function publicKeyOf(priv: Uint8Array): Uint8Array {
  if (priv.length !== KEY_LEN) throw new Error(`a WireGuard private key is ${KEY_LEN} bytes, got ${priv.length}`);
  // The public key from a private key alone: derive it with the base point u = 9.
  const base = new Uint8Array(KEY_LEN);
  base[0] = 9;
  const k = createPrivateKey({ key: { kty: "OKP", crv: "X25519", d: b64url(priv), x: b64url(base) }, format: "jwk" });
  const jwk = createPublicKey(k).export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.x as string, "base64url"));
}

/** X25519(priv, pub); null when the result is all zeros (a low-order point), which WireGuard refuses. */
export function dh(priv: Uint8Array | KeyObject, pub: Uint8Array): Uint8Array | null {
  const privateKey = priv instanceof Uint8Array ? privateKeyObject(priv) : priv;
  try {
    const out = new Uint8Array(diffieHellman({ privateKey, publicKey: publicKeyObject(pub) }));
    return isZero(out) ? null : out;
  } catch {
    return null; // OpenSSL refuses an all-zero shared secret
  }
}

export function hash(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("blake2s256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

export function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("blake2s256", key).update(data).digest());
}

/** The whitepaper's KDF_n: HKDF over HMAC-BLAKE2s, n outputs of 32 bytes. */
export function kdf(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Uint8Array[] {
  const prk = hmac(key, input);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = new Uint8Array(0);
  for (let i = 1; i <= n; i++) {
    prev = hmac(prk, concat(prev, Uint8Array.of(i)));
    out.push(prev);
  }
  return out;
}

/** MAC(key, data): keyed BLAKE2s with a 16-byte output. */
export function mac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return loadWgNative().wgMac(key, data, MAC_LEN);
}

function nonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

/** AEAD(key, counter, plaintext, aad): ChaCha20-Poly1305, ciphertext || tag. */
export function seal(key: Uint8Array, counter: bigint, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return sealWithNonce(key, nonce(counter), plaintext, aad);
}

export function sealWithNonce(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  const c = createCipheriv("chacha20-poly1305", key, iv, { authTagLength: TAG_LEN });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return concat(c.update(plaintext), c.final(), c.getAuthTag());
}

/** The plaintext, or null when the tag does not authenticate. */
export function open(key: Uint8Array, counter: bigint, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
  return openWithNonce(key, nonce(counter), sealed, aad);
}

export function openWithNonce(key: Uint8Array, iv: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
  if (sealed.length < TAG_LEN) return null;
  const body = sealed.subarray(0, sealed.length - TAG_LEN);
  try {
    const d = createDecipheriv("chacha20-poly1305", key, iv, { authTagLength: TAG_LEN });
    d.setAAD(aad, { plaintextLength: body.length });
    d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
    return concat(d.update(body), d.final());
  } catch {
    return null;
  }
}

export function xseal(key: Uint8Array, xnonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
  return needSodium().crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, null, xnonce, key);
}

export function xopen(key: Uint8Array, xnonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
  try {
    return needSodium().crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed, aad, xnonce, key);
  } catch {
    return null;
  }
}

/** Constant-time equality (false for different lengths, which are public). */
export function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function isZero(a: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc |= a[i];
  return acc === 0;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
