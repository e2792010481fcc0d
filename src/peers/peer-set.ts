// The one owner of the peer set, shaped like flannel's backend Network.Run: it takes the lease
// watcher's diffs, decides which leases may become routes (admission), turns a lease into a
// route through the backend, gives each route a per-peer stats slot, keeps the one
// authoritative map of routes keyed by their subnet (netKey), and pushes every change to the
// engine (add or replace, remove). The engine keeps no route map of its own: it reads this one
// back when it (re)starts a worker and for its per-peer counters. Where the backend routes
// peers directly (host-gw, DirectRouting), a peer on a directly connected network gets a
// kernel route instead of an engine route; it moves between the two when its PublicIP does.
import type { Backend, DirectRouting } from '../backend/index.js';
import type { NetworkConfig } from '../config/network.js';
import type { Engine, RouteSource, SlottedRoute } from '../dataplane/engine.js';
import type { PeerRoute } from '../peer-route.js';
import type { DirectRoutes } from '../device/routes.js';
import type { Metric } from '../metric.js';
import type { Logger } from '../log.js';
import { hasHostBits, leaseRefusal, REFUSAL_REASONS, type Refusal, type RefusalReason } from '../subnet/admission.js';
import { formatCIDR, formatIPv4, formatMAC, netKey, netOverlaps, type IPv4Net, type NetKey } from '../net.js';
import type { LeaseWatcher, Peer, PeerDiff } from '../subnet/watcher.js';

export interface PeerSetOptions {
  /** direct: which peers get a kernel route instead of an engine route (default 'never'). */
  backend: Pick<Backend, 'mode' | 'route'> & { readonly direct?: DirectRouting };
  /** Where direct routes go (needed unless backend.direct is 'never'). */
  kernel?: DirectRoutes;
  config: Pick<NetworkConfig, 'network' | 'subnetLen'>;
  /** This node's subnet: no peer route may overlap it. */
  ownSubnet: IPv4Net;
  /** This node's PublicIP: no peer may use it (null: not checked). */
  self: number | null;
  /** The networks of the external interface: no peer may use their broadcast address. */
  underlay?: readonly IPv4Net[];
  log: Logger;
}

/** A route (in the data plane, or a direct kernel route) and the lease it came from. */
interface Admitted extends SlottedRoute {
  /** Full etcd key of the lease (or a name for a static peer). */
  readonly lease: string;
  readonly via: 'engine' | 'direct';
}

export class PeerSet implements RouteSource {
  private readonly admitted = new Map<NetKey, Admitted>();
  /** Leases refused only because they overlap a /SubnetLen lease: looked at again on change. */
  private readonly overlapping = new Set<string>();
  /** Leases refused only because the route table was full, by lease key (in the order they
   * came), with their key in the watcher's map: admitted when room is made. */
  private readonly waiting = new Map<string, NetKey>();
  private readonly refused = new Map<RefusalReason, number>(REFUSAL_REASONS.map((r) => [r, 0]));
  private engine: Engine | null = null;
  /** Stats slots: handed out in order, then freed ones reused oldest first (FIFO), so a worker
   * has long finished clearing a slot before another route gets it. */
  private nextSlot = 0;
  private readonly freeSlots: number[] = [];
  /** Admitted routes that are in the engine (the rest are direct kernel routes). */
  private engineRoutes = 0;

  constructor(private readonly o: PeerSetOptions) {}

  /** Connects the engine the routes are pushed to (it was started with this set as its source). */
  attach(engine: Engine): void {
    this.engine = engine;
  }

  /** Routes the engine must hold, with their stats slots (not the direct ones). */
  *routes(): Iterable<SlottedRoute> {
    for (const a of this.admitted.values()) if (a.via === 'engine') yield a;
  }

  /** Admitted peers that have a direct kernel route. */
  get directCount(): number {
    return this.admitted.size - this.engineRoutes;
  }

  get size(): number {
    return this.admitted.size;
  }

  /** Refusals so far, by reason. */
  refusals(): ReadonlyMap<RefusalReason, number> {
    return this.refused;
  }

  /** Follows the watcher until `signal` aborts, applying each diff. */
  run(watcher: LeaseWatcher, signal: AbortSignal): Promise<void> {
    return watcher.run(signal, (d) => this.apply(d, watcher.peers()));
  }

  /** Installs the peers of a --static-peers file; they were checked when the file was read. */
  async setStatic(peers: readonly PeerRoute[]): Promise<void> {
    await this.lookUp(peers.map((r) => r.publicIP));
    for (const route of peers) {
      const name = `static peer ${formatCIDR(route.subnet)}`;
      const via = this.placement(route);
      if (typeof via !== 'string') this.refuse(name, via.reason, via.why);
      else if (via === 'engine' && this.full(netKey(route.subnet))) this.refuse(name, 'capacity', this.capacityText());
      else this.install(name, route, via);
    }
  }

