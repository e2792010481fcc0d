// EtcdRegistry against a real etcd: the exact bytes and etcd calls flanneld uses.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLogger } from '../../src/log.js';
import { startEtcd, type EtcdHandle } from '../helpers/etcd.js';
import { makeCerts } from '../helpers/certs.js';
import { EtcdRegistry } from '../../src/subnet/etcd.js';
import { CONFIG_NOT_FOUND, ConfigNotFoundError, RegistryError, SubnetExistsError, type WatchItem } from '../../src/subnet/registry.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { formatCIDR, parseCIDR, parseIPv4, parseMAC } from '../../src/net.js';

const sn = (s: string) => parseCIDR(s)!;
const ip = (s: string) => parseIPv4(s)!;

interface CtlKV {
  key: string;
  value: string;
  lease?: number | string;
}
async function ctlGet(etcd: EtcdHandle, key: string): Promise<CtlKV | null> {
  const text = await etcd.ctl('get', key, '-w', 'json');
  const out = JSON.parse(text) as { kvs?: CtlKV[] };
  const kv = out.kvs?.[0];
  if (kv === undefined) return null;
  // lease IDs exceed 2^53: take the digits from the text, not from JSON.parse
  const lease = /"lease":(\d+)/.exec(text)?.[1];
  return { key: Buffer.from(kv.key, 'base64').toString(), value: Buffer.from(kv.value, 'base64').toString(), lease };
}
async function ctlTTL(etcd: EtcdHandle, leaseDecimal: string): Promise<number> {
  const hex = BigInt(leaseDecimal).toString(16);
  const out = JSON.parse(await etcd.ctl('lease', 'timetolive', hex, '-w', 'json')) as { ttl: number };
  return out.ttl;
}
async function leaseCount(etcd: EtcdHandle): Promise<number> {
  const out = JSON.parse(await etcd.ctl('lease', 'list', '-w', 'json')) as { leases?: unknown[] | null };
  return out.leases?.length ?? 0;
}

t.setTimeout(60_000);

