// linend as a drop-in for flanneld: a real etcd, linend nodes in network namespaces, and the
// etcd data, subnet.env, device and traffic checked against what flanneld produces.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { testCluster } from '../helpers/cluster.js';
import { ETCD_PREFIX, type Cluster } from '../../lab/cluster.js';
import { ping } from '../../lab/traffic.js';
import { mapPool } from '../../lab/pool.js';
import { Metrics, etcdLeases, startIperf, waitFor } from '../helpers/reliability.js';

/**
 * How long a pair may take to answer a ping: what linen promises is reachability, not how fast
 * a starved machine runs ping, so a ping that is lost or runs late is tried again until then.
 */
const REACH_DEADLINE_MS = 60_000;

/** Twenty nodes starting at once on two shared cores: 242 s was seen at a load average of 45. */
const TWENTY_READY_MS = 480_000;
t.setTimeout(1_200_000);

async function allReachable(t: Test, c: Cluster, pairs: [number, number][]): Promise<void> {
  const started = Date.now();
  // Tries each pair needed (negative: still unanswered at the deadline), 8 pairs at a time.
  const tries = await mapPool(pairs, 8, async ([a, b]) => {
    const deadline = Date.now() + REACH_DEADLINE_MS;
    for (let n = 1; ; n++) {
      if (await c.reachable(a, b, 3).catch(() => false)) return n;
      if (Date.now() > deadline) return -n;
      await sleep(500);
    }
  });
  const failed = pairs.filter((_, i) => tries[i]! < 0).map(([a, b]) => `${a + 1}->${b + 1}`);
  const retried = tries.filter((n) => n > 1).length;
  t.same(failed, [], `all ${pairs.length} pod pairs reachable within ${REACH_DEADLINE_MS / 1000} s each ` +
    `(${Date.now() - started} ms in all; ${retried} needed more than one ping, at most ${Math.max(...tries.map(Math.abs))})`);
}

function everyPair(n: number): [number, number][] {
  const p: [number, number][] = [];
  for (let a = 0; a < n; a++) for (let b = 0; b < n; b++) if (a !== b) p.push([a, b]);
  return p;
}

