// npm run demo [-- --backend udp|vxlan|host-gw|wireguard] [--hosts N] [--keep] [--kube]
//
// A multi-host container network on this one machine: etcd in its own network namespace,
// N hosts joined by an underlay bridge, two pods per host on a CNI-style bridge, flannel's
// network config in etcd, and linend on every host. With --kube, the lab Kubernetes API
// server takes etcd's place: one Node per host with its podCIDR, and linend --kube-subnet-mgr. It shows each host's lease, a pod-to-pod
// reachability matrix, a short iperf3 figure and the counters that moved; then tears it all
// down (also on Ctrl-C or failure), unless --keep.
import { parseArgs } from 'node:util';
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildCluster, ETCD_PREFIX, HEALTH_PORT, type Cluster } from '../lab/cluster.js';
import { buildKubeCluster, type KubeCluster } from '../lab/kube-cluster.js';
import { ETCD } from '../lab/etcd.js';
import { etcdLeases, leaseKey } from '../lab/leases.js';
import { Metrics } from '../lab/metrics.js';
import { iperfTcp, reachable, runBounded } from '../lab/traffic.js';
import { teardownOnSignal } from '../lab/netns.js';
import { mapPool } from '../lab/pool.js';

interface Pod { host: number; ns: string; ip: string }

const started = Date.now();
let stepNo = 0;
let stepStarted = started;
const TOTAL_STEPS = 7;
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
/** Ends the step under way, printing how long it took itself. */
function endStep(): void {
  if (stepNo > 0) process.stdout.write(`      step ${stepNo} took ${seconds(Date.now() - stepStarted)}\n`);
}
function step(text: string): void {
  endStep();
  stepNo++;
  stepStarted = Date.now();
  process.stdout.write(`[${stepNo}/${TOTAL_STEPS}] ${text}\n`);
}

type DemoCluster = Pick<Cluster, 'topo' | 'nodes' | 'ready' | 'destroy'>;

/** A second pod per host, both on a bridge that holds the gateway (as the CNI bridge plugin sets up). */
function addSecondPods(c: DemoCluster): Pod[] {
  const pods: Pod[] = [];
  for (const n of c.nodes) {
    const h = n.host;
    const env = n.subnetEnv();
    const m = /^(\d+\.\d+\.\d+)\.1\/(\d+)$/.exec(env?.['FLANNEL_SUBNET'] ?? '');
    if (!m || !env) throw new Error(`host ${n.index + 1} has no subnet`);
    const mtu = env['FLANNEL_MTU'];
    const bridge = `${c.topo.id}-c${h.index}`;
    c.topo.ip(h.ns, 'link', 'add', bridge, 'mtu', mtu, 'type', 'bridge');
    c.topo.ip(h.ns, 'addr', 'flush', 'dev', h.podGatewayDev);
    c.topo.ip(h.ns, 'link', 'set', h.podGatewayDev, 'master', bridge);
    c.topo.ip(h.ns, 'addr', 'add', `${m[1]}.1/${m[2]}`, 'dev', bridge);
    c.topo.ip(h.ns, 'link', 'set', bridge, 'up');
    pods.push({ host: n.index, ns: h.pod.ns, ip: n.podIp ?? `${m[1]}.2` });
    const ns = `${c.topo.id}-q${h.index}`;
    const veth = `${c.topo.id}-v${h.index}`;
    c.topo.addNamespace(ns);
    c.topo.ip(h.ns, 'link', 'add', veth, 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', mtu, 'netns', ns);
    c.topo.ip(h.ns, 'link', 'set', veth, 'master', bridge);
    c.topo.ip(h.ns, 'link', 'set', veth, 'up');
    c.topo.ip(ns, 'addr', 'add', `${m[1]}.3/${m[2]}`, 'dev', 'eth0');
    c.topo.ip(ns, 'link', 'set', 'eth0', 'up');
    c.topo.ip(ns, 'route', 'add', 'default', 'via', `${m[1]}.1`);
    pods.push({ host: n.index, ns, ip: `${m[1]}.3` });
  }
  return pods;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join('  ')).join('\n');
}

