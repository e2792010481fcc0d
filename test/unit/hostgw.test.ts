// host-gw and DirectRouting without namespaces: the kernel route manager against a fake kernel
// (adjacency as flanneld decides it, route replace/del, the periodic check that puts back
// deleted routes and counts them), the peer set placing each peer (direct, engine, refused)
// and moving it when its PublicIP moves, host-gw's lease bytes and its lease filter.
import t from 'tap';
import { parseNetworkConfig } from '../../src/config/network.js';
import { createBackend } from '../../src/backend/index.js';
import type { Engine, EngineStats, SlottedRoute } from '../../src/dataplane/engine.js';
import { KernelRoutes, type RouteNetlink } from '../../src/device/routes.js';
import { ROUTE_OP, type RouteAnswer } from '../../src/addon/native.js';
import { memoryLogger } from '../../src/log.js';
import { formatCIDR, formatIPv4, netKey, parseCIDR, parseIPv4, parseMAC, type NetKey } from '../../src/net.js';
import { PeerSet } from '../../src/peers/peer-set.js';
import { encodeLeaseAttrs, etcdKeys, type Lease } from '../../src/subnet/lease.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { LeaseWatcher, type Peer, type PeerDiff } from '../../src/subnet/watcher.js';
import { hostGwLeaseAttrs } from '../../src/backend/hostgw.js';
import type { Registry } from '../../src/subnet/registry.js';

const ip = (s: string): number => parseIPv4(s)!;

/**
 * A fake kernel for one host on 192.168.7.0/24 (eth0), with 172.16.9.0/24 behind the gateway
 * 192.168.7.254 and 10.9.0.0/24 directly on eth1, answering the addon's rtnetlink calls as the
 * kernel does (the real calls are in test/integration/routes.test.ts). It keeps the routes it
 * is told to replace, and counts the batches.
 */
class FakeKernel implements RouteNetlink {
  readonly table = new Map<string, { gateway: string; dev: string }>();
  readonly batches: string[][] = [];
  failReplace = false;
  async routeBatch(dev: string, ops: Uint32Array): Promise<RouteAnswer[]> {
    const out: RouteAnswer[] = [];
    const kinds: string[] = [];
    for (let i = 0; i < ops.length; i += 4) {
      const [kind, dst, len, gw] = [ops[i]!, formatIPv4(ops[i + 1]!), ops[i + 2]!, formatIPv4(ops[i + 3]!)];
      const cidr = `${dst}/${len}`;
      kinds.push(kind === ROUTE_OP.get ? `get ${dst}` : kind === ROUTE_OP.replace ? `replace ${cidr} via ${gw}` : `delete ${cidr} via ${gw}`);
      if (kind === ROUTE_OP.get) {
        if (dst === '192.168.7.1') out.push({ errno: 0, error: '', type: 2, dev: 'lo' });
        else if (dst.startsWith('192.168.7.')) out.push({ errno: 0, error: '', type: 1, dev: 'eth0' });
        else if (dst.startsWith('10.9.0.')) out.push({ errno: 0, error: '', type: 1, dev: 'eth1' });
        else if (dst.startsWith('172.16.9.')) out.push({ errno: 0, error: '', type: 1, gateway: ip('192.168.7.254'), dev: 'eth0' });
        else out.push({ errno: 101, error: 'Network is unreachable' });
      } else if (kind === ROUTE_OP.replace) {
        if (this.failReplace) out.push({ errno: 22, error: 'Nexthop has invalid gateway' });
        else {
          this.table.set(cidr, { gateway: gw, dev });
          out.push({ errno: 0, error: '' });
        }
      } else if (this.table.get(cidr)?.gateway === gw) {
        this.table.delete(cidr);
        out.push({ errno: 0, error: '' });
      } else out.push({ errno: 3, error: 'No such process' });
    }
    this.batches.push(kinds);
    return out;
  }
  async routeDump(dev: string): Promise<Uint32Array> {
    const rows = [0, 0, ip('192.168.7.254')];
    for (const [cidr, r] of this.table) {
      const n = parseCIDR(cidr)!;
      if (r.dev === dev) rows.push(n.ip, n.prefixLen, ip(r.gateway));
    }
    return new Uint32Array(rows);
  }
  routes(): string[] {
    return [...this.table].map(([dst, r]) => `${dst} via ${r.gateway} dev ${r.dev}`).sort();
  }
}

