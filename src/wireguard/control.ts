// WireGuard's control path in a data-plane worker: per peer, the handshake state and the
// whitepaper's timers (retransmit after REKEY-TIMEOUT plus jitter, give up after
// REKEY-ATTEMPT-TIME, rekey when sending after REKEY-AFTER-TIME or REKEY-AFTER-MESSAGES, forget keys after
// REJECT-AFTER-TIME, a keepalive after KEEPALIVE-TIMEOUT of receiving only, persistent
// keepalives, a new handshake when data sent gets no answer, the initiator's last-minute
// handshake on receiving), cookie replies under load and a per-source limit on initiations;
// sessions installed into the core through WgDataPath. Runs per handshake message and per timer tick,
// never per packet. Every method takes the time (ms) from its caller, so tests drive a fake clock.
import { randomBytes } from "node:crypto";

import type { ControlMessage, OutgoingMessage, WgDataPath } from "./datapath.js";
import { equal } from "./crypto.js";
import { MSG_COOKIE_REPLY, MSG_INITIATION, MSG_RESPONSE, messageType, readU32, RESP_RECEIVER } from "./messages.js";
import {
  consumeCookieReply, consumeInitiation, consumeResponse, CookieJar, createInitiation, createResponse, LocalIdentity,
  RemoteIdentity, validMac1, type HandshakeRefusal, type PendingInitiation,
} from "./noise.js";
import { SourceRateLimiter } from "./ratelimit.js";
import {
  KEEPALIVE_TIMEOUT_MS, REJECT_AFTER_TIME_MS, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME_MS, REKEY_ATTEMPT_TIME_MS,
  REKEY_TIMEOUT_MS,
} from "./session.js";
import { WG_EVENTS, type WgEvent } from "./events.js";
import type { WireguardPeerReport } from "../dataplane/engine.js";

/** Up to this much random delay is added to each retransmission, so peers do not retry in step. */
export const REKEY_TIMEOUT_JITTER_MS = 333;
/** Data sent and nothing authenticated received for this long (plus jitter): start a new handshake. */
export const NEW_HANDSHAKE_AFTER_MS = KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS;
/**
 * The initiator starts a new handshake when a message arrives on its session this old, once
 * per session, so that a session it only receives on is replaced before REJECT-AFTER-TIME.
 */
export const LAST_MINUTE_REKEY_AGE_MS = REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS;
/**
 * Under load: a receive batch that brings this many handshake messages (a batch holds up to 64)
 * means initiations queue up faster than they are handled, like wireguard-go's handshake queue
 * passing its threshold; for UNDER_LOAD_AFTER_MS after that, a handshake message needs a valid
 * MAC2 (a cookie from us) or gets a cookie reply instead of a Diffie-Hellman.
 */
export const UNDER_LOAD_BATCH = 16;
export const UNDER_LOAD_AFTER_MS = 1_000;

const REFUSAL_EVENT: Record<HandshakeRefusal, WgEvent> = {
  bad_mac: "handshake_bad_mac",
  unknown_peer: "handshake_unknown_peer",
  decrypt: "handshake_decrypt_failed",
  replayed_timestamp: "handshake_replayed",
  unknown_index: "handshake_unknown_index",
};

export interface WgPeerConfig {
  /** The core's route index for the peer's subnet. */
  route: number;
  publicKey: Uint8Array;
  /** The endpoint from the peer's lease (host-order IPv4, port). */
  addr: number;
  port: number;
  /** The peer's allowed IPs as text (its lease's subnet), for inspection. */
  allowedIps?: string;
}

interface SessionInfo {
  localIndex: number; createdAt: number; initiator: boolean;
  /** The core's receive mark (greatest counter + 1) at the last tick: it moves with every new authenticated message. */
  seenReceived: bigint;
}

