// Hostile keys and values as the lease watcher receives them from etcd (events and listings made
// the way the registry makes them, from raw keys and values): alias keys of another node's
// subnet neither replace nor delete its peer, each bad key is logged and counted once, values
// that would throw are refused leases, and the batch goes on after them.
import t from 'tap';
import { memoryLogger } from '../../src/log.js';
import { formatCIDR, formatIPv4 } from '../../src/net.js';
import { etcdKeys, leaseFromKV, parseSubnetKey, type Lease } from '../../src/subnet/lease.js';
import type { LeaseList, Registry, SkippedEntry, WatchEvent } from '../../src/subnet/registry.js';
import { LeaseWatcher, type PeerDiff } from '../../src/subnet/watcher.js';

const keys = etcdKeys('/coreos.com/network');
const S = keys.subnets;
const udp = (ip: string): string => `{"PublicIP":"${ip}","PublicIPv6":null}`;

// The watcher only reads the key layout of its registry outside run(); these tests call its
// batch methods directly, as run() does with what etcd answers.
const registry = { keys } as unknown as Registry;

let rev = 1;
/** A watch event as the registry makes one from a raw key and value. */
function put(key: string, value: string): WatchEvent {
  const r = leaseFromKV(key, value, '0', ++rev);
  return r.ok ? { type: 'put', key, revision: rev, lease: r.value } : { type: 'invalid', key, revision: rev, error: r.error };
}
function del(key: string): WatchEvent {
  return { type: 'delete', key, revision: ++rev, subnet: parseSubnetKey(key)?.subnet ?? null };
}
/** A listing as the registry makes one. */
function list(entries: [string, string][]): LeaseList {
  const leases: Lease[] = [];
  const skipped: SkippedEntry[] = [];
  for (const [key, value] of [...entries].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const r = leaseFromKV(key, value, '0', ++rev);
    if (r.ok) leases.push(r.value);
    else skipped.push({ key, error: r.error });
  }
  return { leases, skipped, revision: rev };
}

function setup() {
  const { log, lines } = memoryLogger(0);
  const w = new LeaseWatcher({ registry, ownSubnet: null, accept: 'all', log });
  const peers = (): Record<string, string> => Object.fromEntries([...w.peers().values()].map((p) => [formatCIDR(p.subnet), formatIPv4(p.publicIP)]));
  const refused = (d: PeerDiff): string[] => (d.refused ?? []).map((r) => r.reason);
  return { w, lines, peers, refused, apply: (...evs: WatchEvent[]): PeerDiff => w.applyEvents(evs, rev) };
}

const OWNER = `${S}/10.5.7.0-24`;
const ALIASES: [string, string][] = [
  ['an extra path segment', `${S}/x/10.5.7.0-24`],
  ['a sibling folder of subnets/', `${S}x/10.5.7.0-24`],
  ['a prefix before the name', `${S}/evil-10.5.7.0-24`],
  ['a leading zero in the length', `${S}/10.5.7.0-024`],
  ['a dual-stack name of the same subnet', `${S}/10.5.7.0-24&fd00::-64`],
];

t.test('an alias key neither replaces nor deletes the route of the key that holds the subnet', async (t) => {
  for (const [what, alias] of ALIASES) {
    const s = setup();
    s.apply(put(OWNER, udp('192.168.0.7')));
    const d = s.apply(put(alias, udp('192.168.66.6')));
    t.same(s.peers(), { '10.5.7.0/24': '192.168.0.7' }, `${what}: the owner's peer stays`);
    t.equal(d.added.length + d.changed.length + d.removed.length, 0, `${what}: no change reported`);
    t.equal(s.refused(d).length, 1, `${what}: refused once (${s.refused(d).join()})`);
    s.apply(del(alias));
    t.same(s.peers(), { '10.5.7.0/24': '192.168.0.7' }, `${what}: deleting the alias leaves the owner's peer`);
    // And in the other order: the alias first, the owner's key written after.
    const o = setup();
    o.apply(put(alias, udp('192.168.66.6')));
    o.apply(put(OWNER, udp('192.168.0.7')));
    const expect = alias.includes('&') ? { '10.5.7.0/24': '192.168.66.6' } : { '10.5.7.0/24': '192.168.0.7' };
    t.same(o.peers(), expect, `${what}, written first: ${alias.includes('&') ? 'a valid dual-stack key holds the subnet, the later key is the alias' : 'no key it names is a lease key'}`);
    o.apply(del(OWNER));
    t.same(o.peers(), alias.includes('&') ? expect : {}, `${what}, written first: only the holder's delete takes the peer`);
  }
});

