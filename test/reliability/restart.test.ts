// linend killed and restarted, and a data-plane worker crashing, on one two-host UDP cluster
// with --ip-masq (so both of flanneld's rule sets are installed): SIGKILL in the middle of a
// transfer, repeated kill -9 / start cycles (some of them while linend is still starting) that
// must leak no device, iptables rule, process or descriptor, and a worker thread that throws.
//
// LINEN_LONG_TESTS=1: 50 kill/restart cycles instead of 8.
import t from 'tap';
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { namespacePids } from '../../lab/netns.js';
import { transfer } from '../../lab/transfer.js';
import { LONG, bothWays, etcdLeases, fdDiff, fdsAtRest, metrics, pidOf, startIperf, threadCount, waitFor } from '../helpers/reliability.js';

const CYCLES = LONG ? 50 : 8;

t.setTimeout((LONG ? 600 : 240) * 1000);

let c: Cluster;

t.before(async () => {
  c = await buildCluster({ hosts: 2, backend: 'udp', args: ['--ip-masq'], env: { LINEN_DEBUG_HOOKS: '1' } });
});
t.teardown(() => c?.destroy());

/** flannel devices in the host's namespace. */
function flannelLinks(n: ClusterNode): string[] {
  return c.topo.ip(n.host.ns, '-o', 'link', 'show').split('\n').map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? '').filter((d) => d.startsWith('flannel'));
}

/** iptables-save lines (rules) carrying flanneld's comments, with how often each appears. */
function flannelRules(n: ClusterNode): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of c.topo.exec(n.host.ns, 'iptables-save', []).split('\n')) {
    if (!l.startsWith('-A ') || !/flanneld (masq|forward)/.test(l)) continue;
    out.set(l, (out.get(l) ?? 0) + 1);
  }
  return out;
}

function routeToNetwork(n: ClusterNode): string {
  return c.topo.ip(n.host.ns, 'route', 'show', c.network).trim();
}

t.test('SIGKILL in the middle of a transfer: same subnet, device, rules and routes after the restart; the transfer in flight and a new one complete', async (t) => {
  const [a, b] = c.nodes;
  const subnet = b.subnetEnv()?.['FLANNEL_SUBNET'];
  const rulesBefore = flannelRules(b);
  t.equal(rulesBefore.size, 10, "flanneld's 7 masquerade and 3 forward rules installed");
  // A transfer long enough to be cut in the middle (1 GB: several seconds at ~2 Gbit/s).
  const started = Date.now();
  let finishedAt = 0;
  const inFlight = transfer(a.host.pod.ns, b.host.pod.ns, b.podIp!, 1_000_000_000, 120_000).then((r) => { finishedAt = Date.now(); return r; });
  await sleep(1000);
  const killedAt = Date.now();
  t.equal(await b.stop('SIGKILL'), 'SIGKILL', 'killed');
  await b.start();
  const readyAt = Date.now();
  const readyMs = readyAt - killedAt;
  t.equal(b.subnetEnv()?.['FLANNEL_SUBNET'], subnet, 'same subnet');
  t.same(flannelLinks(b), ['flannel0'], 'one flannel0');
  t.match(routeToNetwork(b), /dev flannel0/, 'the network routed to flannel0');
  t.same([...flannelRules(b).entries()].filter(([, n]) => n !== 1), [], 'every flanneld rule exactly once');
  t.same([...flannelRules(b).keys()].sort(), [...rulesBefore.keys()].sort(), 'the same rules as before');
  t.same((await metrics(b)).routes(), [`${a.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0/24')} via ${a.host.underlayIP}`], 'the peer route is back');
  const r = await inFlight;
  t.equal(r.received, r.sent, `the transfer in flight survived the restart: ${(r.bytes / 1e9).toFixed(1)} GB in ${r.seconds.toFixed(1)} s, checksums match`);
  t.ok(finishedAt > readyAt, `it was still running when linend was back (finished ${finishedAt - readyAt} ms after; started ${killedAt - started} ms before the kill)`);
  const fresh = await transfer(b.host.pod.ns, a.host.pod.ns, a.podIp!, 50_000_000, 60_000);
  t.equal(fresh.received, fresh.sent, 'a new 50 MB transfer the other way: checksums match');
  t.comment(`figures: kill_to_ready_ms=${readyMs} inflight_seconds=${r.seconds.toFixed(1)}`);
});

