// Independent packet builders and parsers for tests (plain JS, sharing no code with the core).

export function ip4(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}
export function ip4str(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function inetChecksum(b: Uint8Array, start = 0, end = b.length, init = 0): number {
  let sum = init;
  for (let i = start; i + 1 < end; i += 2) sum += (b[i] << 8) | b[i + 1];
  if ((end - start) % 2) sum += b[end - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Ip4Opts {
  src: string; dst: string; proto: number; payload: Uint8Array;
  ttl?: number; id?: number; df?: boolean; mf?: boolean; fragOffset?: number; tos?: number;
  options?: Uint8Array;
}

export function buildIp4(o: Ip4Opts): Uint8Array {
  const opt = o.options ?? new Uint8Array(0);
  const hlen = 20 + opt.length;
  const b = new Uint8Array(hlen + o.payload.length);
  const v = new DataView(b.buffer);
  b[0] = 0x40 | (hlen >> 2);
  b[1] = o.tos ?? 0;
  v.setUint16(2, b.length);
  v.setUint16(4, o.id ?? 0x1234);
  v.setUint16(6, (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | ((o.fragOffset ?? 0) >> 3));
  b[8] = o.ttl ?? 64;
  b[9] = o.proto;
  v.setUint32(12, ip4(o.src));
  v.setUint32(16, ip4(o.dst));
  b.set(opt, 20);
  v.setUint16(10, inetChecksum(b, 0, hlen));
  b.set(o.payload, hlen);
  return b;
}

function pseudo(src: number, dst: number, proto: number, len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + len;
}

export function buildUdp(src: string, dst: string, sport: number, dport: number, data: Uint8Array, ipo: Partial<Ip4Opts> = {}): Uint8Array {
  const u = new Uint8Array(8 + data.length);
  const v = new DataView(u.buffer);
  v.setUint16(0, sport); v.setUint16(2, dport); v.setUint16(4, u.length);
  u.set(data, 8);
  let c = inetChecksum(u, 0, u.length, pseudo(ip4(src), ip4(dst), 17, u.length));
  if (c === 0) c = 0xffff;
  v.setUint16(6, c);
  return buildIp4({ src, dst, proto: 17, payload: u, ...ipo });
}

export function buildTcp(src: string, dst: string, sport: number, dport: number, seq: number, flags: number, data: Uint8Array, ipo: Partial<Ip4Opts> = {}): Uint8Array {
  const t = new Uint8Array(20 + data.length);
  const v = new DataView(t.buffer);
  v.setUint16(0, sport); v.setUint16(2, dport); v.setUint32(4, seq >>> 0); v.setUint32(8, 1000);
  t[12] = 5 << 4; t[13] = flags; v.setUint16(14, 65535);
  t.set(data, 20);
  v.setUint16(16, inetChecksum(t, 0, t.length, pseudo(ip4(src), ip4(dst), 6, t.length)));
  return buildIp4({ src, dst, proto: 6, payload: t, ...ipo });
}

export function buildIcmpEcho(src: string, dst: string, data: Uint8Array, ipo: Partial<Ip4Opts> = {}): Uint8Array {
  const m = new Uint8Array(8 + data.length);
  m[0] = 8; m[4] = 0x12; m[5] = 0x34; m[7] = 1;
  m.set(data, 8);
  new DataView(m.buffer).setUint16(2, inetChecksum(m));
  return buildIp4({ src, dst, proto: 1, payload: m, ...ipo });
}

export function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; b[i] = x & 255; }
  return b;
}

export interface ParsedIp4 {
  version: number; hlen: number; total: number; id: number; df: boolean; ttl: number; proto: number;
  src: string; dst: string; headerOk: boolean; payload: Uint8Array;
}
export function parseIp4(b: Uint8Array): ParsedIp4 {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const hlen = (b[0] & 15) * 4;
  return {
    version: b[0] >> 4, hlen, total: v.getUint16(2), id: v.getUint16(4), df: (v.getUint16(6) & 0x4000) !== 0,
    ttl: b[8], proto: b[9], src: ip4str(v.getUint32(12)), dst: ip4str(v.getUint32(16)),
    headerOk: inetChecksum(b, 0, hlen) === 0, payload: b.subarray(hlen, v.getUint16(2)),
  };
}

/** Verifies the TCP or UDP checksum of an IPv4 packet. */
export function l4ChecksumOk(b: Uint8Array): boolean {
  const p = parseIp4(b);
  const l4 = p.payload;
  return inetChecksum(l4, 0, l4.length, pseudo(ip4(p.src), ip4(p.dst), p.proto, l4.length)) === 0;
}

export function vxlanHeader(vni: number, flags = 0x08): Uint8Array {
  return new Uint8Array([flags, 0, 0, 0, (vni >> 16) & 255, (vni >> 8) & 255, vni & 255, 0]);
}
export function ethHeader(dst: Uint8Array, src: Uint8Array, type = 0x0800): Uint8Array {
  const e = new Uint8Array(14);
  e.set(dst, 0); e.set(src, 6); e[12] = type >> 8; e[13] = type & 255;
  return e;
}
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
export function mac(s: string): Uint8Array {
  return Uint8Array.from(s.split(':').map((h) => parseInt(h, 16)));
}