t.test('registry against etcd', async (t) => {
  const etcd = await startEtcd(t);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, prefix: '/coreos.com/network/' });
  t.teardown(() => reg.close());

  t.test('config: missing key gives flannel message; present key returned raw', async (t) => {
    await t.rejects(reg.getNetworkConfig(), new ConfigNotFoundError());
    await t.rejects(reg.getNetworkConfig(), { message: CONFIG_NOT_FOUND });
    await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');
    t.equal(await reg.getNetworkConfig(), '{"Network":"10.5.0.0/16"}');
    t.equal(reg.connection().state, 'connected');
  });

  t.test('create: Grant 86400 + txn, exact JSON, lease attached', async (t) => {
    const g = await reg.createLease(sn('10.5.7.0/24'), udpLeaseAttrs(ip('192.168.1.10')), 86400);
    t.not(g.leaseId, '0');
    t.equal(g.ttlSeconds, 86400);
    const kv = await ctlGet(etcd, '/coreos.com/network/subnets/10.5.7.0-24');
    t.equal(kv?.value, '{"PublicIP":"192.168.1.10","PublicIPv6":null}', 'byte-exact UDP lease');
    t.equal(String(kv?.lease), g.leaseId, 'key attached to the granted lease');
    const ttl = await ctlTTL(etcd, g.leaseId);
    t.ok(ttl > 86390 && ttl <= 86400, `ttl ${ttl}`);

    const before = await leaseCount(etcd);
    await t.rejects(reg.createLease(sn('10.5.7.0/24'), udpLeaseAttrs(ip('192.168.1.99')), 86400), SubnetExistsError);
    await t.rejects(reg.createLease(sn('10.5.7.0/24'), udpLeaseAttrs(ip('192.168.1.99')), 86400), { message: 'subnet already exists' });
    t.equal(await leaseCount(etcd), before, 'the lease granted for a lost race is revoked');
    t.equal((await ctlGet(etcd, '/coreos.com/network/subnets/10.5.7.0-24'))?.value, '{"PublicIP":"192.168.1.10","PublicIPv6":null}', 'untouched');
  });

  t.test('update: new grant + plain put; vxlan JSON; reservation put', async (t) => {
    const a = await reg.getLease(sn('10.5.7.0/24'));
    t.ok(a.lease);
    const g = await reg.updateLease(sn('10.5.7.0/24'), vxlanLeaseAttrs(ip('192.168.64.3'), 1, parseMAC('c6:d2:32:6f:8f:44')!), 86400);
    t.not(g.leaseId, a.lease?.leaseId, 'a new etcd lease');
    const kv = await ctlGet(etcd, '/coreos.com/network/subnets/10.5.7.0-24');
    t.equal(kv?.value, '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}');
    t.equal(String(kv?.lease), g.leaseId);
    t.ok((await reg.leaseTimeToLive(a.lease!.leaseId)) > 0, 'old lease is not revoked (it expires on its own)');

    const r = await reg.updateLease(sn('10.5.9.0/24'), udpLeaseAttrs(ip('192.168.1.11')), null);
    t.same([r.leaseId, r.ttlSeconds], ['0', null]);
    const rkv = await ctlGet(etcd, '/coreos.com/network/subnets/10.5.9.0-24');
    t.notOk(rkv?.lease, 'written without lease');
    t.equal(await reg.leaseTimeToLive('0'), -1);
  });

  t.test('list: valid leases in key order, bad entries skipped and reported', async (t) => {
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.8.0-24', '{"PublicIP":null}');
    await etcd.ctl('put', '/coreos.com/network/subnets/10.12.13.0-24hi', '{"PublicIP":"1.1.1.1"}');
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.10.0-24', '{"publicip":"192.168.1.12"}');
    const list = await reg.getLeases();
    t.same(
      list.leases.map((l) => formatCIDR(l.subnet)),
      ['10.5.10.0/24', '10.5.7.0/24', '10.5.9.0/24'],
      'lexicographic etcd order',
    );
    t.same(list.skipped.map((s) => s.key).sort(), ['/coreos.com/network/subnets/10.12.13.0-24hi', '/coreos.com/network/subnets/10.5.8.0-24']);
    t.ok(list.revision > 0);
    const bad = await reg.getLease(sn('10.5.8.0/24'));
    t.equal(bad.lease, null);
    t.match(bad.invalid, /PublicIP/);
    await etcd.ctl('del', '/coreos.com/network/subnets/10.5.8.0-24');
    await etcd.ctl('del', '/coreos.com/network/subnets/10.12.13.0-24hi');
    await reg.deleteLease(sn('10.5.10.0/24'));
    t.equal(await ctlGet(etcd, '/coreos.com/network/subnets/10.5.10.0-24'), null, 'deleted');
  });

  t.test('watch: put, invalid, delete events; compaction reported', async (t) => {
    const start = (await reg.getLeases()).revision + 1;
    const ac = new AbortController();
    const items: WatchItem[] = [];
    const done = (async () => {
      for await (const it of reg.watchLeases(start, ac.signal)) {
        items.push(it);
        const n = items.flatMap((i) => (i.kind === 'events' ? i.events : [])).length;
        if (n >= 3) ac.abort();
      }
    })();
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.20.0-24', '{"PublicIP":"10.0.0.20","PublicIPv6":null}');
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.21.0-24', 'not json');
    await etcd.ctl('del', '/coreos.com/network/subnets/10.5.20.0-24');
    await done;
    const evs = items.flatMap((i) => (i.kind === 'events' ? i.events : []));
    t.same(
      evs.map((e) => e.type),
      ['put', 'invalid', 'delete'],
    );
    const put = evs[0];
    t.ok(put?.type === 'put' && put.lease.attrs.publicIP === ip('10.0.0.20'));
    const del = evs[2];
    t.ok(del?.type === 'delete' && del.subnet !== null && formatCIDR(del.subnet) === '10.5.20.0/24');
    await etcd.ctl('del', '/coreos.com/network/subnets/10.5.21.0-24');

    // own-key watch is exact: a longer key that shares the prefix is not reported
    const ac2 = new AbortController();
    const own: WatchItem[] = [];
    const rev2 = (await reg.getLeases()).revision + 1;
    const done2 = (async () => {
      for await (const it of reg.watchLease(sn('10.5.3.0/24'), rev2, ac2.signal)) {
        own.push(it);
        if (it.kind === 'events' && it.events.length > 0) ac2.abort();
      }
    })();
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.3.0-240', '{"PublicIP":"1.2.3.4"}');
    await etcd.ctl('put', '/coreos.com/network/subnets/10.5.3.0-24', '{"PublicIP":"1.2.3.5"}');
    await done2;
    const ownEvs = own.flatMap((i) => (i.kind === 'events' ? i.events : []));
    t.same(ownEvs.map((e) => e.key), ['/coreos.com/network/subnets/10.5.3.0-24']);
    await etcd.ctl('del', '/coreos.com/network/subnets/10.5.3.0-24');
    await etcd.ctl('del', '/coreos.com/network/subnets/10.5.3.0-240');

    // compaction: watching from a compacted revision yields 'compacted' and ends
    const old = start;
    const now = (await reg.getLeases()).revision;
    await etcd.ctl('compact', String(now));
    const got: WatchItem[] = [];
    for await (const it of reg.watchLeases(old, new AbortController().signal)) got.push(it);
    t.same(got, [{ kind: 'compacted', compactRevision: now, reason: 'compacted' }]);
  });

  t.test('connection state and error messages when etcd is down', async (t) => {
    const states: string[] = [];
    const off = reg.onConnectionChange((s) => states.push(s.state));
    await etcd.stop();
    const err = await reg.getLeases().then(
      () => null,
      (e: unknown) => e,
    );
    t.ok(err instanceof RegistryError);
    t.equal((err as RegistryError).kind, 'unavailable');
    t.match((err as RegistryError).message, /^etcd unavailable \(endpoints http:\/\/127\.0\.0\.1:\d+\) during list \/coreos\.com\/network\/subnets: /);
    t.equal(reg.connection().state, 'disconnected');
    await etcd.start();
    const list = await reg.getLeases();
    t.ok(list.leases.length >= 2);
    t.equal(reg.connection().state, 'connected');
    t.same(states, ['disconnected', 'connected']);
    off();
  });
});

