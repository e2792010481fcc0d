// Subnet keys and lease values, byte-compatible with flanneld (docs/flanneld-compat.md).
//
//   key:   <prefix>/subnets/10.5.72.0-24            (dual stack: ...-24&fd00:5:0:48::-64)
//   value: {"PublicIP":"192.168.1.10","PublicIPv6":null}                              (UDP)
//          {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",
//           "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}                    (VXLAN)
//
// Decoders never throw on bad input: they return { ok: false, error } so that a caller
// listing or watching many keys can skip and log one bad entry and keep the rest.

import { GoJsonError, GoStruct, isJsonObject, jsonKind, parseJson, type JsonValue } from '../gojson.js';
import { formatIPv4, normalizeMAC, parseIPv4, parseIPv6, type IPv4Net } from '../net.js';

export type Result<T> = { ok: true; value: T } | { ok: false; error: string };

const ok = <T>(value: T): Result<T> => ({ ok: true, value });
const err = <T>(error: string): Result<T> => ({ ok: false, error });

// ---------------------------------------------------------------------------------------
// Keys

/** The v6 part of a dual-stack key, kept as text (linen does not route IPv6). */
export interface IPv6KeyPart {
  readonly ip: string;
  readonly prefixLen: number;
}

export interface SubnetKey {
  /** IPv4 subnet as written in the key (flannel does not mask host bits here either). */
  readonly subnet: IPv4Net;
  readonly ipv6: IPv6KeyPart | null;
}

// flannel pkg/subnet/subnet.go, verbatim (note the unescaped dots and the end-only anchor).
const SUBNET_KEY_RE = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

/** Go strconv.ParseUint(s, 10, bits) for a string of decimal digits. */
function parseUintBits(s: string, bits: number): number | null {
  if (!/^[0-9]+$/.test(s)) return null;
  const n = Number(s);
  return n < 2 ** bits ? n : null;
}

/**
 * flannel's ParseSubnetKey: accepts a full etcd key or just its last part. The v4 prefix
 * length must fit in 5 bits (0-31) and the v6 one in 7 bits; `10.12.13.0-24hi` is rejected.
 */
export function parseSubnetKey(key: string): SubnetKey | null {
  const m = SUBNET_KEY_RE.exec(key);
  if (m === null || m[1] === undefined || m[2] === undefined) return null;
  const ip = parseIPv4(m[1]);
  const len = parseUintBits(m[2], 5);
  // Go's ParseIP accepts only dotted quads here, never the ::ffff: form (no ':' can match).
  if (ip === null || len === null) return null;
  let ipv6: IPv6KeyPart | null = null;
  if (m[3] !== undefined && m[3] !== '') {
    const len6 = parseUintBits(m[4] ?? '', 7);
    if (parseIPv6(m[3]) === null || len6 === null) return null;
    ipv6 = { ip: m[3], prefixLen: len6 };
  }
  return { subnet: { ip, prefixLen: len }, ipv6 };
}

/** flannel's MakeSubnetKey for an IPv4-only lease: `10.5.72.0-24`. */
export function makeSubnetKey(subnet: IPv4Net): string {
  return `${formatIPv4(subnet.ip)}-${subnet.prefixLen}`;
}

/** Go path.Join: joins with '/', collapses duplicate slashes, drops a trailing one, resolves . and .. */
export function pathJoin(...parts: string[]): string {
  const joined = parts.filter((p) => p !== '').join('/');
  if (joined === '') return '';
  const rooted = joined.startsWith('/');
  const out: string[] = [];
  for (const seg of joined.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(seg);
  }
  const body = out.join('/');
  if (rooted) return '/' + body;
  return body === '' ? '.' : body;
}

