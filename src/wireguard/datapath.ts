// The shell's side of WireGuard's batch data path: installs sessions (keys from the handshake)
// in the wasm core, seals and opens each batch's crypt table through the addon, and hands the
// handshake messages the core set aside to the control path. A fixed number of calls per batch,
// nothing per packet (only handshake messages become objects).
import type { Core } from "../dataplane/core.js";
import type { NativeIO } from "../addon/native.js";
import { LAYOUT as L } from "../dataplane/abi.js";
import { KEY_LEN, type WgNative } from "./crypto.js";
import type { TransportKeys } from "./noise.js";

interface WgCoreExports {
  wgSessionAddr(slot: number): number;
  wgSessionOpen(localIndex: number, remoteIndex: number, route: number): number;
  wgSessionClose(localIndex: number): void;
  wgSendCounter(localIndex: number): bigint;
  wgReceivedOn(localIndex: number): bigint;
  wgSessionSentBytes(localIndex: number): bigint;
  wgSessionReceivedBytes(localIndex: number): bigint;
  wgFrameKeepalive(localIndex: number, at: number): number;
  wgCryptCount(): number;
  wgControlCount(): number;
  wgWantCount(): number;
  wgIngressPrepare(n: number): number;
  wgEgressFinish(): void;
  wgStagedCount(): number;
  wgStageDrop(route: number): number;
  wgReleaseStaged(nowMs: number): number;
}

/** A handshake message received on the data path, for the control path. */
export interface ControlMessage {
  data: Uint8Array;
  /** Source IPv4 address (host order) and port. */
  addr: number;
  port: number;
}

/** A message the control path sends: to addr (host order) and port. */
export type OutgoingMessage = ControlMessage;

export class WgDataPath {
  private readonly x: WgCoreExports;

  constructor(readonly core: Core, private readonly io: NativeIO & WgNative) {
    if (core.mode !== "wireguard") throw new Error("linen: WgDataPath needs a core in wireguard mode");
    this.x = core.exports as unknown as WgCoreExports;
  }

  private get mem(): Uint8Array { return new Uint8Array(this.core.memory.buffer); }
  private get dv(): DataView { return new DataView(this.core.memory.buffer); }

  /** The slot bits a local index must carry (its low WG_SLOT_BITS bits pick the slot). */
  get slotBits(): number { return L.WG_SLOT_BITS; }

  /** Installs a session's keys under `localIndex`, sending to `remoteIndex`, for the peer at `route`. */
  openSession(localIndex: number, remoteIndex: number, route: number, keys: TransportKeys): void {
    if (keys.send.length !== KEY_LEN || keys.receive.length !== KEY_LEN) throw new Error("transport keys are 32 bytes");
    const s = this.x.wgSessionAddr(localIndex & ((1 << L.WG_SLOT_BITS) - 1));
    this.mem.set(keys.send, s + L.WG_S_SEND_KEY);
    this.mem.set(keys.receive, s + L.WG_S_RECV_KEY);
    if (this.x.wgSessionOpen(localIndex >>> 0, remoteIndex >>> 0, route) !== 0) throw new Error(`bad local index ${localIndex}`);
  }

  closeSession(localIndex: number): void { this.x.wgSessionClose(localIndex >>> 0); }

  /** Whether anything authenticated arrived on a session yet (a responder's confirmation). */
  receivedOn(localIndex: number): boolean { return this.receivedMark(localIndex) !== 0n; }

  /** The greatest counter received on a session + 1 (0: nothing yet): it moves with each new authenticated message, keepalives too. */
  receivedMark(localIndex: number): bigint { return BigInt.asUintN(64, this.x.wgReceivedOn(localIndex >>> 0)); }

  /**
   * Lays out control messages (handshakes, cookie replies) and keepalives of sessions (sealed
   * by the addon, with the session's next counter) as datagrams at WG_OUT, with their
   * descriptors at WG_OUT_DESC, for a UDP send batch. Returns how many (at most WG_OUT_CAP;
   * the rest are dropped: a handshake is sent again, a keepalive is not needed twice).
   */
  queueControl(messages: OutgoingMessage[], keepalives: { localIndex: number; addr: number; port: number }[]): number {
    const all: { at: number; len: number; addr: number; port: number }[] = [];
    for (const m of messages) {
      if (all.length >= L.WG_OUT_CAP || m.data.length > L.WG_OUT_SIZE) break;
      const at = L.WG_OUT + all.length * L.WG_OUT_SIZE;
      this.mem.set(m.data, at);
      all.push({ at, len: m.data.length, addr: m.addr, port: m.port });
    }
    for (const k of keepalives) {
      if (all.length >= L.WG_OUT_CAP) break;
      const at = L.WG_OUT + all.length * L.WG_OUT_SIZE;
      const len = this.x.wgFrameKeepalive(k.localIndex >>> 0, at);
      if (len === 0 || this.io.wgSealBatch(this.core.memory.buffer, L.WG_CRYPT, 1) !== 1) continue;
      all.push({ at, len, addr: k.addr, port: k.port });
    }
    const dv = this.dv;
    all.forEach((m, i) => {
      const d = L.WG_OUT_DESC + i * L.DESC_SIZE;
      dv.setUint32(d + L.D_OFFSET, m.at, true);
      dv.setUint32(d + L.D_LENGTH, m.len, true);
      dv.setUint32(d + L.D_ADDR, m.addr, false);
      dv.setUint16(d + L.D_PORT, m.port, false);
      dv.setUint16(d + L.D_SEGSIZE, 0, true);
      dv.setUint16(d + L.D_FLOW_HASH, 0, true);
      dv.setUint16(d + L.D_STATUS, 0, true);
    });
    return all.length;
  }

