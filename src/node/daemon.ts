// linend's start-up and shutdown, in flanneld's order (docs/flanneld-compat.md, "Command line and lifecycle"): health server,
// network config, external interface, backend (lease), peer set, data path and device (none
// for host-gw), traffic rules, subnet.env, then peers; SIGTERM/SIGINT stop it cleanly and keep
// the lease.
import type { Logger } from '../log.js';
import type { Options } from './flags.js';
import { createBackend, randomVtepMAC, type Backend, type OverlayBackend } from '../backend/index.js';
import { startDataplane } from '../dataplane/index.js';
import type { Engine } from '../dataplane/engine.js';
import type { ExternalInterface } from '../device/iface.js';
import { startHttpServers, type HttpEndpoints } from './http.js';
import type { Metric } from '../metric.js';
import { formatCIDR, formatIPv4, formatMAC, type IPv4Net } from '../net.js';
import type { NetworkConfig } from '../config/network.js';
import { loadStaticSetup } from './static.js';
import { LeaseManager, fetchNetworkConfig, type AcquiredLease } from '../subnet/manager.js';
import { LeaseWatcher } from '../subnet/watcher.js';
import { readSubnetEnv, StartupSubnetEnv, type PreviousSubnetEnv } from '../config/subnetenv.js';
import { installTrafficRules, type TrafficRules } from '../device/rules.js';
import { addBlackholeRoute } from '../device/tun.js';
import { leftoverVtepMAC, takeOverDevice } from '../device/takeover.js';
import { KernelRoutes } from '../device/routes.js';
import { notifyReady } from './systemd.js';
import { controlPlaneMetrics } from '../metrics/control-plane.js';
import { wireguardMetrics } from '../wireguard/metrics.js';
import { PeerSet, type PeerSetOptions } from '../peers/peer-set.js';
import { checkSubnetFile, previousVtepMAC, resolveInterface } from './setup.js';
import { debugHooks, debugLeaseTiming, debugNativeEngine } from './debug.js';
import { Readiness } from './readiness.js';
import { loadWithoutOptimizer } from './heap-limits.js';

export interface NodeSetup {
  config: NetworkConfig;
  backend: Backend;
  ext: ExternalInterface;
  publicIP: number;
  subnet: IPv4Net;
  mac: Uint8Array;
  mtu: number;
}

/** The wireguard backend's series, once its worker reported (none for the other backends). */
export function wireguardSeries(engine: Engine | null): Metric[] {
  const report = engine?.wireguard?.() ?? null;
  return report ? wireguardMetrics(report) : [];
}

async function dataplaneFor(o: Options, node: NodeSetup, peers: PeerSet, ready: Readiness, log: Logger): Promise<Engine | null> {
  const backend = node.backend;
  if (backend.mode === null) {
    log.info(`${backend.type}: no overlay device and no data plane; the kernel forwards along routes via the peers' PublicIPs on ${node.ext.name} (MTU ${node.mtu})`);
    return null;
  }
  return startEngine(o, node, backend, peers, ready, log);
}

async function startEngine(o: Options, node: NodeSetup, backend: OverlayBackend, peers: PeerSet, ready: Readiness, log: Logger): Promise<Engine> {
  takeOverDevice(backend.deviceName, log); // flanneld's leftover flannel.<VNI> / flannel0
  const { engine, features } = await startDataplane({
    backend, engine: o.engine, queues: o.queues, offload: o.offload, bindAddr: node.ext.addr,
    mtu: node.mtu, network: node.config.network, subnet: node.subnet, mac: node.mac, routes: peers, events: ready.events,
    nativeEngine: debugNativeEngine(),
  });
  peers.attach(engine);
  log.info(`Data path up: ${o.engine} engine on ${backend.deviceName} (MTU ${node.mtu}, ${o.queues} queue(s), ` +
    `vnet_hdr=${features.vnetHdr}, tun offload 0x${features.tunOffload.toString(16)}, udp gso=${features.udpGso} gro=${features.udpGro})`);
  return engine;
}

