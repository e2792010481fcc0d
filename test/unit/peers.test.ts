// The peer set's admission policy, its one route map and the deltas it pushes, against a small
// fake engine that records what it is told: every refusal rule (host bits, bad PublicIPs,
// outside the network, this node's subnet, overlaps in both arrival orders, missing backend
// data, a full route table), replacements, removals and stats slots.
import t from 'tap';
import { parseNetworkConfig, type NetworkConfig } from '../../src/config/network.js';
import type { OverlayBackend } from '../../src/backend/index.js';
import { udpBackend } from '../../src/backend/udp.js';
import { vxlanBackend } from '../../src/backend/vxlan.js';
import type { Engine, EngineStats, SlottedRoute } from '../../src/dataplane/engine.js';
import { Core } from '../../src/dataplane/core.js';
import { DgramEngine } from '../../src/dataplane/dgram-engine.js';
import { NativeEngine } from '../../src/dataplane/native-engine.js';
import { memoryLogger } from '../../src/log.js';
import { formatCIDR, formatIPv4, makeNet, netKey, parseCIDR, parseIPv4, parseMAC, type NetKey } from '../../src/net.js';
import { REFUSAL_REASONS, type RefusalReason } from '../../src/subnet/admission.js';
import { PeerSet } from '../../src/peers/peer-set.js';
import { makeSubnetKey } from '../../src/subnet/lease.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import type { Peer, PeerDiff } from '../../src/subnet/watcher.js';

const ip = (s: string): number => parseIPv4(s)!;

/** Records the routes it holds (as the core would: by masked network) and every call. */
class FakeEngine implements Engine {
  readonly name = 'native' as const;
  readonly table = new Map<string, SlottedRoute>();
  readonly calls: string[] = [];
  constructor(readonly routeCapacity = 131072, readonly peerSlots = 4096) {}
  private key(r: SlottedRoute): string {
    return formatCIDR(makeNet(r.route.subnet.ip, r.route.subnet.prefixLen));
  }
  setRoute(r: SlottedRoute): void {
    this.calls.push(`set ${this.key(r)} via ${formatIPv4(r.route.publicIP)} slot ${r.slot}`);
    this.table.set(this.key(r), r);
  }
  removeRoute(r: SlottedRoute): void {
    this.calls.push(`remove ${this.key(r)} slot ${r.slot}`);
    this.table.delete(this.key(r));
  }
  /** "10.5.7.0/24 via 192.168.1.7", sorted. */
  routes(): string[] {
    return [...this.table.entries()].map(([k, r]) => `${k} via ${formatIPv4(r.route.publicIP)}`).sort();
  }
  async start(): Promise<never> { throw new Error('not used'); }
  stats(): EngineStats { throw new Error('not used'); }
  async refresh(): Promise<void> {}
  async stop(): Promise<void> {}
}

const OWN = '10.5.1.0/24';
const SELF = '192.168.0.1';

function overlayBackend(config: NetworkConfig): OverlayBackend {
  const b = config.backend;
  if (b.type === 'udp') return udpBackend(b);
  if (b.type === 'vxlan') return vxlanBackend(b);
  throw new Error(`peers.test: no ${b.type} backend here`);
}

