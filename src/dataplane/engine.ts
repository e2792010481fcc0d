// The data plane as the rest of the shell sees it: start it on a TUN device, keep its routes in
// step with the peers, read its counters, stop it. Two engines implement it: the native one
// (batched, zero-copy, one worker thread per queue) and the dgram baseline (one packet per call);
// both run the same core and worker loop (loop.ts) on different I/O.
import type { CounterSnapshot, Mode, PeerCounters } from './core.js';
import type { IPv4Net } from '../net.js';
import type { PeerRoute } from '../peer-route.js';

/** Which engine moves the packets (--engine): the batched native one, or the dgram baseline. */
export type EngineName = 'native' | 'dgram';
/** TUN offloads and UDP GSO/GRO (--offload): 'auto' uses what the kernel supports. */
export type OffloadSetting = 'auto' | 'on' | 'off';

/** WireGuard mode: what its stage (src/wireguard/) reports to the main thread. */
export interface WireguardReport {
  /** This node's public key (base64) and the port it listens on: `wg show`'s interface lines. */
  publicKey: string;
  listenPort: number;
  peers: WireguardPeerReport[];
  /** The control path's event counters, by event name. */
  events: Record<string, number>;
}

export interface WireguardPeerReport {
  publicKey: string;
  endpoint: string;
  /** The peer's allowed IPs as text (its lease's subnet). */
  allowedIps: string;
  /** The core's index of the peer's route. */
  route: number;
  /** Wall clock of the last completed handshake; 0: none yet. */
  lastHandshakeMs: number;
  sessionIndex: number;
  /** Bytes of the WireGuard messages received from and sent to the peer, as `wg show`'s
   * transfer counts them: transport messages whole (keepalives too), handshake initiations and
   * responses; not cookie replies. */
  rxBytes: number;
  txBytes: number;
}

export interface EngineOptions {
  mode: Mode;
  /** TUN device name, e.g. flannel0 or flannel.1. */
  device: string;
  /** Local address the UDP socket binds to (flanneld binds the interface address). */
  bindAddr: string;
  /** Port every node listens on and sends to. */
  port: number;
  /** Largest inner packet (the TUN MTU). */
  mtu: number;
  /** Own subnet: its network address is the TUN address and ICMP source; ingress delivers
   * only inside it. */
  subnet: IPv4Net;
  /** flannel's Network: ICMP errors go only to sources inside it. */
  network: IPv4Net;
  vni: number;
  /** Own VTEP MAC (VXLAN). */
  mac: Uint8Array;
  /** Worker threads, one TUN queue each (native engine). */
  queues: number;
  offload: OffloadSetting;
  /** WireGuard mode: this node's keys and keepalive. */
  wireguard?: WireguardEngineOptions;
}

export interface WireguardEngineOptions {
  /** URL of the module that makes WireGuard's stage in a worker (it exports startStage, see
   * addon-io.ts): the data plane loads it by this name, as it imports nothing from WireGuard's
   * modules, which import from it. */
  stageModule: string;
  privateKey: Uint8Array;
  /** 32 zero bytes when the config has no PSK. */
  presharedKey: Uint8Array;
  /** Seconds; 0 for none. */
  persistentKeepalive: number;
}

/** A peer route and the per-peer stats slot the peer set gave it (-1: not counted per peer). */
export interface SlottedRoute {
  readonly route: PeerRoute;
  readonly slot: number;
}

/** Where an engine reads its routes back (the peer set): to fill a (re)started worker's core,
 * and to name its per-peer counters. An engine keeps no route map of its own. */
export interface RouteSource {
  routes(): Iterable<SlottedRoute>;
}

/** I/O counters an engine keeps beside the core's verdict counters. */
export const IO_STATS = [
  'send_errors',      // sends the kernel refused (a datagram or a UDP_SEGMENT burst each)
  'tun_write_errors', // TUN writes refused (a packet or a merged super-packet each)
  'tun_reads',        // packets (or super-packets) read from the TUN
  'tun_writes',       // writes to the TUN (a merged super-packet is one)
  'udp_sends',        // datagrams or UDP_SEGMENT bursts handed to the kernel
  'udp_receives',     // receives from the socket (a GRO batch is one)
  'wakeups',          // wake-ups of a worker loop (poll() returning; the dgram engine's events)
  'heartbeat_ms',     // wall clock of the last publish
] as const;
export type IoStat = (typeof IO_STATS)[number];

/** One peer route's traffic: egress (tx) towards the peer, ingress (rx) from it. */
export interface PeerTraffic extends PeerCounters {
  subnet: IPv4Net;
}

export interface EngineStats {
  counters: CounterSnapshot;
  /** Per peer route, for the first PEER_SLOTS routes (see protocol.ts). */
  peers: PeerTraffic[];
  io: Record<IoStat, bigint>;
  /** Workers running (started and not dead); fewer than the queues while one is restarting. */
  workers: number;
  workerRestarts: number;
}

/** What the engine found the kernel supports, for logs and metrics. */
export interface EngineFeatures {
  vnetHdr: boolean;
  tunOffload: number;
  udpGso: boolean;
  udpGro: boolean;
  multiQueue: boolean;
}

export interface Engine {
  readonly name: EngineName;
  /** Most peer routes the core holds (its MAX_ROUTES): the peer set never pushes more. */
  readonly routeCapacity: number;
  /** Per-peer stats slots, numbered from 0; a route without one is forwarded but not counted. */
  readonly peerSlots: number;
  start(): Promise<EngineFeatures>;
  /** Adds the route, or replaces the one for the same network. */
  setRoute(r: SlottedRoute): void;
  removeRoute(r: SlottedRoute): void;
  stats(): EngineStats;
  /** WireGuard mode: peers and control-path counters as of the last refresh(); null otherwise. */
  wireguard?(): WireguardReport | null;
  /** Brings stats() up to the packets handled so far (workers publish on request). */
  refresh(): Promise<void>;
  stop(): Promise<void>;
}

export type EngineEvents = {
  /** A worker died and is being restarted (message says why). */
  workerRestart?: (index: number, reason: string) => void;
  /** A restarted worker is running again (the TUN may have been re-created with it). */
  workerRestarted?: (index: number) => void;
  /** A worker failed before it was ready; it is started again after retryMs. */
  workerStartFailed?: (index: number, reason: string, retryMs: number) => void;
  /** A worker could not apply a control message (a route change); it keeps running. */
  workerError?: (index: number, reason: string) => void;
};
