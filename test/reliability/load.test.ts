// Load on one four-host UDP cluster: a soak at full throughput (iperf3 between two pods) while
// fake peers come and go every few seconds, then 200 peers (196 leases written to etcd beside
// the four real hosts): route updates applied within a second and pod-to-pod throughput not
// dramatically lower than with four peers.
//
// LINEN_LONG_TESTS=1: a 10-minute soak instead of 60 s.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, ETCD_PREFIX, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { logTime } from '../../lab/linend-log.js';
import {
  LONG, delta, fdDiff, fdsAtRest, leaseValue, linkDrops, metrics, pidOf, rssKiB, snmp, startIperf, threadCount, waitFor, type Metrics,
} from '../helpers/reliability.js';

const SOAK_S = LONG ? 600 : 60;
const PEERS = 200;

t.setTimeout((SOAK_S + 180) * 1000);

let c: Cluster;
t.before(async () => {
  c = await buildCluster({ hosts: 4, backend: 'udp' });
});
t.teardown(() => c?.destroy());

const y = (): string => c.network.split('.')[1]!;
/** Fake peer i (0..): subnet 10.y.(100+i/…) — 10.y.X.0/24 with X from 100 up, skipping real hosts' subnets. */
function fakeThirds(n: number): number[] {
  const real = new Set(c.nodes.map((x) => Number(x.subnetEnv()?.['FLANNEL_SUBNET']?.split('.')[2])));
  const out: number[] = [];
  for (let v = 2; out.length < n && v < 255; v++) if (!real.has(v)) out.push(v);
  return out;
}
const fakeKey = (third: number): string => `${ETCD_PREFIX}/subnets/10.${y()}.${third}.0-24`;
const fakeIp = (third: number): string => `198.18.${third >> 8}.${third & 255}`;

/** Median of a few RSS samples (GC makes single samples jumpy). */
async function rssMedian(pid: number): Promise<number> {
  const v: number[] = [];
  for (let i = 0; i < 5; i++) {
    v.push(rssKiB(pid));
    await sleep(200);
  }
  return v.sort((a, b) => a - b)[2]!;
}

function drops(m0: Metrics, m1: Metrics): Record<string, number> {
  const out: Record<string, number> = {};
  for (const dir of ['egress', 'ingress'] as const) {
    for (const [v, n] of Object.entries(delta(m0.verdicts(dir), m1.verdicts(dir)))) {
      if (v === 'forwarded' || v === 'checksum_completed') continue;
      out[`${dir}/${v}`] = n;
    }
  }
  for (const [op, name] of [['udp_sends', 'send_errors'], ['tun_writes', 'tun_write_errors']] as const) {
    const d = m1.get('linen_io_errors_total', { op }) - m0.get('linen_io_errors_total', { op });
    if (d !== 0) out[name] = d;
  }
  return out;
}

