// Lease acquisition, reuse, renewal and revocation against a real etcd.
import t from 'tap';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';
import { EtcdRegistry } from '../../src/subnet/etcd.js';
import { ManualClock } from '../../src/subnet/clock.js';
import { fetchNetworkConfig, freeCandidates, LeaseManager, type LeaseEvent } from '../../src/subnet/manager.js';
import { RegistryError, SubnetExistsError, type LeaseGrant, type LeaseList, type Registry, type WatchItem } from '../../src/subnet/registry.js';
import { makeSubnetKey, type LeaseAttrs } from '../../src/subnet/lease.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import { memoryLogger } from '../../src/log.js';
import { formatCIDR, parseCIDR, parseIPv4, parseMAC, type IPv4Net } from '../../src/net.js';

const ip = (s: string) => parseIPv4(s)!;
const sn = (s: string) => parseCIDR(s)!;
const P = '/coreos.com/network';

async function ctlValue(etcd: EtcdHandle, key: string): Promise<{ value: string; lease: string | null } | null> {
  const text = await etcd.ctl('get', key, '-w', 'json');
  const out = JSON.parse(text) as { kvs?: { value: string }[] };
  const kv = out.kvs?.[0];
  if (kv === undefined) return null;
  return { value: Buffer.from(kv.value, 'base64').toString(), lease: /"lease":(\d+)/.exec(text)?.[1] ?? null };
}
async function ctlTTL(etcd: EtcdHandle, lease: string): Promise<number> {
  const out = JSON.parse(await etcd.ctl('lease', 'timetolive', BigInt(lease).toString(16), '-w', 'json')) as { ttl: number };
  return out.ttl;
}
async function subnetKeys(etcd: EtcdHandle): Promise<string[]> {
  return (await etcd.ctl('get', `${P}/subnets`, '--prefix', '--keys-only')).split('\n').filter((l) => l !== '');
}

/** Delegates to a real registry; individual calls can be overridden to inject faults. */
class FaultyRegistry implements Registry {
  constructor(
    readonly inner: Registry,
    readonly over: Partial<Pick<Registry, 'getLeases' | 'createLease' | 'updateLease' | 'getLease' | 'watchLease'>> = {},
  ) {}
  get keys() {
    return this.inner.keys;
  }
  getNetworkConfig() {
    return this.inner.getNetworkConfig();
  }
  getLeases(): Promise<LeaseList> {
    return (this.over.getLeases ?? (() => this.inner.getLeases()))();
  }
  getLease(s: IPv4Net) {
    return (this.over.getLease ?? ((x: IPv4Net) => this.inner.getLease(x)))(s);
  }
  createLease(s: IPv4Net, a: LeaseAttrs, ttl: number): Promise<LeaseGrant> {
    return (this.over.createLease ?? ((x: IPv4Net, y: LeaseAttrs, z: number) => this.inner.createLease(x, y, z)))(s, a, ttl);
  }
  updateLease(s: IPv4Net, a: LeaseAttrs, ttl: number | null, opts?: { timeoutMs?: number }): Promise<LeaseGrant> {
    return (this.over.updateLease ?? ((x: IPv4Net, y: LeaseAttrs, z: number | null, o?: { timeoutMs?: number }) => this.inner.updateLease(x, y, z, o)))(s, a, ttl, opts);
  }
  deleteLease(s: IPv4Net) {
    return this.inner.deleteLease(s);
  }
  leaseTimeToLive(id: string) {
    return this.inner.leaseTimeToLive(id);
  }
  watchLeases(from: number, signal: AbortSignal) {
    return this.inner.watchLeases(from, signal);
  }
  watchLease(s: IPv4Net, from: number, signal: AbortSignal): AsyncIterable<WatchItem> {
    return (this.over.watchLease ?? ((x: IPv4Net, f: number, g: AbortSignal) => this.inner.watchLease(x, f, g)))(s, from, signal);
  }
  connection() {
    return this.inner.connection();
  }
  onConnectionChange(l: Parameters<Registry['onConnectionChange']>[0]) {
    return this.inner.onConnectionChange(l);
  }
  close() {
    return this.inner.close();
  }
}

