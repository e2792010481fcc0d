// flannel's network configuration (the JSON at <prefix>/config); docs/flanneld-compat.md has it.
//
// parseNetworkConfig() does what flanneld does with that value, in the same order:
// subnet.ParseConfig (Go encoding/json: case-insensitive names, unknown fields ignored,
// EnableIPv4 defaulting to true, Backend.Type with the "absent Backend means udp" quirk),
// subnet.CheckNetworkConfig (defaults and the exact error texts of §2.3), the backend
// lookup (lower-cased type) and the backend's own option decoding (UDP Port, VXLAN VNI,
// Port, MTU, GBP, Learning, DirectRouting; host-gw has no options). What flanneld would
// silently drop (unknown keys, IPv6 fields with IPv6 off, EnableNFTables, VXLAN Learning) is
// in the config's warnings; VXLAN GBP is refused.
//
// Where linen differs it says so in the error: only the udp, vxlan and host-gw backends
// exist, and IPv6 (EnableIPv6) is refused rather than half-supported. One extension: the UDP
// backend reads DirectRouting too (flanneld ignores it there).

import { DEFAULT_JSON_LIMITS, findJsonSyntaxError, GoJsonError, GoStruct, INT_MAX, parseJson, type JsonLimits, type JsonValue } from './gojson.js';
import {
  formatIPv4,
  netContains,
  netNext,
  netSize,
  parseCIDR,
  parseIPv4,
  parseIPv6,
  prefixMask,
  type IPv4Net,
} from '../net.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export const UDP_DEFAULT_PORT = 8285;
export const VXLAN_DEFAULT_VNI = 1;
/** What the kernel uses when flannel sends no port attribute (Port 0). */
export const VXLAN_DEFAULT_PORT = 8472;
/** Bytes VXLAN adds in front of the inner packet: outer IPv4 20 + UDP 8 + VXLAN 8 + Ethernet 14. */
export const VXLAN_MTU_OVERHEAD = 50;
/** Bytes the UDP backend adds: outer IPv4 20 + UDP 8. */
export const UDP_MTU_OVERHEAD = 28;

export interface UdpBackendConfig {
  readonly type: 'udp';
  /** Listen port and destination port (the same on every node). */
  readonly port: number;
  /** linen extension: peers on a directly connected network get a kernel route, not the tunnel. */
  readonly directRouting: boolean;
}

export interface VxlanBackendConfig {
  readonly type: 'vxlan';
  readonly vni: number;
  /** UDP port; 8472 when the config says 0 or nothing. */
  readonly port: number;
  /** Underlay MTU from the config, or null for "the external interface's MTU". */
  readonly mtu: number | null;
  readonly gbp: boolean;
  readonly learning: boolean;
  readonly directRouting: boolean;
}

/** flannel's host-gw: no options, no overlay; each peer subnet routed via its PublicIP. */
export interface HostGwBackendConfig {
  readonly type: 'host-gw';
}

/** flanneld's WireGuard defaults: its listen port, and what it takes off the MTU for the outer
 * headers (IPv6 20 more than IPv4's 60, so one device MTU serves both). */
export const WIREGUARD_DEFAULT_PORT = 51820;
export const WIREGUARD_MTU_OVERHEAD = 80;

/** flannel's wireguard backend (IPv4: Mode separate, auto or ipv4 are the same here). */
export interface WireguardBackendConfig {
  readonly type: 'wireguard';
  /** ListenPort: where this node listens; published in its lease. */
  readonly listenPort: number;
  /** PSK: 32 bytes (from base64), or null for none. */
  readonly presharedKey: Uint8Array | null;
  /** PersistentKeepaliveInterval, seconds (0: none). */
  readonly persistentKeepalive: number;
  /** Underlay MTU from the config, or null for "the external interface's MTU". */
  readonly mtu: number | null;
}

export type BackendConfig = UdpBackendConfig | VxlanBackendConfig | HostGwBackendConfig | WireguardBackendConfig;
/** A backend's Type in the network config: udp, vxlan, host-gw or wireguard. */
export type BackendType = BackendConfig['type'];

