// Subnet keys and lease values, byte-compatible with flanneld (docs/flanneld-compat.md).
//
//   key:   <prefix>/subnets/10.5.72.0-24            (dual stack: ...-24&fd00:5:0:48::-64)
//   value: {"PublicIP":"192.168.1.10","PublicIPv6":null}                              (UDP)
//          {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",
//           "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}                    (VXLAN)
//
// Decoders never throw on bad input: they return { ok: false, error } so that a caller
// listing or watching many keys can skip and log one bad entry and keep the rest. Keys and
// values come from any writer with access to etcd (and, in kube mode, from node annotations):
// both are bounded in size and depth before parsing, and every parse is linear.
// What each backend publishes is built beside the backend (backend/udp.ts, vxlan.ts, ...).

import { GoJsonError, GoStruct, isJsonObject, jsonKind, parseJson, type JsonLimits, type JsonValue } from '../config/gojson.js';
import { formatIPv4, parseIPv4, parseIPv6, parseMAC, type IPv4Net } from '../net.js';

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

/** Longest subnet key name flannel can write: `255.255.255.255-32&` and a 39-character IPv6 address `-128`. */
export const MAX_SUBNET_KEY_NAME = 64;

// The name part of a subnet key, anchored at both ends. flanneld's own expression is anchored
// at the end only (a prefix before the address passes); its IPv4 part is taken here exactly
// (dots escaped, octets and length of at most 3 and 2 digits, no more), and the name's length
// is checked first, so matching is linear and short whatever etcd holds.
const SUBNET_KEY_NAME_RE = /^([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})-([0-9]{1,2})(?:&([a-f0-9:]{2,39})-([0-9]{1,3}))?$/;

/** Go strconv.ParseUint(s, 10, bits) for a string of decimal digits, leading zeros refused. */
function parseUintBits(s: string, bits: number): number | null {
  if (!/^(?:0|[1-9][0-9]*)$/.test(s)) return null;
  const n = Number(s);
  return n < 2 ** bits ? n : null;
}

/**
 * A subnet key's name (`10.5.72.0-24`, dual stack `10.5.72.0-24&fd00:5:0:48::-64`), exactly:
 * nothing before or after it, octets and prefix length in canonical decimal (a leading zero
 * would be a second name for the same subnet). The v4 prefix length must fit in 5 bits
 * (0-31) as in flanneld, the v6 one in 7 bits.
 */
export function parseSubnetName(name: string): SubnetKey | null {
  if (name.length > MAX_SUBNET_KEY_NAME) return null;
  const m = SUBNET_KEY_NAME_RE.exec(name);
  if (m === null || m[1] === undefined || m[2] === undefined) return null;
  const ip = parseIPv4(m[1]);
  const len = parseUintBits(m[2], 5);
  if (ip === null || len === null) return null;
  let ipv6: IPv6KeyPart | null = null;
  if (m[3] !== undefined) {
    const len6 = parseUintBits(m[4] ?? '', 7);
    if (parseIPv6(m[3]) === null || len6 === null) return null;
    ipv6 = { ip: m[3], prefixLen: len6 };
  }
  return { subnet: { ip, prefixLen: len }, ipv6 };
}

/**
 * The name of a key directly under `subnets` (`<subnets>/<name>`, one path segment), or null
 * for any other key: one in a deeper folder, or under a sibling such as `<subnets>x/`, which a
 * watch of the `subnets` prefix also sees.
 */
export function subnetKeyName(subnets: string, key: string): string | null {
  if (key.length > subnets.length + 1 + MAX_SUBNET_KEY_NAME || !key.startsWith(subnets + '/')) return null;
  const name = key.slice(subnets.length + 1);
  return name.includes('/') ? null : name;
}

/**
 * A full etcd key's subnet: its last path segment must be exactly a subnet key name. Whether
 * the key sits directly under `<prefix>/subnets` is subnetKeyName's question.
 */
