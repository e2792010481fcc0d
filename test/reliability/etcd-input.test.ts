// Bad input from etcd, written by someone else under <prefix>/subnets while a two-host VXLAN
// cluster runs: values that are not JSON or have wrong types, keys that are not subnet keys,
// subnets outside the network, leases overlapping a node's own subnet, the node's own key
// rewritten with another PublicIP, and a key whose address has host bits set. Each is skipped
// with a log line naming the key; linend never crashes, never drops the other peers, never
// routes its own subnet (or part of it) anywhere else, and the pods keep reaching each other.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, ETCD_PREFIX, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { bothWays, metrics, waitFor } from '../helpers/reliability.js';

t.setTimeout(180_000);

let c: Cluster;
t.before(async () => {
  c = await buildCluster({ hosts: 2, backend: 'vxlan' });
});
t.teardown(() => c?.destroy());

const third = (n: ClusterNode): number => Number(n.subnetEnv()?.['FLANNEL_SUBNET']?.split('.')[2]);
const vx = (ip: string, data: unknown = { VNI: 1, VtepMAC: '0a:58:0a:00:00:55' }): string =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: data });

t.test('bad leases from another writer are skipped one by one, naming the key; nothing else changes', async (t) => {
  const [a, b] = c.nodes;
  const y = c.network.split('.')[1];
  const own = third(a);
  const peerRoute = `10.${y}.${third(b)}.0/24 via ${b.host.underlayIP}`;
  const routesBefore = (await metrics(a)).routes();
  t.same(routesBefore, [peerRoute], 'host 1 routes exactly host 2');
  const free = Array.from({ length: 20 }, (_, i) => 60 + i).filter((x) => x !== own && x !== third(b));
  const S = (i: number): string => `${ETCD_PREFIX}/subnets/10.${y}.${free[i]}.0-24`;
  const cases: { what: string; key: string; value: string }[] = [
    { what: 'not JSON', key: S(0), value: '{"PublicIP": garbage' },
    { what: 'JSON null', key: S(1), value: 'null' },
    { what: 'a JSON array', key: S(2), value: '[1,2,3]' },
    { what: 'PublicIP a number', key: S(3), value: '{"PublicIP":12}' },
    { what: 'PublicIP not an address', key: S(4), value: vx('300.1.1.1') },
    { what: 'BackendData a string', key: S(5), value: vx('192.0.2.5', 'nope') },
    { what: 'VNI a string', key: S(6), value: vx('192.0.2.6', { VNI: '1', VtepMAC: '0a:58:0a:00:00:06' }) },
    { what: 'VtepMAC not a MAC', key: S(7), value: vx('192.0.2.7', { VNI: 1, VtepMAC: 'not-a-mac' }) },
    { what: '100 kB of garbage', key: S(8), value: 'x'.repeat(100 * 1024) },
    { what: 'an empty object', key: S(10), value: '{}' },
    { what: 'PublicIP 0.0.0.0', key: S(11), value: vx('0.0.0.0') },
    { what: 'PublicIP loopback', key: S(12), value: vx('127.0.0.1') },
    { what: 'PublicIP multicast', key: S(13), value: vx('224.0.0.1') },
    { what: 'PublicIP broadcast', key: S(14), value: vx('255.255.255.255') },
    { what: "PublicIP host 1's own address", key: S(15), value: vx(a.host.underlayIP) },
    { what: 'a key that is no subnet', key: `${ETCD_PREFIX}/subnets/not-a-subnet`, value: vx('192.0.2.10') },
    { what: 'a key with a tail', key: `${ETCD_PREFIX}/subnets/10.${y}.${free[9]}.0-24hi`, value: vx('192.0.2.11') },
    { what: 'a prefix length out of range', key: `${ETCD_PREFIX}/subnets/10.${y}.${free[9]}.0-99`, value: vx('192.0.2.12') },
    { what: 'a subnet outside the network', key: `${ETCD_PREFIX}/subnets/172.16.5.0-24`, value: vx('192.0.2.13') },
    { what: 'a subnet containing the whole network', key: `${ETCD_PREFIX}/subnets/10.0.0.0-8`, value: vx('192.0.2.14') },
    { what: "half of host 1's subnet", key: `${ETCD_PREFIX}/subnets/10.${y}.${own}.128-25`, value: vx('192.0.2.15') },
    { what: "a /23 covering host 1's subnet", key: `${ETCD_PREFIX}/subnets/10.${y}.${own & ~1}.0-23`, value: vx('192.0.2.16') },
    { what: 'the whole cluster network', key: `${ETCD_PREFIX}/subnets/10.${y}.0.0-16`, value: vx('192.0.2.17') },
  ];
  for (const k of cases) {
    const logFrom = a.log().length;
    await c.etcd.ctl('put', k.key, k.value);
    // The key (or, for keys that name no subnet, the subnet part of it) appears in the log.
    const name = k.key.slice(k.key.lastIndexOf('/') + 1);
    const logged = await waitFor(() => a.log().slice(logFrom).includes(name), 3000, 20);
    t.ok(logged >= 0, `${k.what}: logged, naming ${name} (${a.log().slice(logFrom).split('\n').find((l) => l.includes(name))?.replace(/^\S+ \S+ +\d+ /, '').slice(0, 160) ?? 'nothing'})`);
    const routes = (await metrics(a)).routes();
    t.same(routes, [peerRoute], `${k.what}: host 1 still routes exactly host 2`);
    t.ok(a.alive() && b.alive(), `${k.what}: both running`);
  }
  // Host 2 sees the same writes: it must not route any part of host 1's subnet elsewhere either
  // (the /25 and the /23 overlap host 1's /24 lease, so host 2 refuses them too).
  const toU32 = (ip: string): number => ip.split('.').reduce((v, o) => ((v << 8) | Number(o)) >>> 0, 0);
  const overlapsHost1 = (route: string): boolean => {
    const [net, len] = route.split(' ')[0]!.split('/');
    const shift = 32 - Math.min(Number(len), 24);
    return toU32(net!) >>> shift === toU32(`10.${y}.${own}.0`) >>> shift;
  };
  const bRoutes = (await metrics(b)).routes();
  t.same(bRoutes.filter(overlapsHost1), [`10.${y}.${own}.0/24 via ${a.host.underlayIP}`],
    `host 2 routes all of host 1's /24 to host 1 and no part of it elsewhere (its routes: ${bRoutes.join('; ')})`);
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
  // And removing the garbage again is no event either.
  for (const k of cases) await c.etcd.ctl('del', k.key);
  t.same((await metrics(a)).routes(), [peerRoute], 'deleting the bad keys changes nothing');
  t.comment(`figures: bad_etcd_values=${cases.length}`);
});