export interface NetworkConfig {
  readonly enableIPv4: boolean;
  readonly enableIPv6: boolean;
  readonly enableNFTables: boolean;
  /** Cluster network, host bits masked (10.5.3.0/16 is read as 10.5.0.0/16). */
  readonly network: IPv4Net;
  /** Per-node prefix length (defaulted per §2.2). */
  readonly subnetLen: number;
  /** First and last allocatable subnet addresses (inclusive), host order. */
  readonly subnetMin: number;
  readonly subnetMax: number;
  /** Backend.Type as written in the config ("UDP" stays "UDP"); "udp" when Backend is absent. */
  readonly backendType: string;
  readonly backend: BackendConfig;
  /**
   * What the config asks for that linen does not do, or fields nobody reads: flanneld drops
   * these without a word; linen logs each once when it reads the config.
   */
  readonly warnings: readonly string[];
}

/** flannel's registered backend names (pkg/backend/*), which linen knows but does not run. */
const FLANNEL_ONLY_BACKENDS = new Set([
  'alloc',
  'extension',
  'ipip',
  'ipsec',
  'tencent-vpc',
  'ali-vpc',
  'aws-vpc',
  'gce',
]);

const CONFIG_FIELDS = [
  'EnableIPv4',
  'EnableIPv6',
  'EnableNFTables',
  'Network',
  'IPv6Network',
  'SubnetMin',
  'SubnetMax',
  'IPv6SubnetMin',
  'IPv6SubnetMax',
  'SubnetLen',
  'IPv6SubnetLen',
  'Backend',
] as const;

function fail(message: string): never {
  throw new ConfigError(message);
}

/** Runs a decoding step, turning GoJsonError into ConfigError (optionally prefixed). */
function decoding<T>(prefix: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof GoJsonError) fail(prefix + e.message);
    throw e;
  }
}

/** The config's JSON; a syntax error names its line, column and the key it is under. */
function parseConfigJson(text: string, limits: JsonLimits = DEFAULT_JSON_LIMITS): JsonValue {
  try {
    return parseJson(text, limits);
  } catch (e) {
    if (!(e instanceof GoJsonError)) throw e;
    const at = /^invalid JSON: (?:nested|\d+ bytes)/.test(e.message) ? null : findJsonSyntaxError(text);
    if (at === null) fail(e.message);
    const where = at.path === '' ? '' : ` under the key ${JSON.stringify(at.path)}`;
    fail(`invalid JSON at line ${at.line}, column ${at.column} (offset ${at.offset})${where}: ${at.problem}`);
  }
}

function parseIPv4Field(field: string, text: string | undefined): number {
  if (text === undefined) return 0;
  const ip = parseIPv4(text);
  if (ip === null) fail(`${field}: invalid IP address: ${JSON.stringify(text)}`);
  return ip;
}

function checkIPv6CIDR(field: string, text: string | undefined): void {
  if (text === undefined) return;
  const slash = text.indexOf('/');
  const len = Number(text.slice(slash + 1));
  if (slash < 0 || parseIPv6(text.slice(0, slash)) === null || !/^[0-9]{1,3}$/.test(text.slice(slash + 1)) || len > 128) {
    fail(`${field}: invalid CIDR address: ${text}`);
  }
}

function resolveBackendType(present: boolean, raw: JsonValue | undefined): string {
  // Go: len(RawMessage) == 0 only when the key is absent; "Backend": null gives the raw
  // text "null", which decodes to Type "".
  if (!present) return 'udp';
  return decoding('error decoding Backend property of config: ', () => {
    const bt = new GoStruct('', raw ?? null, ['Type']);
    return bt.string('Type') ?? '';
  });
}

/** A warning for each key of an object that no field reads. */
function ignoredKeys(where: string, s: GoStruct, warnings: string[]): void {
  for (const k of s.ignored) warnings.push(`${where}${JSON.stringify(k)} is not a field linen (or flanneld) reads; it is ignored`);
}

