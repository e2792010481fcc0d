// Drives the wasm core with byte arrays: fills input descriptors as the native addon would,
// runs a batch, and returns what the core asked to send and to write.
import { Core, type CoreOptions } from '../../src/dataplane/core.js';
import type { Direction, VerdictName } from '../../src/dataplane/verdicts.js';

export interface Sent { bytes: Uint8Array; addr: string; port: number; srcPort: number; segSize: number }

export class Harness {
  readonly core: Core;
  constructor(opts: CoreOptions) { this.core = new Core(opts); }

  get mem(): Uint8Array { return new Uint8Array(this.core.memory.buffer); }
  get dv(): DataView { return new DataView(this.core.memory.buffer); }

  private fill(table: number, i: number, data: Uint8Array, addr?: string, port = 0, seg = 0): void {
    const d = table + i * this.core.layout.DESC_SIZE;
    const off = this.dv.getUint32(d, true);
    this.mem.set(data, off);
    this.dv.setUint32(d + 4, data.length, true);
    if (addr) addr.split('.').forEach((x, k) => { this.mem[d + 8 + k] = Number(x); });
    this.dv.setUint16(d + 12, port, false);
    this.dv.setUint16(d + 14, seg, true);
  }

  egress(packets: Uint8Array[], now = 0): { sends: Sent[]; tun: Uint8Array[] } {
    packets.forEach((p, i) => this.fill(this.core.layout.EG_IN_DESC, i, p));
    this.core.egress(packets.length, now);
    return this.outputs();
  }

  ingress(datagrams: { data: Uint8Array; from: string; port?: number; seg?: number }[], now = 0): { sends: Sent[]; tun: Uint8Array[] } {
    datagrams.forEach((g, i) => this.fill(this.core.layout.IN_IN_DESC, i, g.data, g.from, g.port ?? 8285, g.seg ?? 0));
    // As a worker does: resume where the core stopped, collecting each round's outputs.
    const all = { sends: [] as Sent[], tun: [] as Uint8Array[] };
    for (let next = 0; next < datagrams.length;) {
      next = this.core.ingress(datagrams.length, now, next);
      const out = this.outputs();
      all.sends.push(...out.sends);
      all.tun.push(...out.tun);
    }
    return all;
  }

  outputs(): { sends: Sent[]; tun: Uint8Array[] } {
    const L = this.core.layout;
    const sends: Sent[] = [];
    for (let i = 0; i < this.core.sendCount; i++) {
      const d = L.SEND_DESC + i * L.DESC_SIZE;
      const off = this.dv.getUint32(d, true), len = this.dv.getUint32(d + 4, true);
      sends.push({
        bytes: this.mem.slice(off, off + len),
        addr: Array.from(this.mem.subarray(d + 8, d + 12)).join('.'),
        port: this.dv.getUint16(d + 12, false),
        segSize: this.dv.getUint16(d + 14, true),
        srcPort: this.dv.getUint16(d + 16, true),
      });
    }
    const tun: Uint8Array[] = [];
    for (let i = 0; i < this.core.tunWriteCount; i++) {
      const w = L.TUN_WRITES + i * L.TUNW_SIZE;
      const first = this.dv.getUint32(w, true), n = this.dv.getUint32(w + 4, true);
      const parts: Uint8Array[] = [];
      for (let k = 0; k < n; k++) {
        const v = L.IOVECS + (first + k) * L.IOV_SIZE;
        const off = this.dv.getUint32(v, true), len = this.dv.getUint32(v + 4, true);
        parts.push(this.mem.slice(off, off + len));
      }
      const total = parts.reduce((s, p) => s + p.length, 0);
      const out = new Uint8Array(total);
      let o = 0;
      for (const p of parts) { out.set(p, o); o += p.length; }
      tun.push(out);
    }
    return { sends, tun };
  }

  counter(dir: Direction, name: VerdictName): number {
    return Number(this.core.counters()[dir][name].packets);
  }
}