for (const backend of ['udp', 'vxlan'] as const) {
  t.test(`${backend}: etcd data, subnet.env, device and traffic as flanneld across three hosts`, async (t) => {
    const c = await testCluster(t, { hosts: 3, backend });
    const ls = await etcdLeases(c);
    t.equal(ls.size, 3, 'one lease per host');
    const network = c.network;
    const mtu = backend === 'udp' ? 1472 : 1450;
    const dev = backend === 'udp' ? 'flannel0' : 'flannel.1';
    for (const n of c.nodes) {
      const env = readFileSync(n.subnetFile, 'utf8');
      const sub = /FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.1\/24/.exec(env);
      t.ok(sub, `host ${n.index + 1}: FLANNEL_SUBNET is the first host address of a /24`);
      if (!sub) continue;
      t.equal(env, `FLANNEL_NETWORK=${network}\nFLANNEL_SUBNET=${sub[1]}.1/24\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=false\n`, 'subnet.env byte for byte');
      const key = `${ETCD_PREFIX}/subnets/${sub[1]}.0-24`;
      const value = ls.get(key);
      t.ok(value, `lease key ${key}`);
      if (backend === 'udp') {
        t.equal(value, `{"PublicIP":"${n.host.underlayIP}","PublicIPv6":null}`, 'UDP lease JSON exactly as flanneld writes it');
      } else {
        t.match(value ?? '', /^\{"PublicIP":"[\d.]+","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"[0-9a-f]{2}(:[0-9a-f]{2}){5}"\}\}$/, 'VXLAN lease JSON field by field in flanneld order');
        const parsed = JSON.parse(value ?? '{}') as { PublicIP: string; BackendData: { VtepMAC: string } };
        t.equal(parsed.PublicIP, n.host.underlayIP);
        t.equal(parseInt(parsed.BackendData.VtepMAC.slice(0, 2), 16) & 3, 2, 'VtepMAC is locally administered unicast');
      }
      const link = JSON.parse(c.topo.ip(n.host.ns, '-j', 'addr', 'show', 'dev', dev)) as { mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] }[];
      t.equal(link[0].mtu, mtu, `${dev} MTU`);
      t.same(link[0].addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), [`${sub[1]}.0/32`], `${dev} address is the subnet's .0/32`);
      t.match(c.topo.ip(n.host.ns, 'route', 'show', network), new RegExp(`${network.replace(/\./g, '\\.')} dev ${dev.replace('.', '\\.')}`), 'route for the whole network via the device');
      t.equal(c.topo.exec(n.host.ns, 'cat', [`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`]).trim(), '1', `${dev}: IPv6 off (the overlay carries IPv4 only)`);
      const ready = await n.http('/readyz');
      t.same(ready, { status: 200, body: 'flanneld is ready' }, '/readyz');
    }
    await allReachable(t, c, everyPair(3));

    // /metrics is current the moment it is read (workers publish on request), in total and per
    // peer subnet.
    const subnetOf = (i: number): string => c.nodes[i].subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24') ?? '?';
    const scrape = async (): Promise<Metrics> => Metrics.parse((await c.nodes[0].http('/metrics')).body);
    const counted = async (): Promise<Record<string, number>> => {
      const m = await scrape();
      const out: Record<string, number> = {};
      for (const direction of ['egress', 'ingress']) {
        out[`forwarded ${direction}`] = m.find('linen_packets_total', { direction, verdict: 'forwarded' }) ?? -1;
        for (const i of [1, 2]) out[`host ${i + 1} ${direction}`] = m.find('linen_peer_packets_total', { subnet: subnetOf(i), direction }) ?? -1;
      }
      return out;
    };
    const before = await counted();
    t.ok(Object.values(before).every((v) => v >= 0), `host 1's /metrics has the totals and both peers' counters: ${JSON.stringify(before)}`);
    const pings = 20;
    // With a deadline ping waits for every reply instead of lingering two round trips after the
    // last request (on a loaded machine a late reply then went uncounted by ping, not by linen);
    // it may send a few more requests while it waits, so the counts below follow what it sent.
    // ping stops itself at its -w deadline (4 s here); the hard limit only catches a hung process.
    const r = await ping({ from: c.nodes[0].host.pod, to: c.nodes[1].podIp ?? '', count: pings, intervalSec: 0.01, deadline: true, timeoutMs: 30_000 });
    t.ok(r.received >= pings, `${pings} pings host 1 -> host 2 answered (${r.received} of ${r.transmitted} sent)`);
    const sent = r.transmitted;
    const want = { 'forwarded egress': sent, 'host 2 egress': sent, 'host 3 egress': 0, 'forwarded ingress': sent, 'host 2 ingress': sent, 'host 3 ingress': 0 };
    const delta = async (): Promise<Record<string, number>> => {
      const after = await counted();
      return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - before[k]!]));
    };
    // A scrape makes the workers publish first, so the first read normally has them all; a reply
    // still on its way when ping exited is counted a moment later.
    let d: Record<string, number> = {};
    let reads = 0;
    await waitFor(async () => {
      reads++;
      d = await delta();
      return Object.entries(want).every(([k, v]) => d[k] === v);
    }, 10_000, 100);
    t.equal((await scrape()).find('linen_packets_total', { direction: 'egress', verdict: 'not_ipv4' }) ?? -1, 0,
      'no IPv6 from the kernel reached the data plane');
    t.same(d, want, 'host 1\'s /metrics counts exactly the requests ping sent and their replies, in total and for host 2\'s subnet only ' +
      `(${reads === 1 ? 'on the first read' : `on read ${reads}`})`);
  });
}