  /**
   * Applies a diff of the lease set. `all` is every lease the watcher knows now (refused ones
   * included), keyed by netKey as the watcher keys them: a change may create or end an
   * overlap for leases it did not touch, and a removal may make room for a waiting lease.
   * Where peers may get direct routes, how the kernel reaches their PublicIPs is looked up
   * first, in one batch off the JS thread; the diff is then applied at once.
   */
  apply(d: PeerDiff, all: ReadonlyMap<NetKey, Peer>): void | Promise<void> {
    if ((this.o.backend.direct ?? 'never') === 'never' || !this.o.kernel) return this.applyNow(d, all);
    // Every lease this diff may (re)place: its own, those overlapping others, those waiting for room.
    const ips = [...d.added, ...d.changed].map((p) => p.publicIP);
    for (const p of all.values()) {
      if (p.subnet.prefixLen !== this.o.config.subnetLen || this.waiting.has(p.key)) ips.push(p.publicIP);
    }
    return this.lookUp(ips).then(() => this.applyNow(d, all));
  }

  private applyNow(d: PeerDiff, all: ReadonlyMap<NetKey, Peer>): void {
    // Keys and values the watcher refused (and logged) before they could become peers.
    for (const r of d.refused ?? []) this.count(r.reason);
    for (const p of [...d.added, ...d.changed]) this.add(p, all);
    for (const p of d.removed) {
      this.overlapping.delete(p.key);
      this.waiting.delete(p.key);
      const k = netKey(p.subnet);
      const a = this.admitted.get(k);
      // Only the lease that owns the route removes it (a refused lease of the same subnet
      // must not take another peer's route with it).
      if (a === undefined || a.lease !== p.key) continue;
      this.uninstall(k, a);
      this.o.log.info(`Peer ${formatCIDR(p.subnet)} removed`);
    }
    for (const p of all.values()) {
      if (p.subnet.prefixLen === this.o.config.subnetLen) continue;
      if (this.owns(p) && this.overlapped(p, all)) this.add(p, all);
      else if (this.overlapping.has(p.key) && !this.overlapped(p, all)) this.add(p, all);
    }
    // Room made: leases refused for want of it get their turn, in the order they came.
    for (const [key, k] of [...this.waiting]) {
      if (this.engineRoutes >= this.capacity()) break;
      const p = all.get(k);
      if (p?.key === key) this.add(p, all);
      else this.waiting.delete(key);
    }
  }

  private async lookUp(publicIPs: number[]): Promise<void> {
    if ((this.o.backend.direct ?? 'never') !== 'never' && publicIPs.length > 0) await this.o.kernel?.lookup(publicIPs);
  }

  /** Gauges and counters for /metrics. */
  metrics(): Metric[] {
    return [
      { name: 'linen_peers', help: 'Peers (other nodes\' leases) with a route.', type: 'gauge', value: this.admitted.size },
      { name: 'linen_peers_direct', help: 'Peers routed by a plain kernel route (host-gw, DirectRouting), not the data plane.', type: 'gauge', value: this.directCount },
      ...[...this.routes()].map((a): Metric => ({
        name: 'linen_peer_route', help: 'A route to a peer subnet in the data plane.', type: 'gauge', value: 1, peer: a.route.subnet,
        labels: { subnet: formatCIDR(a.route.subnet), public_ip: formatIPv4(a.route.publicIP) },
      })),
      ...REFUSAL_REASONS.map((reason): Metric => ({
        name: 'linen_leases_refused_total', help: 'Times a lease was refused a route, by reason.', type: 'counter',
        value: this.refused.get(reason) ?? 0, labels: { reason },
      })),
    ];
  }

  private capacity(): number {
    return this.engine?.routeCapacity ?? Infinity;
  }

  private capacityText(): string {
    return `the data plane's route table is full (${this.capacity()} routes)`;
  }

  /** Whether a new engine route for k would not fit (replacing one in the engine always fits). */
  private full(k: NetKey): boolean {
    return this.admitted.get(k)?.via !== 'engine' && this.engineRoutes >= this.capacity();
  }

  /**
   * Where a peer's route goes: a direct kernel route when the backend routes directly and the
   * peer is on a directly connected network; else the engine, or (host-gw, which has no
   * engine) nowhere.
   */
  private placement(route: PeerRoute): 'engine' | 'direct' | { reason: RefusalReason; why: string } {
    const mode = this.o.backend.direct ?? 'never';
    if (mode === 'never') return 'engine';
    const kernel = this.o.kernel;
    const why = kernel ? kernel.notAdjacent(route.publicIP) : 'no kernel route manager';
    if (why === null) return 'direct';
    if (mode === 'adjacent') return 'engine';
    return { reason: 'not_adjacent', why: `its PublicIP ${formatIPv4(route.publicIP)} is not on a directly connected network: ${why}; host-gw needs every host on one layer-2 network (use vxlan with DirectRouting for the others)` };
  }