t.test('a lease of another length than SubnetLen is routed while it overlaps no /24 lease, and refused while it does', async (t) => {
  const [a, b] = c.nodes;
  const y = c.network.split('.')[1];
  const peerRoute = `10.${y}.${third(b)}.0/24 via ${b.host.underlayIP}`;
  const f = Array.from({ length: 20 }, (_, i) => 90 + i).find((x) => x !== third(a) && x !== third(b))!;
  const small = { key: `${ETCD_PREFIX}/subnets/10.${y}.${f}.0-25`, route: `10.${y}.${f}.0/25 via 192.0.2.40` };
  const full = { key: `${ETCD_PREFIX}/subnets/10.${y}.${f}.0-24`, route: `10.${y}.${f}.0/24 via 192.0.2.41` };
  const routesAre = async (want: string[]): Promise<number> =>
    waitFor(async () => JSON.stringify((await metrics(a)).routes()) === JSON.stringify([...want].sort()), 5000, 50);
  await c.etcd.ctl('put', small.key, vx('192.0.2.40'));
  t.ok(await routesAre([peerRoute, small.route]) >= 0, 'alone, the /25 is routed (a cluster in the middle of a SubnetLen change)');
  const logFrom = a.log().length;
  await c.etcd.ctl('put', full.key, vx('192.0.2.41'));
  t.ok(await routesAre([peerRoute, full.route]) >= 0, 'a /24 lease over it arrives: the /24 is routed, the /25 is withdrawn');
  t.match(a.log().slice(logFrom), new RegExp(`Ignoring lease ${small.key}: .* overlaps the lease ${full.key}`), 'the log names both keys');
  await c.etcd.ctl('del', full.key);
  t.ok(await routesAre([peerRoute, small.route]) >= 0, 'the /24 goes: the /25 is routed again');
  await c.etcd.ctl('del', small.key);
  t.ok(await routesAre([peerRoute]) >= 0, 'both gone: host 1 routes exactly host 2 again');
  t.ok(a.alive() && b.alive(), 'both running');
});

