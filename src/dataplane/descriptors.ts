// One typed view of the tables the native addon and the wasm core share (docs/memory-abi.md):
// packet descriptors, TUN writes and iovecs. Every size and field offset comes from the
// generated layout (abi.ts); nothing here repeats a number. Also the start-up check that the
// addon was compiled with that same layout.
import { LAYOUT, type Layout } from './abi.js';
import type { NativeLayout } from '../addon/native.js';

export interface Descriptor {
  offset: number;
  length: number;
  /** IPv4 address as a host-order number (stored in network byte order). */
  addr: number;
  /** UDP port (stored in network byte order). */
  port: number;
  segSize: number;
  flowHash: number;
  status: number;
}

export class DescriptorView {
  private readonly dv: DataView;
  private readonly mem: Uint8Array;

  /** `buffer` is a core's memory buffer; the memory never grows, so the view stays valid. */
  constructor(buffer: ArrayBuffer, private readonly L: Layout) {
    this.dv = new DataView(buffer);
    this.mem = new Uint8Array(buffer);
  }

  /** Address of descriptor i of the table at `table`. */
  at(table: number, i: number): number { return table + i * this.L.DESC_SIZE; }

  offset(d: number): number { return this.dv.getUint32(d + this.L.D_OFFSET, true); }
  length(d: number): number { return this.dv.getUint32(d + this.L.D_LENGTH, true); }
  addr(d: number): number { return this.dv.getUint32(d + this.L.D_ADDR, false); }
  port(d: number): number { return this.dv.getUint16(d + this.L.D_PORT, false); }
  segSize(d: number): number { return this.dv.getUint16(d + this.L.D_SEGSIZE, true); }
  flowHash(d: number): number { return this.dv.getUint16(d + this.L.D_FLOW_HASH, true); }
  status(d: number): number { return this.dv.getUint16(d + this.L.D_STATUS, true); }

  setOffset(d: number, v: number): void { this.dv.setUint32(d + this.L.D_OFFSET, v, true); }
  setLength(d: number, v: number): void { this.dv.setUint32(d + this.L.D_LENGTH, v, true); }
  setAddr(d: number, v: number): void { this.dv.setUint32(d + this.L.D_ADDR, v >>> 0, false); }
  setPort(d: number, v: number): void { this.dv.setUint16(d + this.L.D_PORT, v, false); }
  setSegSize(d: number, v: number): void { this.dv.setUint16(d + this.L.D_SEGSIZE, v, true); }

  read(d: number): Descriptor {
    return {
      offset: this.offset(d), length: this.length(d), addr: this.addr(d), port: this.port(d),
      segSize: this.segSize(d), flowHash: this.flowHash(d), status: this.status(d),
    };
  }

  /** Copies `data` into descriptor d's buffer, at most `capacity` bytes (the rest is cut, as a
   * read into a buffer that size would), and stores the length. */
  fill(d: number, data: Uint8Array, capacity: number): void {
    const n = Math.min(data.length, capacity);
    this.mem.set(data.subarray(0, n), this.offset(d));
    this.setLength(d, n);
  }

  /** fill(), for a received datagram: also its source address and port and its GRO segment
   * size (absent: one datagram). */
  fillDatagram(d: number, g: { data: Uint8Array; addr: number; port: number; segSize?: number }, capacity: number): void {
    this.fill(d, g.data, capacity);
    this.setAddr(d, g.addr);
    this.setPort(d, g.port);
    this.setSegSize(d, g.segSize ?? 0);
  }

  /** Descriptor d's bytes: a view into the memory, valid until the core reuses the buffer. */
  bytes(d: number): Uint8Array {
    const offset = this.offset(d);
    return this.mem.subarray(offset, offset + this.length(d));
  }

  /** TUN write w of the table at `table` gathered from its iovecs (in the table at `iovTable`)
   * into one new buffer: what a writev() of them would write. */
  gather(table: number, w: number, iovTable: number): Uint8Array {
    const { first, count } = this.tunWrite(table, w);
    let length = 0;
    for (let k = 0; k < count; k++) length += this.iovec(iovTable, first + k).length;
    const out = new Uint8Array(length);
    for (let k = 0, at = 0; k < count; k++) {
      const v = this.iovec(iovTable, first + k);
      out.set(this.mem.subarray(v.offset, v.offset + v.length), at);
      at += v.length;
    }
    return out;
  }

  /** TUN write w of the table at `table`: the iovecs [first, first + count). */
  tunWrite(table: number, w: number): { first: number; count: number } {
    const at = table + w * this.L.TUNW_SIZE;
    return { first: this.dv.getUint32(at + this.L.TW_FIRST, true), count: this.dv.getUint32(at + this.L.TW_COUNT, true) };
  }

  /** Iovec i of the table at `table`. */
  iovec(table: number, i: number): { offset: number; length: number } {
    const at = table + i * this.L.IOV_SIZE;
    return { offset: this.dv.getUint32(at + this.L.IOV_OFFSET, true), length: this.dv.getUint32(at + this.L.IOV_LENGTH, true) };
  }
}

/**
 * Throws unless the native addon was compiled with the core's layout: every field the addon
 * reports must equal the core's value of the same name, and every layout value must be there.
 * A mismatch means the addon and the wasm module come from different builds.
 */
export function checkAddonLayout(addon: NativeLayout | undefined, core: Readonly<Record<string, number>> = LAYOUT): void {
  const rebuild = 'rebuild both with "npm run build"';
  if (!addon) throw new Error(`linen: the native addon reports no memory layout (built before layout checks); ${rebuild}`);
  for (const name of Object.keys(LAYOUT)) {
    if (addon[name] === undefined) throw new Error(`linen: the native addon was built without layout field ${name}; ${rebuild}`);
  }
  for (const [name, value] of Object.entries(addon)) {
    const want = core[name];
    if (want === undefined) throw new Error(`linen: the native addon has layout field ${name} = ${value}, which the wasm core does not export; ${rebuild}`);
    if (value !== want) {
      throw new Error(`linen: the native addon and the wasm core disagree on the memory layout: ${name} is ${value} in the addon and ${want} in the core; ${rebuild}`);
    }
  }
}