/**
 * The kernel route manager for a backend that routes peers directly (host-gw, DirectRouting),
 * else null. host-gw, as flanneld, refuses a PublicIP other than the interface's (NAT).
 */
export function directRoutesFor(backend: Backend, ext: ExternalInterface, publicIP: number, log: Logger): KernelRoutes | null {
  if (backend.type === 'host-gw' && formatIPv4(publicIP) !== ext.addr) {
    throw new Error(`your PublicIP ${formatIPv4(publicIP)} differs from the interface IP ${ext.addr}, meaning that probably you're on a NAT, which is not supported by the host-gw backend`);
  }
  if (backend.direct === 'never') return null;
  log.info(`Direct routing: peers on a directly connected network of ${ext.name} are routed via their PublicIP${backend.direct === 'only' ? '; others are refused' : '; others go through the data plane'}`);
  return new KernelRoutes({ dev: ext.name, log: log.child('routes') });
}

/**
 * What a node runs once it holds its subnet, in start-up order: the peer set, the data path (or
 * none, host-gw) and direct kernel routes, the traffic rules, the blackhole route and
 * subnet.env. Each part is kept as soon as it runs, so that stop() after a failure part-way
 * undoes what did start. etcd mode and kube mode run start(); static mode runs the data path
 * and subnet.env alone.
 */
export class NodeParts {
  peers: PeerSet | null = null;
  engine: Engine | null = null;
  /** Set by the caller before start() (directRoutesFor), as its metrics are served early. */
  kernel: KernelRoutes | null = null;
  rules: TrafficRules | null = null;
  private removeBlackhole: (() => void) | null = null;
  private envFile: StartupSubnetEnv | null = null;

  /** The node's data path, rules and subnet.env; null when a stop came before subnet.env was written. */
  async start(o: Options, node: NodeSetup, previous: PreviousSubnetEnv | null, ready: Readiness, log: Logger, signal: AbortSignal): Promise<PeerSet | null> {
    const peerSet = await this.startDataPath(o, node, { self: node.publicIP, underlay: node.ext.networks }, ready, log);
    this.rules = await installTrafficRules(o, node.config.network, node.subnet, previous, log);
    if (o.ipBlackholeRoute) this.removeBlackhole = addBlackholeRoute(node.subnet);
    if (!(await this.writeSubnetEnv(o, node, signal))) return null;
    log.info(`Wrote subnet file to ${o.subnetFile}`);
    return peerSet;
  }

  /**
   * The peer set, the data path (or none, host-gw) and the direct kernel routes. `checks`: the
   * addresses no peer may use (static mode passes none: its peers are the operator's own list).
   */
  async startDataPath(o: Options, node: NodeSetup, checks: Pick<PeerSetOptions, 'self' | 'underlay'>, ready: Readiness, log: Logger): Promise<PeerSet> {
    const kernel = this.kernel;
    const peerSet = (this.peers = new PeerSet({ backend: node.backend, config: node.config, ownSubnet: node.subnet, ...checks, log, ...(kernel ? { kernel } : {}) }));
    this.engine = await dataplaneFor(o, node, peerSet, ready, log);
    kernel?.start();
    return peerSet;
  }

  /** Writes subnet.env, removed again by stop() until started(); false when a stop came first. */
  async writeSubnetEnv(o: Options, node: NodeSetup, signal: AbortSignal): Promise<boolean> {
    this.envFile = new StartupSubnetEnv(o.subnetFile);
    return this.envFile.write({ network: node.config.network, subnet: node.subnet, mtu: node.mtu, ipMasq: o.ipMasq }, signal);
  }

  /** Start-up is over: from now on a stop keeps subnet.env, as flanneld does. */
  started(): void {
    this.envFile?.started();
  }

  async stop(log: Logger): Promise<void> {
    const envFile = this.envFile;
    if (envFile !== null && (await envFile.abandon())) log.info(`Start-up interrupted: removed ${envFile.path}`);
    this.kernel?.stop();
    await this.engine?.stop();
    await this.rules?.remove();
    this.removeBlackhole?.();
  }
}