  setEndpoint(route: number, addr: number, port: number): void {
    const r = L.ROUTES + route * L.ROUTE_SIZE;
    this.dv.setUint32(r + L.R_PUBLIC_IP, addr >>> 0, true);
    this.dv.setUint32(r + L.R_WG_PORT, port, true);
  }

  /** The endpoint the core holds for a peer: its lease's, or where it last sent from. */
  endpoint(route: number): { addr: number; port: number } {
    const r = L.ROUTES + route * L.ROUTE_SIZE;
    return { addr: this.dv.getUint32(r + L.R_PUBLIC_IP, true), port: this.dv.getUint32(r + L.R_WG_PORT, true) };
  }

  /** Packets the core carried to and from the peer at `route` (keepalives and handshakes not counted). */
  packets(route: number): { rx: bigint; tx: bigint } {
    const r = L.ROUTES + route * L.ROUTE_SIZE;
    return { rx: this.dv.getBigUint64(r + L.R_RX_PACKETS, true), tx: this.dv.getBigUint64(r + L.R_TX_PACKETS, true) };
  }

  sentOn(localIndex: number): bigint { return BigInt.asUintN(64, this.x.wgSendCounter(localIndex >>> 0)); }

  /** Bytes of the transport messages (keepalives too) sent on and accepted on a live session,
   * whole messages as `wg show` counts them; 0 once it is closed. */
  sessionBytes(localIndex: number): { rx: bigint; tx: bigint } {
    const i = localIndex >>> 0;
    return { rx: BigInt.asUintN(64, this.x.wgSessionReceivedBytes(i)), tx: BigInt.asUintN(64, this.x.wgSessionSentBytes(i)) };
  }

  /** Which session packets to the peer at `route` go out on (0: none), and its endpoint's port. */
  setPeer(route: number, sendIndex: number, port: number): void {
    const r = L.ROUTES + route * L.ROUTE_SIZE;
    this.dv.setUint32(r + L.R_WG_SESSION, sendIndex >>> 0, true);
    this.dv.setUint32(r + L.R_WG_PORT, port, true);
  }

  /** The endpoint port the core holds for a peer (it follows authenticated datagrams). */
  peerPort(route: number): number {
    return this.dv.getUint32(L.ROUTES + route * L.ROUTE_SIZE + L.R_WG_PORT, true);
  }

  /** After core.egress(): seals the batch and joins it into sends. Returns the messages sealed. */
  sealEgress(): number {
    const n = this.x.wgCryptCount();
    const sealed = n > 0 ? this.io.wgSealBatch(this.core.memory.buffer, L.WG_CRYPT, n) : 0;
    this.x.wgEgressFinish();
    return sealed;
  }

  /** Packets the core keeps for peers whose handshake is under way (wasm memory, WG_STAGE). */
  stagedCount(): number { return this.x.wgStagedCount(); }

  /** Drops the packets waiting for the peer at `route` (counted wg_stage_dropped). */
  dropStaged(route: number): number { return this.x.wgStageDrop(route); }

  /**
   * Frames the waiting packets of peers that have a session now where they wait, and seals them
   * as one batch in the core's send table (SEND_DESC, as after an egress batch). Call between
   * batches. Returns the sends queued there.
   */
  releaseStaged(nowMs: number): number {
    if (this.x.wgStagedCount() === 0 || this.x.wgReleaseStaged(nowMs >>> 0) === 0) return 0;
    this.sealEgress();
    return this.core.sendCount;
  }

  /** Routes whose peers had packets to send and no session in the last egress batch. */
  wants(): number[] {
    const n = this.x.wgWantCount();
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = this.dv.getInt32(L.WG_WANT + i * 4, true);
      if (!out.includes(r)) out.push(r);
    }
    return out;
  }

  /** Before core.ingress() of n datagrams: opens their transport messages; returns the handshake
   * messages among them. */
  openIngress(n: number): ControlMessage[] {
    const entries = this.x.wgIngressPrepare(n);
    if (entries > 0) this.io.wgOpenBatch(this.core.memory.buffer, L.WG_CRYPT, entries);
    const m = this.x.wgControlCount();
    const out: ControlMessage[] = [];
    for (let i = 0; i < m; i++) {
      const c = L.WG_CONTROL + i * L.WG_CONTROL_SIZE;
      const len = this.dv.getUint32(c, true);
      const addr = this.dv.getUint32(c + 4, false);
      out.push({ data: this.mem.slice(c + 16, c + 16 + len), addr, port: this.dv.getUint32(c + 8, true) });
    }
    return out;
  }
}
