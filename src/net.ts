// IPv4 address, CIDR and MAC helpers.
//
// Addresses are host-order unsigned 32-bit numbers (0 ... 2^32-1). Parsing follows Go's
// net package, which is what flanneld uses for every address it reads: dotted quads with
// no leading zeros (Go >= 1.17), CIDRs with the host bits masked off (net.ParseCIDR), and
// MACs in the three notations net.ParseMAC accepts (only the 6-byte form here).

/** An IPv4 network, the one subnet type: `ip` is the network address, host order (masked by
 * parseCIDR and makeNet; a lease key's address is kept as written, host bits and all). */
export interface IPv4Net {
  readonly ip: number;
  readonly prefixLen: number;
}

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;

/**
 * Parses a dotted-quad IPv4 address as Go's net.ParseIP(s).To4() does. Also accepts
 * IPv4-mapped IPv6 forms such as `::ffff:a.b.c.d`, which Go turns into IPv4 too.
 * Returns null when `s` is not an IPv4 address.
 */
export function parseIPv4(s: string): number | null {
  if (s.includes(':')) {
    const b = parseIPv6(s);
    if (b === null) return null;
    for (let i = 0; i < 10; i++) if (b[i] !== 0) return null;
    if (b[10] !== 0xff || b[11] !== 0xff) return null;
    return ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
  }
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let v = 0;
  for (const p of parts) {
    if (!DEC_OCTET.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    v = v * 256 + n;
  }
  return v >>> 0;
}

/**
 * Parses an IPv6 address (RFC 4291 text, `::` compression, optional trailing dotted
 * quad, no zone) into 16 bytes, as Go's net.ParseIP does. Returns null otherwise.
 */
export function parseIPv6(s: string): Uint8Array | null {
  const out = new Uint8Array(16);
  let text = s;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) return null;
  if (text.indexOf('.', lastColon) >= 0) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === null) return null;
    tail = [(v4 >>> 24) & 0xff, (v4 >>> 16) & 0xff, (v4 >>> 8) & 0xff, v4 & 0xff];
    text = text.slice(0, lastColon + 1);
    // "::1.2.3.4" keeps its "::"; "a:b:...:1.2.3.4" leaves a trailing single ':'.
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const groupsWanted = (16 - tail.length) / 2;
  const dbl = text.indexOf('::');
  if (dbl >= 0 && text.indexOf('::', dbl + 1) >= 0) return null;
  const parseGroups = (t: string): number[] | null => {
    if (t === '') return [];
    const r: number[] = [];
    for (const g of t.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      r.push(parseInt(g, 16));
    }
    return r;
  };
  let groups: number[];
  if (dbl >= 0) {
    const head = parseGroups(text.slice(0, dbl));
    const rest = parseGroups(text.slice(dbl + 2));
    if (head === null || rest === null) return null;
    const fill = groupsWanted - head.length - rest.length;
    if (fill < 1) return null;
    groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  } else {
    const all = parseGroups(text);
    if (all === null || all.length !== groupsWanted) return null;
    groups = all;
  }
  groups.forEach((g, i) => {
    out[i * 2] = g >>> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  tail.forEach((b, i) => {
    out[12 + i] = b;
  });
  return out;
}

/** Formats a host-order u32 as a dotted quad. */
export function formatIPv4(ip: number): string {
  const v = ip >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** The netmask for a prefix length, as a u32 (prefixLen 0 gives 0). */
export function prefixMask(prefixLen: number): number {
  if (prefixLen <= 0) return 0;
  if (prefixLen >= 32) return 0xffffffff;
  return (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** Number of addresses in a network of this prefix length (2^(32-len)). */
export function netSize(prefixLen: number): number {
  return 2 ** (32 - prefixLen);
}

/** Builds a network with the host bits of `ip` masked off. */
export function makeNet(ip: number, prefixLen: number): IPv4Net {
  return { ip: (ip & prefixMask(prefixLen)) >>> 0, prefixLen };
}

/**
 * Parses `a.b.c.d/n` like Go's net.ParseCIDR, keeping only the network (host bits masked:
 * `10.5.3.0/16` gives `10.5.0.0/16`). Returns null for anything else, including IPv6.
 */
export function parseCIDR(s: string): IPv4Net | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIPv4(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (ip === null || !/^[0-9]{1,3}$/.test(lenText)) return null;
  const len = Number(lenText);
  if (len > 32) return null;
  return makeNet(ip, len);
}

/** Like parseCIDR but also returns the address as written (host bits kept). */
export function parseCIDRWithHost(s: string): { ip: number; net: IPv4Net } | null {
  const slash = s.indexOf('/');
  if (slash < 0) return null;
  const ip = parseIPv4(s.slice(0, slash));
  const net = parseCIDR(s);
  if (ip === null || net === null) return null;
  return { ip, net };
}

/** `10.5.0.0/16` (as given: host bits are not masked off). */
export function formatCIDR(n: IPv4Net): string {
  return `${formatIPv4(n.ip)}/${n.prefixLen}`;
}

/**
 * The key of every in-memory map of subnets (the watcher's leases, the peer set's routes, the
 * kernel routes): the CIDR text as written, `10.5.7.0/24`, host bits kept, so that two etcd
 * keys that differ only in host bits stay two entries. etcd's own key format (`10.5.7.0-24`,
 * flannel's MakeSubnetKey in subnet/lease.ts) is used only where etcd keys are read or written.
 */
export type NetKey = string & { readonly __netKey: true };
export const netKey = (n: IPv4Net): NetKey => formatCIDR(n) as NetKey;

/** True if `ip` lies inside `n`. */
export function netContains(n: IPv4Net, ip: number): boolean {
  const m = prefixMask(n.prefixLen);
  return ((ip & m) >>> 0) === ((n.ip & m) >>> 0);
}

/** True if the two networks share at least one address. */
export function netOverlaps(a: IPv4Net, b: IPv4Net): boolean {
  const len = Math.min(a.prefixLen, b.prefixLen);
  const m = prefixMask(len);
  return ((a.ip & m) >>> 0) === ((b.ip & m) >>> 0);
}

export function netEqual(a: IPv4Net, b: IPv4Net): boolean {
  return a.ip >>> 0 === b.ip >>> 0 && a.prefixLen === b.prefixLen;
}

/** The network right after `n` (same length), as flannel's IP4Net.Next(); wraps at 2^32. */
export function netNext(n: IPv4Net): IPv4Net {
  return { ip: (n.ip + netSize(n.prefixLen)) % 2 ** 32, prefixLen: n.prefixLen };
}

/** The last address of the network (its broadcast address). */
export function netLast(n: IPv4Net): number {
  return (n.ip + netSize(n.prefixLen) - 1) >>> 0;
}

// ---------------------------------------------------------------------------------------
// MAC addresses

const HEX2 = /^[0-9a-fA-F]{2}$/;
const HEX4 = /^[0-9a-fA-F]{4}$/;

/**
 * Parses a 6-byte MAC in any notation Go's net.ParseMAC accepts:
 * `00:00:5e:00:53:01`, `00-00-5e-00-53-01`, `0000.5e00.5301` (hex digits of either case).
 * Returns null for anything else (including the 8- and 20-byte forms Go also accepts).
 */
export function parseMAC(s: string): Uint8Array | null {
  const out = new Uint8Array(6);
  if (s.length === 17 && (s[2] === ':' || s[2] === '-')) {
    const sep = s[2];
    for (let i = 0; i < 6; i++) {
      const x = i * 3;
      const pair = s.slice(x, x + 2);
      if (!HEX2.test(pair)) return null;
      if (i < 5 && s[x + 2] !== sep) return null;
      out[i] = parseInt(pair, 16);
    }
    return out;
  }
  if (s.length === 14 && s[4] === '.' && s[9] === '.') {
    for (let i = 0; i < 3; i++) {
      const quad = s.slice(i * 5, i * 5 + 4);
      if (!HEX4.test(quad)) return null;
      out[i * 2] = parseInt(quad.slice(0, 2), 16);
      out[i * 2 + 1] = parseInt(quad.slice(2), 16);
    }
    return out;
  }
  return null;
}

/** Lower-case, colon separated, like Go's net.HardwareAddr.String(). */
export function formatMAC(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
