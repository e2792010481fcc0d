// WireGuard's message formats: the four types, their sizes and field offsets (all integers
// little-endian). The one place these numbers live in TypeScript.

export const MSG_INITIATION = 1;
export const MSG_RESPONSE = 2;
export const MSG_COOKIE_REPLY = 3;
export const MSG_TRANSPORT = 4;

export const INITIATION_SIZE = 148;
export const RESPONSE_SIZE = 92;
export const COOKIE_REPLY_SIZE = 64;
/** Type, receiver index and counter in front of the sealed packet. */
export const TRANSPORT_HEADER_SIZE = 16;
/** A transport message's smallest size: the header and an empty payload's tag (a keepalive). */
export const TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + 16;
/** Encrypted payloads are padded to a multiple of this. */
export const PADDING_MULTIPLE = 16;

// Handshake initiation.
export const INIT_SENDER = 4;
export const INIT_EPHEMERAL = 8;
export const INIT_STATIC = 40; // 32 + 16 tag
export const INIT_TIMESTAMP = 88; // 12 + 16 tag
export const INIT_MAC1 = 116;
export const INIT_MAC2 = 132;

// Handshake response.
export const RESP_SENDER = 4;
export const RESP_RECEIVER = 8;
export const RESP_EPHEMERAL = 12;
export const RESP_EMPTY = 44; // 0 + 16 tag
export const RESP_MAC1 = 60;
export const RESP_MAC2 = 76;

// Cookie reply.
export const COOKIE_RECEIVER = 4;
export const COOKIE_NONCE = 8; // 24 bytes
export const COOKIE_SEALED = 32; // 16 + 16 tag

// Transport data.
export const TRANSPORT_RECEIVER = 4;
export const TRANSPORT_COUNTER = 8;

/** The message type of a datagram, or 0 when its first four bytes are not a known type's. */
export function messageType(d: Uint8Array): number {
  if (d.length < 4 || d[1] !== 0 || d[2] !== 0 || d[3] !== 0) return 0;
  const t = d[0];
  switch (t) {
    case MSG_INITIATION: return d.length === INITIATION_SIZE ? t : 0;
    case MSG_RESPONSE: return d.length === RESPONSE_SIZE ? t : 0;
    case MSG_COOKIE_REPLY: return d.length === COOKIE_REPLY_SIZE ? t : 0;
    case MSG_TRANSPORT: return d.length >= TRANSPORT_MIN_SIZE ? t : 0;
    default: return 0;
  }
}

export function readU32(d: Uint8Array, at: number): number {
  return (d[at] | (d[at + 1] << 8) | (d[at + 2] << 16) | (d[at + 3] << 24)) >>> 0;
}

export function writeU32(d: Uint8Array, at: number, v: number): void {
  d[at] = v & 0xff;
  d[at + 1] = (v >>> 8) & 0xff;
  d[at + 2] = (v >>> 16) & 0xff;
  d[at + 3] = (v >>> 24) & 0xff;
}

export function readU64(d: Uint8Array, at: number): bigint {
  return BigInt(readU32(d, at)) | (BigInt(readU32(d, at + 4)) << 32n);
}

export function writeU64(d: Uint8Array, at: number, v: bigint): void {
  writeU32(d, at, Number(v & 0xffffffffn));
  writeU32(d, at + 4, Number((v >> 32n) & 0xffffffffn));
}
