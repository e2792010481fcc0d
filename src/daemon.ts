// linend's start-up and shutdown, in flanneld's order (flannel-compat.md §8): health server,
// network config, external interface, backend (device + lease), traffic rules, subnet.env,
// data path, then peers; SIGTERM/SIGINT stop it cleanly and keep the lease.
import type { Logger } from './log.js';
import { createBackend, randomVtepMAC, type Backend } from './backend/index.js';
import { startDataplane } from './dataplane/index.js';
import type { Engine, PeerRoute } from './dataplane/engine.js';
import { selectInterface, type ExternalInterface } from './device/iface.js';
import { startHealthServer, type HealthServer, type Metric } from './health.js';
import { formatCIDR, formatIPv4, formatMAC, parseIPv4, type IPv4Net } from './net.js';
import type { NetworkConfig } from './config.js';
import { loadStaticSetup } from './static.js';

export interface DaemonOptions {
  staticPeers: string;
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach: string;
  publicIp: string;
  subnetFile: string;
  healthzIp: string;
  healthzPort: number;
  engine: 'native' | 'dgram';
  queues: number;
  offload: 'auto' | 'on' | 'off';
}

/** What a running daemon holds; stop() undoes it. */
export interface Running {
  stop(): Promise<void>;
}

export interface ControlPlane {
  /** Peer routes as the control plane sees them; the daemon applies diffs to the engine. */
  start(apply: (set: PeerRoute[], removed: IPv4Net[]) => void): Promise<void>;
  stop(): Promise<void>;
  metrics(): Metric[];
}

export interface NodeSetup {
  config: NetworkConfig;
  backend: Backend;
  ext: ExternalInterface;
  publicIp: number;
  subnet: IPv4Net;
  mac: Uint8Array;
  mtu: number;
}

export function resolveInterface(o: DaemonOptions, log: Logger): { ext: ExternalInterface; publicIp: number } {
  const ext = selectInterface({ iface: o.iface, ifaceRegex: o.ifaceRegex, ifaceCanReach: o.ifaceCanReach, publicIp: o.publicIp });
  const publicIp = o.publicIp ? parseIPv4(o.publicIp) : parseIPv4(ext.addr);
  if (publicIp === null) throw new Error(`--public-ip ${o.publicIp} is not an IPv4 address`);
  log.info(`Using interface with name ${ext.name} and address ${ext.addr}`);
  log.info(`Using ${formatIPv4(publicIp)} as external address`);
  return { ext, publicIp };
}

/** Starts the data path for a node whose subnet is known, and keeps its routes. */
export async function runDataplane(o: DaemonOptions, node: NodeSetup, log: Logger, health: HealthServer | null): Promise<Engine> {
  const { engine, features } = await startDataplane({
    backend: node.backend, engine: o.engine, queues: o.queues, offload: o.offload, bindAddr: node.ext.addr,
    mtu: node.mtu, network: node.config.network, subnet: node.subnet, mac: node.mac,
    events: { workerRestart: (i, why) => log.warn(`data-plane worker ${i} died (${why}); restarted`) },
  });
  log.info(`Data path up: ${o.engine} engine on ${node.backend.deviceName}, MTU ${node.mtu}, ${o.queues} queue(s), ` +
    `vnet_hdr=${features.vnetHdr} tun_offload=0x${features.tunOffload.toString(16)} udp_gso=${features.udpGso} udp_gro=${features.udpGro}`);
  void health;
  return engine;
}

/** Static mode: no etcd; the subnet and peers come from --static-peers. */
export async function runStatic(o: DaemonOptions, log: Logger): Promise<Running> {
  const setup = loadStaticSetup(o.staticPeers);
  const backend = createBackend(setup.config.backend);
  const { ext, publicIp } = resolveInterface(o, log);
  const mac = setup.mac ?? randomVtepMAC();
  const node: NodeSetup = { config: setup.config, backend, ext, publicIp, subnet: setup.subnet, mac, mtu: backend.mtu(ext.mtu) };
  let engine: Engine | null = null;
  const health = o.healthzPort > 0
    ? await startHealthServer(o.healthzIp, o.healthzPort, { engine: () => engine?.stats() ?? null, extra: () => [] })
    : null;
  engine = await runDataplane(o, node, log, health);
  for (const p of setup.peers) {
    engine.setRoute({ net: p.subnet.ip, len: p.subnet.prefixLen, publicIp: p.publicIp, mac: p.mac ?? undefined });
  }
  log.info(`Static peers: ${setup.peers.map((p) => `${formatCIDR(p.subnet)} via ${formatIPv4(p.publicIp)}`).join(', ') || 'none'}; ` +
    `own subnet ${formatCIDR(setup.subnet)}${backend.mode === 'vxlan' ? `, VtepMAC ${formatMAC(mac)}` : ''}`);
  health?.setReady(true);
  const running = engine;
  return {
    async stop() {
      await running.stop();
      await health?.close();
    },
  };
}
