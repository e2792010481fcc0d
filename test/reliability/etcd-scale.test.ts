// A large cluster's etcd: 30,000 leases under <prefix>/subnets (a listing of about 5 MB, 7 MB as
// the gateway's JSON, read in pages), packed from SubnetMin upward as flanneld allocates them.
// A running node follows them as they are written; a new node joins, takes a free subnet and
// routes every one of them; the two pods reach each other. Join time and RSS are printed.
import t from 'tap';
import { buildCluster, HEALTH_PORT, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { nsExec } from '../../lab/netns.js';
import { putMany } from '../helpers/etcd.js';
import { WIDE_NETWORK, wideFakeLeases } from '../../lab/leases.js';
import { Metrics, bothWays, pidOf, rssKiB, waitFor } from '../helpers/reliability.js';

const LEASES = 30_000;

t.setTimeout(240_000);

/** /metrics read with curl straight into a large buffer (30,000 peers make it several MB). */
async function bigMetrics(n: ClusterNode): Promise<Metrics> {
  return Metrics.parse(nsExec(n.host.ns, 'curl', ['-s', '-m', '30', `http://127.0.0.1:${HEALTH_PORT}/metrics`], { timeout: 40_000 }));
}

const ownSubnet = (n: ClusterNode): string => n.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24') ?? '?';

let c: Cluster;
t.before(async () => {
  // Every peer's linen_peer_route line is read back below: lift the per-peer series limit.
  c = await buildCluster({ hosts: 2, backend: 'vxlan', start: false, args: ['--peer-metrics-limit=1000000'], config: { ...WIDE_NETWORK, Backend: { Type: 'vxlan' } } });
});
t.teardown(() => c?.destroy());

t.test(`${LEASES} leases in etcd: a running node routes them all, a new node joins, takes a free subnet and routes them all`, async (t) => {
  const [a, b] = c.nodes as [ClusterNode, ClusterNode];
  await a.start();

  // Fake peers 10.<i/256>.<i%256>.0/24 for i = 1..LEASES, less the one host 1 already holds (it allocated among the first 100).
  const aSubnet = ownSubnet(a);
  const fakes = wideFakeLeases(LEASES, aSubnet);
  const kvs = fakes.map((f): [string, string] => [f.key, f.value]);
  const want = new Set(fakes.map((f) => f.route));
  const bytes = kvs.reduce((s, [k, v]) => s + k.length + v.length, 0);
  const t0 = Date.now();
  putMany(c.topo.bridgeNs!, [c.etcdEndpoint], kvs);
  const writeMs = Date.now() - t0;
  t.comment(`wrote ${kvs.length} leases (${(bytes / 1e6).toFixed(1)} MB of keys and values) in ${writeMs} ms`);

  // Host 1 follows the writes through its watch.
  const aFollows = await waitFor(async () => (await bigMetrics(a)).get('linen_peers') === kvs.length, 90_000, 1000);
  t.ok(aFollows >= 0, `host 1 (running) routes all ${kvs.length} new peers ${aFollows} ms after the writes`);

  // Host 2 joins.
  const j0 = Date.now();
  await b.start({ wait: false });
  const joined = await waitFor(async () => (await b.http('/readyz').catch(() => ({ status: 0 }))).status === 200 || !b.alive(), 90_000, 100);
  const joinMs = Date.now() - j0;
  t.ok(joined >= 0 && b.alive(), `host 2 joined (ready) in ${joinMs} ms`);
  if (!b.alive() || joined < 0) {
    t.comment(b.log().slice(-3000));
    return;
  }
  b.attachPod();
  const bSubnet = ownSubnet(b);
  t.notOk(kvs.some(([k]) => k.endsWith(`/${bSubnet.replace('/24', '-24')}`)), `host 2 took a free subnet (${bSubnet})`);
  t.not(bSubnet, aSubnet, 'not host 1\'s');

  const expectB = new Set(want);
  expectB.add(`${aSubnet} via ${a.host.underlayIP}`);
  const bRoutes = await waitFor(async () => (await bigMetrics(b)).get('linen_peers') === expectB.size, 60_000, 500);
  t.ok(bRoutes >= 0, `host 2 routes ${expectB.size} peers`);
  const routesB = (await bigMetrics(b)).routes();
  t.equal(routesB.length, expectB.size, 'as many routes as peers');
  t.ok(routesB.every((r) => expectB.has(r)), 'every route is a lease in etcd, to its PublicIP');

  const aWants = new Set(want);
  aWants.add(`${bSubnet} via ${b.host.underlayIP}`);
  t.ok(await waitFor(async () => (await bigMetrics(a)).get('linen_peers') === aWants.size, 30_000, 500) >= 0, 'host 1 routes host 2 as well');
  a.attachPod();
  t.ok(await bothWays(c, 0, 1), 'pods 1 and 2 reach each other');

  const rssA = rssKiB(pidOf(a));
  const rssB = rssKiB(pidOf(b));
  t.comment(`figures: leases=${kvs.length} listing_mb=${(bytes / 1e6).toFixed(1)} write_ms=${writeMs} follow_ms=${aFollows} join_ms=${joinMs} ` +
    `routes_b=${routesB.length} rss_joiner_mib=${(rssB / 1024).toFixed(0)} rss_running_mib=${(rssA / 1024).toFixed(0)}`);
  t.notMatch(b.log(), /etcd unavailable|etcd unreachable/, 'the joining node never took the large listing for an etcd outage');
});