/** The packet and I/O counters of a /metrics page, as `name{labels}` -> value. */
function counters(metrics: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const s of Metrics.parse(metrics).samples) {
    if (!/^linen_(?:packets|events|peer_packets|io_operations|io_errors)_total$/.test(s.name)) continue;
    m.set(`${s.name}{${Object.entries(s.labels).map(([k, v]) => `${k}="${v}"`).join(',')}}`, s.value);
  }
  return m;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { backend: { type: 'string', default: 'vxlan' }, hosts: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false }, kube: { type: 'boolean', default: false } },
  });
  const kube = values.kube;
  const backend = values.backend;
  const hosts = Number(values.hosts);
  if (backend !== 'udp' && backend !== 'vxlan' && backend !== 'host-gw' && backend !== 'wireguard') { console.error(`demo: --backend must be udp, vxlan, host-gw or wireguard, not ${backend}`); return 2; }
  if (!Number.isInteger(hosts) || hosts < 2 || hosts > 40) { console.error(`demo: --hosts must be a whole number from 2 to 40, not ${values.hosts}`); return 2; }
  if (process.getuid?.() !== 0) { console.error('demo: run as root (it creates network namespaces)'); return 1; }
  if (!kube && !existsSync(ETCD)) {
    console.error(`demo: ${ETCD} is missing and could not be installed; install it with: apt-get install -y etcd-server etcd-client`);
    return 1;
  }

  step(`Building ${hosts} hosts with 2 pods each, an underlay bridge and ${kube ? 'the lab Kubernetes API server (a Node per host)' : 'etcd'}, then starting linend (${backend}${kube ? ', --kube-subnet-mgr' : ''}) on every host`);
  let cluster: DemoCluster | null = null;
  let etcdCluster: Cluster | null = null;
  let kubeCluster: KubeCluster | null = null;
  const teardown = async (): Promise<void> => {
    const c = cluster;
    cluster = null;
    if (c) await c.destroy();
  };
  teardownOnSignal(teardown, 'Interrupted: tearing down');
  try {
    if (kube) cluster = kubeCluster = await buildKubeCluster({ hosts, backend, start: false });
    else cluster = etcdCluster = await buildCluster({ hosts, backend, start: false });
    const c = cluster;
    await Promise.all(c.nodes.map((n) => n.start({ wait: false })));
    step('Waiting for every linend to be ready (/readyz)');
    await c.ready();
    const pods = addSecondPods(c);

    step(kube ? 'Hosts and their leases (the Nodes\' podCIDRs and flannel annotations)' : 'Hosts and their leases');
    const leases = etcdCluster !== null ? await etcdLeases(etcdCluster) : new Map<string, string>();
    const rows = [['host', 'public IP', 'subnet (lease)', backend === 'vxlan' ? 'VtepMAC' : 'MTU', 'pods']];
    for (const n of c.nodes) {
      const env = n.subnetEnv() ?? {};
      const net = (env['FLANNEL_SUBNET'] ?? '?').replace(/\.1\//, '.0/');
      const value = kubeCluster !== null
        ? (kubeCluster.api.node(kubeCluster.nodeNames[n.index]!).then((o) => ((o?.metadata['annotations'] ?? {}) as Record<string, string>)['flannel.alpha.coreos.com/backend-data'] ?? ''))
        : env['FLANNEL_SUBNET'] === undefined ? '' : leases.get(leaseKey(net)) ?? '';
      const mac = /"VtepMAC":"([^"]+)"/.exec(await value)?.[1] ?? '';
      rows.push([`host${n.index + 1}`, n.host.underlayIP, net, backend === 'vxlan' ? mac : env['FLANNEL_MTU'] ?? '', pods.filter((p) => p.host === n.index).map((p) => p.ip).join(' ')]);
    }
    console.log(table(rows));
    if (kubeCluster !== null) {
      console.log(`\nkubectl get nodes (the lab API server):\n${(await kubeCluster.api.kubectl('get', 'nodes', '-o',
        'custom-columns=NODE:.metadata.name,PODCIDR:.spec.podCIDR,PUBLIC-IP:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip,BACKEND:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/backend-type,NETWORK:.status.conditions[?(@.type=="NetworkUnavailable")].reason')).trimEnd()}`);
    }

    step(`Pod-to-pod reachability (${pods.length * (pods.length - 1)} pings)`);
    const before = counters((await c.nodes[0].http('/metrics')).body);
    const pairs: [Pod, Pod][] = [];
    for (const a of pods) for (const b of pods) if (a !== b) pairs.push([a, b]);
    const results = await mapPool(pairs, 24, ([a, b]) => reachable(a.ns, b.ip, 2));
    const ok = new Map(pairs.map(([a, b], i) => [`${a.ip}>${b.ip}`, results[i]]));
    let failures = results.filter((r) => !r).length;
    if (pods.length <= 8) {
      const m = [['from \\ to', ...pods.map((p) => p.ip)]];
      for (const a of pods) m.push([a.ip, ...pods.map((b) => (a === b ? '-' : ok.get(`${a.ip}>${b.ip}`) ? 'ok' : 'FAIL'))]);
      console.log(table(m));
    } else {
      const m = [['host \\ host', ...c.nodes.map((n) => String(n.index + 1))]];
      for (const x of c.nodes) {
        m.push([`host${x.index + 1}`, ...c.nodes.map((y) => {
          const all = pairs.filter(([a, b]) => a.host === x.index && b.host === y.index).every(([a, b]) => ok.get(`${a.ip}>${b.ip}`));
          return all ? 'ok' : 'FAIL';
        })]);
      }
      console.log(table(m) + '\n(each cell: every pod of the row host reaches every pod of the column host)');
    }
    console.log(`${results.length - failures} of ${results.length} pod pairs reachable`);

    step('Throughput between two pods on different hosts (iperf3, one TCP stream, 3 s)');
    const [src, dst] = [pods[0], pods.find((p) => p.host !== pods[0].host) ?? pods[1]];
    try {
      const r = await iperfTcp({ from: src, to: dst, seconds: 3, congestion: 'cubic' });
      console.log(`${src.ip} (host${src.host + 1}) -> ${dst.ip} (host${dst.host + 1}): ${r.gbps.toFixed(2)} Gbit/s`);
    } catch (e) {
      console.log(`iperf3 failed: ${(e as Error).message.slice(0, 300)}`);
      failures++;
    }

    if (backend === 'host-gw') {
      // No data plane, so no packet counters: the kernel forwards along the routes linend keeps.
      step('Direct routes on host1 (kernel routes and /metrics)');
      const routes = await runBounded(c.nodes[0].host.ns, 'ip', ['route', 'show', 'dev', c.nodes[0].host.underlayDev], { timeoutMs: 10_000 });
      console.log(`host-gw: no tunnel; host1's kernel routes to the other hosts' subnets (kept by linend):\n${routes.stdout.trim()}`);
      const m = Metrics.parse((await c.nodes[0].http('/metrics')).body);
      console.log(table([['metric', 'value'], ...['linen_peers_direct', 'linen_direct_routes', 'linen_route_errors_total', 'linen_routes_restored_total'].map((n) => [n, String(m.get(n))])]));
    } else {
      step('Counters that moved on host1 (/metrics)');
      const after = counters((await c.nodes[0].http('/metrics')).body);
      const moved = [['counter', 'before', 'after']];
      for (const [k, v] of after) if (v !== (before.get(k) ?? 0)) moved.push([k, String(before.get(k) ?? 0), String(v)]);
      console.log(moved.length > 1 ? table(moved) : 'none moved');
    }

    if (values.keep) {
      step('Keeping the cluster running');
      console.log(`\nExec into a pod:   ip netns exec ${pods[0].ns} bash      (pods: ${pods.map((p) => p.ns).join(' ')})`);
      if (etcdCluster !== null) console.log(`Talk to etcd:      ip netns exec ${c.topo.bridgeNs} etcdctl --endpoints=${etcdCluster.etcdEndpoint} get --prefix ${ETCD_PREFIX}`);
      if (kubeCluster !== null) console.log(`Talk to the API:   ip netns exec ${c.topo.bridgeNs} kubectl --kubeconfig ${kubeCluster.api.kubeconfig} get nodes -o yaml`);
      console.log(`linend metrics:    ip netns exec ${c.nodes[0].host.ns} curl -s http://127.0.0.1:${HEALTH_PORT}/metrics`);
      // linend's stderr goes to this process; from now on it is copied to a file per host too.
      const dir = dirname(c.nodes[0].subnetFile);
      for (const n of c.nodes) {
        const file = join(dir, `linend-host${n.index + 1}.log`);
        writeFileSync(file, n.log());
        n.process?.stderr?.on('data', (d: Buffer) => appendFileSync(file, d));
        console.log(`host${n.index + 1} linend log:  ${file}`);
      }
      console.log(`Cluster files:     ${dir}`);
      if (etcdCluster !== null) console.log(`etcd data:         ${etcdCluster.etcd.dataDir}`);
      console.log(`\nTo tear everything down (and remove those files): Ctrl-C here, or from another shell:`);
      console.log(`  kill -INT ${process.pid}`);
      await new Promise(() => undefined);
    }
    step('Tearing down');
    await teardown();
    endStep();
    if (failures > 0) {
      console.error(`demo: ${failures} check(s) failed: some pods could not reach each other`);
      return 1;
    }
    console.log(`Done in ${seconds(Date.now() - started)} in all: every pod reached every other pod.`);
    return 0;
  } catch (e) {
    console.error(`demo failed: ${(e as Error).message}`);
    await teardown();
    return 1;
  }
}

main().then((code) => process.exit(code), (e: Error) => { console.error(e); process.exit(1); });