/** A peer set on 10.5.0.0/16 (SubnetLen 24, own subnet 10.5.1.0/24) and a lease set to feed it. */
function setup(o: { backend?: 'udp' | 'vxlan'; capacity?: number; slots?: number } = {}) {
  const config = parseNetworkConfig(JSON.stringify({ Network: '10.5.0.0/16', Backend: { Type: o.backend ?? 'udp' } }));
  const engine = new FakeEngine(o.capacity, o.slots);
  const { log, lines } = memoryLogger(0);
  const peers = new PeerSet({ backend: overlayBackend(config), config, ownSubnet: parseCIDR(OWN)!, self: ip(SELF), underlay: [parseCIDR('192.168.0.0/24')!], log });
  peers.attach(engine);
  // What the watcher would hold: every lease, keyed by its subnet key.
  const all = new Map<NetKey, Peer>();
  const lease = (key: string, publicIP: string, mac: string | null = null): Peer => {
    const [addr, len] = key.split('-');
    const attrs = mac === null ? udpLeaseAttrs(ip(publicIP)) : vxlanLeaseAttrs(ip(publicIP), 1, parseMAC(mac)!);
    return {
      key: `/coreos.com/network/subnets/${key}`, subnet: { ip: ip(addr!), prefixLen: Number(len) }, publicIP: ip(publicIP), attrs,
      vxlan: mac === null ? null : { vni: 1, vtepMAC: parseMAC(mac)! },
    };
  };
  const diff = (added: Peer[], changed: Peer[] = [], removed: Peer[] = []): void => {
    for (const p of [...added, ...changed]) all.set(netKey(p.subnet), p);
    for (const p of removed) all.delete(netKey(p.subnet));
    const d: PeerDiff = { added, changed, removed, cause: 'events', revision: 1 };
    peers.apply(d, all);
  };
  const put = (key: string, publicIP: string, mac: string | null = null): Peer => {
    const p = lease(key, publicIP, mac);
    const had = all.has(netKey(p.subnet));
    diff(had ? [] : [p], had ? [p] : []);
    return p;
  };
  const del = (key: string): void => {
    const p = [...all.values()].find((q) => q.key.endsWith(`/${key}`));
    if (p) diff([], [], [p]);
  };
  const refused = (reason: RefusalReason): number => peers.refusals().get(reason) ?? 0;
  return { peers, engine, lines, put, del, diff, lease, refused, all };
}

t.test('a good lease becomes a route; a change replaces it; a removal withdraws it', async (t) => {
  const s = setup();
  s.put('10.5.7.0-24', '192.168.0.7');
  t.same(s.engine.routes(), ['10.5.7.0/24 via 192.168.0.7']);
  t.match(s.lines.join('\n'), /Peer 10\.5\.7\.0\/24 via 192\.168\.0\.7/);
  s.put('10.5.7.0-24', '192.168.0.8');
  t.same(s.engine.routes(), ['10.5.7.0/24 via 192.168.0.8'], 'replaced');
  t.same(s.engine.calls, ['set 10.5.7.0/24 via 192.168.0.7 slot 0', 'set 10.5.7.0/24 via 192.168.0.8 slot 0'], 'a replacement is one set, same slot');
  s.del('10.5.7.0-24');
  t.same(s.engine.routes(), [], 'removed');
  t.equal(s.peers.size, 0);
  t.same([...s.peers.routes()], [], 'the peer set and the engine agree');
  t.same(REFUSAL_REASONS.map(s.refused), REFUSAL_REASONS.map(() => 0), 'nothing refused');
});