/** etcd keys used by flannel for a given --etcd-prefix. */
export function etcdKeys(prefix: string): {
  config: string;
  /** The prefix listed and watched (no trailing slash, as flanneld). */
  subnets: string;
  subnet(sn: IPv4Net): string;
} {
  const subnets = pathJoin(prefix, 'subnets');
  return {
    config: pathJoin(prefix, 'config'),
    subnets,
    subnet: (sn: IPv4Net) => pathJoin(prefix, 'subnets', makeSubnetKey(sn)),
  };
}

// ---------------------------------------------------------------------------------------
// Lease attributes (the JSON value)

export interface VxlanBackendData {
  readonly vni: number;
  /** Canonical form: lower-case, colon separated. */
  readonly vtepMAC: string;
}

export interface LeaseAttrs {
  /** Host-order IPv4; 0 (0.0.0.0) when absent from the JSON, as Go decodes it. */
  readonly publicIP: number;
  /** IPv6 text, or null. linen never advertises one. */
  readonly publicIPv6: string | null;
  /** "" when absent (UDP leases). */
  readonly backendType: string;
  /** Compact JSON text of BackendData, or null when absent. */
  readonly backendData: string | null;
  /** Compact JSON text of BackendV6Data, or null when absent. */
  readonly backendV6Data: string | null;
}

/** Attributes a UDP node publishes: only PublicIP. */
export function udpLeaseAttrs(publicIP: number): LeaseAttrs {
  return { publicIP, publicIPv6: null, backendType: '', backendData: null, backendV6Data: null };
}

/** Attributes a VXLAN node publishes. `vtepMAC` may be in any form parseMAC accepts. */
export function vxlanLeaseAttrs(publicIP: number, vni: number, vtepMAC: string): LeaseAttrs {
  const mac = normalizeMAC(vtepMAC);
  if (mac === null) throw new Error(`invalid VtepMAC: ${JSON.stringify(vtepMAC)}`);
  if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffffff) throw new Error(`invalid VNI: ${vni}`);
  return {
    publicIP,
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: `{"VNI":${vni},"VtepMAC":${JSON.stringify(mac)}}`,
    backendV6Data: null,
  };
}

/**
 * The lease value exactly as Go's json.Marshal(LeaseAttrs) writes it: compact, fields in
 * struct order, PublicIPv6 always present (null when none), BackendType / BackendData /
 * BackendV6Data omitted when empty.
 */
export function encodeLeaseAttrs(a: LeaseAttrs): string {
  let s = `{"PublicIP":${JSON.stringify(formatIPv4(a.publicIP))},"PublicIPv6":${a.publicIPv6 === null ? 'null' : JSON.stringify(a.publicIPv6)}`;
  if (a.backendType !== '') s += `,"BackendType":${JSON.stringify(a.backendType)}`;
  if (a.backendData !== null && a.backendData !== '') s += `,"BackendData":${compactJson(a.backendData)}`;
  if (a.backendV6Data !== null && a.backendV6Data !== '') s += `,"BackendV6Data":${compactJson(a.backendV6Data)}`;
  return s + '}';
}

/** Go compacts json.RawMessage on Marshal; JSON.stringify(JSON.parse()) does the same for our data. */
function compactJson(raw: string): string {
  return JSON.stringify(JSON.parse(raw) as JsonValue);
}

const LEASE_FIELDS = ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data'] as const;

/**
 * Decodes a lease value as Go's json.Unmarshal into flannel's LeaseAttrs: names match
 * case-insensitively, unknown fields are ignored, PublicIP must be an IPv4 string
 * (`null` or garbage fail; absent means 0.0.0.0), PublicIPv6 may be null.
 */