class FakeEngine implements Engine {
  readonly name = 'native' as const;
  readonly table = new Map<string, SlottedRoute>();
  constructor(readonly routeCapacity = 131072, readonly peerSlots = 4096) {}
  setRoute(r: SlottedRoute): void { this.table.set(formatCIDR(r.route.subnet), r); }
  removeRoute(r: SlottedRoute): void { this.table.delete(formatCIDR(r.route.subnet)); }
  routes(): string[] { return [...this.table].map(([k, r]) => `${k} via ${formatIPv4(r.route.publicIP)}`).sort(); }
  async start(): Promise<never> { throw new Error('not used'); }
  stats(): EngineStats { throw new Error('not used'); }
  async refresh(): Promise<void> {}
  async stop(): Promise<void> {}
}

async function setup(backendJson: Record<string, unknown>, capacity?: number) {
  const config = parseNetworkConfig(JSON.stringify({ Network: '10.5.0.0/16', Backend: backendJson }));
  const fake = new FakeKernel();
  const { log, lines } = memoryLogger(0);
  const kernel = new KernelRoutes({ dev: 'eth0', log, netlink: fake });
  const backend = await createBackend(config.backend);
  const peers = new PeerSet({ backend, config, ownSubnet: parseCIDR('10.5.1.0/24')!, self: ip('192.168.7.1'), log, kernel });
  const engine = backend.mode === null ? null : new FakeEngine(capacity);
  if (engine) peers.attach(engine);
  const all = new Map<NetKey, Peer>();
  const lease = (key: string, publicIP: string): Peer => {
    const [addr, len] = key.split('-');
    const attrs = backend.type === 'host-gw' ? hostGwLeaseAttrs(ip(publicIP)) : backend.type === 'vxlan' ? vxlanLeaseAttrs(ip(publicIP), 1, parseMAC('02:00:00:00:00:07')!) : udpLeaseAttrs(ip(publicIP));
    return {
      key: `/coreos.com/network/subnets/${key}`, subnet: { ip: ip(addr!), prefixLen: Number(len) }, publicIP: ip(publicIP), attrs,
      vxlan: backend.type === 'vxlan' ? { vni: 1, vtepMAC: parseMAC('02:00:00:00:00:07')! } : null,
    };
  };
  /** Applies a diff and waits until its routes are in the (fake) kernel. */
  const apply = async (added: Peer[], changed: Peer[], removed: Peer[]): Promise<void> => {
    for (const p of [...added, ...changed]) all.set(netKey(p.subnet), p);
    for (const p of removed) all.delete(netKey(p.subnet));
    const d: PeerDiff = { added, changed, removed, cause: 'events', revision: 1 };
    await peers.apply(d, all);
    await kernel.settled();
  };
  const put = (key: string, publicIP: string): Promise<void> => {
    const p = lease(key, publicIP);
    const had = all.has(netKey(p.subnet));
    return apply(had ? [] : [p], had ? [p] : [], []);
  };
  const del = async (key: string): Promise<void> => {
    const p = [...all.values()].find((q) => q.key.endsWith(`/${key}`));
    if (p) await apply([], [], [p]);
  };
  const metric = (name: string, labels: Record<string, string> = {}): number | bigint | undefined =>
    [...peers.metrics(), ...kernel.metrics()].find((m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value;
  return { peers, kernel, fake, engine, lines, put, del, apply, lease, metric };
}

t.test('adjacency is flanneld\'s: one route, no gateway, and it leaves by the external interface', async (t) => {
  const { kernel } = await setup({ Type: 'host-gw' });
  await kernel.lookup(['192.168.7.2', '172.16.9.3', '10.9.0.5', '192.168.7.1', '203.0.113.9'].map(ip));
  t.equal(kernel.notAdjacent(ip('192.168.7.2')), null, 'same /24 on eth0');
  t.match(kernel.notAdjacent(ip('172.16.9.3')), /reached through the gateway 192\.168\.7\.254/);
  t.match(kernel.notAdjacent(ip('10.9.0.5')), /through eth1, not the external interface eth0/);
  t.match(kernel.notAdjacent(ip('192.168.7.1')), /address of this host/);
  t.match(kernel.notAdjacent(ip('203.0.113.9')), /no route to it \(Network is unreachable\)/);
});

t.test('host-gw: adjacent peers get a kernel route; others are refused with a clear line, not half-routed', async (t) => {
  const s = await setup({ Type: 'host-gw' });
  await s.put('10.5.2.0-24', '192.168.7.2');
  await s.put('10.5.3.0-24', '172.16.9.3');
  t.same(s.fake.routes(), ['10.5.2.0/24 via 192.168.7.2 dev eth0'], 'only the adjacent peer is routed');
  t.ok(s.lines.some((l) => /Ignoring lease \/coreos\.com\/network\/subnets\/10\.5\.3\.0-24: its PublicIP 172\.16\.9\.3 is not on a directly connected network: it is reached through the gateway 192\.168\.7\.254.*host-gw needs every host on one layer-2 network/.test(l)),
    'the refusal names the lease, the PublicIP and why');
  t.equal(s.metric('linen_leases_refused_total', { reason: 'not_adjacent' }), 1);
  t.equal(s.metric('linen_peers'), 1);
  t.equal(s.metric('linen_peers_direct'), 1);
  t.equal(s.metric('linen_direct_routes'), 1);
  t.same([...s.peers.routes()], [], 'nothing for an engine');
  // The refused peer's host moves onto the shared network: it is routed now.
  await s.put('10.5.3.0-24', '192.168.7.3');
  t.same(s.fake.routes(), ['10.5.2.0/24 via 192.168.7.2 dev eth0', '10.5.3.0/24 via 192.168.7.3 dev eth0']);
  // And away again: its route goes (no route left pointing at an unreachable gateway).
  await s.put('10.5.3.0-24', '172.16.9.3');
  t.same(s.fake.routes(), ['10.5.2.0/24 via 192.168.7.2 dev eth0']);
  t.equal(s.metric('linen_leases_refused_total', { reason: 'not_adjacent' }), 2);
  await s.del('10.5.2.0-24');
  t.same(s.fake.routes(), [], 'removed with the lease');
  t.equal(s.metric('linen_peers'), 0);
  // The usual admission rules hold before adjacency is looked at.
  await s.put('10.6.0.0-24', '192.168.7.6');
  await s.put('10.5.1.0-24', '192.168.7.8');
  await s.put('10.5.9.0-24', '127.0.0.1');
  t.same(s.fake.routes(), []);
  t.equal(s.metric('linen_leases_refused_total', { reason: 'outside_network' }), 1);
  t.equal(s.metric('linen_leases_refused_total', { reason: 'own_subnet' }), 1);
  t.equal(s.metric('linen_leases_refused_total', { reason: 'public_ip_loopback' }), 1);
});

t.test('the periodic check puts back deleted routes and counts them', async (t) => {
  const s = await setup({ Type: 'host-gw' });
  await s.put('10.5.2.0-24', '192.168.7.2');
  await s.put('10.5.4.0-24', '192.168.7.4');
  t.equal(await s.kernel.check(), 0, 'nothing missing');
  s.fake.table.delete('10.5.2.0/24');
  s.fake.table.set('10.5.4.0/24', { gateway: '192.168.7.99', dev: 'eth0' });
  t.equal(await s.kernel.check(), 2, 'a deleted route and one changed behind linen\'s back');
  t.same(s.fake.routes(), ['10.5.2.0/24 via 192.168.7.2 dev eth0', '10.5.4.0/24 via 192.168.7.4 dev eth0']);
  t.equal(s.metric('linen_routes_restored_total'), 2);
  t.ok(s.lines.some((l) => /Route recovered 10\.5\.2\.0\/24 via 192\.168\.7\.2 dev eth0/.test(l)));
  // A route the kernel refuses stays wanted and is tried at each check (as flanneld's list).
  s.fake.failReplace = true;
  await s.put('10.5.6.0-24', '192.168.7.6');
  t.equal(s.metric('linen_route_errors_total'), 1);
  t.equal(await s.kernel.check(), 0);
  s.fake.failReplace = false;
  t.equal(await s.kernel.check(), 1, 'put in once the kernel takes it');
  t.same(s.fake.routes().length, 3);
  // A removed lease's route is not put back.
  await s.del('10.5.2.0-24');
  s.fake.table.delete('10.5.2.0/24');
  t.equal(await s.kernel.check(), 0);
  t.notOk(s.fake.table.has('10.5.2.0/24'));
});

t.test('a diff of 1,000 host-gw leases is one lookup batch and one write batch; the last change to a subnet wins', async (t) => {
  const s = await setup({ Type: 'host-gw' });
  const leases = Array.from({ length: 1000 }, (_, i) => s.lease(`10.5.${(i >> 8) + 10}.${(i & 255)}-32`, `192.168.7.${(i % 200) + 2}`));
  await s.apply(leases, [], []);
  t.same(s.fake.batches.map((b) => `${b.length} ${b[0]!.split(' ')[0]}`), ['200 get', '1000 replace'], 'one lookup per distinct PublicIP, then one write');
  t.equal(s.fake.table.size, 1000);
  t.equal(s.metric('linen_direct_routes'), 1000);
  t.equal(await s.kernel.check(), 0, 'the check finds them all');
  t.equal(s.fake.batches.length, 2, 'and writes nothing');
  // Changed and then removed before the kernel heard of the change: the route the kernel has
  // (via the old PublicIP) is the one deleted.
  const route = (via: string) => ({ subnet: parseCIDR('10.5.200.0/24')!, publicIP: ip(via) });
  s.kernel.set(route('192.168.7.50'));
  await s.kernel.settled();
  s.kernel.set(route('192.168.7.51'));
  s.kernel.remove(route('192.168.7.51'));
  await s.kernel.settled();
  t.notOk(s.fake.table.has('10.5.200.0/24'), 'gone from the kernel');
  t.same(s.fake.batches.at(-1), ['delete 10.5.200.0/24 via 192.168.7.50']);
});

for (const type of ['vxlan', 'udp'] as const) {
  t.test(`${type} DirectRouting: adjacent peers direct, the others through the engine; a PublicIP change moves the route`, async (t) => {
    const s = await setup({ Type: type, DirectRouting: true }, 2);
    const engine = s.engine!;
    await s.put('10.5.2.0-24', '192.168.7.2');
    await s.put('10.5.3.0-24', '172.16.9.3');
    t.same(s.fake.routes(), ['10.5.2.0/24 via 192.168.7.2 dev eth0']);
    t.same(engine.routes(), ['10.5.3.0/24 via 172.16.9.3']);
    t.same([...s.peers.routes()].map((r) => formatIPv4(r.route.subnet.ip)), ['10.5.3.0'], 'the engine reads back only its own routes');
    t.equal(s.metric('linen_peers'), 2);
    t.equal(s.metric('linen_peers_direct'), 1);
    // Moves: direct → engine and engine → direct.
    await s.put('10.5.2.0-24', '172.16.9.2');
    await s.put('10.5.3.0-24', '192.168.7.3');
    t.same(s.fake.routes(), ['10.5.3.0/24 via 192.168.7.3 dev eth0'], 'the direct route moved to the other peer');
    t.same(engine.routes(), ['10.5.2.0/24 via 172.16.9.2']);
    // Direct routes do not use the engine's capacity (2 here): two more routed peers fit.
    await s.put('10.5.4.0-24', '192.168.7.4');
    await s.put('10.5.5.0-24', '172.16.9.5');
    await s.put('10.5.6.0-24', '192.168.7.6');
    t.same(engine.routes(), ['10.5.2.0/24 via 172.16.9.2', '10.5.5.0/24 via 172.16.9.5']);
    t.equal(s.fake.routes().length, 3);
    await s.put('10.5.7.0-24', '172.16.9.7');
    t.equal(s.metric('linen_leases_refused_total', { reason: 'capacity' }), 1, 'a third routed peer is over capacity');
    // A direct peer moving into a full engine waits; room made admits it.
    await s.put('10.5.6.0-24', '172.16.9.6');
    t.notOk(s.fake.table.has('10.5.6.0/24'), 'its direct route is gone');
    await s.del('10.5.5.0-24');
    t.equal(engine.routes().length, 2);
    t.ok(engine.table.has('10.5.7.0/24') || engine.table.has('10.5.6.0/24'), 'a waiting lease took the room');
    await s.del('10.5.3.0-24');
    t.same(s.fake.routes(), ['10.5.4.0/24 via 192.168.7.4 dev eth0']);
  });
}

t.test('host-gw lease bytes are flanneld\'s, and a host-gw node watches only host-gw leases', async (t) => {
  t.equal(encodeLeaseAttrs(hostGwLeaseAttrs(ip('192.168.7.2'))), '{"PublicIP":"192.168.7.2","PublicIPv6":null,"BackendType":"host-gw"}');
  const lease = (key: string, attrs: Lease['attrs']): Lease => ({
    key: `/coreos.com/network/subnets/${key}`, subnet: { ip: ip(key.split('-')[0]!), prefixLen: 24 }, ipv6: null, attrs, leaseId: '0', modRevision: 1,
  });
  const w = new LeaseWatcher({ registry: { keys: etcdKeys('/coreos.com/network') } as unknown as Registry, ownSubnet: parseCIDR('10.5.1.0/24'), accept: 'host-gw' });
  const d = w.applySnapshot({
    revision: 1, skipped: [],
    leases: [lease('10.5.2.0-24', hostGwLeaseAttrs(ip('192.168.7.2'))), lease('10.5.3.0-24', udpLeaseAttrs(ip('192.168.7.3'))),
      lease('10.5.4.0-24', vxlanLeaseAttrs(ip('192.168.7.4'), 1, parseMAC('02:00:00:00:00:04')!))],
  }, 'snapshot');
  t.same(d.added.map((p) => p.key), ['/coreos.com/network/subnets/10.5.2.0-24'], 'udp and vxlan leases are ignored, as flanneld\'s RouteNetwork does');
});
