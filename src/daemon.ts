// linend's start-up and shutdown, in flanneld's order (flannel-compat.md §8): health server,
// network config, external interface, backend (lease), data path and device, traffic rules,
// subnet.env, then peers; SIGTERM/SIGINT stop it cleanly and keep the lease.
import { accessSync, constants as fsc, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from './log.js';
import type { Options } from './flags.js';
import { createBackend, randomVtepMAC, type Backend } from './backend/index.js';
import { startDataplane } from './dataplane/index.js';
import type { Engine, PeerRoute } from './dataplane/engine.js';
import { selectInterface, type ExternalInterface } from './device/iface.js';
import { startHttpServers, type DebugHandler, type Metric } from './health.js';
import { NativeEngine } from './dataplane/native-engine.js';
import { formatCIDR, formatIPv4, formatMAC, netContains, netOverlaps, parseIPv4, parseMAC, type IPv4Net } from './net.js';
import type { NetworkConfig } from './config.js';
import { loadStaticSetup } from './static.js';
import { EtcdRegistry } from './subnet/etcd.js';
import { LeaseManager, fetchNetworkConfig, type AcquiredLease } from './subnet/manager.js';
import { LeaseWatcher, type Peer, type PeerDiff } from './subnet/watcher.js';
import { decodeVxlanBackendData } from './subnet/lease.js';
import type { Registry } from './subnet/registry.js';
import { readSubnetEnv, writeSubnetEnv } from './subnetenv.js';
import { installTrafficRules, type TrafficRules } from './device/rules.js';
import { addBlackholeRoute } from './device/tun.js';
import { notifyReady } from './systemd.js';
import { controlPlaneMetrics } from './control-metrics.js';

export interface NodeSetup {
  config: NetworkConfig;
  backend: Backend;
  ext: ExternalInterface;
  publicIp: number;
  subnet: IPv4Net;
  mac: Uint8Array;
  mtu: number;
}

export function resolveInterface(o: Options, log: Logger): { ext: ExternalInterface; publicIp: number } {
  const ext = selectInterface({ iface: o.iface, ifaceRegex: o.ifaceRegex, ifaceCanReach: o.ifaceCanReach, publicIp: o.publicIP });
  const publicIp = parseIPv4(o.publicIP || ext.addr);
  if (publicIp === null) throw new Error(`--public-ip ${o.publicIP} is not an IPv4 address`);
  log.info(`Using interface with name ${ext.name} and address ${ext.addr}`);
  log.info(`Using ${formatIPv4(publicIp)} as external address`);
  return { ext, publicIp };
}

async function dataplaneFor(o: Options, node: NodeSetup, log: Logger): Promise<Engine> {
  const { engine, features } = await startDataplane({
    backend: node.backend, engine: o.engine, queues: o.queues, offload: o.offload, bindAddr: node.ext.addr,
    mtu: node.mtu, network: node.config.network, subnet: node.subnet, mac: node.mac,
    events: { workerRestart: (i, why) => log.warn(`data-plane worker ${i} died (${why}); restarted`) },
  });
  log.info(`Data path up: ${o.engine} engine on ${node.backend.deviceName} (MTU ${node.mtu}, ${o.queues} queue(s), ` +
    `vnet_hdr=${features.vnetHdr}, tun offload 0x${features.tunOffload.toString(16)}, udp gso=${features.udpGso} gro=${features.udpGro})`);
  return engine;
}

/**
 * Hooks for the reliability tests, off unless LINEN_DEBUG_HOOKS=1 and answered only to loopback
 * clients: /debug/crash-worker?index=N makes a data-plane worker throw, so the restart path can
 * be tested.
 */
function debugHooks(engine: () => Engine | null): DebugHandler | undefined {
  if (process.env.LINEN_DEBUG_HOOKS !== '1') return undefined;
  return (path, query) => {
    const e = engine();
    if (path === '/debug/crash-worker' && e instanceof NativeEngine) {
      const raw = query.get('index') ?? '0';
      const index = /^\d{1,4}$/.test(raw) ? Number(raw) : -1;
      try {
        if (index < 0) throw new Error(`no worker ${JSON.stringify(raw)}`);
        e.crashWorker(index);
      } catch (err) {
        return { status: 400, body: `${(err as Error).message}\n` };
      }
      return { status: 200, body: 'crashing\n' };
    }
    return null;
  };
}

/** The HTTP servers' addresses from the flags. */
const httpEndpoints = (o: Options) => ({ healthzIP: o.healthzIP, healthzPort: o.healthzPort, metricsIP: o.metricsIP, metricsPort: o.metricsPort, peerMetricsLimit: o.peerMetricsLimit });

/** Test-only lease timing (LINEN_DEBUG_LEASE_TTL_SECONDS, LINEN_DEBUG_RENEW_MARGIN_SECONDS). */
function debugLeaseTiming(): { leaseTTLSeconds?: number; renewMarginMs?: number } {
  const ttl = Number(process.env.LINEN_DEBUG_LEASE_TTL_SECONDS ?? '');
  const margin = Number(process.env.LINEN_DEBUG_RENEW_MARGIN_SECONDS ?? '');
  return {
    ...(ttl > 0 ? { leaseTTLSeconds: ttl } : {}),
    ...(margin > 0 ? { renewMarginMs: margin * 1000 } : {}),
  };
}

/**
 * Refuses a --subnet-file that can never be written (a directory, a parent that is a file,
 * a read-only place) before anything is set up: otherwise linend would lease a subnet, create
 * the device and install the rules, and only then fail.
 */
export function checkSubnetFile(path: string): void {
  const bad = (why: string): never => { throw new Error(`--subnet-file ${path}: ${why}`); };
  try {
    if (statSync(path).isDirectory()) bad('is a directory');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
  }
  // The nearest existing ancestor must be a directory we can write in (it is created from there).
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    let isDir: boolean;
    try {
      isDir = statSync(dir).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && dirname(dir) !== dir) continue;
      return bad(`${dir}: ${(e as Error).message}`);
    }
    if (!isDir) bad(`${dir} is not a directory`);
    try {
      accessSync(dir, fsc.W_OK);
    } catch (e) {
      bad(`cannot write in ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return;
  }
}

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

const aborted = (signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener('abort', () => resolve(), { once: true })));

/** Static mode: no etcd; the subnet and peers come from --static-peers. */
export async function runStatic(o: Options, log: Logger, signal: AbortSignal): Promise<number> {
  const setup = loadStaticSetup(o.staticPeers);
  checkSubnetFile(o.subnetFile);
  const backend = createBackend(setup.config.backend);
  const { ext, publicIp } = resolveInterface(o, log);
  const mac = setup.mac ?? randomVtepMAC();
  const node: NodeSetup = { config: setup.config, backend, ext, publicIp, subnet: setup.subnet, mac, mtu: backend.mtu(ext.mtu) };
  let engine: Engine | null = null;
  const health = await startHttpServers(httpEndpoints(o), { engine: () => engine?.stats() ?? null, refresh: async () => engine?.refresh(), extra: () => [] }, debugHooks(() => engine));
  try {
    engine = await dataplaneFor(o, node, log);
    for (const p of setup.peers) {
      engine.setRoute({ net: p.subnet.ip, len: p.subnet.prefixLen, publicIp: p.publicIp, mac: p.mac ?? undefined });
    }
    await writeSubnetEnv(o.subnetFile, { network: setup.config.network, subnet: setup.subnet, mtu: node.mtu, ipMasq: o.ipMasq });
    log.info(`Static peers: ${setup.peers.map((p) => `${formatCIDR(p.subnet)} via ${formatIPv4(p.publicIp)}`).join(', ') || 'none'}; ` +
      `own subnet ${formatCIDR(setup.subnet)}${backend.mode === 'vxlan' ? `, VtepMAC ${formatMAC(mac)}` : ''}`);
    health?.setReady(true);
    notifyReady(log);
    await aborted(signal);
    return 0;
  } finally {
    await engine?.stop();
    await health?.close();
  }
}

/** The VtepMAC this node published before (same PublicIP), so peers' FDB entries stay valid. */
async function previousVtepMAC(registry: Registry, publicIp: number): Promise<Uint8Array | null> {
  const list = await registry.getLeases();
  for (const l of list.leases) {
    if (l.attrs.publicIP !== publicIp || l.attrs.backendType !== 'vxlan') continue;
    const data = decodeVxlanBackendData(l.attrs.backendData);
    if (data.ok) return parseMAC(data.value.vtepMAC);
  }
  return null;
}

/** etcd mode: flanneld's job, with linen's data path. */
export async function runEtcd(o: Options, log: Logger, signal: AbortSignal): Promise<number> {
  checkSubnetFile(o.subnetFile);
  const registry = new EtcdRegistry({
    endpoints: o.etcdEndpoints, prefix: o.etcdPrefix, keyFile: o.etcdKeyfile, certFile: o.etcdCertfile,
    caFile: o.etcdCAFile, username: o.etcdUsername, password: o.etcdPassword, log: log.child('etcd'),
  });
  let engine: Engine | null = null;
  let watcher: LeaseWatcher | null = null;
  let lease: AcquiredLease | null = null;
  let leaseManager: LeaseManager | null = null;
  let rules: TrafficRules | null = null;
  let removeBlackhole: (() => void) | null = null;
  const peerRoutes: PeerRoutes = { installed: new Map(), overlapping: new Set() };
  const installed = peerRoutes.installed;
  const metrics = (): Metric[] => {
    const out: Metric[] = [
      { name: 'linen_etcd_connected', help: 'Whether linend is connected to etcd.', type: 'gauge', value: registry.connection().state === 'connected' ? 1 : 0 },
      { name: 'linen_peers', help: 'Peers (other nodes\' leases) with a route.', type: 'gauge', value: installed.size },
      ...[...installed.values()].map((r): Metric => ({
        name: 'linen_peer_route', help: 'A route to a peer subnet in the data plane.', type: 'gauge', value: 1, perPeer: true,
        labels: { subnet: `${formatIPv4(r.net)}/${r.len}`, public_ip: formatIPv4(r.publicIp) },
      })),
      ...controlPlaneMetrics({ etcd: registry, lease: leaseManager, rules }),
    ];
    if (lease?.expiration) {
      out.push({ name: 'linen_lease_expiration_timestamp_seconds', help: 'When the own subnet lease expires unless renewed.', type: 'gauge', value: Math.floor(lease.expiration / 1000) });
    }
    return out;
  };
  const health = await startHttpServers(httpEndpoints(o), { engine: () => engine?.stats() ?? null, refresh: async () => engine?.refresh(), extra: metrics }, debugHooks(() => engine));
  registry.onConnectionChange((s) => {
    if (s.state === 'disconnected') log.warn(`etcd unreachable (${s.lastError ?? 'unknown error'}); forwarding continues with the last known peers`);
    else if (s.state === 'connected') log.info('etcd connection established');
  });
  try {
    const config = await fetchNetworkConfig(registry, { signal, log });
    const { ext, publicIp } = resolveInterface(o, log);
    const backend = createBackend(config.backend);
    const mtu = backend.mtu(ext.mtu);
    const previous = readSubnetEnv(o.subnetFile);
    const mac = backend.mode === 'vxlan' ? (await previousVtepMAC(registry, publicIp)) ?? randomVtepMAC() : new Uint8Array(6);
    const manager = new LeaseManager({
      registry, attrs: backend.leaseAttrs(publicIp, mac), previousSubnet: previous?.subnet ?? null,
      renewMarginMs: o.subnetLeaseRenewMargin * 60_000, log: log.child('subnet'), ...debugLeaseTiming(),
      onEvent: (e) => { if (e.type === 'renewed') lease = e.lease; },
    });
    leaseManager = manager;
    lease = await manager.acquire(config, signal);
    const own = lease.subnet;
    log.info(`Acquired lease ${formatCIDR(own)} (${lease.how})`);
    const node: NodeSetup = { config, backend, ext, publicIp, subnet: own, mac, mtu };
    engine = await dataplaneFor(o, node, log);
    rules = await installTrafficRules(o, config.network, own, previous, log);
    if (o.ipBlackholeRoute) removeBlackhole = addBlackholeRoute(own);
    await writeSubnetEnv(o.subnetFile, { network: config.network, subnet: own, mtu, ipMasq: o.ipMasq });
    log.info(`Wrote subnet file to ${o.subnetFile}`);

    const running = engine;
    const leases = new LeaseWatcher({ registry, ownSubnet: own, accept: backend.accept, log: log.child('watch') });
    watcher = leases;
    const apply = (d: PeerDiff): void => applyPeers(d, leases.peers(), backend, running, config, own, log, peerRoutes, publicIp);
    const watching = leases.run(signal, apply);
    await Promise.race([watcher.ready, aborted(signal)]);
    if (!signal.aborted) {
      health?.setReady(true);
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
    await engine?.stop();
    await rules?.remove();
    removeBlackhole?.();
    await health?.close();
    await registry.close();
  }
}

/**
 * Whether a peer's PublicIP is something the data plane may send tunnel traffic to: not
 * unspecified, loopback, "this network", multicast, reserved or the limited broadcast, and not
 * this node itself (traffic for the peer's subnet would loop through this node until its TTL
 * ran out). Returns why not, or null.
 */
export function badPublicIP(ip: number, self: number | null): string | null {
  const a = ip >>> 24;
  if (ip === 0 || a === 0) return 'is in 0.0.0.0/8 ("this network")';
  if (a === 127) return 'is a loopback address';
  if (a >= 224 && a <= 239) return 'is a multicast address';
  if (ip >>> 0 === 0xffffffff) return 'is the broadcast address';
  if (a >= 240) return 'is a reserved address';
  if (self !== null && ip >>> 0 === self >>> 0) return "is this node's own address";
  return null;
}

/** What applyPeers keeps between calls. */
export interface PeerRoutes {
  /** Routes in the data plane, by lease key. */
  readonly installed: Map<string, PeerRoute>;
  /** Leases refused only because they overlap a /SubnetLen lease: looked at again on change. */
  readonly overlapping: Set<string>;
}

/** Applies a peer diff to the data plane, refusing leases that would hijack traffic. */
export function applyPeers(d: PeerDiff, all: ReadonlyMap<string, Peer>, backend: Backend, engine: Engine, config: NetworkConfig,
  own: IPv4Net, log: Logger, state: PeerRoutes, self: number | null = null): void {
  const { installed, overlapping } = state;
  // flanneld only writes leases of the network's SubnetLen, and those cannot overlap each
  // other. A lease of another length that overlaps one would take part of that peer's pods
  // (the longest prefix wins), so it is refused while the overlap lasts.
  const overlapped = (p: Peer): Peer | undefined => {
    if (p.subnet.prefixLen === config.subnetLen) return undefined;
    for (const q of all.values()) {
      if (q.key !== p.key && q.subnet.prefixLen === config.subnetLen && netOverlaps(q.subnet, p.subnet)) return q;
    }
    return undefined;
  };
  const accept = (p: Peer): boolean => {
    const bad = badPublicIP(p.publicIP, self);
    if (bad !== null) {
      log.warn(`Ignoring lease ${p.key}: its PublicIP ${formatIPv4(p.publicIP)} ${bad}`);
      return false;
    }
    if (!netContains(config.network, p.subnet.ip) || p.subnet.prefixLen < config.network.prefixLen) {
      log.warn(`Ignoring lease ${p.key}: ${formatCIDR(p.subnet)} is outside the network ${formatCIDR(config.network)}`);
      return false;
    }
    if (netOverlaps(p.subnet, own)) {
      log.warn(`Ignoring lease ${p.key}: ${formatCIDR(p.subnet)} overlaps this node's subnet ${formatCIDR(own)}`);
      return false;
    }
    const q = overlapped(p);
    if (q) {
      log.warn(`Ignoring lease ${p.key}: ${formatCIDR(p.subnet)} overlaps the lease ${q.key} and is not a /${config.subnetLen} as the network's leases are`);
      overlapping.add(p.key);
      return false;
    }
    return true;
  };
  const drop = (p: Peer): void => {
    // A peer whose new lease is refused loses the route its old lease had.
    const old = installed.get(p.key);
    if (!old) return;
    installed.delete(p.key);
    engine.removeRoute(old.net, old.len);
  };
  const add = (p: Peer): void => {
    overlapping.delete(p.key);
    if (!accept(p)) { drop(p); return; }
    const route = backend.route(p);
    if (!route) {
      log.warn(`Ignoring lease ${p.key}: no usable ${backend.mode} backend data`);
      drop(p);
      return;
    }
    engine.setRoute(route);
    installed.set(p.key, route);
    log.info(`Peer ${formatCIDR(p.subnet)} via ${formatIPv4(p.publicIP)}${route.mac ? ` (VtepMAC ${formatMAC(route.mac)})` : ''}`);
  };
  for (const p of [...d.added, ...d.changed]) add(p);
  for (const p of d.removed) {
    overlapping.delete(p.key);
    if (!installed.delete(p.key)) continue;
    engine.removeRoute(p.subnet.ip, p.subnet.prefixLen);
    log.info(`Peer ${formatCIDR(p.subnet)} removed`);
  }
  // The change may have created or ended an overlap for leases it did not touch.
  for (const p of all.values()) {
    if (p.subnet.prefixLen === config.subnetLen) continue;
    if (installed.has(p.key) && overlapped(p)) add(p);
    else if (overlapping.has(p.key) && !overlapped(p)) add(p);
  }
}