/** The HTTP servers' addresses from the flags. */
export const httpEndpoints = (o: Options): HttpEndpoints => ({ healthzIP: o.healthzIP, healthzPort: o.healthzPort, metricsIP: o.metricsIP, metricsPort: o.metricsPort, peerMetricsLimit: o.peerMetricsLimit });

/** Waits for SIGTERM or SIGINT (or an abort from inside), then resolves. */
export function shutdownSignal(log: Logger): AbortController {
  const ac = new AbortController();
  const on = (sig: string) => () => {
    if (ac.signal.aborted) return;
    log.info(`Received ${sig}, shutting down`);
    ac.abort();
  };
  process.once('SIGTERM', on('SIGTERM'));
  process.once('SIGINT', on('SIGINT'));
  return ac;
}

/**
 * Resolves when linend is told to stop. A pending promise does not keep Node running: with no
 * data plane (host-gw) and no HTTP server nothing else would, and linend ended seconds after start.
 * So a referenced timer holds the process until the signal.
 */
export const aborted = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const hold = setInterval(() => {}, 2 ** 30);
    signal.addEventListener('abort', () => { clearInterval(hold); resolve(); }, { once: true });
  });

/** Static mode: no etcd; the subnet and peers come from --static-peers. */
export async function runStatic(o: Options, log: Logger, signal: AbortSignal): Promise<number> {
  const setup = loadStaticSetup(o.staticPeers);
  for (const w of setup.config.warnings) log.warn(`${o.staticPeers}: ${w}`);
  checkSubnetFile(o.subnetFile);
  const backend = await createBackend(setup.config.backend);
  const { ext, publicIP } = resolveInterface(o, log);
  const mac = setup.mac ?? randomVtepMAC();
  const node: NodeSetup = { config: setup.config, backend, ext, publicIP, subnet: setup.subnet, mac, mtu: backend.mtu(ext.mtu) };
  const ready = new Readiness(log);
  const parts = new NodeParts();
  parts.kernel = directRoutesFor(backend, ext, publicIP, log);
  const metrics = (): Metric[] => [...ready.metrics(), ...(parts.kernel?.metrics() ?? []), ...(parts.peers?.metrics() ?? []), ...wireguardSeries(parts.engine)];
  const health = await startHttpServers(httpEndpoints(o), { engine: () => parts.engine?.stats() ?? null, refresh: async () => parts.engine?.refresh(), extra: metrics }, debugHooks(() => parts.engine));
  ready.report(health);
  try {
    const peers = await parts.startDataPath(o, node, { self: null }, ready, log);
    await peers.setStatic(setup.peers);
    if (!(await parts.writeSubnetEnv(o, node, signal))) return 0;
    log.info(`Static peers: ${setup.peers.map((p) => `${formatCIDR(p.subnet)} via ${formatIPv4(p.publicIP)}`).join(', ') || 'none'}; ` +
      `own subnet ${formatCIDR(setup.subnet)}${backend.mode === 'vxlan' ? `, VtepMAC ${formatMAC(mac)}` : ''}`);
    parts.started();
    ready.up();
    notifyReady(log);
    await aborted(signal);
    return 0;
  } finally {
    await parts.stop(log);
    await health?.close();
  }
}