export function decodeLeaseAttrs(text: string | Uint8Array): Result<LeaseAttrs> {
  const s = typeof text === 'string' ? text : Buffer.from(text).toString('utf8');
  try {
    const doc = parseJson(s);
    const st = new GoStruct('LeaseAttrs', doc, LEASE_FIELDS);
    let publicIP = 0;
    const pip = st.raw('PublicIP');
    if (pip !== undefined) {
      // ip.IP4.UnmarshalJSON trims quotes and parses whatever is left: null, numbers and
      // bad strings all fail.
      const t = typeof pip === 'string' ? pip : JSON.stringify(pip);
      const v = parseIPv4(t);
      if (v === null) return err(`PublicIP: invalid IPv4 address ${JSON.stringify(pip)}`);
      publicIP = v;
    }
    let publicIPv6: string | null = null;
    const pip6 = st.raw('PublicIPv6');
    if (pip6 !== undefined && pip6 !== null) {
      if (typeof pip6 !== 'string' || parseIPv6(pip6) === null) {
        return err(`PublicIPv6: invalid IPv6 address ${JSON.stringify(pip6)}`);
      }
      publicIPv6 = pip6;
    }
    const backendType = st.string('BackendType') ?? '';
    const raw = (f: string): string | null => {
      const v = st.raw(f);
      return v === undefined ? null : JSON.stringify(v);
    };
    return ok({ publicIP, publicIPv6, backendType, backendData: raw('BackendData'), backendV6Data: raw('BackendV6Data') });
  } catch (e) {
    if (e instanceof GoJsonError) return err(e.message);
    throw e;
  }
}

/**
 * Decodes VXLAN BackendData ({"VNI":1,"VtepMAC":"..."}) as flannel's vxlanLeaseAttrs:
 * VNI a uint32, VtepMAC a string Go's net.ParseMAC accepts (6-byte forms only here).
 */
export function decodeVxlanBackendData(raw: string | null): Result<VxlanBackendData> {
  if (raw === null) return err('BackendData: missing');
  try {
    const doc = parseJson(raw);
    if (!isJsonObject(doc)) return err(`BackendData: expected an object, got ${jsonKind(doc)}`);
    const st = new GoStruct('vxlanLeaseAttrs', doc, ['VNI', 'VtepMAC']);
    const vni = st.integer('VNI', 'uint32', 0, 0xffffffff) ?? 0;
    const m = st.raw('VtepMAC');
    if (typeof m !== 'string') return err(`BackendData: VtepMAC: expected a MAC address string, got ${m === undefined ? 'nothing' : JSON.stringify(m)}`);
    const mac = normalizeMAC(m);
    if (mac === null) return err(`BackendData: VtepMAC: invalid MAC address ${JSON.stringify(m)}`);
    return ok({ vni, vtepMAC: mac });
  } catch (e) {
    if (e instanceof GoJsonError) return err(`BackendData: ${e.message}`);
    throw e;
  }
}

/** Same attributes (publicIP, type and data), used to tell renewals from real changes. */
export function sameLeaseAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return (
    a.publicIP === b.publicIP &&
    a.publicIPv6 === b.publicIPv6 &&
    a.backendType === b.backendType &&
    a.backendData === b.backendData &&
    a.backendV6Data === b.backendV6Data
  );
}

// ---------------------------------------------------------------------------------------
// Leases

/** One subnet lease as stored in etcd. */
export interface Lease {
  /** Full etcd key. */
  readonly key: string;
  readonly subnet: IPv4Net;
  /** Set for dual-stack keys written by flanneld nodes. */
  readonly ipv6: IPv6KeyPart | null;
  readonly attrs: LeaseAttrs;
  /** etcd lease ID as a decimal string; "0" for a key without a lease (a reservation). */
  readonly leaseId: string;
  readonly modRevision: number;
}

/** Parses one etcd key/value into a Lease, or says why it cannot. */
export function leaseFromKV(key: string, value: string | Uint8Array, leaseId: string, modRevision: number): Result<Lease> {
  const sk = parseSubnetKey(key);
  if (sk === null) return err(`not a subnet key`);
  const attrs = decodeLeaseAttrs(value);
  if (!attrs.ok) return attrs;
  return ok({ key, subnet: sk.subnet, ipv6: sk.ipv6, attrs: attrs.value, leaseId, modRevision });
}
