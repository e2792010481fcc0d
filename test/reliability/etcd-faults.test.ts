// etcd faults while linend runs, on one three-host VXLAN cluster: etcd down during a sustained
// transfer, one host cut off from etcd while the peer set changes and its own lease comes up
// for renewal, a watch that falls behind a physical compaction, a peer lease that expires, and
// etcd coming back with its data wiped. Host 1 runs with a 20 s lease and a 10 s renewal
// margin (LINEN_DEBUG_LEASE_TTL_SECONDS / LINEN_DEBUG_RENEW_MARGIN_SECONDS) so that renewals
// happen inside the test; hosts 2 and 3 keep flanneld's 24 h.
//
// LINEN_LONG_TESTS=1: etcd stays down 60 s instead of 20 s.
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, ETCD_PREFIX, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import {
  LONG, bothWays, etcdLeases, etcdRevision, expectedRoutes, fakeSubnet, grantLease, keyLease, leaseTTL, leaseValue, metrics,
  partitionFromEtcd, startIperf, waitFor,
} from '../helpers/reliability.js';

const TTL = 20;
const MARGIN = 10;
const OUTAGE_S = LONG ? 60 : 20;

t.setTimeout((LONG ? 420 : 300) * 1000);

const ownKey = (n: ClusterNode): string => `${ETCD_PREFIX}/subnets/${n.subnetEnv()?.['FLANNEL_SUBNET']?.replace(/\.1\/24$/, '.0-24')}`;
const same = (a: string[], b: string[]): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Resolves how long until every running node's routes equal what etcd says (or -1). */
async function converged(c: Cluster, nodes: ClusterNode[], timeoutMs: number): Promise<number> {
  return waitFor(async () => {
    for (const n of nodes) {
      if (!same((await metrics(n)).routes(), await expectedRoutes(c, n))) return false;
    }
    return true;
  }, timeoutMs, 100);
}

/** Watches a key in the background: records every moment it was found missing. */
function watchKeyPresence(c: Cluster, key: string): { stop(): Promise<number> } {
  let missing = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const v = await c.etcd.ctl('get', key, '--print-value-only').catch(() => null);
      if (v !== null && v.trim() === '') missing++;
      await sleep(250);
    }
  })();
  return { async stop() { running = false; await loop; return missing; } };
}

let c: Cluster;

t.before(async () => {
  c = await buildCluster({ hosts: 3, backend: 'vxlan', start: false });
  // Host 1 at -v=1: its log shows every retry of a loop (at 0 they are one warning, then quiet).
  await c.nodes[0].start({ args: ['--v=1'], env: { LINEN_DEBUG_LEASE_TTL_SECONDS: String(TTL), LINEN_DEBUG_RENEW_MARGIN_SECONDS: String(MARGIN) } });
  await c.nodes[1].start();
  await c.nodes[2].start();
});
t.teardown(() => c?.destroy());

