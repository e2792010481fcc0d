// /metrics of a live linend, as Prometheus and an operator meet it: three linend nodes on a
// real etcd, traffic between their pods, then every node's scrape through
// `promtool check metrics` (no problems), every metric the shipped dashboard and alert rules
// query present in the scrape, --peer-metrics-limit bounding the per-peer series, and the
// control-plane counters moving when what they count happens (a lease renewed, etcd lost and
// back, iptables rules removed and put back).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { buildCluster, partitionFromEtcd, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { nsExec } from '../../lab/netns.js';
import { Metrics, metrics } from '../../lab/metrics.js';
import { waitFor } from '../../lab/wait.js';
import { FWD_CHAIN } from '../../src/device/iptables.js';
import { DASHBOARD, alertQueries, dashboardQueries, documentedMetrics, exposedNames, metricNames, promtool } from '../helpers/promtool.js';

t.setTimeout(240_000);

// Renewals every 6 s (TTL 30 s, renewed 24 s before expiry), so one shows within the test.
const LEASE_ENV = { LINEN_DEBUG_LEASE_TTL_SECONDS: '30', LINEN_DEBUG_RENEW_MARGIN_SECONDS: '24' };

let c: Cluster;
t.before(async () => {
  c = await buildCluster({ hosts: 3, backend: 'vxlan', args: ['--ip-masq', '--iptables-resync=1'], env: LEASE_ENV });
  await c.ready();
});
t.teardown(async () => c?.destroy());

const scrape = async (n: ClusterNode): Promise<string> => {
  const r = await n.http('/metrics');
  if (r.status !== 200) throw new Error(`host ${n.index + 1}: /metrics answered ${r.status}`);
  return r.body;
};
const subnetOf = (n: ClusterNode): string => n.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24') ?? '?';

t.test('promtool check metrics on every node\'s live scrape: no problems', async (t) => {
  for (const [a, b] of [[0, 1], [1, 2], [2, 0]] as const) t.ok(await c.reachable(a, b, 3), `pod ${a + 1} -> pod ${b + 1}`);
  const installed = !promtool(['--version']).missing;
  t.ok(installed, 'promtool on PATH (scripts/setup.sh installs Debian\'s prometheus package for it)');
  for (const n of c.nodes) {
    const body = await scrape(n);
    const series = body.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length;
    if (installed) {
      const r = promtool(['check', 'metrics'], body);
      t.equal(r.out, '', `host ${n.index + 1}: promtool check metrics reports no problems (${series} series, ${body.length} bytes)${r.out ? `:\n${r.out}` : ''}`);
      t.equal(r.code, 0, `host ${n.index + 1}: promtool exits 0`);
    }
    const m = Metrics.parse(body);
    t.equal(m.find('linen_ready'), 1, 'linen_ready 1');
    t.equal(m.find('linen_build_info', { version: JSON.parse(readFileSync('package.json', 'utf8')).version as string }), 1, 'linen_build_info carries the package version');
    t.ok(m.get('linen_packets_total', { verdict: 'forwarded' }) > 0, 'forwarded packets counted');
    t.ok(m.get('linen_io_operations_total', { op: 'udp_sends' }) > 0 && m.get('linen_wakeups_total') > 0, 'I/O operations and wake-ups counted');
    const rss = m.get('process_resident_memory_bytes');
    t.ok(rss > 10e6 && rss < 1e9, `process_resident_memory_bytes ${(rss / 2 ** 20).toFixed(1)} MiB`);
    t.ok(m.get('process_open_fds') > 5 && m.get('process_open_fds') < m.get('process_max_fds'), `process_open_fds ${m.get('process_open_fds')} of ${m.get('process_max_fds')}`);
    t.ok(Math.abs(m.get('process_start_time_seconds') - Date.now() / 1000) < 600, 'process_start_time_seconds: minutes ago at most');
    t.comment(`host ${n.index + 1}: ${series} series; cpu ${m.get('process_cpu_seconds_total').toFixed(2)} s, event-loop lag mean ${(m.get('nodejs_eventloop_lag_seconds') * 1000).toFixed(2)} ms p99 ${(m.get('nodejs_eventloop_lag_p99_seconds') * 1000).toFixed(2)} ms`);
  }
});

t.test('every metric the dashboard and the alert rules query is in the live scrape', async (t) => {
  t.ok(JSON.parse(readFileSync(DASHBOARD, 'utf8')), 'the dashboard is valid JSON');
  const live = exposedNames(await scrape(c.nodes[0]!));
  // This cluster is vxlan without DirectRouting: the direct-route series are not exported here.
  const { directOnly } = documentedMetrics();
  for (const [what, qs] of [['dashboard', dashboardQueries()], ['alerts', alertQueries()]] as const) {
    const missing = qs.flatMap((q) => metricNames(q.expr).filter((n) => !live.has(n) && !directOnly.has(n)).map((n) => `${q.title}: ${n}`));
    t.same(missing, [], `${what}: ${qs.length} queries, every metric they read exists (or is a direct-route one)`);
  }
});