t.test("host 1's own key rewritten with another PublicIP: no route for its own subnet, and the cluster keeps reaching it", async (t) => {
  const [a, b] = c.nodes;
  const y = c.network.split('.')[1];
  const ownSubnet = `10.${y}.${third(a)}.0/24`;
  const key = `${ETCD_PREFIX}/subnets/10.${y}.${third(a)}.0-24`;
  const original = (await c.etcd.ctl('get', key, '--print-value-only')).trim();
  const logFrom = a.log().length;
  await c.etcd.ctl('put', key, vx('192.0.2.66'));
  const noticed = await waitFor(() => a.log().slice(logFrom).includes(`${ownSubnet} was rewritten`), 3000, 20);
  t.ok(noticed >= 0, 'host 1 noticed and logged it');
  t.notOk((await metrics(a)).routes().some((r) => r.startsWith(`${ownSubnet} `)), 'host 1 has no route for its own subnet');
  // Host 1 puts its own lease back, so that host 2 routes its subnet to it again.
  const restored = await waitFor(async () => (await c.etcd.ctl('get', key, '--print-value-only')).trim() === original, 5000, 50);
  t.ok(restored >= 0, `host 1 put its own lease back (${restored} ms)`);
  const healed = await waitFor(async () => (await metrics(b)).routes().includes(`${ownSubnet} via ${a.host.underlayIP}`), 5000, 50);
  t.ok(healed >= 0, `host 2 routes host 1's subnet to host 1 again (${healed} ms)`);
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
  t.ok(a.alive() && b.alive(), 'both running');
  t.comment(`figures: own_key_restored_ms=${restored} peer_healed_ms=${healed}`);
});

t.test("a lease key with host bits set (10.y.<host 2>.7-24) is refused by key and counted: it takes nothing from host 2, and deleting it removes nothing", async (t) => {
  const [a, b] = c.nodes;
  const y = c.network.split('.')[1];
  const peerRoute = `10.${y}.${third(b)}.0/24 via ${b.host.underlayIP}`;
  const key = `${ETCD_PREFIX}/subnets/10.${y}.${third(b)}.7-24`;
  const refused = async (): Promise<number> => (await metrics(a)).get('linen_leases_refused_total', { reason: 'host_bits' });
  const refused0 = await refused();
  const logFrom = a.log().length;
  await c.etcd.ctl('put', key, vx('192.0.2.77'));
  const logged = await waitFor(() => a.log().slice(logFrom).includes(`Ignoring lease ${key}`), 3000, 20);
  t.ok(logged >= 0, `refused, the log naming the key (${a.log().slice(logFrom).split('\n').find((l) => l.includes(key))?.replace(/^\S+ \S+ +\d+ /, '').slice(0, 200) ?? 'nothing'})`);
  t.equal(await refused(), refused0 + 1, 'counted in linen_leases_refused_total{reason="host_bits"}');
  t.same((await metrics(a)).routes(), [peerRoute], 'host 1 still routes exactly host 2');
  t.ok(await bothWays(c, 0, 1), "pods reach each other: host 2's subnet still goes to host 2");
  await c.etcd.ctl('del', key);
  await sleep(1000); // deleting a refused key logs nothing: give the watch time to deliver it
  t.same((await metrics(a)).routes(), [peerRoute], 'after deleting the key, host 1 still routes host 2');
  t.ok(await bothWays(c, 0, 1), "pods still reach each other: the deletion did not take host 2's route");
  t.ok(a.alive() && b.alive(), 'both running');
});

