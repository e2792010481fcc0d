// Loads the wasm dataplane core and gives the shell a typed view of it: configuration, the
// route table, batch entry points, and the memory layout the native addon works on.
// The shell never reads or writes packet bytes; it only moves numbers in and out.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../paths.js';
import { PACKET_VERDICTS, DIRECTIONS, type PacketVerdictName, type Direction } from './verdicts.js';
import { LAYOUT, ENUMS, PeerCounter, type Layout } from './abi.js';
import type { IPv4Net } from '../net.js';
import type { PeerRoute } from '../peer-route.js';

export type Mode = 'udp' | 'vxlan' | 'wireguard';

interface CoreExports {
  memory: WebAssembly.Memory;
  init(mode: number, vnetHdr: number): number;
  configure(port: number, mtu: number, local: number, localLen: number, cluster: number, clusterLen: number,
    vni: number, macHi: number, macLo: number, seed: number): void;
  egress(n: number, nowMs: number): void;
  ingress(n: number, nowMs: number, first: number): number;
  setIngressMerge(on: number): void;
  setIngressUdpMerge(on: number): void;
  sendCount(): number;
  tunWriteCount(): number;
  egressReadCapacity(): number;
  ingressReadCapacity(): number;
  counterAddr(dir: number, verdict: number): number;
  routeCounterAddr(index: number): number;
  routeSet(net: number, len: number, publicIP: number, macHi: number, macLo: number): number;
  routeRemove(net: number, len: number): number;
  routeFind(net: number, len: number): number;
  routeLookup(addr: number): number;
  routesCount(): number;
  checksum(p: number, len: number): number;
}

export type { Layout } from './abi.js';

/**
 * Throws unless the instance's exported globals are the values src/dataplane/abi.ts was generated
 * with: the shell's view of the layout and the module must come from the same build.
 */
function checkCoreLayout(exports: WebAssembly.Exports): void {
  const rebuild = 'run "npm run build"';
  const want: [string, number][] = [
    ...Object.entries(LAYOUT),
    ...Object.entries(ENUMS).flatMap(([e, members]) => Object.entries(members).map(([m, v]): [string, number] => [`${e}.${m}`, v])),
  ];
  for (const [name, value] of want) {
    const g = exports[name];
    if (!(g instanceof WebAssembly.Global)) throw new Error(`linen: the wasm core lacks export ${name}; ${rebuild}`);
    if (Number(g.value) !== value) {
      throw new Error(`linen: the wasm core has ${name} = ${Number(g.value)}, src/dataplane/abi.ts says ${value}; ${rebuild}`);
    }
  }
}

export interface CoreOptions {
  mode: Mode;
  /** The TUN was opened with IFF_VNET_HDR: reads and writes carry a virtio_net_hdr. */
  vnetHdr?: boolean;
  /** The TUN takes UDP GSO (USO) writes (TUN_F_USO4 was accepted, Linux 6.2+): ingress merges
   * equal datagrams of one flow into one write. Needs vnetHdr. */
  udpMerge?: boolean;
  /** UDP port every node listens on and sends to (8285 udp, 8472 vxlan). */
  port: number;
  /** Largest inner IPv4 packet the tunnel carries (the TUN MTU). */
  mtu: number;
  /** Own subnet: its network address is the source of ICMP errors, and ingress delivers only
   * inside it. */
  subnet: IPv4Net;
  /** The cluster network: ICMP errors go only to sources inside it. Default: anywhere (tests
   * and benches); the engines always pass flannel's Network. */
  network?: IPv4Net;
  vni?: number;
  /** Own VTEP MAC, 6 bytes. */
  mac?: Uint8Array;
  /** Seed for VXLAN flow hashing; random by default. */
  seed?: number;
  /** Use the unoptimised debug build. */
  debug?: boolean;
}

export interface PeerCounters { txPackets: bigint; txBytes: bigint; rxPackets: bigint; rxBytes: bigint }
export type CounterSnapshot = Record<Direction, Record<PacketVerdictName, { packets: bigint; bytes: bigint }>>;

const compiled: Map<string, WebAssembly.Module> = new Map();

export function wasmPath(debug = false): string {
  return join(repoRoot(), 'dist', 'wasm', debug ? 'linen.debug.wasm' : 'linen.wasm');
}

function compile(debug: boolean): WebAssembly.Module {
  const path = wasmPath(debug);
  let mod = compiled.get(path);
  if (!mod) {
    if (!existsSync(path)) throw new Error(`linen: ${path} is missing; run "npm run build"`);
    mod = new WebAssembly.Module(readFileSync(path));
    compiled.set(path, mod);
  }
  return mod;
}