interface PeerState {
  config: WgPeerConfig;
  remote: RemoteIdentity;
  pending: PendingInitiation | null;
  /** When the pending initiation is sent again (its send time, REKEY-TIMEOUT and jitter). */
  retransmitAt: number;
  /** When the current run of attempts began (0: none), for REKEY-ATTEMPT-TIME. */
  attemptsSince: number;
  /** When the last initiation went out (0: never); a new handshake waits REKEY-TIMEOUT after it. */
  initiatedAt: number;
  /** When to start a new handshake because data sent got no answer (0: not armed). */
  newHandshakeAt: number;
  /** Whether the last-minute handshake was started since the last handshake completed. */
  lastMinuteStarted: boolean;
  current: SessionInfo | null;
  previous: SessionInfo | null;
  /** A responder's session, not used to send until the initiator's first message arrives. */
  unconfirmed: SessionInfo | null;
  lastHandshakeAt: number;
  lastKeepaliveAt: number;
  /** Bytes of messages to and from the peer that its live sessions no longer hold: handshake
   * messages, and what sessions carried before they were closed (`wg show`'s transfer). */
  retiredRx: bigint;
  retiredTx: bigint;
  /** The core's packet counters for the peer at the last tick, and when each last moved. */
  seenRx: bigint;
  seenTx: bigint;
  dataReceivedAt: number;
  dataSentAt: number;
}

export interface WgControlOptions {
  privateKey: Uint8Array;
  presharedKey: Uint8Array;
  /** Seconds between keepalives sent whatever the traffic (0: none), flannel's PersistentKeepaliveInterval. */
  persistentKeepalive: number;
  /** The time (ms) the cookie secret starts from; default now. */
  startMs?: number;
}

/** Random delay added to handshake timers, so peers do not retry in step. */
const jitter = (): number => Math.floor(Math.random() * (REKEY_TIMEOUT_JITTER_MS + 1));

const hostToString = (a: number): string => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join(".");

/** A handshake's source as its cookie is bound to: the IPv4 address and the port, in network order. */
function sourceBytes(addr: number, port: number): Uint8Array {
  return Uint8Array.of(addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255, port >>> 8, port & 255);
}

export class WgControl {
  private readonly local: LocalIdentity;
  private readonly cookies: CookieJar;
  private readonly limiter = new SourceRateLimiter();
  private underLoadUntil = 0;
  private readonly peers = new Map<number, PeerState>(); // by route index
  private readonly byIndex = new Map<number, PeerState>(); // pending and live local indexes
  private readonly usedSlots = new Set<number>();
  readonly events: Record<WgEvent, number> = Object.fromEntries(WG_EVENTS.map((e) => [e, 0])) as Record<WgEvent, number>;
  private outbox: OutgoingMessage[] = [];
  // A session was installed since the last drain: packets staged for its peer can go.
  private installed = false;
  private keepalives: { localIndex: number; addr: number; port: number }[] = [];

  constructor(private readonly dp: WgDataPath, private readonly opts: WgControlOptions) {
    this.local = new LocalIdentity(opts.privateKey);
    this.cookies = new CookieJar(this.local, opts.startMs ?? Date.now());
  }

  /** Sources the initiation limiter tracks now (bounded). */
  get limitedSources(): number { return this.limiter.size; }

  get publicKey(): Uint8Array { return this.local.publicKey; }

  setPeer(config: WgPeerConfig): void {
    const old = this.peers.get(config.route);
    if (old && equal(old.config.publicKey, config.publicKey)) {
      old.config = config;
      this.dp.setPeer(config.route, old.current?.localIndex ?? 0, config.port);
      return;
    }
    if (old) this.removePeer(config.route);
    const state: PeerState = {
      config, remote: new RemoteIdentity(this.local, config.publicKey, this.opts.presharedKey), pending: null, retransmitAt: 0,
      attemptsSince: 0, initiatedAt: 0, newHandshakeAt: 0, lastMinuteStarted: false, current: null, previous: null,
      unconfirmed: null, lastHandshakeAt: 0, lastKeepaliveAt: 0, retiredRx: 0n, retiredTx: 0n, seenRx: 0n, seenTx: 0n, dataReceivedAt: 0, dataSentAt: 0,
    };
    this.peers.set(config.route, state);
    this.dp.setPeer(config.route, 0, config.port);
  }

  removePeer(route: number): void {
    const p = this.peers.get(route);
    if (!p) return;
    for (const s of [p.current, p.previous, p.unconfirmed]) if (s) this.dropSession(s);
    if (p.pending) this.freeIndex(p.pending.localIndex);
    this.dp.dropStaged(route);
    this.peers.delete(route);
  }