t.test(`etcd down ${OUTAGE_S} s during a sustained transfer: every iperf3 interval carries data; linend reconnects with backoff and reconciles`, async (t) => {
  const [a, b] = c.nodes;
  const seconds = OUTAGE_S + 12;
  const iperf = await startIperf(a, b, { seconds, interval: 1 });
  await sleep(3000);
  const before = a.log().length;
  const quietBefore = b.log().length;
  const leaseBefore = await keyLease(c, ownKey(a));
  await c.etcd.stop();
  const down = Date.now();
  const sawDisconnected = await waitFor(async () => (await metrics(a)).get('linen_etcd_connected') === 0, 10_000, 200);
  t.ok(sawDisconnected >= 0, `linen_etcd_connected went to 0 (${sawDisconnected} ms after etcd stopped)`);
  await sleep(Math.max(0, OUTAGE_S * 1000 - (Date.now() - down)));
  await c.etcd.start();
  const up = Date.now();
  const reconnected = await waitFor(async () => {
    for (const n of c.nodes) if ((await metrics(n)).get('linen_etcd_connected') !== 1) return false;
    return true;
  }, 15_000, 100);
  t.ok(reconnected >= 0 && reconnected < 20_000, `every node reports linen_etcd_connected 1 again ${reconnected} ms after etcd is back`);
  const run = await iperf.done;
  const empty = run.intervals.filter((x) => x === 0).length;
  t.equal(empty, 0, `all ${run.intervals.length} one-second iperf3 intervals carried data (min ${Math.min(...run.intervals)} B, ${run.gbps.toFixed(2)} Gbit/s)`);
  t.ok(run.intervals.length >= seconds - 1, 'the run lasted its full length');

  // Backoff: the retries during the outage are spaced out (capped at 5 s), not a busy loop.
  const outageLog = a.log().slice(before);
  const retries = [...outageLog.matchAll(/watch of subnet leases failed: .*? in (\d+) ms/g)].map((m) => Number(m[1]));
  t.ok(retries.length > 0, `reconnect attempts logged (${retries.length})`);
  t.ok(retries.length <= OUTAGE_S / 5 + 10, `at most ${OUTAGE_S / 5 + 10} watch retries in ${OUTAGE_S} s: got ${retries.length}`);
  t.ok(retries.every((d, i) => i === 0 || d >= retries[i - 1]! || d === 100), `delays grow: ${retries.join(', ')} ms`);
  t.ok(Math.max(...retries) <= 5000, 'delays are capped at 5 s');
  t.match(outageLog, /etcd unreachable/, 'the outage is logged');
  // Host 2 logs as linend does by default: the outage in a few lines, not one per retry.
  const quiet = b.log().slice(quietBefore).split('\n').filter((l) => /^[IWE]\d{4} /.test(l));
  t.comment(quiet.join('\n'));
  t.ok(quiet.length <= 8, `host 2 logged ${quiet.length} line(s) for the ${OUTAGE_S} s outage (at most 8)`);

  // The own lease (20 s TTL; its renewal fell inside the outage) was renewed once etcd was
  // back, before etcd's refreshed TTL ran out, and never lost.
  const renewed = await waitFor(async () => {
    const id = await keyLease(c, ownKey(a));
    return id !== null && id !== leaseBefore;
  }, TTL * 1000, 200);
  t.ok(renewed >= 0, `host 1 renewed its lease ${Date.now() - up} ms after etcd was back`);
  t.notMatch(a.log(), /revoked/, 'host 1 never lost its lease');
  const id = await keyLease(c, ownKey(a));
  const ttl = id ? await leaseTTL(c, id) : { ttl: -1, granted: 0 };
  // Alive and a full-TTL lease; how much of it is left depends on how long the checks above
  // took (under stress-ng the etcdctl calls alone took ~10 s), so only > 0 is asserted.
  t.ok(ttl.ttl > 0 && ttl.granted === TTL, `its lease is alive: ${ttl.ttl} s of ${ttl.granted} s left`);

  // The watch is live again: a new peer becomes a route everywhere (about 100-1500 ms here; the
  // bound is generous so a loaded machine cannot fail it, RELIABILITY.md holds the promise).
  const p = fakeSubnet(c, 210);
  await c.etcd.ctl('put', p.key, leaseValue('vxlan', '192.0.2.10'));
  const ms = await converged(c, c.nodes, 15_000);
  t.ok(ms >= 0, `a peer added after the outage is routed on every node (${ms} ms; bound 15 s)`);
  await c.etcd.ctl('del', p.key);
  t.ok(await converged(c, c.nodes, 15_000) >= 0, 'and removed again');
  t.comment(`figures: outage=${OUTAGE_S}s reconnect_ms=${reconnected} intervals=${run.intervals.length} min_interval_bytes=${Math.min(...run.intervals)} retries=${retries.length} gbps=${run.gbps.toFixed(2)} since_up_ms=${Date.now() - up}`);
});