export function macWords(mac: Uint8Array): [number, number] {
  if (mac.length !== 6) throw new Error('MAC must be 6 bytes');
  return [(mac[0] << 8) | mac[1], ((mac[2] << 24) | (mac[3] << 16) | (mac[4] << 8) | mac[5]) >>> 0];
}

/** One instance of the dataplane core: its own memory, tables and counters. */
export class Core {
  readonly exports: CoreExports;
  readonly memory: WebAssembly.Memory;
  readonly layout: Layout;
  readonly mode: Mode;
  readonly vnetHdr: boolean;
  private view: DataView;

  constructor(opts: CoreOptions) {
    const instance = new WebAssembly.Instance(compile(opts.debug ?? false), {});
    this.exports = instance.exports as unknown as CoreExports;
    this.memory = this.exports.memory;
    checkCoreLayout(instance.exports);
    this.layout = LAYOUT;
    this.mode = opts.mode;
    this.vnetHdr = opts.vnetHdr ?? false;
    const modeNo = opts.mode === 'vxlan' ? this.layout.MODE_VXLAN
      : opts.mode === 'wireguard' ? this.layout.MODE_WIREGUARD : this.layout.MODE_UDP;
    if (this.exports.init(modeNo, this.vnetHdr ? 1 : 0) !== 0) {
      throw new Error('linen: wasm memory is smaller than the core layout');
    }
    const [hi, lo] = macWords(opts.mac ?? new Uint8Array(6));
    const seed = opts.seed ?? (Math.random() * 0x100000000) >>> 0;
    const { subnet } = opts;
    const network = opts.network ?? { ip: 0, prefixLen: 0 };
    for (const len of [subnet.prefixLen, network.prefixLen]) {
      if (!Number.isInteger(len) || len < 0 || len > 32) throw new Error(`linen: bad prefix length ${len}`);
    }
    this.exports.configure(opts.port, opts.mtu, subnet.ip >>> 0, subnet.prefixLen, network.ip >>> 0, network.prefixLen,
      opts.vni ?? 1, hi, lo, seed);
    this.exports.setIngressUdpMerge(opts.udpMerge ? 1 : 0);
    this.view = new DataView(this.memory.buffer);
  }

  // The one place a route crosses into the core: its entry holds the subnet as two u32 fields.

  /** Adds or replaces the route to route.subnet (its host bits masked) via route.publicIP. */
  setRoute({ subnet, publicIP, mac }: PeerRoute): number {
    const [hi, lo] = macWords(mac ?? new Uint8Array(6));
    const idx = this.exports.routeSet(subnet.ip >>> 0, subnet.prefixLen, publicIP >>> 0, hi, lo);
    if (idx === -1) throw new Error(`route table full (${this.layout.MAX_ROUTES} routes)`);
    if (idx < 0) throw new Error(`bad prefix length ${subnet.prefixLen}`);
    return idx;
  }

  removeRoute(subnet: IPv4Net): boolean {
    return this.exports.routeRemove(subnet.ip >>> 0, subnet.prefixLen) !== 0;
  }

  get routeCount(): number { return this.exports.routesCount(); }

  peerCounters(subnet: IPv4Net): PeerCounters | undefined {
    const idx = this.exports.routeFind(subnet.ip >>> 0, subnet.prefixLen);
    if (idx < 0) return undefined;
    const p = this.exports.routeCounterAddr(idx);
    const word = (k: number): bigint => this.view.getBigUint64(p + k * 8, true);
    return {
      txPackets: word(PeerCounter.TxPackets), txBytes: word(PeerCounter.TxBytes),
      rxPackets: word(PeerCounter.RxPackets), rxBytes: word(PeerCounter.RxBytes),
    };
  }

  counters(): CounterSnapshot {
    const out = {} as CounterSnapshot;
    DIRECTIONS.forEach((dir, d) => {
      const byVerdict = {} as Record<PacketVerdictName, { packets: bigint; bytes: bigint }>;
      PACKET_VERDICTS.forEach((name, v) => {
        const p = this.exports.counterAddr(d, v);
        byVerdict[name] = { packets: this.view.getBigUint64(p, true), bytes: this.view.getBigUint64(p + 8, true) };
      });
      out[dir] = byVerdict;
    });
    return out;
  }

  egress(n: number, nowMs: number): void { this.exports.egress(n, nowMs >>> 0); }
  /** Processes received datagrams [first, n); returns where to resume after flushing the outputs. */
  ingress(n: number, nowMs: number, first = 0): number { return this.exports.ingress(n, nowMs >>> 0, first); }
  get sendCount(): number { return this.exports.sendCount(); }
  get tunWriteCount(): number { return this.exports.tunWriteCount(); }
}