/** etcd mode: flanneld's job, with linen's data path. */
export async function runEtcd(o: Options, log: Logger, signal: AbortSignal): Promise<number> {
  checkSubnetFile(o.subnetFile);
  // Loaded here, not at the top: static mode never loads the etcd client (etcd3, gRPC, protobuf).
  const { EtcdRegistry } = await loadWithoutOptimizer(() => import('../subnet/etcd.js'));
  const registry = new EtcdRegistry({
    endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, keyFile: o.etcdKeyfile, certFile: o.etcdCertfile,
    caFile: o.etcdCAFile, username: o.etcdUsername, password: o.etcdPassword, log: log.child('etcd'),
  });
  const parts = new NodeParts();
  let lease: AcquiredLease | null = null;
  let leaseManager: LeaseManager | null = null;
  const ready = new Readiness(log);
  const metrics = (): Metric[] => {
    const out: Metric[] = [
      { name: 'linen_etcd_connected', help: 'Whether linend is connected to etcd.', type: 'gauge', value: registry.connection().state === 'connected' ? 1 : 0 },
      ...(parts.peers?.metrics() ?? []),
      ...(parts.kernel?.metrics() ?? []),
      ...ready.metrics(),
      ...controlPlaneMetrics({ etcd: registry, lease: leaseManager, rules: parts.rules }),
      ...wireguardSeries(parts.engine),
    ];
    if (lease?.expiration) {
      out.push({ name: 'linen_lease_expiration_timestamp_seconds', help: 'When the own subnet lease expires unless renewed.', type: 'gauge', value: Math.floor(lease.expiration / 1000) });
    }
    return out;
  };
  const health = await startHttpServers(httpEndpoints(o), { engine: () => parts.engine?.stats() ?? null, refresh: async () => parts.engine?.refresh(), extra: metrics }, debugHooks(() => parts.engine));
  ready.report(health);
  // Once per change of state: the registry also reports a new error while etcd stays away.
  let etcdState = registry.connection().state;
  registry.onConnectionChange((s) => {
    if (s.state === etcdState) return;
    etcdState = s.state;
    if (s.state === 'disconnected') log.warn(`etcd unreachable (${s.lastError ?? 'unknown error'}); ${parts.engine === null ? 'forwarding starts once it answers' : `forwarding continues with the ${parts.peers?.size ?? 0} last known peer(s)`}`);
  });
  try {
    const config = await fetchNetworkConfig(registry, { signal, log });
    const { ext, publicIP } = resolveInterface(o, log);
    const backend = await createBackend(config.backend);
    parts.kernel = directRoutesFor(backend, ext, publicIP, log);
    const mtu = backend.mtu(ext.mtu);
    const previous = readSubnetEnv(o.subnetFile);
    // The lease's VtepMAC is in the peers' FDB; a flanneld device's MAC if the lease is gone (device/takeover.ts).
    const mac = backend.mode === 'vxlan' ? (await previousVtepMAC(registry, publicIP)) ?? leftoverVtepMAC(backend.deviceName) ?? randomVtepMAC() : new Uint8Array(6);
    const manager = new LeaseManager({
      registry, attrs: backend.leaseAttrs(publicIP, mac), previousSubnet: previous?.subnet ?? null,
      renewMarginMs: o.subnetLeaseRenewMargin * 60_000, log: log.child('subnet'), ...debugLeaseTiming(),
      onEvent: (e) => { if (e.type === 'renewed') lease = e.lease; },
    });
    leaseManager = manager;
    lease = await manager.acquire(config, signal);
    const own = lease.subnet;
    log.info(`Acquired lease ${formatCIDR(own)} (${lease.how})`);
    const node: NodeSetup = { config, backend, ext, publicIP, subnet: own, mac, mtu };
    const peerSet = await parts.start(o, node, previous, ready, log, signal);
    if (peerSet === null) return 0;

    const watcher = new LeaseWatcher({ registry, ownSubnet: own, accept: backend.accept, log: log.child('watch') });
    const watching = peerSet.run(watcher, signal);
    await Promise.race([watcher.ready, aborted(signal)]);
    if (!signal.aborted) {
      parts.started();
      ready.up();
      notifyReady(log);
      log.info(`Running: ${watcher.peers().size} peer(s)`);
    }
    // Renew until shutdown; a revoked lease (etcd wiped, key deleted) is taken again.
    while (!signal.aborted) {
      const why = await manager.run(signal);
      if (why !== 'revoked' || signal.aborted) break;
      log.warn(`Lease ${formatCIDR(own)} has been revoked; acquiring it again`);
      const again = await manager.acquire(config, signal);
      if (again.subnet.ip !== own.ip || again.subnet.prefixLen !== own.prefixLen) {
        log.error(`Could only get ${formatCIDR(again.subnet)} instead of ${formatCIDR(own)}; restart linend to use it`);
        return 1;
      }
      lease = again;
    }
    await watching;
    return 0;
  } finally {
    await parts.stop(log);
    await health?.close();
    await registry.close();
  }
}