t.test('registry: auth errors are clear', async (t) => {
  const etcd = await startEtcd(t);
  await etcd.ctl('user', 'add', 'root:rootpw');
  await etcd.ctl('user', 'add', 'flannel:pw');
  await etcd.ctl('role', 'add', 'flannel');
  await etcd.ctl('role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', '/coreos.com/network/');
  await etcd.ctl('user', 'grant-role', 'flannel', 'flannel');
  await etcd.ctl('auth', 'enable');
  await etcd.ctl('--user=root:rootpw', 'put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');

  const good = new EtcdRegistry({ endpoints: etcd.endpoints, username: 'flannel', password: 'pw' });
  t.teardown(() => good.close());
  t.equal(await good.getNetworkConfig(), '{"Network":"10.5.0.0/16"}', 'username/password work');
  await good.createLease(sn('10.5.4.0/24'), udpLeaseAttrs(ip('1.2.3.4')), 60);

  const bad = new EtcdRegistry({ endpoints: etcd.endpoints, username: 'flannel', password: 'wrong' });
  t.teardown(() => bad.close());
  await t.rejects(bad.getNetworkConfig(), { kind: 'auth', message: /etcd authentication failed for user "flannel"/ });

  const none = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(() => none.close());
  await t.rejects(none.getNetworkConfig(), { kind: 'permission', message: /set --etcd-username/ });

  const other = new EtcdRegistry({ endpoints: etcd.endpoints, prefix: '/elsewhere', username: 'flannel', password: 'pw' });
  t.teardown(() => other.close());
  await t.rejects(other.getNetworkConfig(), { kind: 'permission', message: /permission denied for get \/elsewhere\/config as user "flannel"/ });

  t.throws(() => new EtcdRegistry({ endpoints: etcd.endpoints, keyFile: '/nonexistent/key.pem', certFile: '/nonexistent/cert.pem' }), {
    message: /cannot read --etcd-keyfile \/nonexistent\/key\.pem/,
  });
});

t.test('registry: TLS with client certificates (only when both key and cert are given)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'linen-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const c = makeCerts(dir);
  const etcd = await startEtcd(t, {
    tls: { certFile: c.serverCert, keyFile: c.serverKey, caFile: c.ca, clientCertFile: c.clientCert, clientKeyFile: c.clientKey },
  });
  t.match(etcd.endpoints[0], /^https:\/\//);
  await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');

  const good = new EtcdRegistry({ endpoints: etcd.endpoints, keyFile: c.clientKey, certFile: c.clientCert, caFile: c.ca });
  t.teardown(() => good.close());
  t.equal(await good.getNetworkConfig(), '{"Network":"10.5.0.0/16"}', 'mutual TLS works');
  await good.createLease(sn('10.5.4.0/24'), udpLeaseAttrs(ip('1.2.3.4')), 60);
  t.equal((await good.getLeases()).leases.length, 1);

  // Only the CA (or only the key): flanneld then does not configure TLS at all.
  const { log, lines } = memoryLogger();
  const half = new EtcdRegistry({ endpoints: etcd.endpoints, keyFile: c.clientKey, caFile: c.ca, requestTimeoutMs: 2000, log });
  t.teardown(() => half.close());
  t.ok(lines.some((l) => l.includes('only one of --etcd-keyfile/--etcd-certfile given')), 'warned');
  const err = await half.getNetworkConfig().then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof RegistryError && (err.kind === 'unavailable' || err.kind === 'timeout'), 'no TLS => cannot talk to a TLS etcd');
});

t.test('registry: while etcd is away it reports disconnected (opening a watch is not an answer), and notices its return by itself', async (t) => {
  const etcd = await startEtcd(t);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, requestTimeoutMs: 2000 });
  t.teardown(() => reg.close());
  await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');
  await reg.getNetworkConfig();
  const states: string[] = [];
  reg.onConnectionChange((s) => states.push(s.state));
  await etcd.stop();
  await t.rejects(reg.getNetworkConfig());
  t.equal(reg.connection().state, 'disconnected');
  const ac = new AbortController();
  const watching = (async () => {
    for (let i = 0; i < 3; i++) {
      try {
        for await (const _ of reg.watchLeases(1, ac.signal)) break;
      } catch { /* expected while etcd is down */ }
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  await watching;
  t.ok(states.length > 0 && states.every((s) => s === 'disconnected'), `watch attempts during the outage never report connected (${states.join(', ')})`);
  await etcd.start();
  const t0 = Date.now();
  while (reg.connection().state !== 'connected' && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
  t.equal(reg.connection().state, 'connected', `reconnected without a call being made (${Date.now() - t0} ms)`);
  t.equal(await reg.getNetworkConfig(), '{"Network":"10.5.0.0/16"}', 'and works');
  ac.abort();
});