t.test('README.md names every series a live linend exports, and nothing it does not', async (t) => {
  const live = exposedNames(await scrape(c.nodes[0]!));
  const { all, directOnly } = documentedMetrics();
  t.same([...live].filter((n) => !all.has(n)).sort(), [], `each of the ${live.size} names in the scrape is in README.md's list`);
  t.same([...all].filter((n) => !live.has(n) && !directOnly.has(n)).sort(), [], `each of the ${all.size} names in the list is in the scrape, but the ${directOnly.size} a vxlan node without DirectRouting has no use for`);
});

t.test('--peer-metrics-limit bounds the per-peer series; the totals stay', async (t) => {
  const n = c.nodes[2]!;
  // One order for both lists: numeric, so 10.215.4.0/24 comes before 10.215.39.0/24 (a plain sort puts it after).
  const byAddress = (a: string, b: string): number => a.localeCompare(b, 'en', { numeric: true });
  const others = c.nodes.filter((x) => x !== n).map(subnetOf).sort(byAddress);
  const peerSubnets = (m: Metrics, name: string): string[] => [...new Set(m.samples.filter((s) => s.name === name).map((s) => s.labels.subnet!))].sort(byAddress);
  let seen: string[] = [];
  const both = await waitFor(async () => JSON.stringify(seen = peerSubnets(await metrics(n), 'linen_peer_packets_total')) === JSON.stringify(others), 15_000, 250);
  t.ok(both >= 0, `default: per-peer series for both peers ${others.join(', ')} (seen: ${seen.join(', ')})`);
  await n.stop();
  await n.start({ args: ['--peer-metrics-limit=1'], env: LEASE_ENV });
  t.ok(await c.reachable(2, 0, 3) && await c.reachable(2, 1, 3), 'pods reach both peers');
  const m = await metrics(n);
  for (const name of ['linen_peer_packets_total', 'linen_peer_bytes_total', 'linen_peer_route']) t.same(peerSubnets(m, name), others.slice(0, 1), `${name}: the lower subnet only`);
  t.equal(m.find('linen_peer_metrics_omitted_peers'), 1, 'linen_peer_metrics_omitted_peers 1');
  t.equal(m.find('linen_peers'), 2, 'linen_peers still counts both');
  t.ok(m.get('linen_packets_total', { verdict: 'forwarded' }) > 0, 'totals still counted');
});

t.test('control-plane counters: lease renewals, etcd lost and back, iptables rules put back', async (t) => {
  const n = c.nodes[0]!;
  const m0 = await metrics(n);
  t.ok(await waitFor(async () => (await metrics(n)).get('linen_lease_renewals_total') > m0.get('linen_lease_renewals_total'), 20_000, 500) >= 0,
    'linen_lease_renewals_total grows (renewals every 6 s here)');

  const cut = partitionFromEtcd(c, n, { reject: true, kill: true });
  let lost = -1;
  let failed = -1;
  try {
    lost = await waitFor(async () => (await metrics(n)).get('linen_etcd_connected') === 0, 30_000, 250);
    failed = await waitFor(async () => (await metrics(n)).get('linen_lease_renewal_failures_total') > m0.get('linen_lease_renewal_failures_total'), 30_000, 250);
  } finally {
    cut.heal();
  }
  t.ok(lost >= 0, `linen_etcd_connected 0 while cut off (after ${lost} ms)`);
  t.ok(failed >= 0, `linen_lease_renewal_failures_total grows while cut off (after ${failed} ms)`);
  const back = await waitFor(async () => {
    const m = await metrics(n);
    return m.get('linen_etcd_connected') === 1 && m.get('linen_etcd_reconnects_total') > m0.get('linen_etcd_reconnects_total');
  }, 30_000, 250);
  t.ok(back >= 0, `linen_etcd_connected 1 and linen_etcd_reconnects_total grows after the cut heals (${back} ms)`);

  const r0 = (await metrics(n)).get('linen_iptables_restores_total');
  nsExec(n.host.ns, 'iptables', ['-w', '-F', FWD_CHAIN]);
  const restored = await waitFor(async () => (await metrics(n)).get('linen_iptables_restores_total') > r0, 15_000, 250);
  t.ok(restored >= 0, `linen_iptables_restores_total grows after ${FWD_CHAIN} is flushed (${restored} ms)`);
  t.equal((await metrics(n)).get('linen_iptables_resync_failures_total'), 0, 'no iptables check failed');
});