t.test("alias keys of host 2's subnet, values that throw and PublicIPs that loop: host 2 keeps its route, also across a restart of host 1 with them in etcd", async (t) => {
  const [a, b] = c.nodes;
  const y = c.network.split('.')[1];
  const bNet = `10.${y}.${third(b)}.0`;
  const peerRoute = `${bNet}/24 via ${b.host.underlayIP}`;
  const f = Array.from({ length: 20 }, (_, i) => 120 + i).filter((x) => x !== third(a) && x !== third(b));
  const S = `${ETCD_PREFIX}/subnets`;
  const nested = `{"PublicIP":"192.0.2.90","BackendType":"vxlan","BackendData":${'['.repeat(5000)}${']'.repeat(5000)}}`;
  const writes: { what: string; key: string; value: string; reason: string }[] = [
    { what: 'an alias in a deeper folder', key: `${S}/x/${bNet}-24`, value: vx('192.0.2.91'), reason: 'bad_key' },
    { what: 'an alias with a prefix', key: `${S}/evil-${bNet}-24`, value: vx('192.0.2.92'), reason: 'bad_key' },
    { what: 'an alias with a leading zero in its length', key: `${S}/${bNet}-024`, value: vx('192.0.2.93'), reason: 'bad_key' },
    { what: 'an alias in dual-stack form', key: `${S}/${bNet}-24&fd00::-64`, value: vx('192.0.2.94'), reason: 'alias_key' },
    { what: 'a value of 10 KB of nested brackets', key: `${S}/10.${y}.${f[0]}.0-24`, value: nested, reason: 'bad_value' },
    { what: 'a PublicIP inside the cluster network', key: `${S}/10.${y}.${f[1]}.0-24`, value: vx(`10.${y}.${third(b)}.9`), reason: 'public_ip_in_network' },
  ];
  const refusedBy = async (reason: string): Promise<number> => (await metrics(a)).get('linen_leases_refused_total', { reason });
  const before = new Map<string, number>();
  for (const w of writes) before.set(w.reason, await refusedBy(w.reason));
  for (const w of writes) {
    const logFrom = a.log().length;
    await c.etcd.ctl('put', w.key, w.value);
    const logged = await waitFor(() => a.log().slice(logFrom).includes('bad subnet lease') || a.log().slice(logFrom).includes('Ignoring lease'), 3000, 20);
    t.ok(logged >= 0, `${w.what}: refused with a log line`);
    t.same((await metrics(a)).routes(), [peerRoute], `${w.what}: host 1 still routes host 2's subnet to host 2`);
    t.ok(a.alive() && b.alive(), `${w.what}: both running`);
  }
  for (const reason of new Set(writes.map((w) => w.reason))) {
    const n = writes.filter((w) => w.reason === reason).length;
    t.equal(await refusedBy(reason), (before.get(reason) ?? 0) + n, `linen_leases_refused_total{reason="${reason}"} counts ${n} more`);
  }
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
  // A node started with all of them in etcd lists them: it neither exits nor routes an alias.
  await a.stop();
  await a.start();
  t.ok(a.alive(), 'host 1 starts with them in etcd and stays up');
  t.same((await metrics(a)).routes(), [peerRoute], 'after the restart host 1 routes exactly host 2');
  t.ok(await bothWays(c, 0, 1), 'pods reach each other after the restart');
  for (const w of writes) await c.etcd.ctl('del', w.key);
  await sleep(1000); // deleting refused keys logs nothing: give the watch time to deliver it
  t.same((await metrics(a)).routes(), [peerRoute], "deleting the aliases takes nothing from host 2's route");
  t.same((await metrics(b)).routes().filter((r) => r.startsWith(bNet)), [], 'host 2 never routes its own subnet');
  t.ok(await bothWays(c, 0, 1), 'pods still reach each other');
});
