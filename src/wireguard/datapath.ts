// The shell's side of WireGuard's batch data path: installs sessions (keys from the handshake)
// in the wasm core, seals and opens each batch's crypt table through the addon, and hands the
// handshake messages the core set aside to the control path. A fixed number of calls per batch,
// nothing per packet (only handshake messages become objects).
import type { Core } from "../dataplane/core.js";
import { LAYOUT as L } from "../dataplane/abi.js";
import { KEY_LEN, type WgNative } from "./crypto.js";
import type { TransportKeys } from "./noise.js";

interface WgCoreExports {
  wgSessionAddr(slot: number): number;
  wgSessionOpen(localIndex: number, remoteIndex: number, route: number): number;
  wgSessionClose(localIndex: number): void;
  wgSendCounter(localIndex: number): bigint;
  wgCryptCount(): number;
  wgControlCount(): number;
  wgWantCount(): number;
  wgIngressPrepare(n: number): number;
  wgEgressFinish(): void;
}

/** A handshake message received on the data path, for the control path. */
export interface ControlMessage {
  data: Uint8Array;
  /** Source IPv4 address (host order) and port. */
  addr: number;
  port: number;
}

export class WgDataPath {
  private readonly x: WgCoreExports;

  constructor(readonly core: Core, private readonly io: WgNative) {
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

  sentOn(localIndex: number): bigint { return BigInt.asUintN(64, this.x.wgSendCounter(localIndex >>> 0)); }

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
