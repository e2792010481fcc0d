// Drives the wasm core with byte arrays: fills input descriptors as the native addon would,
// runs a batch, and returns what the core asked to send and to write.
import { Core, type CoreOptions } from '../../src/dataplane/core.js';
import { DescriptorView } from '../../src/dataplane/descriptors.js';
import type { Direction, PacketVerdictName } from '../../src/dataplane/verdicts.js';
import { formatIPv4 } from '../../src/net.js';
import { ip4 } from './packets.js';

export interface Sent { bytes: Uint8Array; addr: string; port: number; flowHash: number; segSize: number }

/** The datagrams a send puts on the wire: one, or its UDP_SEGMENT burst cut every segSize bytes. */
export function datagrams(s: Pick<Sent, 'bytes' | 'segSize'>): Uint8Array[] {
  if (!s.segSize) return [s.bytes];
  const out: Uint8Array[] = [];
  for (let o = 0; o < s.bytes.length; o += s.segSize) out.push(s.bytes.subarray(o, Math.min(o + s.segSize, s.bytes.length)));
  return out;
}

export class Harness {
  readonly core: Core;
  readonly desc: DescriptorView;
  constructor(opts: CoreOptions) {
    this.core = new Core(opts);
    this.desc = new DescriptorView(this.core.memory.buffer, this.core.layout);
  }

  get mem(): Uint8Array { return new Uint8Array(this.core.memory.buffer); }
  get dv(): DataView { return new DataView(this.core.memory.buffer); }

  private fill(table: number, i: number, data: Uint8Array, addr?: string, port = 0, seg = 0): void {
    const d = this.desc.at(table, i);
    this.mem.set(data, this.desc.offset(d));
    this.desc.setLength(d, data.length);
    if (addr) this.desc.setAddr(d, ip4(addr));
    this.desc.setPort(d, port);
    this.desc.setSegSize(d, seg);
  }

  /** `sealed` runs between the core's batch and reading its outputs (WireGuard seals there). */
  egress(packets: Uint8Array[], now = 0, sealed?: () => void): { sends: Sent[]; tun: Uint8Array[] } {
    packets.forEach((p, i) => this.fill(this.core.layout.EG_IN_DESC, i, p));
    this.core.egress(packets.length, now);
    sealed?.();
    return this.outputs();
  }

  /** `opened` runs after the datagrams are in place, before the core's batch (WireGuard opens there). */
  ingress(datagrams: { data: Uint8Array; from: string; port?: number; seg?: number }[], now = 0, opened?: () => void): { sends: Sent[]; tun: Uint8Array[] } {
    datagrams.forEach((g, i) => this.fill(this.core.layout.IN_IN_DESC, i, g.data, g.from, g.port ?? 8285, g.seg ?? 0));
    opened?.();
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
      const d = this.desc.read(this.desc.at(L.SEND_DESC, i));
      sends.push({
        bytes: this.mem.slice(d.offset, d.offset + d.length),
        addr: formatIPv4(d.addr),
        port: d.port,
        segSize: d.segSize,
        flowHash: d.flowHash,
      });
    }
    const tun: Uint8Array[] = [];
    for (let i = 0; i < this.core.tunWriteCount; i++) {
      const { first, count } = this.desc.tunWrite(L.TUN_WRITES, i);
      const parts: Uint8Array[] = [];
      for (let k = 0; k < count; k++) {
        const v = this.desc.iovec(L.IOVECS, first + k);
        parts.push(this.mem.slice(v.offset, v.offset + v.length));
      }
      const total = parts.reduce((s, p) => s + p.length, 0);
      const out = new Uint8Array(total);
      let o = 0;
      for (const p of parts) { out.set(p, o); o += p.length; }
      tun.push(out);
    }
    return { sends, tun };
  }

  counter(dir: Direction, name: PacketVerdictName): number {
    return Number(this.core.counters()[dir][name].packets);
  }
}