  /** Each peer's state for inspection (`wg show`-like). */
  status(): WireguardPeerReport[] {
    return [...this.peers.values()].map((p) => {
      const ep = this.dp.endpoint(p.config.route);
      const bytes = { rx: p.retiredRx, tx: p.retiredTx };
      for (const s of [p.current, p.previous, p.unconfirmed]) {
        if (!s) continue;
        const b = this.dp.sessionBytes(s.localIndex);
        bytes.rx += b.rx;
        bytes.tx += b.tx;
      }
      return {
        publicKey: Buffer.from(p.config.publicKey).toString("base64"), endpoint: `${hostToString(ep.addr)}:${ep.port}`,
        allowedIps: p.config.allowedIps ?? "", route: p.config.route, lastHandshakeMs: p.lastHandshakeAt,
        sessionIndex: p.current?.localIndex ?? 0, rxBytes: Number(bytes.rx), txBytes: Number(bytes.tx),
      };
    });
  }

  /** Peers whose packets found no session (the core stages them): use a responder's session
   * the initiator has confirmed since the last tick, else start a handshake unless one is under
   * way. */
  want(routes: number[], now: number): void {
    for (const r of routes) {
      const p = this.peers.get(r);
      if (!p) continue;
      if (p.unconfirmed && this.dp.receivedOn(p.unconfirmed.localIndex)) this.promote(p, p.unconfirmed, now);
      else if (!p.pending) this.initiate(p, now);
    }
  }

  /** Handshake messages the core set aside (one receive batch's). */
  receive(messages: ControlMessage[], now: number): void {
    if (messages.length >= UNDER_LOAD_BATCH) this.underLoadUntil = now + UNDER_LOAD_AFTER_MS;
    const underLoad = now < this.underLoadUntil;
    for (const m of messages) {
      switch (messageType(m.data)) {
        case MSG_INITIATION: if (this.admit(m, now, underLoad, true)) this.onInitiation(m, now); break;
        case MSG_RESPONSE: if (this.admit(m, now, underLoad, false)) this.onResponse(m, now); break;
        case MSG_COOKIE_REPLY: this.onCookieReply(m, now); break;
        default: this.events.handshake_decrypt_failed++; // a wrong size for its type
      }
    }
  }

  /**
   * Whether a handshake message is worth its Diffie-Hellman: MAC1 first (one hash); under load
   * a valid MAC2 too, else a cookie reply goes back; an initiation also within its source
   * address's budget (SourceRateLimiter). The limit holds under load or not: the handshakes
   * share this thread with the data path.
   */
  private admit(m: ControlMessage, now: number, underLoad: boolean, initiation: boolean): boolean {
    if (!validMac1(this.local, m.data)) { this.events.handshake_bad_mac++; return false; }
    if (underLoad) {
      const source = sourceBytes(m.addr, m.port);
      if (!this.cookies.validMac2(m.data, source, now)) {
        this.outbox.push({ data: this.cookies.reply(m.data, source, now), addr: m.addr, port: m.port });
        this.events.cookie_replies_sent++;
        return false;
      }
    }
    if (initiation && !this.limiter.allow(m.addr, now)) { this.events.handshake_rate_limited++; return false; }
    return true;
  }

  /** Timers; call often (every wakeup and at least every few hundred ms). */
  tick(now: number): void {
    this.limiter.expire(now);
    for (const p of this.peers.values()) {
      if (p.unconfirmed && this.dp.receivedOn(p.unconfirmed.localIndex)) this.promote(p, p.unconfirmed, now);
      for (const key of ["current", "previous", "unconfirmed"] as const) {
        const s = p[key];
        if (s && now - s.createdAt >= REJECT_AFTER_TIME_MS) {
          this.dropSession(s);
          p[key] = null;
          this.events.sessions_expired++;
          if (key === "current") this.dp.setPeer(p.config.route, 0, this.dp.endpoint(p.config.route).port);
        }
      }
      if (p.pending && now >= p.retransmitAt) {
        if (now - p.attemptsSince >= REKEY_ATTEMPT_TIME_MS) {
          this.freeIndex(p.pending.localIndex);
          p.pending = null;
          p.attemptsSince = 0;
          this.events.handshake_attempts_given_up++;
          this.dp.dropStaged(p.config.route);
        } else {
          this.initiate(p, now);
        }
      }
      const c = p.current;
      // On time only when sending (data or keepalive) on a session that old, as wireguard-go
      // does: an idle session is left to expire rather than kept alive by handshakes.
      if (c && !p.pending &&
          ((c.initiator && Math.max(p.dataSentAt, p.lastKeepaliveAt) - c.createdAt >= REKEY_AFTER_TIME_MS) ||
           this.dp.sentOn(c.localIndex) >= REKEY_AFTER_MESSAGES)) {
        this.events.rekeys++;
        this.initiate(p, now);
      }
      this.watchTraffic(p, now);
      if (p.newHandshakeAt !== 0 && now >= p.newHandshakeAt) {
        p.newHandshakeAt = 0;
        this.freshHandshake(p, now);
      }
      const every = this.opts.persistentKeepalive * 1000;
      if (c && every > 0 && now - p.lastKeepaliveAt >= every) this.keepalive(p, c, now);
      // Data came in and nothing went back for KEEPALIVE-TIMEOUT: tell the peer we are alive (its
      // new-handshake timer waits for it). Data both ways within one tick counts as an answer
      // still owed: the order is unknown, and a spare keepalive costs less than the peer's handshake.
      else if (c && p.dataReceivedAt > p.lastKeepaliveAt && p.dataReceivedAt >= p.dataSentAt && now - p.dataReceivedAt >= KEEPALIVE_TIMEOUT_MS) {
        this.keepalive(p, c, now);
      }
    }
  }