t.test('host 1 cut off from etcd for longer than its renewal margin: peers that changed meanwhile converge within seconds, the lease is renewed in time', async (t) => {
  const a = c.nodes[0];
  const [x, y, z] = [fakeSubnet(c, 211), fakeSubnet(c, 212), fakeSubnet(c, 213)];
  await c.etcd.ctl('put', y.key, leaseValue('vxlan', '192.0.2.12'));
  await c.etcd.ctl('put', z.key, leaseValue('vxlan', '192.0.2.13'));
  t.ok(await converged(c, [a], 15_000) >= 0, 'starting point: host 1 routes what etcd holds');
  // Start right after a renewal so that the next one falls inside the partition.
  const key = ownKey(a);
  const first = await keyLease(c, key);
  t.ok(await waitFor(async () => (await keyLease(c, key)) !== first, (TTL - MARGIN + 5) * 1000, 100) >= 0, 'a renewal happened');
  const presence = watchKeyPresence(c, key);
  const cut = partitionFromEtcd(c, a);
  const t0 = Date.now();
  const seconds = MARGIN + 4; // longer than the margin, shorter than the TTL
  try {
    await c.etcd.ctl('put', x.key, leaseValue('vxlan', '192.0.2.11'));         // added
    await c.etcd.ctl('del', y.key);                                             // removed
    await c.etcd.ctl('put', z.key, leaseValue('vxlan', '192.0.2.113', '0a:58:0a:00:01:13')); // changed
    t.ok(await bothWays(c, 0, 1), 'pods 1 and 2 reach each other during the partition');
    await sleep(Math.max(0, seconds * 1000 - (Date.now() - t0)));
    t.notOk(same((await metrics(a)).routes(), await expectedRoutes(c, a)), 'host 1 did not see the changes while cut off');
  } finally {
    cut.heal();
  }
  const healed = Date.now();
  const ms = await converged(c, [a], 30_000);
  t.ok(ms >= 0, `host 1 converged ${ms} ms after the partition healed`);
  t.ok(ms >= 0 && ms < 20_000, `within 20 s (${ms} ms)`);
  const renewedBy = await waitFor(async () => {
    const id = await keyLease(c, key);
    return id !== null && (await leaseTTL(c, id)).ttl > TTL - 5;
  }, 30_000, 200);
  const missing = await presence.stop();
  t.equal(missing, 0, 'the own key never disappeared from etcd');
  t.notMatch(a.log(), /revoked/, 'no revocation');
  t.ok(renewedBy >= 0, `the lease was renewed ${renewedBy} ms after the partition healed`);
  const id = await keyLease(c, key);
  const ttl = id ? await leaseTTL(c, id) : { ttl: -1, granted: 0 };
  t.ok(ttl.ttl > 0, `remaining TTL after recovery ${ttl.ttl} s (alive; the renewal itself is checked above)`);
  t.ok(await bothWays(c, 0, 1), 'pods 1 and 2 still reach each other');
  t.comment(`figures: partition_s=${((healed - t0) / 1000).toFixed(1)} converge_ms=${ms} renewed_after_heal_ms=${renewedBy} ttl_left=${ttl.ttl}`);
  for (const k of [x.key, z.key]) await c.etcd.ctl('del', k);
  await converged(c, c.nodes, 15_000);
});

t.test('a watch that fell behind a physical compaction: the route set equals the leases in etcd, nothing stale or missing', async (t) => {
  const a = c.nodes[0];
  const subs = [220, 221, 222, 223].map((i) => fakeSubnet(c, i));
  for (const s of subs.slice(0, 3)) await c.etcd.ctl('put', s.key, leaseValue('vxlan', `192.0.2.${s.subnet.split('.')[2]}`));
  t.ok(await converged(c, [a], 15_000) >= 0, 'starting point');
  // Cut host 1 off and break its connections, so that its watch has to start again from the
  // revision it had reached.
  const cut = partitionFromEtcd(c, a, { kill: true });
  try {
    await c.etcd.ctl('del', subs[0]!.key);
    await c.etcd.ctl('put', subs[1]!.key, leaseValue('vxlan', '192.0.2.121', '0a:58:0a:00:02:21'));
    await c.etcd.ctl('put', subs[3]!.key, leaseValue('vxlan', '192.0.2.123'));
    // A peer that came and went inside the gap.
    const gone = fakeSubnet(c, 224);
    await c.etcd.ctl('put', gone.key, leaseValue('vxlan', '192.0.2.124'));
    await c.etcd.ctl('del', gone.key);
    const rev = await etcdRevision(c);
    await c.etcd.ctl('compact', String(rev), '--physical');
  } finally {
    cut.heal();
  }
  const ms = await converged(c, [a], 30_000);
  t.ok(ms >= 0 && ms < 20_000, `host 1's routes equal etcd's leases ${ms} ms after reconnecting (bound 20 s)`);
  t.match(a.log(), /fell behind compaction/, 'the compaction was noticed');
  t.same((await metrics(a)).routes(), await expectedRoutes(c, a), 'exactly the leases in etcd');
  t.ok(await bothWays(c, 0, 2), 'pods 1 and 3 reach each other');
  t.comment(`figures: compaction_converge_ms=${ms}`);
  for (const s of subs) await c.etcd.ctl('del', s.key);
  await converged(c, c.nodes, 15_000);
});