t.test('every refusal rule: logged naming the key, counted by reason, no route', async (t) => {
  const cases: { what: string; key: string; pub: string; reason: RefusalReason; log: RegExp }[] = [
    { what: 'host bits set', key: '10.5.3.7-24', pub: '192.168.0.3', reason: 'host_bits', log: /host bits set/ },
    { what: 'host bits set on a /25', key: '10.5.3.129-25', pub: '192.168.0.3', reason: 'host_bits', log: /host bits set/ },
    { what: 'PublicIP 0.0.0.0', key: '10.5.4.0-24', pub: '0.0.0.0', reason: 'public_ip_unspecified', log: /"this network"/ },
    { what: 'PublicIP in 0.0.0.0/8', key: '10.5.4.0-24', pub: '0.1.2.3', reason: 'public_ip_unspecified', log: /"this network"/ },
    { what: 'PublicIP loopback', key: '10.5.4.0-24', pub: '127.0.0.1', reason: 'public_ip_loopback', log: /loopback/ },
    { what: 'PublicIP loopback, not 127.0.0.1', key: '10.5.4.0-24', pub: '127.255.0.9', reason: 'public_ip_loopback', log: /loopback/ },
    { what: 'PublicIP multicast', key: '10.5.4.0-24', pub: '224.0.0.1', reason: 'public_ip_multicast', log: /multicast/ },
    { what: 'PublicIP multicast, top of the range', key: '10.5.4.0-24', pub: '239.255.255.255', reason: 'public_ip_multicast', log: /multicast/ },
    { what: 'PublicIP broadcast', key: '10.5.4.0-24', pub: '255.255.255.255', reason: 'public_ip_broadcast', log: /broadcast/ },
    { what: "PublicIP the broadcast address of this node's network", key: '10.5.4.0-24', pub: '192.168.0.255', reason: 'public_ip_broadcast', log: /broadcast address of this node's network 192\.168\.0\.0\/24/ },
    { what: 'PublicIP reserved', key: '10.5.4.0-24', pub: '240.0.0.1', reason: 'public_ip_reserved', log: /reserved/ },
    { what: 'PublicIP inside the cluster network', key: '10.5.4.0-24', pub: '10.5.9.3', reason: 'public_ip_in_network', log: /inside the cluster network 10\.5\.0\.0\/16/ },
    { what: "PublicIP inside the peer's own subnet", key: '10.5.4.0-24', pub: '10.5.4.1', reason: 'public_ip_in_network', log: /back into the overlay/ },
    { what: "PublicIP inside this node's subnet", key: '10.5.4.0-24', pub: '10.5.1.1', reason: 'public_ip_in_network', log: /inside the cluster network/ },
    { what: "PublicIP this node's own", key: '10.5.4.0-24', pub: SELF, reason: 'public_ip_self', log: /this node's own address/ },
    { what: 'outside the network', key: '172.16.5.0-24', pub: '192.168.0.4', reason: 'outside_network', log: /outside the network 10\.5\.0\.0\/16/ },
    { what: 'containing the whole network', key: '10.0.0.0-8', pub: '192.168.0.4', reason: 'outside_network', log: /outside the network/ },
    { what: 'the whole network (a shorter prefix than SubnetLen, still inside)', key: '10.5.0.0-16', pub: '192.168.0.4', reason: 'own_subnet', log: /overlaps this node's subnet/ },
    { what: "this node's subnet", key: '10.5.1.0-24', pub: '192.168.0.4', reason: 'own_subnet', log: /overlaps this node's subnet 10\.5\.1\.0\/24/ },
    { what: "half of this node's subnet", key: '10.5.1.128-25', pub: '192.168.0.4', reason: 'own_subnet', log: /overlaps this node's subnet/ },
    { what: "a /23 covering this node's subnet", key: '10.5.0.0-23', pub: '192.168.0.4', reason: 'own_subnet', log: /overlaps this node's subnet/ },
  ];
  for (const c of cases) {
    const s = setup();
    s.put(c.key, c.pub);
    t.same(s.engine.routes(), [], `${c.what}: no route`);
    t.equal(s.refused(c.reason), 1, `${c.what}: counted as ${c.reason}`);
    const line = s.lines.find((l) => l.includes(`Ignoring lease /coreos.com/network/subnets/${c.key}:`)) ?? '';
    t.match(line, c.log, `${c.what}: logged naming the key (${line.replace(/^\S+ \S+ +\d+ \S+\] /, '')})`);
    const metric = s.peers.metrics().find((m) => m.name === 'linen_leases_refused_total' && m.labels?.reason === c.reason);
    t.equal(metric?.value, 1, `${c.what}: linen_leases_refused_total{reason="${c.reason}"} 1`);
  }
  // VXLAN: a lease without usable backend data.
  const s = setup({ backend: 'vxlan' });
  const p = s.lease('10.5.4.0-24', '192.168.0.4');
  s.diff([p]);
  t.same(s.engine.routes(), [], 'vxlan lease without a VtepMAC: no route');
  t.equal(s.refused('backend_data'), 1, 'counted as backend_data');
  t.match(s.lines.join('\n'), /Ignoring lease \/coreos.com\/network\/subnets\/10\.5\.4\.0-24: no usable vxlan backend data/);
});

t.test('a routed lease rewritten with something refused loses its route', async (t) => {
  const s = setup();
  s.put('10.5.4.0-24', '192.168.0.4');
  s.put('10.5.4.0-24', '127.0.0.1');
  t.same(s.engine.routes(), [], 'the old route is withdrawn');
  s.put('10.5.4.0-24', '192.168.0.5');
  t.same(s.engine.routes(), ['10.5.4.0/24 via 192.168.0.5'], 'and comes back with a good PublicIP');
});

t.test("host bits: a forged key masking to another peer's subnet takes nothing from it, in either order", async (t) => {
  {
    const s = setup();
    s.put('10.5.3.0-24', '192.168.0.3');
    s.put('10.5.3.7-24', '192.168.0.66');
    t.same(s.engine.routes(), ['10.5.3.0/24 via 192.168.0.3'], 'victim first: its route stays');
    t.same(s.engine.calls, ['set 10.5.3.0/24 via 192.168.0.3 slot 0'], 'the forged key pushed nothing');
    s.del('10.5.3.7-24');
    t.same(s.engine.routes(), ['10.5.3.0/24 via 192.168.0.3'], "deleting the forged key leaves the victim's route");
    t.equal(s.refused('host_bits'), 1);
    s.del('10.5.3.0-24');
    t.same(s.engine.routes(), [], 'the victim itself can still withdraw it');
  }
  {
    const s = setup();
    s.put('10.5.3.7-24', '192.168.0.66');
    s.put('10.5.3.0-24', '192.168.0.3');
    t.same(s.engine.routes(), ['10.5.3.0/24 via 192.168.0.3'], 'forged first: the victim still gets its route');
    s.del('10.5.3.7-24');
    t.same(s.engine.routes(), ['10.5.3.0/24 via 192.168.0.3'], 'and keeps it');
  }
  {
    const s = setup();
    s.put('10.5.3.128-25', '192.168.0.5');
    s.put('10.5.3.7-24', '192.168.0.66');
    t.same(s.engine.routes(), ['10.5.3.128/25 via 192.168.0.5'], 'a forged /24 does not make a /25 an overlap');
  }
});

t.test('overlaps with a /SubnetLen lease: the other length is refused while the overlap lasts, in every arrival order', async (t) => {
  {
    const s = setup();
    s.put('10.5.9.0-25', '192.168.0.40');
    t.same(s.engine.routes(), ['10.5.9.0/25 via 192.168.0.40'], 'alone, a /25 is routed');
    s.put('10.5.9.0-24', '192.168.0.41');
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.41'], 'a /24 over it arrives: the /24 is routed, the /25 withdrawn');
    t.match(s.lines.join('\n'), /Ignoring lease \/coreos.com\/network\/subnets\/10\.5\.9\.0-25: 10\.5\.9\.0\/25 overlaps the lease \/coreos.com\/network\/subnets\/10\.5\.9\.0-24 and is not a \/24/);
    t.equal(s.refused('overlap'), 1);
    s.del('10.5.9.0-24');
    t.same(s.engine.routes(), ['10.5.9.0/25 via 192.168.0.40'], 'the /24 goes: the /25 is routed again');
  }
  {
    const s = setup();
    s.put('10.5.9.0-24', '192.168.0.41');
    s.put('10.5.9.0-25', '192.168.0.40');
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.41'], '/24 first: the /25 is refused');
    s.del('10.5.9.0-24');
    t.same(s.engine.routes(), ['10.5.9.0/25 via 192.168.0.40'], 'the /24 goes: the /25 is routed');
  }
  {
    const s = setup();
    s.diff([s.lease('10.5.9.0-25', '192.168.0.40'), s.lease('10.5.9.0-24', '192.168.0.41')]);
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.41'], 'both in one diff (/25 listed first): only the /24');
  }
  {
    const s = setup();
    s.diff([s.lease('10.5.8.0-23', '192.168.0.42')]);
    t.same(s.engine.routes(), ['10.5.8.0/23 via 192.168.0.42'], 'a /23 alone is routed');
    s.put('10.5.9.0-24', '192.168.0.41');
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.41'], 'a /24 inside the /23 arrives: the /23 is withdrawn');
    s.put('10.5.9.0-24', '192.168.0.43');
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.43'], 'the /24 changes: the /23 stays refused');
    s.del('10.5.9.0-24');
    t.same(s.engine.routes(), ['10.5.8.0/23 via 192.168.0.42'], 'the /24 goes: the /23 comes back');
  }
  {
    const s = setup();
    s.put('10.5.9.0-25', '192.168.0.40');
    s.put('10.5.9.0-24', '192.168.0.41');
    s.del('10.5.9.0-25');
    t.same(s.engine.routes(), ['10.5.9.0/24 via 192.168.0.41'], 'the refused /25 deleted: nothing else changes');
    s.del('10.5.9.0-24');
    t.same(s.engine.routes(), [], 'and it does not come back when the /24 goes');
  }
});

t.test('route table capacity: new routes beyond it are refused by key and counted; replacements still fit; room made admits the waiting ones', async (t) => {
  const s = setup({ capacity: 2 });
  s.put('10.5.10.0-24', '192.168.0.10');
  s.put('10.5.11.0-24', '192.168.0.11');
  s.put('10.5.12.0-24', '192.168.0.12');
  t.same(s.engine.routes(), ['10.5.10.0/24 via 192.168.0.10', '10.5.11.0/24 via 192.168.0.11'], 'the third route does not go to the engine');
  t.equal(s.engine.table.size, 2, 'the engine never holds more than its capacity');
  t.equal(s.refused('capacity'), 1, 'counted as capacity');
  t.match(s.lines.join('\n'), /Ignoring lease \/coreos.com\/network\/subnets\/10\.5\.12\.0-24: the data plane's route table is full \(2 routes\)/);
  s.put('10.5.11.0-24', '192.168.0.111');
  t.same(s.engine.routes(), ['10.5.10.0/24 via 192.168.0.10', '10.5.11.0/24 via 192.168.0.111'], 'a full table still takes a replacement');
  s.del('10.5.10.0-24');
  t.same(s.engine.routes(), ['10.5.11.0/24 via 192.168.0.111', '10.5.12.0/24 via 192.168.0.12'], 'a removal makes room: the waiting lease is routed');
  s.del('10.5.12.0-24');
  s.put('10.5.13.0-24', '192.168.0.13');
  t.same(s.engine.routes(), ['10.5.11.0/24 via 192.168.0.111', '10.5.13.0/24 via 192.168.0.13']);
  // A full snapshot beyond the capacity in one diff.
  const big = setup({ capacity: 100 });
  big.diff(Array.from({ length: 150 }, (_, i) => big.lease(`10.5.${i + 2}.0-24`, `192.168.1.${i + 2}`)));
  t.equal(big.engine.table.size, 100, '150 leases, capacity 100: 100 routes');
  t.equal(big.refused('capacity'), 50, '50 refusals, one per key');
  t.equal(big.lines.filter((l) => /route table is full/.test(l)).length, 50, 'one log line per refused key');
});

t.test("a snapshot larger than the core's table (a /8 network of /30 leases): capped at the capacity, one refusal per extra key", async (t) => {
  const config = parseNetworkConfig(JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 30, Backend: { Type: 'udp' } }));
  const engine = new FakeEngine();
  const { log, lines } = memoryLogger(0);
  const peers = new PeerSet({ backend: overlayBackend(config), config, ownSubnet: { ip: ip('10.0.0.0'), prefixLen: 30 }, self: null, log });
  peers.attach(engine);
  const N = engine.routeCapacity + 1000;
  const all = new Map<NetKey, Peer>();
  for (let i = 1; i <= N; i++) {
    const subnet = { ip: (ip('10.0.0.0') + i * 4) >>> 0, prefixLen: 30 };
    all.set(netKey(subnet), { key: `/coreos.com/network/subnets/${makeSubnetKey(subnet)}`, subnet, publicIP: ip('192.168.0.2'), attrs: udpLeaseAttrs(ip('192.168.0.2')), vxlan: null });
  }
  const t0 = Date.now();
  peers.apply({ added: [...all.values()], changed: [], removed: [], cause: 'snapshot', revision: 1 }, all);
  const ms = Date.now() - t0;
  t.equal(engine.table.size, engine.routeCapacity, `${N} leases: ${engine.routeCapacity} routes, the capacity`);
  t.equal(peers.refusals().get('capacity'), 1000, '1000 refused');
  t.equal(lines.filter((l) => /route table is full/.test(l)).length, 1000, 'one log line each');
  const first = [...all.values()][0]!;
  all.delete(netKey(first.subnet));
  peers.apply({ added: [], changed: [], removed: [first], cause: 'events', revision: 2 }, all);
  t.equal(engine.table.size, engine.routeCapacity, 'one removed: one waiting lease takes its place');
  t.comment(`figures: leases=${N} routes=${engine.table.size} snapshot_apply_ms=${ms}`);
});

t.test('stats slots: handed out in order, kept on replacement, freed ones reused oldest first, none beyond the engine\'s slots', async (t) => {
  const s = setup({ slots: 2 });
  s.put('10.5.10.0-24', '192.168.0.10');
  s.put('10.5.11.0-24', '192.168.0.11');
  s.put('10.5.12.0-24', '192.168.0.12');
  const slots = (): Record<string, number> => Object.fromEntries([...s.peers.routes()].map((r) => [formatIPv4(r.route.subnet.ip), r.slot]));
  t.same(slots(), { '10.5.10.0': 0, '10.5.11.0': 1, '10.5.12.0': -1 }, 'the third has no slot (forwarded, not counted)');
  s.put('10.5.11.0-24', '192.168.0.99');
  t.equal(slots()['10.5.11.0'], 1, 'a replacement keeps its slot');
  s.del('10.5.10.0-24');
  s.put('10.5.13.0-24', '192.168.0.13');
  t.equal(slots()['10.5.13.0'], 0, 'a freed slot goes to the next new route');
  t.same(s.engine.calls.filter((c) => c.startsWith('remove')), ['remove 10.5.10.0/24 slot 0'], 'the engine is told which slot to clear');
});

t.test('static peers: installed as given, through the same map', async (t) => {
  const s = setup();
  await s.peers.setStatic([{ subnet: { ip: ip('10.5.2.0'), prefixLen: 24 }, publicIP: ip('192.168.7.2') }, { subnet: { ip: ip('10.5.3.0'), prefixLen: 24 }, publicIP: ip('192.168.7.3') }]);
  t.same(s.engine.routes(), ['10.5.2.0/24 via 192.168.7.2', '10.5.3.0/24 via 192.168.7.3']);
  t.same([...s.peers.routes()].map((r) => r.slot), [0, 1]);
  t.same(s.peers.metrics().filter((m) => m.name === 'linen_peer_route').map((m) => `${m.labels?.subnet} via ${m.labels?.public_ip}`),
    ['10.5.2.0/24 via 192.168.7.2', '10.5.3.0/24 via 192.168.7.3'], 'linen_peer_route lists them');
});

t.test("the engine's route capacity is the core's: it holds exactly that many routes and refuses one more", async (t) => {
  const opts = {
    mode: 'udp', device: 'unused', bindAddr: '127.0.0.1', port: 8285, mtu: 1472, subnet: { ip: ip('10.5.1.0'), prefixLen: 24 },
    network: { ip: ip('10.5.0.0'), prefixLen: 16 }, vni: 1, mac: new Uint8Array(6), queues: 1, offload: 'off',
  } as const;
  const engine = new DgramEngine(opts, { routes: () => [] });
  const core = new Core({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip('10.5.1.0'), prefixLen: 24 } });
  t.equal(engine.routeCapacity, core.layout.MAX_ROUTES, `the dgram engine's capacity is the core's MAX_ROUTES (${core.layout.MAX_ROUTES})`);
  t.equal(new NativeEngine(opts, { routes: () => [] }).routeCapacity, core.layout.MAX_ROUTES, "so is the native engine's (nothing started)");
  // /30s from 10.0.0.0 up: distinct networks, enough of them.
  for (let i = 0; i < engine.routeCapacity; i++) core.setRoute({ subnet: { ip: (0x0a000000 + i * 4) >>> 0, prefixLen: 30 }, publicIP: 1 });
  t.equal(core.routeCount, engine.routeCapacity, 'the core holds that many');
  t.throws(() => core.setRoute({ subnet: { ip: 0xc0000000, prefixLen: 30 }, publicIP: 1 }), /route table full/, 'and not one more');
});