function udpOptions(raw: JsonValue, warnings: string[]): UdpBackendConfig {
  const { port, directRouting } = decoding('error decoding UDP backend config: ', () => {
    const s = new GoStruct('', raw, ['Type', 'Port', 'DirectRouting']);
    ignoredKeys('Backend: ', s, warnings);
    return { port: s.integer('Port', 'int', -INT_MAX, INT_MAX) ?? UDP_DEFAULT_PORT, directRouting: s.bool('DirectRouting') ?? false };
  });
  if (port < 1 || port > 65535) fail(`error decoding UDP backend config: Port ${port} is not a UDP port (1-65535)`);
  return { type: 'udp', port, directRouting };
}

function vxlanOptions(raw: JsonValue, warnings: string[]): VxlanBackendConfig {
  const prefix = 'error decoding VXLAN backend config: ';
  return decoding(prefix, () => {
    const s = new GoStruct('VXLANConfig', raw, ['Type', 'VNI', 'Port', 'MTU', 'GBP', 'Learning', 'DirectRouting']);
    ignoredKeys('Backend: ', s, warnings);
    const vni = s.integer('VNI', 'int', -INT_MAX, INT_MAX) ?? VXLAN_DEFAULT_VNI;
    if (vni < 0 || vni > 0xffffff) fail(`${prefix}VNI ${vni} is out of range (0-16777215)`);
    const port = s.integer('Port', 'int', -INT_MAX, INT_MAX) ?? 0;
    if (port < 0 || port > 65535) fail(`${prefix}Port ${port} is not a UDP port (0-65535, 0 = ${VXLAN_DEFAULT_PORT})`);
    const mtu = s.integer('MTU', 'int', -INT_MAX, INT_MAX) ?? 0;
    if (mtu !== 0 && (mtu < VXLAN_MTU_OVERHEAD + 68 || mtu > 65535)) {
      fail(`${prefix}MTU ${mtu} is out of range (${VXLAN_MTU_OVERHEAD + 68}-65535; it is the underlay MTU)`);
    }
    const gbp = s.bool('GBP') ?? false;
    // The G bit changes the VXLAN header every node sends and expects: a node that sends plain
    // VXLAN beside ones that use Group Based Policy would not be one network.
    if (gbp) fail(`${prefix}GBP (Group Based Policy) is not supported by linen's VXLAN (set GBP to false)`);
    const learning = s.bool('Learning') ?? false;
    if (learning) {
      warnings.push('Backend: Learning is ignored: linen fills its forwarding table from the leases only and learns no VTEP from traffic (harmless: the leases name every peer)');
    }
    return {
      type: 'vxlan',
      vni,
      port: port === 0 ? VXLAN_DEFAULT_PORT : port,
      mtu: mtu === 0 ? null : mtu,
      gbp,
      learning,
      directRouting: s.bool('DirectRouting') ?? false,
    };
  });
}

function wireguardOptions(raw: JsonValue): WireguardBackendConfig {
  const prefix = 'error decoding WireGuard backend config: ';
  return decoding(prefix, () => {
    const s = new GoStruct('', raw, ['Type', 'ListenPort', 'ListenPortV6', 'MTU', 'PSK', 'PersistentKeepaliveInterval', 'Mode']);
    const listenPort = s.integer('ListenPort', 'int', -INT_MAX, INT_MAX) ?? WIREGUARD_DEFAULT_PORT;
    if (listenPort < 1 || listenPort > 65535) fail(`${prefix}ListenPort ${listenPort} is not a UDP port (1-65535)`);
    const mtu = s.integer('MTU', 'int', -INT_MAX, INT_MAX) ?? 0;
    if (mtu !== 0 && (mtu < WIREGUARD_MTU_OVERHEAD + 68 || mtu > 65535)) {
      fail(`${prefix}MTU ${mtu} is out of range (${WIREGUARD_MTU_OVERHEAD + 68}-65535; it is the underlay MTU)`);
    }
    const keepalive = s.integer('PersistentKeepaliveInterval', 'int', -INT_MAX, INT_MAX) ?? 0;
    if (keepalive < 0 || keepalive > 65535) fail(`${prefix}PersistentKeepaliveInterval ${keepalive} must be 0-65535 seconds`);
    const psk = s.string('PSK') ?? '';
    let presharedKey: Uint8Array | null = null;
    if (psk !== '') {
      const b = Buffer.from(psk, 'base64');
      if (b.length !== 32 || b.toString('base64') !== psk) {
        fail(`${prefix}could not parse PSK: it must be 32 bytes in base64, as \`wg genpsk\` prints`);
      }
      presharedKey = new Uint8Array(b);
    }
    const mode = (s.string('Mode') ?? 'separate');
    if (mode === 'ipv6') fail(`${prefix}Mode "ipv6" is not supported by linen, which routes IPv4 only (use "separate", "auto" or "ipv4")`);
    if (!['separate', 'auto', 'ipv4'].includes(mode)) fail(`${prefix}no valid Mode configured (${JSON.stringify(mode)}; use "separate", "auto" or "ipv4")`);
    return { type: 'wireguard', listenPort, presharedKey, persistentKeepalive: keepalive, mtu: mtu === 0 ? null : mtu };
  });
}