t.test(`${CYCLES} kill -9 / start cycles: nothing leaks`, async (t) => {
  const n = c.nodes[0];
  const subnet = n.subnetEnv()?.['FLANNEL_SUBNET'];
  const rules = [...flannelRules(n).keys()].sort();
  const fds0 = await fdsAtRest(pidOf(n));
  const leases0 = await etcdLeases(c);
  let duringStartup = 0;
  const t0 = Date.now();
  for (let i = 0; i < CYCLES; i++) {
    t.equal(await n.stop('SIGKILL'), 'SIGKILL', `cycle ${i + 1}: killed`);
    if (i % 2 === 1) {
      // Every other cycle also kills it while it starts (anywhere from flag parsing to the
      // first peer list).
      await n.start({ wait: false });
      await sleep(randomInt(50, 2500));
      if (n.alive()) {
        await n.stop('SIGKILL');
        duringStartup++;
      }
    }
    await n.start();
  }
  const elapsed = Date.now() - t0;
  t.equal(n.subnetEnv()?.['FLANNEL_SUBNET'], subnet, 'still the same subnet');
  t.same(flannelLinks(n), ['flannel0'], 'exactly one flannel device in the host namespace');
  t.match(routeToNetwork(n), /dev flannel0/, 'network route in place');
  const now = flannelRules(n);
  t.same([...now.entries()].filter(([, k]) => k !== 1), [], 'iptables-save shows each flanneld rule exactly once');
  t.same([...now.keys()].sort(), rules, 'and the same rules');
  const pid = pidOf(n);
  t.same(namespacePids(n.host.ns), [pid], 'the only process in the host namespace is the running linend');
  // Same descriptors at rest as the run before the cycles.
  await sleep(1000);
  const fds = await fdsAtRest(pid);
  t.equal(fds.count, fds0.count, `open descriptors at rest ${fds.count} (before the cycles: ${fds0.count}; ${fdDiff(fds0.targets, fds.targets)})`);
  t.same([...(await etcdLeases(c)).keys()].sort(), [...leases0.keys()].sort(), 'no extra lease keys in etcd');
  t.ok(await waitFor(() => bothWays(c, 0, 1), 10_000, 200) >= 0, 'pods reach each other');
  t.comment(`figures: cycles=${CYCLES} killed_during_startup=${duringStartup} seconds=${(elapsed / 1000).toFixed(1)} fds=${fds0.count}->${fds.count} threads=${threadCount(pid)}`);
});

t.test('a data-plane worker crashes: restarted, logged, counted, traffic resumes', async (t) => {
  const [a, b] = c.nodes;
  const before = await metrics(a);
  t.equal(before.get('linen_workers'), 1, 'one worker');
  const restarts0 = before.get('linen_worker_restarts_total');
  const iperf = await startIperf(a, b, { seconds: 20, interval: 1 });
  await sleep(3000);
  const peerEgress = async (): Promise<number> => (await metrics(a)).get('linen_peer_packets_total', { direction: 'egress' });
  const peerBefore = await peerEgress();
  const crash = await a.http('/debug/crash-worker?index=0');
  t.equal(crash.status, 200, 'debug hook answered');
  const crashedAt = Date.now();
  const back = await waitFor(async () => {
    const m = await metrics(a);
    return m.get('linen_worker_restarts_total') === restarts0 + 1 && m.get('linen_workers') === 1;
  }, 10_000, 50);
  t.ok(back >= 0, `linen_worker_restarts_total went up by one and linen_workers is 1 again (${back} ms)`);
  // Read at once: the new worker has counted only a few ms of traffic yet.
  const peerAfter = await peerEgress();
  t.ok(peerBefore > 1000 && peerAfter >= peerBefore, `the per-peer counters kept what the dead worker counted (${peerBefore} -> ${peerAfter} packets to the peer)`);
  t.match(a.log(), /data-plane worker 0 died \(.*crash requested through the debug hook.*\); restarted/, 'the death is logged with its reason');
  t.ok(a.alive(), 'linend itself kept running');
  const run = await iperf.done;
  // What linen promises is that traffic resumes; how long the gap lasts is the restart plus TCP's
  // retransmit back-off, which a starved machine stretches, so the bound is generous and the
  // figure printed.
  const gaps = run.intervals.filter((x) => x === 0).length;
  let longestGap = 0;
  for (let i = 0, run0 = 0; i < run.intervals.length; i++) longestGap = Math.max(longestGap, run0 = run.intervals[i] === 0 ? run0 + 1 : 0);
  const shown = run.intervals.map((x) => (x / 1e6).toFixed(0)).join(', ');
  t.ok(run.intervals.lastIndexOf(0) < run.intervals.length - 1, `data after the last empty interval: traffic resumed (${shown} MB)`);
  t.ok(longestGap <= 12, `no stretch of empty 1-second intervals longer than 12 s (${longestGap})`);
  t.match(routeToNetwork(a), /dev flannel0/, 'network route restored on the re-created device');
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
  const r = await transfer(a.host.pod.ns, b.host.pod.ns, b.podIp!, 50_000_000, 60_000);
  t.equal(r.received, r.sent, 'a 50 MB transfer after the crash: checksums match');

  t.comment(`figures: worker_back_ms=${back} empty_intervals=${gaps} longest_gap_s=${longestGap} since_crash_ms=${Date.now() - crashedAt}`);
});