const waitFor = async (cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

const config = parseNetworkConfig('{"Network":"10.5.0.0/16"}');

t.setTimeout(60_000);

t.test('lease manager', async (t) => {
  const etcd = await startEtcd(t);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(() => reg.close());

  t.test('create, then reuse by PublicIP with a fresh lease; exact JSON in etcd', async (t) => {
    const m1 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.10')) });
    const a = await m1.acquire(config);
    t.equal(a.how, 'allocated');
    t.ok(a.subnet.ip >= config.subnetMin && a.subnet.ip <= config.subnetMax && a.subnet.prefixLen === 24);
    t.ok(freeCandidates(config, []).some((c) => c.ip === a.subnet.ip), 'among the first 100 candidates');
    const key = `${P}/subnets/${makeSubnetKey(a.subnet)}`;
    const kv = await ctlValue(etcd, key);
    t.equal(kv?.value, '{"PublicIP":"192.168.1.10","PublicIPv6":null}');
    t.equal(kv?.lease, a.leaseId);
    t.ok((await ctlTTL(etcd, a.leaseId)) > 86390);

    // a restarted node with the same PublicIP reuses the subnet, with its new attrs
    const m2 = new LeaseManager({ registry: reg, attrs: vxlanLeaseAttrs(ip('192.168.1.10'), 1, parseMAC('aa:bb:cc:dd:ee:01')!), previousSubnet: sn('10.5.200.0/24') });
    const b = await m2.acquire(config);
    t.equal(b.how, 'reused');
    t.same(b.subnet, a.subnet);
    t.not(b.leaseId, a.leaseId, 'new etcd lease');
    const kv2 = await ctlValue(etcd, key);
    t.equal(kv2?.value, '{"PublicIP":"192.168.1.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}');
    t.equal(kv2?.lease, b.leaseId);
  });

  t.test('previous subnet from subnet.env: used when free, skipped when taken or incompatible', async (t) => {
    // 10.5.177.0/24 lies beyond the first 100 candidates, so no random pick of another subtest can take it
    const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.20')), previousSubnet: sn('10.5.177.0/24') });
    const a = await m.acquire(config);
    t.equal(a.how, 'previous');
    t.equal(formatCIDR(a.subnet), '10.5.177.0/24');

    const m2 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.21')), previousSubnet: sn('10.5.177.0/24') });
    const b = await m2.acquire(config);
    t.equal(b.how, 'allocated', 'taken by .20 => new one');
    t.not(formatCIDR(b.subnet), '10.5.177.0/24');

    const m3 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.22')), previousSubnet: sn('10.6.1.0/24') });
    t.equal((await m3.acquire(config)).how, 'allocated', 'outside the network => ignored');
    const m4 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.23')), previousSubnet: sn('10.5.0.0/24') });
    t.equal((await m4.acquire(config)).how, 'allocated', 'below SubnetMin => ignored');
  });

  t.test('incompatible own lease is deleted; reservations stay reservations', async (t) => {
    await etcd.ctl('put', `${P}/subnets/10.5.3.128-25`, '{"PublicIP":"192.168.1.30","PublicIPv6":null}');
    const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.30')) });
    const a = await m.acquire(config);
    t.equal(a.how, 'allocated');
    t.equal(await ctlValue(etcd, `${P}/subnets/10.5.3.128-25`), null, 'wrong-length lease deleted');

    await etcd.ctl('put', `${P}/subnets/10.5.250.0-24`, '{"PublicIP":"192.168.1.31","PublicIPv6":null}');
    const r = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.1.31')) });
    const ra = await r.acquire(config);
    t.equal(ra.how, 'reused');
    t.equal(formatCIDR(ra.subnet), '10.5.250.0/24');
    t.equal(ra.expiration, null, 'no expiry');
    const kv = await ctlValue(etcd, `${P}/subnets/10.5.250.0-24`);
    t.equal(kv?.lease, null, 'still written without an etcd lease');
  });

  t.test('bad entries count as taken; out of subnets', async (t) => {
    const small = parseNetworkConfig('{"Network":"10.9.0.0/16","SubnetMin":"10.9.1.0","SubnetMax":"10.9.2.0"}');
    await etcd.ctl('put', `${P}/subnets/10.9.1.0-24`, '{"PublicIP":null}');
    const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.9.1')), random: () => 0 });
    const a = await m.acquire(small);
    t.equal(formatCIDR(a.subnet), '10.9.2.0/24', 'the key with a bad value is not picked');
    const m2 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.9.2')) });
    await t.rejects(m2.acquire(small), {
      message: `failed to acquire lease: out of subnets: the range 10.9.1.0 ... 10.9.2.0 (SubnetMin ... SubnetMax of Network 10.9.0.0/16) holds 2 /24 subnet(s) and all 2 are taken (2 key(s) under ${P}/subnets in that range); widen the Network or SubnetMin/SubnetMax, or delete the leases of nodes that are gone`,
    }, 'the error names the range, how many subnets it holds and how many are taken');
  });

  t.test('a lost create race picks another subnet instead of failing', async (t) => {
    const cfg = parseNetworkConfig('{"Network":"10.7.0.0/16"}');
    // Another node creates 10.7.1.0/24 between our list and our create.
    let first = true;
    const racy = new FaultyRegistry(reg, {
      getLeases: async () => {
        const l = await reg.getLeases();
        if (first) {
          first = false;
          await etcd.ctl('put', `${P}/subnets/10.7.1.0-24`, '{"PublicIP":"192.168.7.99","PublicIPv6":null}');
        }
        return l;
      },
    });
    const { log, lines } = memoryLogger();
    const m = new LeaseManager({ registry: racy, attrs: udpLeaseAttrs(ip('192.168.7.1')), random: () => 0, log });
    const a = await m.acquire(cfg);
    t.equal(formatCIDR(a.subnet), '10.7.2.0/24');
    t.ok(lines.some((l) => l.includes('subnet 10.7.1.0/24 was taken by another node')), 'race logged');
    t.equal((await ctlValue(etcd, `${P}/subnets/10.7.1.0-24`))?.value, '{"PublicIP":"192.168.7.99","PublicIPv6":null}', 'winner untouched');

    // bounded: every create loses
    const always = new FaultyRegistry(reg, { createLease: async (s: IPv4Net) => Promise.reject(new SubnetExistsError(s)) });
    const m2 = new LeaseManager({ registry: always, attrs: udpLeaseAttrs(ip('192.168.7.2')), maxAttempts: 4 });
    await t.rejects(m2.acquire(cfg), { message: /^failed to acquire lease: max retries reached trying to acquire a subnet \(4 create race\(s\) lost: / });
  });

  t.test('20 concurrent acquirers end with distinct subnets', async (t) => {
    const cfg = parseNetworkConfig('{"Network":"10.20.0.0/16"}');
    const regs = Array.from({ length: 20 }, () => new EtcdRegistry({ endpoints: etcd.endpoints }));
    t.teardown(() => Promise.all(regs.map((r) => r.close())));
    const logs = regs.map(() => memoryLogger());
    const results = await Promise.all(
      regs.map((r, i) =>
        new LeaseManager({ registry: r, attrs: udpLeaseAttrs(ip(`172.16.0.${i + 1}`)), candidates: 25, log: logs[i]!.log }).acquire(cfg),
      ),
    );
    const subnets = results.map((r) => formatCIDR(r.subnet));
    t.equal(new Set(subnets).size, 20, 'all distinct');
    const keys = (await subnetKeys(etcd)).filter((k) => k.includes('/10.20.'));
    t.equal(keys.length, 20, '20 keys in etcd');
    const races = logs.flatMap((l) => l.lines).filter((l) => l.includes('was taken by another node')).length;
    t.comment(`create races lost and retried: ${races}`);
  });

  t.test('renewal at expiration - margin, with an injected clock', async (t) => {
    const clock = new ManualClock();
    const events: LeaseEvent[] = [];
    const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.5.1')), clock, onEvent: (e) => events.push(e) });
    const a = await m.acquire(config);
    t.equal(a.expiration, clock.now() + 86400_000);
    const ac = new AbortController();
    const run = m.run(ac.signal);
    await clock.waitForSleepers(1);
    await waitFor(() => clock.pendingDelays().includes(23 * 3600_000));
    t.ok(clock.pendingDelays().includes(23 * 3600_000), 'renewal due 23 h after acquisition (60 min margin)');
    await clock.advance(23 * 3600_000);
    await waitFor(() => events.some((e) => e.type === 'renewed'));
    const l = m.lease!;
    t.not(l.leaseId, a.leaseId, 'renewed with a new etcd lease');
    const key = `${P}/subnets/${makeSubnetKey(l.subnet)}`;
    t.equal((await ctlValue(etcd, key))?.lease, l.leaseId, 'key re-put with the new lease');
    t.ok((await ctlTTL(etcd, l.leaseId)) > 86390);
    t.ok(Math.abs(l.expiration! - (clock.now() + 86400_000)) <= 2000, 'expiration = now + 24 h');
    ac.abort();
    t.equal(await run, 'stopped');
  });

  t.test('renewal failure is retried every minute', async (t) => {
    const clock = new ManualClock();
    let failures = 2;
    const flaky = new FaultyRegistry(reg, {
      updateLease: async (s, a, ttl) => {
        if (failures-- > 0) throw new RegistryError('etcd unavailable (test)', 'unavailable');
        return reg.updateLease(s, a, ttl);
      },
    });
    const events: LeaseEvent[] = [];
    const m = new LeaseManager({ registry: flaky, attrs: udpLeaseAttrs(ip('192.168.5.2')), clock, renewMarginMs: 10 * 60_000, onEvent: (e) => events.push(e) });
    await m.acquire(config);
    const ac = new AbortController();
    const run = m.run(ac.signal);
    await waitFor(() => clock.pendingDelays().includes(86400_000 - 600_000));
    await clock.advance(86400_000 - 600_000);
    await waitFor(() => events.filter((e) => e.type === 'renew-failed').length === 1);
    await waitFor(() => clock.pendingDelays().includes(60_000));
    await clock.advance(60_000);
    await waitFor(() => events.filter((e) => e.type === 'renew-failed').length === 2);
    await waitFor(() => clock.pendingDelays().includes(60_000));
    await clock.advance(60_000);
    await waitFor(() => events.some((e) => e.type === 'renewed'));
    t.same(
      events.filter((e) => e.type !== 'expiration').map((e) => e.type),
      ['renew-failed', 'renew-failed', 'renewed'],
    );
    const failed = events.find((e) => e.type === 'renew-failed');
    t.equal(failed?.type === 'renew-failed' ? failed.retryInMs : null, 60_000);
    ac.abort();
    await run;
  });

  t.test('a renewal failing close to expiry is retried before the lease runs out, with a shorter deadline', async (t) => {
    const clock = new ManualClock();
    let failures = 1;
    const timeouts: (number | undefined)[] = [];
    const flaky = new FaultyRegistry(reg, {
      updateLease: async (s, a, ttl, opts) => {
        timeouts.push(opts?.timeoutMs);
        if (failures-- > 0) throw new RegistryError('etcd unavailable (test)', 'unavailable');
        return reg.updateLease(s, a, ttl);
      },
    });
    const events: LeaseEvent[] = [];
    const m = new LeaseManager({ registry: flaky, attrs: udpLeaseAttrs(ip('192.168.5.9')), clock, leaseTTLSeconds: 20, renewMarginMs: 10_000, onEvent: (e) => events.push(e) });
    await m.acquire(config);
    const ac = new AbortController();
    const run = m.run(ac.signal);
    await waitFor(() => clock.pendingDelays().includes(10_000));
    await clock.advance(10_000);
    await waitFor(() => events.some((e) => e.type === 'renew-failed'));
    const failed = events.find((e) => e.type === 'renew-failed');
    t.equal(failed?.type === 'renew-failed' ? failed.retryInMs : null, 5000, 'retried after half the 10 s left, not after a minute');
    t.equal(timeouts[0], 5000, 'each call may take at most half the time left');
    await waitFor(() => clock.pendingDelays().includes(5000));
    await clock.advance(5000);
    await waitFor(() => events.some((e) => e.type === 'renewed'));
    t.pass('renewed before the lease expired');
    ac.abort();
    await run;
  });

  t.test('deleting the own key revokes the lease', async (t) => {
    const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.5.3')) });
    const a = await m.acquire(config);
    const ac = new AbortController();
    t.teardown(() => ac.abort());
    const t0 = Date.now();
    const run = m.run(ac.signal);
    await new Promise((r) => setTimeout(r, 200));
    await etcd.ctl('del', `${P}/subnets/${makeSubnetKey(a.subnet)}`);
    t.equal(await run, 'revoked');
    t.ok(Date.now() - t0 < 15_000, `promptly (${Date.now() - t0} ms; bound 15 s)`);
  });

  t.test('own key found missing after a compaction => revoked', async (t) => {
    const m0 = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(ip('192.168.5.4')) });
    const a = await m0.acquire(config);
    let calls = 0;
    const compacting = new FaultyRegistry(reg, {
      watchLease: (s, from, signal) => {
        calls++;
        if (calls === 1) {
          return (async function* () {
            await etcd.ctl('del', `${P}/subnets/${makeSubnetKey(a.subnet)}`);
            yield { kind: 'compacted' as const, compactRevision: from + 5, reason: 'compacted' as const };
          })();
        }
        return reg.watchLease(s, from, signal);
      },
    });
    const m = new LeaseManager({ registry: compacting, attrs: udpLeaseAttrs(ip('192.168.5.4')) });
    await m.acquire(config);
    // the delete happens inside the fake watch, after m re-put the key
    const ac = new AbortController();
    t.teardown(() => ac.abort());
    t.equal(await m.run(ac.signal), 'revoked');
  });
});

t.test('missing config key: waits and retries with flannel message', async (t) => {
  const etcd = await startEtcd(t);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(() => reg.close());
  const { log, lines } = memoryLogger();
  const p = fetchNetworkConfig(reg, { log, retryMs: 50 });
  await waitFor(() => lines.length >= 3);
  t.match(lines[0], /^E\d{4} [\d:.]+ +\d+ linen\] Couldn't fetch network config: flannel config not found in etcd store\. Did you create your config using etcdv3 API\?$/);
  await etcd.ctl('put', `${P}/config`, '{"Network":"10.5.0.0/16","SubnetLen":31}');
  await waitFor(() => lines.some((l) => l.endsWith("Couldn't fetch network config: SubnetLen must be less than /31")));
  await etcd.ctl('put', `${P}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
  const c = await p;
  t.equal(c.backend.type, 'vxlan');

  const ac = new AbortController();
  const other = new EtcdRegistry({ endpoints: etcd.endpoints, prefix: '/nothing' });
  t.teardown(() => other.close());
  const q = fetchNetworkConfig(other, { retryMs: 20, signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  await t.rejects(q, /interrupted/);
});

