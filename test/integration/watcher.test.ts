// Peer discovery against a real etcd, with leases written by hand in flanneld's format.
import t from 'tap';
import { startEtcd } from '../helpers/etcd.js';
import { EtcdRegistry } from '../../src/subnet/etcd.js';
import { LeaseWatcher, type PeerDiff, type PeerFilter } from '../../src/subnet/watcher.js';
import { RegistryError, type Registry, type WatchItem } from '../../src/subnet/registry.js';
import { memoryLogger } from '../../src/log.js';
import { formatCIDR, formatIPv4, formatMAC, netKey, parseCIDR, type IPv4Net, type NetKey } from '../../src/net.js';

const P = '/coreos.com/network/subnets';
const udp = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;
const vx = (ip: string, mac: string): string => `{"PublicIP":"${ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${mac}"}}`;

const waitFor = async (cond: () => boolean, ms = 5000, what = 'condition'): Promise<number> => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return Date.now() - t0;
};

interface Run {
  w: LeaseWatcher;
  diffs: PeerDiff[];
  lines: string[];
  peers(): Record<string, string>;
  stop(): Promise<void>;
}

function startWatcher(t: Tap, registry: Registry, accept: PeerFilter, own: string | null = null, resetGraceMs?: number): Run {
  const { log, lines } = memoryLogger(1);
  const w = new LeaseWatcher({ registry, ownSubnet: own === null ? null : parseCIDR(own), accept, log, ...(resetGraceMs === undefined ? {} : { resetGraceMs }) });
  const diffs: PeerDiff[] = [];
  const ac = new AbortController();
  const done = w.run(ac.signal, (d) => {
    diffs.push(d);
  });
  const stop = async (): Promise<void> => {
    ac.abort();
    await done;
  };
  t.teardown(stop);
  return {
    w,
    diffs,
    lines,
    stop,
    peers: () => Object.fromEntries([...w.peers().values()].map((p) => [formatCIDR(p.subnet), formatIPv4(p.publicIP) + (p.vxlan ? ` ${formatMAC(p.vxlan.vtepMAC)}` : '')])),
  };
}
type Tap = { teardown(f: () => unknown): void };

const names = (ps: { subnet: IPv4Net }[]): string[] => ps.map((p) => formatCIDR(p.subnet)).sort();
/** The watcher's key for a subnet. */
const key = (cidr: string): NetKey => netKey(parseCIDR(cidr)!);

t.setTimeout(60_000);