t.test(`soak: ${SOAK_S} s of iperf3 at full speed while peers come and go`, async (t) => {
  const [a, b] = c.nodes;
  const nodes = [a, b];
  const pids = nodes.map(pidOf);
  const fds0 = await Promise.all(pids.map((p) => fdsAtRest(p)));
  const m0 = await Promise.all(nodes.map(metrics));
  // What the kernels dropped around linen: the TUN's queue (linen not reading fast enough) and
  // the UDP socket's receive buffer.
  const kernelDrops = (): number[] => nodes.map((n) => {
    const l = linkDrops(n.host.ns, 'flannel0');
    return l.tx + l.rx + snmp(n.host.ns)['Udp.InErrors']!;
  });
  const k0 = kernelDrops();
  const iperf = await startIperf(a, b, { seconds: SOAK_S, interval: 1 });
  const t0 = Date.now();
  // Churn: every 2 s one fake peer joins and the oldest of the last five leaves.
  const thirds = fakeThirds(400);
  const live: number[] = [];
  let joined = 0;
  let rssWarm: number[] | null = null;
  const warmAt = Math.min(15, SOAK_S / 4) * 1000;
  while (Date.now() - t0 < (SOAK_S - 3) * 1000) {
    const third = thirds[joined % thirds.length]!;
    joined++;
    await c.etcd.ctl('put', fakeKey(third), leaseValue('udp', fakeIp(third)));
    live.push(third);
    if (live.length > 5) await c.etcd.ctl('del', fakeKey(live.shift()!));
    if (rssWarm === null && Date.now() - t0 >= warmAt) rssWarm = await Promise.all(pids.map(rssMedian));
    await sleep(2000);
  }
  for (const third of live.splice(0)) await c.etcd.ctl('del', fakeKey(third));
  const run = await iperf.done;
  const ok = await waitFor(async () => (await metrics(a)).get('linen_peers') === 3, 5000, 100);
  t.ok(ok >= 0, 'after the churn, host 1 routes exactly the three other hosts again');
  const rssEnd = await Promise.all(pids.map(rssMedian));
  const m1 = await Promise.all(nodes.map(metrics));
  const fds1 = await Promise.all(pids.map((p) => fdsAtRest(p)));
  const k1 = kernelDrops();

  t.equal(run.intervals.filter((x) => x === 0).length, 0, `all ${run.intervals.length} one-second intervals carried data: ${run.gbps.toFixed(2)} Gbit/s, ${run.retransmits} retransmits`);
  t.ok(run.intervals.length >= SOAK_S - 1, 'the run lasted its full length');
  nodes.forEach((n, i) => {
    const growth = (rssEnd[i]! - rssWarm![i]!) / rssWarm![i]!;
    t.ok(growth < 0.05, `host ${n.index + 1}: RSS ${(rssWarm![i]! / 1024).toFixed(1)} MiB after warm-up, ${(rssEnd[i]! / 1024).toFixed(1)} MiB at the end (${(growth * 100).toFixed(1)}%)`);
    t.same(drops(m0[i]!, m1[i]!), {}, `host ${n.index + 1}: nothing dropped, no send or TUN write error`);
    t.equal(fds1[i]!.count, fds0[i]!.count, `host ${n.index + 1}: open descriptors at rest ${fds0[i]!.count} -> ${fds1[i]!.count} (${fdDiff(fds0[i]!.targets, fds1[i]!.targets)})`);
  });
  t.comment(`figures: soak_s=${SOAK_S} gbps=${run.gbps.toFixed(2)} bytes=${run.bytes} retransmits=${run.retransmits} peers_joined=${joined} ` +
    `rss_kib=${rssWarm!.join('/')}->${rssEnd.join('/')} fds=${fds0.map((f) => f.count).join('/')}->${fds1.map((f) => f.count).join('/')} threads=${pids.map(threadCount).join('/')} ` +
    `forwarded_egress=${m1[0]!.verdicts('egress')['forwarded']! - m0[0]!.verdicts('egress')['forwarded']!} ` +
    `kernel_drops(tun queue + udp InErrors)=${k1.map((v, i) => v - k0[i]!).join('/')}`);
});

/** Puts or deletes in etcd transactions of 100 (etcd allows 128 operations per transaction). */
async function bulk(ops: string[]): Promise<void> {
  for (let i = 0; i < ops.length; i += 100) await c.etcd.txn(ops.slice(i, i + 100));
}

/**
 * Waits until every node has logged `count` lines matching `re` since log offset `from[i]`;
 * resolves when the last of them was logged (by the nodes' own clocks: the log line is written
 * right after the route went to the data plane), or -1 after timeoutMs.
 */
async function appliedAt(nodes: ClusterNode[], from: number[], re: RegExp, count: number, timeoutMs: number): Promise<number> {
  let last = -1;
  const ok = await waitFor(() => {
    last = -1;
    return nodes.every((n, i) => {
      const lines = n.log().slice(from[i]).split('\n').filter((l) => re.test(l));
      if (lines.length < count) return false;
      last = Math.max(last, ...lines.map((l) => logTime(l) ?? Infinity));
      return true;
    });
  }, timeoutMs, 20);
  return ok >= 0 ? last : -1;
}

