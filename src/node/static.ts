// Static peers: run the data plane without etcd, from one JSON file, so hosts can be wired by
// hand. The file holds flannel's network config plus this node's subnet and its peers:
//
//   { "Network": "10.5.0.0/16", "Backend": { "Type": "vxlan" },
//     "Subnet": "10.5.1.0/24", "VtepMAC": "0a:58:0a:05:01:00",
//     "Peers": [ { "Subnet": "10.5.2.0/24", "PublicIP": "192.168.7.2", "VtepMAC": "0a:58:0a:05:02:00" } ] }
//
// VtepMAC is needed in VXLAN mode only (for this node: random when absent).
import { readFileSync } from 'node:fs';
import { parseNetworkConfig, type NetworkConfig } from '../config/network.js';
import { DEFAULT_JSON_LIMITS } from '../config/gojson.js';
import { formatCIDR, netContains, parseCIDR, parseIPv4, parseMAC, type IPv4Net } from '../net.js';
import type { PeerRoute } from '../peer-route.js';
import { decodeWireguardBackendData } from '../subnet/lease.js';

/** The peers are routes as the backends would make them from leases. */
export interface StaticSetup { config: NetworkConfig; subnet: IPv4Net; mac: Uint8Array | null; peers: PeerRoute[] }

function field(obj: Record<string, unknown>, name: string): unknown {
  const key = Object.keys(obj).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : obj[key];
}

export function parseStaticSetup(text: string, where = 'static peers'): StaticSetup {
  let raw: unknown;
  try { raw = JSON.parse(text); } catch (e) { throw new Error(`${where}: not JSON: ${(e as Error).message}`); }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`${where}: expected a JSON object`);
  const obj = raw as Record<string, unknown>;
  let config: NetworkConfig;
  // The operator's own file, with every peer in it: no bound on its length beyond the depth.
  try { config = parseNetworkConfig(text, { otherFields: ['Subnet', 'VtepMAC', 'Peers'], limits: { ...DEFAULT_JSON_LIMITS, maxLength: Infinity } }); } catch (e) { throw new Error(`${where}: ${(e as Error).message}`); }
  const cidr = (v: unknown, name: string): IPv4Net => {
    const n = typeof v === 'string' ? parseCIDR(v) : null;
    if (!n) throw new Error(`${where}: ${name} must be a CIDR string, got ${JSON.stringify(v)}`);
    if (!netContains(config.network, n.ip) || n.prefixLen < config.network.prefixLen) {
      throw new Error(`${where}: ${name} ${formatCIDR(n)} is not inside Network ${formatCIDR(config.network)}`);
    }
    return n;
  };
  const macOf = (v: unknown, name: string): Uint8Array | null => {
    if (v === undefined || v === null) return null;
    const m = typeof v === 'string' ? parseMAC(v) : null;
    if (!m || m.length !== 6) throw new Error(`${where}: ${name} is not a MAC address: ${JSON.stringify(v)}`);
    return m;
  };
  const subnet = cidr(field(obj, 'Subnet'), 'Subnet');
  const peersRaw = field(obj, 'Peers') ?? [];
  if (!Array.isArray(peersRaw)) throw new Error(`${where}: Peers must be an array`);
  const peers = peersRaw.map((p, i): PeerRoute => {
    if (typeof p !== 'object' || p === null) throw new Error(`${where}: Peers[${i}] must be an object`);
    const po = p as Record<string, unknown>;
    const pub = field(po, 'PublicIP');
    const publicIP = typeof pub === 'string' ? parseIPv4(pub) : null;
    if (publicIP === null) throw new Error(`${where}: Peers[${i}].PublicIP must be an IPv4 address, got ${JSON.stringify(pub)}`);
    const mac = macOf(field(po, 'VtepMAC'), `Peers[${i}].VtepMAC`);
    if (config.backend.type === 'vxlan' && !mac) throw new Error(`${where}: Peers[${i}].VtepMAC is required with the vxlan backend`);
    const route: PeerRoute = { subnet: cidr(field(po, 'Subnet'), `Peers[${i}].Subnet`), publicIP, mac: mac ?? undefined };
    if (config.backend.type === 'wireguard') {
      // The peer as its lease would give it: BackendData's PublicKey and Port.
      const d = decodeWireguardBackendData(JSON.stringify({ PublicKey: field(po, 'PublicKey'), Port: field(po, 'Port') ?? 0 }));
      if (!d.ok) throw new Error(`${where}: Peers[${i}]: ${d.error} (the wireguard backend needs each peer's PublicKey and Port)`);
      route.wireguard = { publicKey: d.value.publicKey, port: d.value.port || config.backend.listenPort };
    }
    return route;
  });
  return { config, subnet, mac: macOf(field(obj, 'VtepMAC'), 'VtepMAC'), peers };
}

export function loadStaticSetup(path: string): StaticSetup {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw new Error(`--static-peers ${path}: ${(e as Error).message}`); }
  return parseStaticSetup(text, path);
}