/**
 * Parses and validates flannel's network config JSON. Throws ConfigError with flannel's
 * own message where flannel has one (§2.3), or a message naming the offending field.
 */
export function parseNetworkConfig(text: string, opts: { otherFields?: readonly string[]; limits?: JsonLimits } = {}): NetworkConfig {
  // --- subnet.ParseConfig -------------------------------------------------------------
  const doc = parseConfigJson(text, opts.limits);
  const cfg = decoding('', () => new GoStruct('Config', doc, CONFIG_FIELDS));
  const warnings: string[] = [];
  const others = new Set((opts.otherFields ?? []).map((f) => f.toLowerCase()));
  for (const k of cfg.ignored) {
    if (!others.has(k.toLowerCase())) warnings.push(`${JSON.stringify(k)} is not a field linen (or flanneld) reads; it is ignored`);
  }
  const d = decoding('', () => ({
    enableIPv4: cfg.bool('EnableIPv4') ?? true,
    enableIPv6: cfg.bool('EnableIPv6') ?? false,
    enableNFTables: cfg.bool('EnableNFTables') ?? false,
    network: cfg.string('Network'),
    ipv6Network: cfg.string('IPv6Network'),
    subnetMin: cfg.string('SubnetMin'),
    subnetMax: cfg.string('SubnetMax'),
    ipv6SubnetMin: cfg.string('IPv6SubnetMin'),
    ipv6SubnetMax: cfg.string('IPv6SubnetMax'),
    subnetLen: cfg.integer('SubnetLen', 'uint', 0, INT_MAX) ?? 0,
    ipv6SubnetLen: cfg.integer('IPv6SubnetLen', 'uint', 0, INT_MAX) ?? 0,
  }));

  let network: IPv4Net = { ip: 0, prefixLen: 0 };
  if (d.network !== undefined) {
    const n = parseCIDR(d.network);
    if (n === null) {
      fail(d.network.includes(':') ? 'Network: invalid IPv4 CIDR format' : `Network: invalid CIDR address: ${d.network}`);
    }
    network = n;
  }
  checkIPv6CIDR('IPv6Network', d.ipv6Network);
  let subnetMin = parseIPv4Field('SubnetMin', d.subnetMin);
  let subnetMax = parseIPv4Field('SubnetMax', d.subnetMax);
  for (const f of ['IPv6SubnetMin', 'IPv6SubnetMax'] as const) {
    const v = f === 'IPv6SubnetMin' ? d.ipv6SubnetMin : d.ipv6SubnetMax;
    if (v !== undefined && parseIPv6(v) === null) fail(`${f}: invalid IPv6 address: ${JSON.stringify(v)}`);
  }
  const backendPresent = cfg.raw('Backend') !== undefined;
  const backendType = resolveBackendType(backendPresent, cfg.raw('Backend'));

  // --- linen's scope ----------------------------------------------------------------
  if (d.enableIPv6) {
    fail('EnableIPv6: IPv6 and dual-stack networks are not supported by linen (set EnableIPv6 to false)');
  }
  if (!d.enableIPv4) {
    fail('EnableIPv4: linen needs an IPv4 network (EnableIPv4 false would leave nothing to route)');
  }
  for (const f of ['IPv6Network', 'IPv6SubnetMin', 'IPv6SubnetMax', 'IPv6SubnetLen'] as const) {
    if (cfg.has(f)) warnings.push(`${f} is ignored: EnableIPv6 is false and linen routes IPv4 only`);
  }
  if (d.enableNFTables) {
    warnings.push('EnableNFTables is ignored: linen writes its masquerade and forward rules with iptables (on an nftables host, iptables-nft puts them in nftables)');
  }

  // --- subnet.CheckNetworkConfig (IPv4 part) ----------------------------------------
  if (network.ip === 0 && network.prefixLen === 0) {
    fail('please define a correct Network parameter in the flannel config');
  }
  const P = network.prefixLen;
  let subnetLen = d.subnetLen;
  if (subnetLen > 0) {
    if (subnetLen > 30) fail('SubnetLen must be less than /31');
    if (subnetLen < P + 2) fail('network must be able to accommodate at least four subnets');
  } else if (P > 28) {
    fail('network is too small. Minimum useful network prefix is /28');
  } else if (P <= 22) {
    subnetLen = 24;
  } else {
    subnetLen = P + 2;
  }
  const size = netSize(subnetLen);
  if (subnetMin === 0) {
    subnetMin = (network.ip + size) >>> 0;
  } else if (!netContains(network, subnetMin)) {
    fail('SubnetMin is not in the range of the Network');
  }
  if (subnetMax === 0) {
    subnetMax = (netNext(network).ip - size + 2 ** 32) % 2 ** 32;
  } else if (!netContains(network, subnetMax)) {
    fail('SubnetMax is not in the range of the Network');
  }
  const mask = prefixMask(subnetLen);
  if (((subnetMin & mask) >>> 0) !== subnetMin) {
    fail(`SubnetMin is not on a SubnetLen boundary: ${formatIPv4(subnetMin)}`);
  }
  if (((subnetMax & mask) >>> 0) !== subnetMax) {
    fail(`SubnetMax is not on a SubnetLen boundary: ${formatIPv4(subnetMax)}`);
  }

  // --- backend lookup (lower-cased) and the backend's options -----------------------
  const lower = backendType.toLowerCase();
  const raw = cfg.raw('Backend') ?? null;
  let backend: BackendConfig;
  if (lower === 'udp') {
    backend = udpOptions(backendPresent ? raw : null, warnings);
  } else if (lower === 'vxlan') {
    backend = vxlanOptions(raw, warnings);
  } else if (lower === 'host-gw') {
    // flanneld's host-gw decodes no options: whatever else the Backend object holds is ignored.
    decoding('error decoding host-gw backend config: ', () => ignoredKeys('Backend: ', new GoStruct('', raw, ['Type']), warnings));
    backend = { type: 'host-gw' };
  } else if (lower === 'wireguard') {
    backend = wireguardOptions(raw);
  } else if (FLANNEL_ONLY_BACKENDS.has(lower)) {
    fail(`backend type ${JSON.stringify(backendType)} is not supported by linen (supported: udp, vxlan, host-gw, wireguard)`);
  } else {
    fail(`unknown backend type: ${backendType}`);
  }

  return {
    enableIPv4: true,
    enableIPv6: false,
    enableNFTables: d.enableNFTables,
    network,
    subnetLen,
    subnetMin,
    subnetMax,
    backendType,
    backend,
    warnings,
  };
}

/**
 * MTU of the overlay device and FLANNEL_MTU for a backend, given the external interface's
 * MTU: UDP ext − 28; VXLAN (config MTU, else ext) − 50; host-gw ext (nothing is added).
 */
export function overlayMTU(backend: BackendConfig, extMTU: number): number {
  if (backend.type === 'host-gw') return extMTU;
  if (backend.type === 'udp') return extMTU - UDP_MTU_OVERHEAD;
  if (backend.type === 'wireguard') return (backend.mtu ?? extMTU) - WIREGUARD_MTU_OVERHEAD;
  return (backend.mtu ?? extMTU) - VXLAN_MTU_OVERHEAD;
}