  /** Whether p's lease holds a route now. */
  private owns(p: Peer): boolean {
    return this.admitted.get(netKey(p.subnet))?.lease === p.key;
  }

  // flanneld only writes leases of the network's SubnetLen, and those cannot overlap each
  // other. A lease of another length that overlaps one would take part of that peer's pods
  // (the longest prefix wins), so it is refused while the overlap lasts.
  private overlapped(p: Peer, all: ReadonlyMap<NetKey, Peer>): Peer | undefined {
    const len = this.o.config.subnetLen;
    if (p.subnet.prefixLen === len) return undefined;
    for (const q of all.values()) {
      if (q.key !== p.key && q.subnet.prefixLen === len && !hasHostBits(q.subnet) && netOverlaps(q.subnet, p.subnet)) return q;
    }
    return undefined;
  }

  /** Why p may not have a route, or null. */
  private admission(p: Peer, all: ReadonlyMap<NetKey, Peer>): Refusal | null {
    const { network, subnetLen } = this.o.config;
    const no = leaseRefusal(p.subnet, p.publicIP, { network, ownSubnet: this.o.ownSubnet, self: this.o.self, underlay: this.o.underlay ?? [] });
    if (no !== null) return no;
    const q = this.overlapped(p, all);
    if (q) {
      this.overlapping.add(p.key);
      return { reason: 'overlap', why: `${formatCIDR(p.subnet)} overlaps the lease ${q.key} and is not a /${subnetLen} as the network's leases are` };
    }
    return null;
  }

  private add(p: Peer, all: ReadonlyMap<NetKey, Peer>): void {
    this.overlapping.delete(p.key);
    this.waiting.delete(p.key);
    const no = this.admission(p, all);
    if (no) {
      this.refuse(p.key, no.reason, no.why);
      this.drop(p);
      return;
    }
    const route = this.o.backend.route(p);
    if (!route) {
      this.refuse(p.key, 'backend_data', `no usable ${this.o.backend.mode} backend data`);
      this.drop(p);
      return;
    }
    const via = this.placement(route);
    if (typeof via !== 'string') {
      this.refuse(p.key, via.reason, via.why);
      this.drop(p);
      return;
    }
    const k = netKey(p.subnet);
    if (via === 'engine' && this.full(k)) {
      this.waiting.set(p.key, k);
      this.refuse(p.key, 'capacity', this.capacityText());
      this.drop(p); // a direct route to its old PublicIP must not stay
      return;
    }
    this.install(p.key, route, via);
    this.o.log.info(`Peer ${formatCIDR(p.subnet)} via ${formatIPv4(p.publicIP)}` +
      (via === 'direct' ? ' (direct route)' : route.mac ? ` (VtepMAC ${formatMAC(route.mac)})` : ''));
  }

  private count(reason: RefusalReason): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  private refuse(lease: string, reason: RefusalReason, why: string): void {
    this.count(reason);
    this.o.log.warn(`Ignoring lease ${lease}: ${why}`);
  }

  /** A peer whose new lease is refused loses the route its old lease had. */
  private drop(p: Peer): void {
    const k = netKey(p.subnet);
    const a = this.admitted.get(k);
    if (a !== undefined && a.lease === p.key) this.uninstall(k, a);
  }

  private install(lease: string, route: PeerRoute, via: Admitted['via']): void {
    const k = netKey(route.subnet);
    const old = this.admitted.get(k);
    // A peer that moves between the engine and a direct route leaves the old place first.
    if (old !== undefined && old.via !== via) this.uninstall(k, old);
    if (via === 'direct') {
      const a: Admitted = { lease, route, slot: -1, via };
      this.admitted.set(k, a);
      this.o.kernel?.set(route);
      return;
    }
    const kept = this.admitted.get(k);
    const slots = this.engine?.peerSlots ?? 0;
    const slot = kept?.slot ?? (this.nextSlot < slots ? this.nextSlot++ : this.freeSlots.shift() ?? -1);
    const a: Admitted = { lease, route, slot, via };
    if (kept === undefined) this.engineRoutes++;
    this.admitted.set(k, a);
    this.engine?.setRoute(a);
  }

  private uninstall(k: NetKey, a: Admitted): void {
    this.admitted.delete(k);
    if (a.via === 'direct') {
      this.o.kernel?.remove(a.route);
      return;
    }
    this.engineRoutes--;
    if (a.slot >= 0) this.freeSlots.push(a.slot);
    this.engine?.removeRoute(a);
  }
}