t.test('the holder can change and delete its own lease; once it is gone the subnet is free', async (t) => {
  const s = setup();
  s.apply(put(OWNER, udp('192.168.0.7')));
  s.apply(put(OWNER, udp('192.168.0.8')));
  t.same(s.peers(), { '10.5.7.0/24': '192.168.0.8' }, 'the holder changes its PublicIP');
  const alias = `${S}/10.5.7.0-24&fd00::-64`;
  s.apply(put(alias, udp('192.168.66.6')));
  s.apply(del(OWNER));
  t.same(s.peers(), {}, 'the holder deletes it');
  s.apply(put(alias, udp('192.168.66.6')));
  t.same(s.peers(), { '10.5.7.0/24': '192.168.66.6' }, 'a key written after the holder is gone takes the free subnet');
});

t.test('a listing keeps the holder; without one the first key in etcd order holds the subnet', async (t) => {
  const s = setup();
  const alias = `${S}/10.5.7.0-24&fd00::-64`;
  s.apply(put(alias, udp('192.168.66.6')));
  s.w.applySnapshot(list([[OWNER, udp('192.168.0.7')], [alias, udp('192.168.66.6')]]), 'resync');
  t.same(s.peers(), { '10.5.7.0/24': '192.168.66.6' }, 'the holder before the re-list keeps the subnet');
  const f = setup();
  const d = f.w.applySnapshot(list([[alias, udp('192.168.66.6')], [OWNER, udp('192.168.0.7')], [`${S}/x/10.5.7.0-24`, udp('192.168.66.7')]]), 'snapshot');
  t.same(f.peers(), { '10.5.7.0/24': '192.168.0.7' }, 'a first listing: the key first in etcd order holds it');
  t.same(f.refused(d).sort(), ['alias_key', 'bad_key'], 'the others are refused');
  const again = f.w.applySnapshot(list([[alias, udp('192.168.66.6')], [OWNER, udp('192.168.0.7')], [`${S}/x/10.5.7.0-24`, udp('192.168.66.7')]]), 'resync');
  t.same(f.refused(again), [], 'a re-list does not count or log them again');
});

t.test('each bad key is logged and counted once, cut to a log line', async (t) => {
  const s = setup();
  const huge = `${S}/${'1'.repeat(1_000_000)}`;
  const bad = [`${S}/not-a-subnet`, `${S}/10.5.7.0-24hi`, huge, `${S}/10.5.7.0-32`];
  const d1 = s.apply(...bad.map((k) => put(k, udp('192.168.0.9'))));
  const d2 = s.apply(...bad.map((k) => put(k, udp('192.168.0.9'))), ...bad.map(del));
  t.same(s.refused(d1), bad.map(() => 'bad_key'), 'counted once each');
  t.same(s.refused(d2), [], 'not again');
  const logged = s.lines.filter((l) => l.includes('skipping bad subnet lease'));
  t.equal(logged.length, bad.length, 'logged once each');
  t.ok(logged.every((l) => l.length < 600), `no log line carries the megabyte key (longest ${Math.max(...logged.map((l) => l.length))} characters)`);
  t.same(s.peers(), {}, 'nothing became a peer');
});

t.test('values that throw are refused leases; the rest of the batch goes on', async (t) => {
  const s = setup();
  const nested = `{"PublicIP":"192.0.2.1","BackendData":${'['.repeat(5000)}${']'.repeat(5000)}}`;
  let d: PeerDiff | undefined;
  t.doesNotThrow(() => {
    d = s.apply(put(`${S}/10.5.8.0-24`, nested), put(`${S}/10.5.9.0-24`, udp('192.168.0.9')));
  }, 'no exception');
  t.same(d && s.refused(d), ['bad_value']);
  t.same(s.peers(), { '10.5.9.0/24': '192.168.0.9' }, 'the lease after it in the batch is a peer');
  const l = setup();
  t.doesNotThrow(() => l.w.applySnapshot(list([[`${S}/10.5.8.0-24`, nested], [`${S}/10.5.9.0-24`, udp('192.168.0.9')]]), 'snapshot'), 'a listing with it');
  t.same(l.peers(), { '10.5.9.0/24': '192.168.0.9' });
});