  /** Messages and keepalives to send now (the worker lays them out with WgDataPath.queueControl). */
  drain(): {
    messages: OutgoingMessage[]; keepalives: { localIndex: number; addr: number; port: number }[];
    /** Whether a session was installed since the last drain (staged packets may go). */
    installed: boolean;
  } {
    const out = { messages: this.outbox, keepalives: this.keepalives, installed: this.installed };
    this.outbox = [];
    this.keepalives = [];
    this.installed = false;
    return out;
  }

  // ---

  /**
   * Notes when data to and from the peer last moved (the core's packet counters; keepalives not
   * counted) and whether any authenticated transport message arrived (keepalives too). Anything
   * heard from the peer disarms the new-handshake timer; data sent arms it unless armed.
   */
  private watchTraffic(p: PeerState, now: number): void {
    const { rx, tx } = this.dp.packets(p.config.route);
    if (rx !== p.seenRx) { p.seenRx = rx; p.dataReceivedAt = now; }
    let heard = false;
    for (const s of [p.current, p.previous, p.unconfirmed]) {
      if (!s) continue;
      const mark = this.dp.receivedMark(s.localIndex);
      if (mark !== s.seenReceived) { s.seenReceived = mark; heard = true; }
    }
    if (heard) {
      p.newHandshakeAt = 0;
      const c = p.current;
      if (c && c.initiator && !p.lastMinuteStarted && now - c.createdAt >= LAST_MINUTE_REKEY_AGE_MS) {
        p.lastMinuteStarted = true;
        this.freshHandshake(p, now);
      }
    }
    if (tx !== p.seenTx) {
      p.seenTx = tx;
      p.dataSentAt = now;
      if (p.newHandshakeAt === 0) p.newHandshakeAt = now + NEW_HANDSHAKE_AFTER_MS + jitter();
    }
  }

  /**
   * A handshake the timers ask for (not a retransmission): its run of attempts starts over, and
   * an initiation goes out unless one went out less than REKEY-TIMEOUT ago (then the pending one
   * is sent again on its own timer).
   */
  private freshHandshake(p: PeerState, now: number): void {
    if (now - p.initiatedAt < REKEY_TIMEOUT_MS) {
      if (p.pending) p.attemptsSince = now;
      return;
    }
    p.attemptsSince = now;
    this.initiate(p, now);
  }

  private newIndex(p: PeerState): number {
    const slots = 1 << this.dp.slotBits;
    if (this.usedSlots.size >= slots) throw new Error(`all ${slots} WireGuard session slots are in use`);
    let slot: number;
    do { slot = randomBytes(2).readUInt16LE(0) & (slots - 1); } while (this.usedSlots.has(slot));
    this.usedSlots.add(slot);
    let index: number;
    do { index = ((randomBytes(4).readUInt32LE(0) << this.dp.slotBits) | slot) >>> 0; } while (index === 0);
    this.byIndex.set(index, p);
    return index;
  }

  private freeIndex(index: number): void {
    this.byIndex.delete(index);
    this.usedSlots.delete(index & ((1 << this.dp.slotBits) - 1));
  }

  private dropSession(s: SessionInfo): void {
    const p = this.byIndex.get(s.localIndex);
    if (p) {
      const b = this.dp.sessionBytes(s.localIndex);
      p.retiredRx += b.rx;
      p.retiredTx += b.tx;
    }
    this.dp.closeSession(s.localIndex);
    this.freeIndex(s.localIndex);
  }