t.test('a peer lease that expires: its route is gone soon after the expiry', async (t) => {
  const p = fakeSubnet(c, 230);
  const granted = Date.now();
  const id = await grantLease(c, 5);
  await c.etcd.ctl('put', p.key, leaseValue('vxlan', '192.0.2.30'), `--lease=${id}`);
  const route = `${p.subnet} via 192.0.2.30`;
  const has = async (n: ClusterNode): Promise<boolean> => (await metrics(n)).routes().includes(route);
  t.ok(await waitFor(async () => (await has(c.nodes[0])) && (await has(c.nodes[1])), 15_000) >= 0, 'routed on hosts 1 and 2');
  // Watch the key and the routes at 50 ms.
  let keyGone = 0;
  const goneAt: number[] = [0, 0];
  await waitFor(async () => {
    const now = Date.now();
    if (keyGone === 0 && (await c.etcd.ctl('get', p.key, '--print-value-only')).trim() === '') keyGone = now;
    for (const i of [0, 1]) if (goneAt[i] === 0 && !(await has(c.nodes[i]!))) goneAt[i] = Date.now();
    return keyGone !== 0 && goneAt.every((g) => g !== 0);
  }, 15_000, 50);
  t.ok(keyGone > 0, 'etcd deleted the key when the lease expired');
  // etcd checks for expired leases every 500 ms; the key goes at the latest ~0.5 s after the TTL.
  for (const i of [0, 1]) {
    const lag = goneAt[i]! - keyGone;
    t.ok(goneAt[i]! > 0 && lag < 5000, `host ${i + 1}: route gone ${lag} ms after the key was seen gone (polled every 50 ms; bound 5 s)`);
    const sinceTtl = goneAt[i]! - granted - 5000;
    t.ok(sinceTtl < 6000, `host ${i + 1}: route gone ${sinceTtl} ms after the 5 s TTL ran out (bound 6 s)`);
  }
  t.comment(`figures: expiry_route_lag_ms=${goneAt.map((g) => g - keyGone).join(',')} after_ttl_ms=${goneAt.map((g) => g - granted - 5000).join(',')}`);
});

t.test('etcd restarted with its data wiped: every node takes its subnet again, forwarding goes on', async (t) => {
  const [a, b] = c.nodes;
  const subnets = c.nodes.map((n) => n.subnetEnv()?.['FLANNEL_SUBNET']);
  const before = await etcdLeases(c);
  const iperf = await startIperf(a, b, { seconds: 16, interval: 1, port: 5202 });
  await sleep(3000);
  await c.etcd.restart({ wipe: true });
  const back = Date.now();
  // The operator puts the network config back.
  await c.etcd.ctl('put', `${ETCD_PREFIX}/config`, JSON.stringify({ Network: c.network, Backend: { Type: 'vxlan' } }));
  const ms = await waitFor(async () => {
    const now = await etcdLeases(c);
    return [...before].every(([k, v]) => now.get(k) === v);
  }, 30_000, 100);
  t.ok(ms >= 0, `every node re-created its lease, same subnet and value, ${ms} ms after etcd came back empty`);
  if (ms < 0) {
    const now = await etcdLeases(c);
    t.comment(`leases before: ${JSON.stringify([...before])}\nleases now: ${JSON.stringify([...now])}`);
    for (const n of c.nodes) t.comment(`host ${n.index + 1} log tail:\n${n.log().split('\n').slice(-40).join('\n')}`);
  }
  t.ok(await converged(c, c.nodes, 10_000) >= 0, 'routes on every node match etcd again');
  const run = await iperf.done;
  t.equal(run.intervals.filter((x) => x === 0).length, 0, `all ${run.intervals.length} iperf3 intervals carried data (min ${Math.min(...run.intervals)} B)`);
  t.same(c.nodes.map((n) => n.subnetEnv()?.['FLANNEL_SUBNET']), subnets, 'subnet.env unchanged on every node');
  t.ok(c.nodes.every((n) => n.alive()), 'no node exited');
  t.match(a.log(), /revision went back|store wiped/, 'the wipe was noticed');
  t.ok(await bothWays(c, 0, 1) && await bothWays(c, 1, 2), 'pods reach each other');
  t.comment(`figures: wipe_relet_ms=${ms} min_interval_bytes=${Math.min(...run.intervals)} since_back_ms=${Date.now() - back}`);
});
