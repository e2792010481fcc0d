// One direction pair of transport keys after a handshake: the counter for sending, the sliding
// replay window for receiving, and the whitepaper's limits on both. The batch data path keeps
// the same state in the wasm core; this class serves the control path (keepalives, tests).
import { open, seal, TAG_LEN } from "./crypto.js";
import {
  MSG_TRANSPORT, PADDING_MULTIPLE, readU32, readU64, TRANSPORT_COUNTER, TRANSPORT_HEADER_SIZE,
  TRANSPORT_MIN_SIZE, TRANSPORT_RECEIVER, writeU32, writeU64,
} from "./messages.js";
import type { TransportKeys } from "./noise.js";

export const REKEY_AFTER_MESSAGES = 1n << 60n;
export const REJECT_AFTER_MESSAGES = (1n << 64n) - (1n << 13n) - 1n;
export const REKEY_AFTER_TIME_MS = 120_000;
export const REJECT_AFTER_TIME_MS = 180_000;
export const REKEY_ATTEMPT_TIME_MS = 90_000;
export const REKEY_TIMEOUT_MS = 5_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** Counters this far behind the newest one received are still accepted once each. */
export const REPLAY_WINDOW = 2048;

/** RFC 6479's sliding window: a ring of bits, whole words cleared as the window moves. */
export class ReplayWindow {
  private readonly bits = new Uint32Array(REPLAY_WINDOW / 32);
  private greatest = -1n;

  /** True (and recorded) when `counter` is new and inside the window. */
  accept(counter: bigint): boolean {
    if (counter >= REJECT_AFTER_MESSAGES) return false;
    const words = BigInt(this.bits.length);
    if (counter > this.greatest) {
      const from = this.greatest < 0n ? 0n : (this.greatest >> 5n) + 1n;
      const to = counter >> 5n;
      for (let w = from; w <= to && w - from < words; w++) this.bits[Number(w % words)] = 0;
      this.greatest = counter;
    } else if (this.greatest - counter >= BigInt(REPLAY_WINDOW - 32)) {
      return false;
    }
    const word = Number((counter >> 5n) % words);
    const bit = 1 << Number(counter & 31n);
    if (this.bits[word] & bit) return false;
    this.bits[word] |= bit;
    return true;
  }
}

export type OpenRefusal = "short" | "wrong_index" | "decrypt" | "replay" | "expired";

export class TransportSession {
  private sendCounter = 0n;
  private readonly window = new ReplayWindow();

  constructor(
    readonly keys: TransportKeys,
    /** Our index: the receiver index of messages sent to us. */
    readonly localIndex: number,
    /** Theirs: the receiver index we put on messages we send. */
    readonly remoteIndex: number,
    readonly createdAt: number,
    readonly isInitiator: boolean,
  ) {}

  get sent(): bigint { return this.sendCounter; }

  expired(now: number): boolean {
    return now - this.createdAt >= REJECT_AFTER_TIME_MS || this.sendCounter >= REJECT_AFTER_MESSAGES;
  }

  /** The initiator starts a new handshake after this (the responder waits for it). */
  needsRekey(now: number): boolean {
    return this.isInitiator && (now - this.createdAt >= REKEY_AFTER_TIME_MS || this.sendCounter >= REKEY_AFTER_MESSAGES);
  }

  /** A transport message carrying `packet` (empty: a keepalive), padded to 16 bytes; null once expired. */
  seal(packet: Uint8Array, now: number): Uint8Array | null {
    if (this.expired(now)) return null;
    const padded = new Uint8Array(Math.ceil(packet.length / PADDING_MULTIPLE) * PADDING_MULTIPLE);
    padded.set(packet);
    const counter = this.sendCounter++;
    const msg = new Uint8Array(TRANSPORT_HEADER_SIZE + padded.length + TAG_LEN);
    msg[0] = MSG_TRANSPORT;
    writeU32(msg, TRANSPORT_RECEIVER, this.remoteIndex);
    writeU64(msg, TRANSPORT_COUNTER, counter);
    msg.set(seal(this.keys.send, counter, padded, new Uint8Array(0)), TRANSPORT_HEADER_SIZE);
    return msg;
  }

  /** The padded plaintext of a transport message, or why it was refused. The window moves only
   * for an authenticated message. */
  open(msg: Uint8Array, now: number): Uint8Array | OpenRefusal {
    if (msg.length < TRANSPORT_MIN_SIZE || msg[0] !== MSG_TRANSPORT) return "short";
    if (readU32(msg, TRANSPORT_RECEIVER) !== this.localIndex) return "wrong_index";
    if (now - this.createdAt >= REJECT_AFTER_TIME_MS) return "expired";
    const counter = readU64(msg, TRANSPORT_COUNTER);
    if (counter >= REJECT_AFTER_MESSAGES) return "replay";
    const plain = open(this.keys.receive, counter, msg.subarray(TRANSPORT_HEADER_SIZE), new Uint8Array(0));
    if (!plain) return "decrypt";
    if (!this.window.accept(counter)) return "replay";
    return plain;
  }
}