t.test(`${PEERS} peers: route updates applied everywhere, throughput not dramatically lower`, async (t) => {
  const [a, b] = c.nodes;
  const real = c.nodes.length;
  const few = await startIperf(a, b, { seconds: 5, interval: 1, port: 5202 });
  const fewRun = await few.done;

  const thirds = fakeThirds(PEERS - real);
  const peersOn = async (n: ClusterNode): Promise<number> => (await metrics(n)).get('linen_peers');
  const everywhere = (want: number): Promise<number> => waitFor(async () => (await Promise.all(c.nodes.map(peersOn))).every((n) => n === want), 20_000, 50);
  const offsets = (): number[] => c.nodes.map((n) => n.log().length);
  const fakeRe = new RegExp(`Peer 10\\.${y()}\\.\\d+\\.0/24 via 198\\.18\\.`);
  const goneRe = new RegExp(`Peer 10\\.${y()}\\.\\d+\\.0/24 removed`);

  // 196 leases in two etcd transactions.
  let from = offsets();
  const t0 = Date.now();
  // etcdctl txn reads Go-quoted strings: JSON.stringify quotes the value the same way.
  await bulk(thirds.map((x) => `put ${fakeKey(x)} ${JSON.stringify(leaseValue('udp', fakeIp(x)))}`));
  const written = Date.now();
  const bulkAt = await appliedAt(c.nodes, from, fakeRe, thirds.length, 20_000);
  // Measured from the moment the write was issued (etcdctl's start-up included: the routes are
  // often in place before etcdctl has exited).
  const bulkMs = bulkAt - t0;
  t.ok(bulkAt > 0, `${thirds.length} leases written in ${written - t0} ms (two transactions); all routes applied on every host ${bulkMs} ms after the write was issued`);
  t.ok(bulkAt > 0 && bulkMs < 15_000, `within 15 s (${bulkMs} ms; RELIABILITY.md holds the promise)`);
  const counted = await everywhere(PEERS - 1);
  t.ok(counted >= 0, `linen_peers is ${PEERS - 1} on every host (seen by polling /metrics ${counted} ms later)`);

  // Single changes with 200 peers in place: one more peer, then one less.
  const extra = 250;
  const lat: number[] = [];
  for (const op of ['put', 'del'] as const) {
    from = offsets();
    const issued = Date.now();
    if (op === 'put') await c.etcd.ctl('put', fakeKey(extra), leaseValue('udp', fakeIp(extra)));
    else await c.etcd.ctl('del', fakeKey(extra));
    const at = await appliedAt(c.nodes, from, op === 'put' ? fakeRe : goneRe, 1, 20_000);
    lat.push(at - issued);
    t.ok(at > 0 && at - issued < 10_000, `one peer ${op === 'put' ? 'added' : 'removed'} with ${PEERS} present: applied on all ${real} hosts ${at - issued} ms after the write was issued (bound 10 s)`);
    t.ok(await everywhere(op === 'put' ? PEERS : PEERS - 1) >= 0, `linen_peers follows (${op})`);
  }

  // Runs on this shared machine vary by up to 2x, more with other load beside; a slow run gets
  // one retry and the bar is a quarter, so only a dramatic slowdown seen twice fails (the
  // benchmark, not this test, holds the speed figures).
  const manyRuns: number[] = [];
  for (let i = 0; i < 2 && !(Math.max(...manyRuns) > 0.25 * fewRun.gbps); i++) {
    manyRuns.push((await (await startIperf(a, b, { seconds: 5, interval: 1, port: 5203 })).done).gbps);
  }
  const manyGbps = Math.max(...manyRuns);
  t.ok(manyGbps > 0.25 * fewRun.gbps, `pod-to-pod throughput with ${PEERS} peers ${manyRuns.map((g) => g.toFixed(2)).join(', then ')} Gbit/s vs ${fewRun.gbps.toFixed(2)} Gbit/s with ${real}: not dramatically lower (> 25%)`);
  t.ok(c.nodes.every((n) => n.alive()), 'all hosts running');

  from = offsets();
  const deleted = Date.now();
  await bulk(thirds.map((x) => `del ${fakeKey(x)}`));
  const goneAt = await appliedAt(c.nodes, from, goneRe, thirds.length, 20_000);
  t.ok(goneAt > 0 && goneAt - deleted < 15_000, `all ${thirds.length} removed again: applied on every host ${goneAt - deleted} ms after the deletes were issued (bound 15 s)`);
  t.ok(await everywhere(real - 1) >= 0, `linen_peers back to ${real - 1} everywhere`);
  t.comment(`figures: peers=${PEERS} bulk_apply_ms=${bulkMs} single_add_ms=${lat[0]} single_del_ms=${lat[1]} bulk_remove_ms=${goneAt - deleted} metrics_poll_extra_ms=${counted} gbps_few=${fewRun.gbps.toFixed(2)} gbps_200=${manyGbps.toFixed(2)}`);
});