t.test('a route change a worker cannot apply is contained: reported, counted, and the worker keeps forwarding', async (t) => {
  const [a, b] = c.nodes;
  const before = await metrics(a);
  const restarts0 = before.get('linen_worker_restarts_total');
  const errors0 = before.get('linen_worker_errors_total');
  const routes0 = before.routes();
  const logFrom = a.log().length;
  // The hook posts worker 0 a route its core refuses (prefix length 33): its control path throws.
  t.equal((await a.http('/debug/bad-route?index=0')).status, 200, 'debug hook answered');
  const reported = await waitFor(async () => (await metrics(a)).get('linen_worker_errors_total') === errors0 + 1, 10_000, 50);
  t.ok(reported >= 0, `counted in linen_worker_errors_total (${reported} ms)`);
  t.match(a.log().slice(logFrom), /data-plane worker 0: control message set 0\.0\.0\.0\/33: bad prefix length 33; the worker carries on/, 'logged with the route and the reason');
  await sleep(500);
  const after = await metrics(a);
  t.equal(after.get('linen_worker_restarts_total'), restarts0, 'the worker did not die: no restart');
  t.equal(after.get('linen_workers'), 1, 'linen_workers 1');
  t.equal((await a.http('/readyz')).status, 200, '/readyz 200');
  t.same(after.routes(), routes0, 'the peer routes are as before');
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
  t.ok(a.alive() && b.alive(), 'both running');
});

t.test('a worker that fails before it is ready closes what it opened and is retried with backoff; /readyz and linen_workers tell the truth meanwhile', async (t) => {
  const [a] = c.nodes;
  const pid = pidOf(a);
  const fds0 = await fdsAtRest(pid);
  const restarts0 = (await metrics(a)).get('linen_worker_restarts_total');
  const logFrom = a.log().length;
  const FAILS = 4; // retries after 100, 200, 400 and 800 ms
  t.equal((await a.http(`/debug/fail-worker-starts?index=0&count=${FAILS}`)).status, 200, 'armed: the next starts of worker 0 fail before it is ready');
  t.equal((await a.http('/debug/crash-worker?index=0')).status, 200, 'worker 0 crashed');
  const down = await waitFor(async () => (await a.http('/readyz')).status === 503 && (await metrics(a)).get('linen_workers') === 0, 5000, 20);
  t.ok(down >= 0, `while it fails to start: /readyz 503 and linen_workers 0 (seen after ${down} ms)`);
  const back = await waitFor(async () => (await a.http('/readyz')).status === 200 && (await metrics(a)).get('linen_workers') === 1, 30_000, 50);
  t.ok(back >= 0, `then it runs: /readyz 200 and linen_workers 1 (${back} ms after the crash was seen)`);
  const log = a.log().slice(logFrom);
  const failures = log.split('\n').filter((l) => /data-plane worker 0 failed to start \(.*start failure requested through the debug hook.*\); retrying in \d+ ms/.test(l));
  t.equal(failures.length, FAILS, `each failed start logged (${failures.length})`);
  const delays = failures.map((l) => Number(/retrying in (\d+) ms/.exec(l)?.[1]));
  t.same(delays, [100, 200, 400, 800], 'with a doubling backoff');
  t.equal((await metrics(a)).get('linen_worker_restarts_total'), restarts0 + 1, 'one restart counted');
  await sleep(500);
  const fds = await fdsAtRest(pid);
  t.equal(fds.count, fds0.count, `no descriptor leaked by the failed starts: ${fds0.count} -> ${fds.count} (${fdDiff(fds0.targets, fds.targets)})`);
  t.match(routeToNetwork(a), /dev flannel0/, 'network route restored on the re-created device');
  t.ok(await waitFor(() => bothWays(c, 0, 1), 10_000, 200) >= 0, 'pods reach each other');
  t.comment(`figures: worker_start_failures=${FAILS} down_seen_ms=${down} back_ms=${back} fds=${fds0.count}->${fds.count}`);
});
