// Reading linend's log for the scale run (lab/linend-log.ts): line times with microseconds, when
// a node first routed a number of peers, when it dropped one, and lease races lost; and the
// scale run's fixed reachability sample (bench/cluster-join.ts).
import t from 'tap';
import { formatHeader } from '../../src/log.js';
import { leaseRaces, logTime, peerRemovedAt, routedCountAt } from '../../lab/linend-log.js';
import { reachSample } from '../../bench/cluster-join.js';

const base = new Date(new Date().getFullYear(), 11, 1, 3, 0, 0).getTime();
/** A klog line at `ms` after base (with a microsecond part). */
const at = (ms: number, component: string, msg: string, sev: 'I' | 'W' | 'E' = 'I'): string =>
  formatHeader(sev, Math.round((base + ms) * 1000), 4242, component) + msg;

t.test('logTime reads the header back to the microsecond', async (t) => {
  t.equal(logTime(at(1234.567, 'peers', 'x')), base + 1234.567);
  t.equal(logTime('not a klog line'), null);
});

t.test('routedCountAt: the line that completed the set, counting removals and repeats', async (t) => {
  const log = [
    at(10, 'main', 'linend v0.1.0 starting'),
    at(20, 'peers', 'Peer 10.5.1.0/24 via 192.168.9.1 (VtepMAC 0a:58:0a:00:00:01)'),
    at(30, 'peers', 'Peer 10.5.2.0/24 via 192.168.9.2 (VtepMAC 0a:58:0a:00:00:02)'),
    at(40, 'peers', 'Peer 10.5.2.0/24 removed'),
    at(50, 'peers', 'Peer 10.5.1.0/24 via 192.168.9.7 (VtepMAC 0a:58:0a:00:00:07)'),
    at(60, 'peers', 'Peer 10.5.3.0/24 via 192.168.9.3'),
    at(70, 'peers', 'Peer 10.5.2.0/24 via 192.168.9.2 (direct route)'),
  ].join('\n') + '\n';
  t.equal(routedCountAt(log, 1), base + 20);
  t.equal(routedCountAt(log, 2), base + 30);
  t.equal(routedCountAt(log, 3), base + 70, 'a changed peer does not count twice; a removed one counts again once back');
  t.equal(routedCountAt(log, 4), null);
  t.equal(peerRemovedAt(log, '10.5.2.0/24'), base + 40);
  t.equal(peerRemovedAt(log, '10.5.1.0/24'), null);
});

t.test('leaseRaces: creates lost, and giving up', async (t) => {
  const lost = (n: number): string => at(n, 'subnet', `subnet 10.5.${n}.0/24 was taken by another node while we created it (attempt ${n}/10); picking another`, 'W');
  t.same(leaseRaces([lost(1), lost(2), at(3, 'subnet', 'Allocated lease (ip: 10.5.9.0/24) to current node (192.168.9.1)')].join('\n')), { lost: 2, gaveUp: false });
  t.same(leaseRaces(at(1, 'main', 'failed to acquire lease: max retries reached trying to acquire a subnet (10 create race(s) lost: …)', 'E')), { lost: 0, gaveUp: true });
  t.same(leaseRaces(''), { lost: 0, gaveUp: false });
});

t.test('reachSample: K distinct other hosts, spread out, the same every time', async (t) => {
  t.same(reachSample(0, 100, 3), [25, 50, 75]);
  t.same(reachSample(99, 100, 3), [24, 49, 74]);
  t.same(reachSample(1, 2, 3), [0], 'no more than the other hosts');
  for (const hosts of [2, 3, 4, 5, 7, 20, 50, 101]) {
    for (let i = 0; i < hosts; i++) {
      const s = reachSample(i, hosts, 3);
      t.equal(s.length, Math.min(3, hosts - 1));
      if (new Set(s).size !== s.length || s.includes(i) || s.some((x) => x < 0 || x >= hosts)) t.fail(`hosts ${hosts}, host ${i}: ${s}`);
    }
  }
});