/** A Unix datagram socket standing in for systemd's NOTIFY_SOCKET (Node cannot bind one). */
async function notifyListener(t: Test): Promise<{ path: string; messages(): Promise<string[]> }> {
  const dir = mkdtempSync(join(tmpdir(), 'linen-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'notify');
  const script = 'import socket,sys\n' +
    's=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("bound",flush=True)\n' +
    's.settimeout(30); print(s.recv(4096).decode(),flush=True)\n' +
    's.settimeout(0.5)\n' +
    'while True:\n' +
    '  try: print(s.recv(4096).decode(),flush=True)\n' +
    '  except socket.timeout: break\n';
  const child = spawn('python3', ['-c', script, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { child.kill('SIGKILL'); });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor(async () => out.startsWith('bound\n'), 5000);
  return { path, messages: async () => { await exited; return out.split('\n').slice(1).filter(Boolean); } };
}

t.test('20 linend started at the same moment get distinct subnets and all reach each other', async (t) => {
  const c = await testCluster(t, { hosts: 20, backend: 'vxlan', start: false });
  const started = Date.now();
  await Promise.all(c.nodes.map((n) => n.start({ wait: false })));
  // Readiness is promised, not how soon.
  await c.ready(TWENTY_READY_MS);
  t.comment(`all 20 ready ${((Date.now() - started) / 1000).toFixed(1)} s after the start`);
  const subnets = c.nodes.map((n) => n.subnetEnv()?.['FLANNEL_SUBNET']);
  t.equal(new Set(subnets).size, 20, 'twenty distinct subnets');
  t.equal(c.nodes.filter((n) => !n.alive()).length, 0, 'none exited');
  t.equal((await etcdLeases(c)).size, 20, 'twenty leases in etcd');
  const pairs: [number, number][] = [];
  for (let i = 1; i < 20; i++) pairs.push([0, i], [i, 0]);
  await allReachable(t, c, pairs);
});

t.test("a lease written by hand in flanneld's format becomes a route, and goes with it", async (t) => {
  const c = await testCluster(t, { hosts: 2, backend: 'udp' });
  const y = c.network.split('.')[1];
  const fake = `10.${y}.200.0`;
  const key = `${ETCD_PREFIX}/subnets/${fake}-24`;
  const hasRoute = async (): Promise<boolean> => (await c.nodes[0].http('/metrics')).body.includes(`linen_peer_route{subnet="${fake}/24",public_ip="192.0.2.77"} 1`);
  t.notOk(await hasRoute());
  const peerLines = (body: string): string[] => body.split('\n').filter((l) => l.startsWith(`linen_peer_packets_total{subnet="${fake}/24"`));
  await c.etcd.ctl('put', key, '{"PublicIP":"192.0.2.77","PublicIPv6":null}');
  const added = await waitFor(hasRoute, 15_000);
  t.ok(added >= 0, `route installed after ${added} ms (bound 15 s)`);
  t.same(peerLines((await c.nodes[0].http('/metrics')).body).map((l) => l.replace(/ \d+$/, ' N')),
    [`linen_peer_packets_total{subnet="${fake}/24",direction="egress"} N`, `linen_peer_packets_total{subnet="${fake}/24",direction="ingress"} N`], 'per-peer packet counters for it');
  await c.etcd.ctl('del', key);
  const removed = await waitFor(async () => !(await hasRoute()), 15_000);
  t.ok(removed >= 0, `route removed after ${removed} ms (bound 15 s)`);
  t.same(peerLines((await c.nodes[0].http('/metrics')).body), [], 'and its per-peer counters with it');
  // And in the data path: with no route, linen answers net unreachable as flanneld does (not
  // for ICMP, so probe with TCP).
  const r = spawn('ip', ['netns', 'exec', c.nodes[0].host.pod.ns, 'curl', '-s', '-m', '3', `http://10.${y}.200.1/`]);
  const code = await new Promise((res) => r.on('exit', res));
  t.equal(code, 7, 'no route: the connection fails at once (ICMP net unreachable), not by timeout');
});

t.test('restart with SIGTERM and after kill -9: same subnet, traffic resumes', async (t) => {
  const c = await testCluster(t, { hosts: 2, backend: 'vxlan' });
  const before = c.nodes[1].subnetEnv()?.['FLANNEL_SUBNET'];
  const mac = (await etcdLeases(c)).get(`${ETCD_PREFIX}/subnets/${before?.replace(/\.1\/24$/, '.0')}-24`);
  t.equal(await c.nodes[1].stop('SIGTERM'), 0, 'SIGTERM: exit code 0');
  t.equal(c.topo.ip(c.nodes[1].host.ns, 'link', 'show').includes('flannel.1'), false, 'device removed on shutdown');
  t.equal((await etcdLeases(c)).size, 2, 'the lease is kept');
  // Started as by a systemd unit with Type=notify (flanneld's own unit): READY=1 once ready.
  const notify = await notifyListener(t);
  await c.nodes[1].start({ env: { NOTIFY_SOCKET: notify.path } });
  t.same(await notify.messages(), ['READY=1'], 'READY=1 sent to NOTIFY_SOCKET, once');
  t.equal(c.nodes[1].subnetEnv()?.['FLANNEL_SUBNET'], before, 'same subnet after restart');
  t.equal((await etcdLeases(c)).get(`${ETCD_PREFIX}/subnets/${before?.replace(/\.1\/24$/, '.0')}-24`), mac, 'same lease value (VtepMAC kept)');
  await allReachable(t, c, everyPair(2));
  await c.nodes[1].stop('SIGKILL');
  await c.nodes[1].start();
  t.equal(c.nodes[1].subnetEnv()?.['FLANNEL_SUBNET'], before, 'same subnet after kill -9');
  await allReachable(t, c, everyPair(2));
});

t.test('etcd down for 30 s during a transfer: forwarding goes on; a new peer is reachable after', async (t) => {
  const c = await testCluster(t, { hosts: 3, backend: 'udp', start: false });
  await c.nodes[0].start();
  await c.nodes[1].start();
  const [a, b] = c.nodes;
  const iperf = await startIperf(a, b, { seconds: 40, interval: 5 });
  t.teardown(() => iperf.kill());
  await sleep(3000);
  await c.etcd.stop();
  await sleep(30000);
  await c.etcd.start();
  const report = await iperf.done;
  const empty = report.intervals.filter((bytes) => bytes === 0).length;
  t.equal(empty, 0, `all ${report.intervals.length} 5-second intervals carried data`);
  t.ok(report.bytes > 0);
  t.ok(a.alive() && b.alive(), 'both nodes kept running');
  t.match(a.log(), /etcd unreachable/, 'the outage is logged');
  await c.nodes[2].start();
  await allReachable(t, c, everyPair(3));
});

t.test('bad input: malformed config, unknown backend, malformed lease from another writer', async (t) => {
  const c = await testCluster(t, { hosts: 2, backend: 'udp', config: { Network: 5 }, start: false });
  const n = c.nodes[0];
  await n.start({ wait: false });
  await waitFor(async () => /Couldn't fetch network config/.test(n.log()), 10000);
  t.match(n.log(), /Couldn't fetch network config: .*Network/, 'a malformed config is named in the log');
  t.ok(n.alive(), 'and linend keeps waiting');
  await c.etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify({ Network: c.network, Backend: { Type: 'carrier-pigeon' } }));
  await waitFor(async () => /carrier-pigeon/.test(n.log()), 10000);
  t.match(n.log(), /carrier-pigeon/, 'an unknown backend type is named in the log');
  t.ok(n.alive(), 'still running');
  await c.etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify({ Network: c.network, Backend: { Type: 'udp' } }));
  await c.ready();
  await c.nodes[1].start();
  await allReachable(t, c, everyPair(2));
  const y = c.network.split('.')[1];
  const bad = `${ETCD_PREFIX}/subnets/10.${y}.201.0-24`;
  await c.etcd.ctl('put', bad, '{"PublicIP": garbage');
  await c.etcd.ctl('put', `${ETCD_PREFIX}/subnets/10.${y}.202.0-24`, '{"PublicIP":12}');
  await waitFor(async () => n.log().includes('10.' + y + '.202.0-24'), 5000);
  t.match(n.log(), new RegExp(`10\\.${y}\\.201\\.0-24`), 'the bad key is named in the log');
  t.ok(c.nodes.every((x) => x.alive()), 'no crash');
  await allReachable(t, c, everyPair(2));
  const metrics = (await n.http('/metrics')).body;
  t.match(metrics, /linen_peers 1/, 'the other peer is still there');
});