export function parseSubnetKey(key: string): SubnetKey | null {
  if (key.length > MAX_SUBNET_KEY_NAME) key = key.slice(key.length - MAX_SUBNET_KEY_NAME - 1);
  return parseSubnetName(key.slice(key.lastIndexOf('/') + 1));
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

/** --etcd-prefix's default, flanneld's. */
export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

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
  /** 6 bytes. */
  readonly vtepMAC: Uint8Array;
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

/** A WireGuard node's BackendData: its public key (base64, as `wg pubkey` prints) and listen port. */
export interface WireguardBackendData {
  readonly publicKey: Uint8Array;
  /** 0 when absent: flanneld then uses its own listen port. */
  readonly port: number;
}

/** Decodes a wireguard lease's BackendData (field names matched case-insensitively, as Go does). */
export function decodeWireguardBackendData(raw: string | null): Result<WireguardBackendData> {
  if (raw === null) return { ok: false, error: 'no BackendData' };
  let v: unknown;
  try { v = JSON.parse(raw); } catch { return { ok: false, error: 'BackendData is not JSON' }; }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, error: 'BackendData is not an object' };
  const o = v as Record<string, unknown>;
  const get = (name: string): unknown => o[Object.keys(o).find((k) => k.toLowerCase() === name.toLowerCase()) ?? ''];
  const key = get('PublicKey');
  const port = get('Port') ?? 0;
  if (typeof key !== 'string') return { ok: false, error: 'no PublicKey' };
  const bytes = Buffer.from(key, 'base64');
  if (bytes.length !== 32 || bytes.toString('base64') !== key) return { ok: false, error: `PublicKey ${JSON.stringify(key.slice(0, 60))} is not 32 bytes of base64` };
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) return { ok: false, error: `Port ${JSON.stringify(port)} is not a UDP port` };
  return { ok: true, value: { publicKey: new Uint8Array(bytes), port } };
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

/**
 * Bounds on a lease value: flanneld's are a few hundred bytes, two levels deep. Larger or
 * deeper values come from another writer and are refused before anything recursive sees them.
 */
export const LEASE_JSON_LIMITS: JsonLimits = { maxLength: 64 * 1024, maxDepth: 16 };

const LEASE_FIELDS = ['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData', 'BackendV6Data'] as const;

/**
 * Decodes a lease value as Go's json.Unmarshal into flannel's LeaseAttrs: names match
 * case-insensitively, unknown fields are ignored, PublicIP must be an IPv4 string
 * (`null` or garbage fail; absent means 0.0.0.0), PublicIPv6 may be null.
 */
export function decodeLeaseAttrs(text: string | Uint8Array): Result<LeaseAttrs> {
  if (text.length > LEASE_JSON_LIMITS.maxLength) return err(`the value is ${text.length} bytes, more than the ${LEASE_JSON_LIMITS.maxLength} a lease may have`);
  try {
    const s = typeof text === 'string' ? text : Buffer.from(text).toString('utf8');
    const doc = parseJson(s, LEASE_JSON_LIMITS);
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
    // Whatever fails, the value is one refused lease, never an error for the caller.
    return err(e instanceof GoJsonError ? e.message : `undecodable value: ${(e as Error).message}`);
  }
}

/**
 * Decodes VXLAN BackendData ({"VNI":1,"VtepMAC":"..."}) as flannel's vxlanLeaseAttrs:
 * VNI a uint32, VtepMAC a string Go's net.ParseMAC accepts (6-byte forms only here).
 */
export function decodeVxlanBackendData(raw: string | null): Result<VxlanBackendData> {
  if (raw === null) return err('BackendData: missing');
  try {
    const doc = parseJson(raw, LEASE_JSON_LIMITS);
    if (!isJsonObject(doc)) return err(`BackendData: expected an object, got ${jsonKind(doc)}`);
    const st = new GoStruct('vxlanLeaseAttrs', doc, ['VNI', 'VtepMAC']);
    const vni = st.integer('VNI', 'uint32', 0, 0xffffffff) ?? 0;
    const m = st.raw('VtepMAC');
    if (typeof m !== 'string') return err(`BackendData: VtepMAC: expected a MAC address string, got ${m === undefined ? 'nothing' : JSON.stringify(m)}`);
    const mac = parseMAC(m);
    if (mac === null) return err(`BackendData: VtepMAC: invalid MAC address ${JSON.stringify(m)}`);
    return ok({ vni, vtepMAC: mac });
  } catch (e) {
    return err(`BackendData: ${e instanceof GoJsonError ? e.message : `undecodable: ${(e as Error).message}`}`);
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