t.test('watcher', async (t) => {
  const etcd = await startEtcd(t);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(() => reg.close());
  const put = (k: string, v: string): Promise<string> => etcd.ctl('put', `${P}/${k}`, v);
  const del = (k: string): Promise<string> => etcd.ctl('del', `${P}/${k}`);

  await put('10.5.1.0-24', udp('192.168.0.1'));
  await put('10.5.2.0-24', udp('192.168.0.2'));
  await put('10.5.9.0-24', udp('192.168.0.9')); // our own

  t.test('snapshot, hand-written lease seen promptly, deletion removes it', async (t) => {
    const r = startWatcher(t, reg, 'all', '10.5.9.0/24');
    await r.w.ready;
    t.same(r.diffs[0]?.cause, 'snapshot');
    t.same(names(r.diffs[0]!.added), ['10.5.1.0/24', '10.5.2.0/24'], 'own subnet filtered out');
    await put('10.5.3.0-24', udp('192.168.0.3'));
    const ms = await waitFor(() => r.w.peers().has(key('10.5.3.0/24')), 10_000, 'peer 10.5.3.0/24');
    t.ok(ms < 10_000, `seen in ${ms} ms (bound 10 s)`);
    t.same(names(r.diffs.at(-1)!.added), ['10.5.3.0/24']);
    await del('10.5.3.0-24');
    await waitFor(() => !r.w.peers().has(key('10.5.3.0/24')), 1000, 'removal');
    const last = r.diffs.at(-1)!;
    t.same(names(last.removed), ['10.5.3.0/24']);
    t.equal(formatIPv4(last.removed[0]!.publicIP), '192.168.0.3', 'removed peer carries its last attributes');
    await r.stop();
  });

  t.test('renewal is silent, changed attributes are reported', async (t) => {
    const r = startWatcher(t, reg, 'all');
    await r.w.ready;
    const n = r.diffs.length;
    await put('10.5.1.0-24', udp('192.168.0.1')); // same value: a renewal
    await put('10.5.2.0-24', udp('192.168.0.22')); // new PublicIP
    await waitFor(() => r.diffs.length > n, 1000);
    await new Promise((res) => setTimeout(res, 100));
    t.equal(r.diffs.length, n + 1, 'only one diff');
    t.same(names(r.diffs.at(-1)!.changed), ['10.5.2.0/24']);
    t.same(r.diffs.at(-1)!.added, []);
    t.equal(r.peers()['10.5.2.0/24'], '192.168.0.22');
    await r.stop();
  });

  t.test('a malformed value never removes the other peers', async (t) => {
    const r = startWatcher(t, reg, 'all');
    await r.w.ready;
    const before = r.peers();
    await put('10.5.4.0-24', '{"PublicIP":null}');
    await put('10.5.2.0-24', 'garbage');
    await etcd.ctl('put', '/coreos.com/network/subnets-foo', 'x');
    await put('10.5.5.0-24', udp('192.168.0.5')); // marker after the bad ones
    await waitFor(() => r.w.peers().has(key('10.5.5.0/24')), 2000);
    t.same(r.peers(), { ...before, '10.5.5.0/24': '192.168.0.5' }, 'all earlier peers still there');
    t.ok(r.lines.some((l) => l.includes('skipping bad subnet lease /coreos.com/network/subnets/10.5.4.0-24: PublicIP')), 'log names the key');
    t.ok(r.lines.some((l) => l.includes('skipping bad subnet lease /coreos.com/network/subnets/10.5.2.0-24')));
    t.ok(r.lines.some((l) => l.includes('/coreos.com/network/subnets-foo')));
    for (const d of r.diffs) t.same(d.removed, [], 'no removals at all');
    await put('10.5.2.0-24', udp('192.168.0.22'));
    await del('10.5.4.0-24');
    await etcd.ctl('del', '/coreos.com/network/subnets-foo');
    await del('10.5.5.0-24');
    await r.stop();
  });

  t.test('vxlan accepts only vxlan leases; udp accepts all', async (t) => {
    await put('10.5.6.0-24', vx('192.168.0.6', 'AA-BB-CC-DD-EE-06'));
    await put('10.5.7.0-24', '{"PublicIP":"192.168.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1}}');
    const v = startWatcher(t, reg, 'vxlan');
    const u = startWatcher(t, reg, 'all');
    await Promise.all([v.w.ready, u.w.ready]);
    t.same(v.peers(), { '10.5.6.0/24': '192.168.0.6 aa:bb:cc:dd:ee:06' });
    t.same(Object.keys(u.peers()).sort(), ['10.5.1.0/24', '10.5.2.0/24', '10.5.6.0/24', '10.5.7.0/24', '10.5.9.0/24']);
    t.ok(v.lines.some((l) => l.includes('10.5.7.0-24') && l.includes('VtepMAC')), 'vxlan lease without VtepMAC skipped with a log line');
    // a vxlan peer rewritten as a udp lease leaves the vxlan set
    await put('10.5.6.0-24', udp('192.168.0.6'));
    await waitFor(() => !v.w.peers().has(key('10.5.6.0/24')), 1000);
    t.same(names(v.diffs.at(-1)!.removed), ['10.5.6.0/24']);
    await del('10.5.6.0-24');
    await del('10.5.7.0-24');
    await Promise.all([v.stop(), u.stop()]);
  });

  t.test('watch reconnects after etcd restarts', async (t) => {
    const r = startWatcher(t, reg, 'all');
    await r.w.ready;
    await etcd.restart();
    await put('10.5.8.0-24', udp('192.168.0.8'));
    const ms = await waitFor(() => r.w.peers().has(key('10.5.8.0/24')), 10_000, 'peer after restart');
    t.comment(`seen ${ms} ms after the put`);
    t.ok(r.lines.some((l) => /watch of subnet leases (failed|ended)/.test(l)), 'the disconnect was logged');
    await del('10.5.8.0-24');
    await waitFor(() => !r.w.peers().has(key('10.5.8.0/24')), 2000);
    await r.stop();
  });

  t.test('forced compaction during changes: re-list reconciles added, removed and changed', async (t) => {
    // A registry whose watch can be cut and held off, so that changes and a compaction
    // happen while the watcher is disconnected; the real etcd does the compaction.
    let hold: Promise<void> | null = null;
    let release = (): void => undefined;
    let cut = (): void => undefined;
    const gated: Registry = Object.create(reg) as Registry;
    let compactedSeen = 0;
    let watching = 0;
    gated.watchLeases = (from: number, signal: AbortSignal): AsyncIterable<WatchItem> => ({
      async *[Symbol.asyncIterator]() {
        if (hold !== null) await Promise.race([hold, new Promise((res) => signal.addEventListener('abort', res, { once: true }))]);
        if (signal.aborted) return;
        const ac = new AbortController();
        cut = () => ac.abort();
        watching++;
        const both = AbortSignal.any([signal, ac.signal]);
        for await (const it of reg.watchLeases(from, both)) {
          if (it.kind === 'compacted') compactedSeen++;
          yield it;
        }
        if (ac.signal.aborted && !signal.aborted) throw new RegistryError('test: watch cut', 'unavailable');
      },
    });
    await put('10.5.10.0-24', udp('192.168.0.10'));
    await put('10.5.11.0-24', udp('192.168.0.11'));
    const r = startWatcher(t, gated, 'all');
    await r.w.ready;
    t.equal(r.peers()['10.5.11.0/24'], '192.168.0.11');
    await waitFor(() => watching === 1, 2000, 'watch established');

    hold = new Promise((res) => (release = res));
    cut();
    await waitFor(() => r.lines.some((l) => l.includes('test: watch cut')), 2000);
    await del('10.5.10.0-24'); // removed in the gap
    await put('10.5.11.0-24', udp('192.168.0.111')); // changed in the gap
    await put('10.5.12.0-24', udp('192.168.0.12')); // added in the gap
    await put('10.5.13.0-24', 'bad value written in the gap');
    const rev = (await reg.getLeases()).revision;
    await etcd.ctl('compact', String(rev));
    hold = null;
    release();
    await waitFor(() => r.diffs.some((d) => d.cause === 'resync'), 10_000, 'resync');
    const d = r.diffs.find((x) => x.cause === 'resync')!;
    t.equal(compactedSeen, 1, 'etcd reported the compaction');
    t.same(names(d.added), ['10.5.12.0/24']);
    t.same(names(d.removed), ['10.5.10.0/24']);
    t.same(names(d.changed), ['10.5.11.0/24'], 'attrs changed in the gap are reported (flanneld misses these)');
    t.equal(r.peers()['10.5.11.0/24'], '192.168.0.111');
    t.ok(r.peers()['10.5.1.0/24'], 'untouched peers kept');
    // and the watch continues after the resync
    await put('10.5.14.0-24', udp('192.168.0.14'));
    await waitFor(() => r.w.peers().has(key('10.5.14.0/24')), 2000);
    await r.stop();
  });

  t.test('etcd wiped and restarted: the revision went back, the watcher re-lists, keeps the missing peers for a grace period, then drops them', async (t) => {
    const r = startWatcher(t, reg, 'all', null, 3000);
    await r.w.ready;
    const before = r.w.peers().size;
    t.ok(before > 3);
    await etcd.restart({ wipe: true });
    await put('10.5.30.0-24', udp('192.168.0.30'));
    await waitFor(() => r.w.peers().has(key('10.5.30.0/24')), 10_000, 'the new store is followed');
    t.ok(r.lines.some((l) => l.includes('etcd revision went back')), 'logged');
    t.equal(r.w.peers().size, before + 1, 'the peers missing from the wiped store are still there during the grace');
    t.notOk(r.diffs.some((x) => x.removed.length > 0), 'nothing removed yet');
    await waitFor(() => r.w.peers().size === 1 && r.w.peers().has(key('10.5.30.0/24')), 10_000, 'state of the new store after the grace');
    const d = r.diffs.find((x) => x.cause === 'resync' && x.removed.length > 0);
    t.ok(d !== undefined && d.removed.length > 3, 'old peers removed by the re-list after the grace');
    await r.stop();
  });
});