  private endpointOf(p: PeerState): { addr: number; port: number } {
    return this.dp.endpoint(p.config.route);
  }

  private initiate(p: PeerState, now: number): void {
    if (p.pending) this.freeIndex(p.pending.localIndex);
    const index = this.newIndex(p);
    const init = createInitiation(this.local, p.remote, index, now);
    if (!init) { this.freeIndex(index); p.pending = null; return; }
    p.pending = init.pending;
    p.retransmitAt = now + REKEY_TIMEOUT_MS + jitter();
    p.initiatedAt = now;
    if (p.attemptsSince === 0) p.attemptsSince = now;
    this.outbox.push({ data: init.message, ...this.endpointOf(p) });
    p.retiredTx += BigInt(init.message.length);
    this.events.handshake_initiations_sent++;
  }

  private keepalive(p: PeerState, s: SessionInfo, now: number): void {
    p.lastKeepaliveAt = now;
    this.keepalives.push({ localIndex: s.localIndex, ...this.endpointOf(p) });
    this.events.keepalives_sent++;
  }

  private install(p: PeerState, s: SessionInfo, now: number): void {
    if (p.previous) this.dropSession(p.previous);
    p.previous = p.current;
    p.current = s;
    p.lastHandshakeAt = now;
    p.lastMinuteStarted = false;
    this.installed = true;
    this.dp.setPeer(p.config.route, s.localIndex, this.endpointOf(p).port);
    this.events.handshakes_completed++;
  }

  private promote(p: PeerState, s: SessionInfo, now: number): void {
    p.unconfirmed = null;
    this.install(p, s, now);
  }

  private onInitiation(m: ControlMessage, now: number): void {
    const c = consumeInitiation(this.local, m.data, (key) => {
      for (const p of this.peers.values()) if (equal(p.config.publicKey, key)) return p.remote;
      return undefined;
    });
    if (typeof c === "string") { this.events[REFUSAL_EVENT[c]]++; return; }
    const p = [...this.peers.values()].find((q) => q.remote === c.peer);
    if (!p) return;
    const index = this.newIndex(p);
    const r = createResponse(c, index, now);
    if (!r) { this.freeIndex(index); this.events.handshake_decrypt_failed++; return; }
    this.dp.openSession(index, c.remoteIndex, p.config.route, r.keys);
    if (p.unconfirmed) this.dropSession(p.unconfirmed);
    p.unconfirmed = { localIndex: index, createdAt: now, initiator: false, seenReceived: 0n };
    p.newHandshakeAt = 0; // an authenticated handshake message from the peer
    // The initiator's endpoint is where its initiation came from.
    this.dp.setPeer(p.config.route, p.current?.localIndex ?? 0, m.port);
    this.setEndpointAddr(p, m.addr);
    this.outbox.push({ data: r.message, addr: m.addr, port: m.port });
    p.retiredRx += BigInt(m.data.length);
    p.retiredTx += BigInt(r.message.length);
    this.events.handshake_responses_sent++;
  }

  private setEndpointAddr(p: PeerState, addr: number): void {
    const ep = this.endpointOf(p);
    if (ep.addr !== addr) this.dp.setEndpoint(p.config.route, addr, ep.port);
  }

  private onResponse(m: ControlMessage, now: number): void {
    const p = this.byIndex.get(readU32(m.data, RESP_RECEIVER));
    if (!p || !p.pending) { this.events.handshake_unknown_index++; return; }
    const keys = consumeResponse(this.local, p.pending, m.data);
    if (typeof keys === "string") { this.events[REFUSAL_EVENT[keys]]++; return; }
    const index = p.pending.localIndex;
    p.retiredRx += BigInt(m.data.length);
    p.pending = null;
    p.attemptsSince = 0;
    this.dp.openSession(index, readU32(m.data, 4), p.config.route, keys);
    p.newHandshakeAt = 0;
    this.install(p, { localIndex: index, createdAt: now, initiator: true, seenReceived: 0n }, now);
    this.setEndpointAddr(p, m.addr);
    this.dp.setPeer(p.config.route, index, m.port);
    // The responder may send only after our first transport message: confirm at once.
    this.keepalive(p, p.current!, now);
  }

  private onCookieReply(m: ControlMessage, now: number): void {
    const p = this.byIndex.get(readU32(m.data, 4));
    if (p && consumeCookieReply(p.remote, m.data, now)) this.events.cookie_replies_received++;
  }
}

