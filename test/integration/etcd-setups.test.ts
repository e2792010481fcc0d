// The etcd set-ups linen supports, each with a real etcd (Debian's etcd 3.4): the registry
// reads the config, creates, lists, renews, watches and deletes a lease through each of them.
// Beside the plain, TLS and user/password tests of registry.test.ts: the JSON gateway turned
// off, `etcd grpc-proxy` in front of etcd, client certificates whose CommonName is the etcd user
// (RBAC), user/password RBAC, server-side TLS verified with --etcd-cafile alone, an expired auth
// token, and the error messages of the set-ups that cannot work.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLogger } from '../../src/log.js';
import { freePort, startEtcd, startProxy, type EtcdHandle } from '../helpers/etcd.js';
import { makeCerts } from '../helpers/certs.js';
import { EtcdRegistry, type EtcdRegistryOptions } from '../../src/subnet/etcd.js';
import { RegistryError, type WatchItem } from '../../src/subnet/registry.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { parseCIDR, parseIPv4 } from '../../src/net.js';

const sn = (s: string) => parseCIDR(s)!;
const ip = (s: string) => parseIPv4(s)!;
const CONFIG = '{"Network":"10.5.0.0/16"}';

t.setTimeout(120_000);

/** Every call linen makes, through one registry: config, create, list, TTL, renew, watch, delete. */
async function exercise(t: Test, opts: EtcdRegistryOptions): Promise<void> {
  const reg = new EtcdRegistry({ requestTimeoutMs: 5000, ...opts });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), CONFIG, 'config read');
  const g = await reg.createLease(sn('10.5.4.0/24'), udpLeaseAttrs(ip('1.2.3.4')), 60);
  t.not(g.leaseId, '0', `lease created with etcd lease ${g.leaseId}`);
  const list = await reg.getLeases();
  t.same(list.leases.map((l) => l.key), ['/coreos.com/network/subnets/10.5.4.0-24'], 'listed');
  t.ok((await reg.leaseTimeToLive(g.leaseId)) > 50, 'TTL read');
  const ac = new AbortController();
  const seen: WatchItem[] = [];
  const watching = (async () => {
    for await (const item of reg.watchLeases(list.revision + 1, ac.signal)) {
      seen.push(item);
      if (seen.some((i) => i.kind === 'events' && i.events.some((e) => e.type === 'delete'))) break;
    }
  })();
  await reg.updateLease(sn('10.5.4.0/24'), udpLeaseAttrs(ip('1.2.3.5')), 60);
  await reg.deleteLease(sn('10.5.4.0/24'));
  const timer = setTimeout(() => ac.abort(), 15_000);
  await watching;
  clearTimeout(timer);
  const events = seen.flatMap((i) => (i.kind === 'events' ? i.events.map((e) => e.type) : []));
  t.same(events, ['put', 'delete'], 'the watch saw the renewal and the delete');
  t.equal(reg.connection().state, 'connected');
}

async function withConfig(etcd: EtcdHandle, ...auth: string[]): Promise<void> {
  await etcd.ctl(...auth, 'put', '/coreos.com/network/config', CONFIG);
}

/** Users root and `user` (with a role on /coreos.com/network/ only), then auth enable. */
async function enableRBAC(etcd: EtcdHandle, user: string): Promise<void> {
  await etcd.ctl('user', 'add', 'root:rootpw');
  await etcd.ctl('user', 'add', `${user}:pw`);
  await etcd.ctl('role', 'add', 'flannel');
  await etcd.ctl('role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', '/coreos.com/network/');
  await etcd.ctl('user', 'grant-role', user, 'flannel');
  await etcd.ctl('auth', 'enable');
  await withConfig(etcd, '--user=root:rootpw');
}

const tempDir = (t: Test): string => {
  const dir = mkdtempSync(join(tmpdir(), 'linen-setups-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

t.test('the JSON gateway turned off (--enable-grpc-gateway=false)', async (t) => {
  const etcd = await startEtcd(t, { args: ['--enable-grpc-gateway=false'] });
  await withConfig(etcd);
  const res = await fetch(`${etcd.endpoints[0]}/v3/kv/range`, { method: 'POST', body: '{"key":"Lw=="}' });
  t.equal(res.status, 404, 'the gateway is off indeed');
  await exercise(t, { endpoints: etcd.endpoints });
});

t.test('etcd grpc-proxy in front of etcd', async (t) => {
  const etcd = await startEtcd(t);
  await withConfig(etcd);
  const proxy = await startProxy(t, etcd.endpoints);
  const res = await fetch(`${proxy.endpoint}/v3/kv/range`, { method: 'POST', body: '{"key":"Lw=="}' }).then((r) => r.status, (e: Error) => e.message);
  t.not(res, 200, `the proxy has no JSON gateway (${res})`);
  await exercise(t, { endpoints: [proxy.endpoint] });
});

t.test('client certificates whose CommonName is the etcd user, with RBAC (--client-cert-auth, auth enable)', async (t) => {
  const c = makeCerts(tempDir(t), { clientName: 'flannel' });
  const etcd = await startEtcd(t, { tls: { certFile: c.serverCert, keyFile: c.serverKey, caFile: c.ca, clientCertFile: c.clientCert, clientKeyFile: c.clientKey } });
  await enableRBAC(etcd, 'flannel');
  const files = { keyFile: c.clientKey, certFile: c.clientCert, caFile: c.ca };
  await exercise(t, { endpoints: etcd.endpoints, ...files });
  // RBAC is enforced on the certificate's user: outside its role's prefix, nothing.
  const other = new EtcdRegistry({ endpoints: etcd.endpoints, prefix: '/elsewhere', ...files });
  t.teardown(() => other.close());
  await t.rejects(other.getNetworkConfig(), { kind: 'permission', message: /permission denied for get \/elsewhere\/config/ });
});

t.test('user/password with RBAC', async (t) => {
  const etcd = await startEtcd(t);
  await enableRBAC(etcd, 'flannel');
  await exercise(t, { endpoints: etcd.endpoints, username: 'flannel', password: 'pw' });
});

t.test('an expired auth token: calls and watches authenticate again', async (t) => {
  const etcd = await startEtcd(t, { args: ['--auth-token=simple', '--auth-token-ttl=1'] });
  await enableRBAC(etcd, 'flannel');
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, username: 'flannel', password: 'pw', requestTimeoutMs: 5000 });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), CONFIG);
  await new Promise((r) => setTimeout(r, 3000)); // the token expires unused
  t.equal(await reg.getNetworkConfig(), CONFIG, 'a call after the token expired');
  await new Promise((r) => setTimeout(r, 3000));
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 20_000);
  let events = 0;
  let failures = 0;
  const writer = new EtcdRegistry({ endpoints: etcd.endpoints, username: 'flannel', password: 'pw' });
  t.teardown(() => writer.close());
  while (events === 0 && !ac.signal.aborted) {
    try {
      const rev = (await writer.getLeases()).revision;
      // A new subnet for each attempt: the watch starts after the listing's revision.
      void writer.createLease(sn(`10.5.${10 + failures}.0/24`), udpLeaseAttrs(ip('1.2.3.9')), 60).catch(() => undefined);
      for await (const item of reg.watchLeases(rev + 1, ac.signal)) {
        if (item.kind === 'events') events += item.events.length;
        if (events > 0) break;
      }
    } catch (e) {
      failures++;
      t.comment(`watch attempt failed: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  clearTimeout(timer);
  t.ok(events > 0, `a watch after the token expired sees the new lease (${failures} failed attempt(s) before)`);
  t.ok(failures <= 1, 'at most one attempt fails on the expired token');
});

t.test('server-side TLS: --etcd-cafile alone verifies etcd (no client certificate)', async (t) => {
  const dir = tempDir(t);
  const c = makeCerts(dir);
  const etcd = await startEtcd(t, { tls: { certFile: c.serverCert, keyFile: c.serverKey, caFile: c.ca, clientCertFile: c.clientCert, clientKeyFile: c.clientKey, clientCertAuth: false } });
  await withConfig(etcd);
  await exercise(t, { endpoints: etcd.endpoints, caFile: c.ca });
  // Another CA: the server is not trusted, and the message says which flag to fix.
  const wrong = makeCerts(tempDir(t), { name: 'other-ca' });
  const bad = new EtcdRegistry({ endpoints: etcd.endpoints, caFile: wrong.ca, requestTimeoutMs: 3000 });
  t.teardown(() => bad.close());
  await t.rejects(bad.getNetworkConfig(), { message: /server certificate was not accepted.*--etcd-cafile/ });
});

t.test('http:// against a TLS etcd: the error says to use https://', async (t) => {
  const c = makeCerts(tempDir(t));
  const etcd = await startEtcd(t, { tls: { certFile: c.serverCert, keyFile: c.serverKey, caFile: c.ca, clientCertFile: c.clientCert, clientKeyFile: c.clientKey } });
  const plain = etcd.endpoints[0]!.replace('https://', 'http://');
  const reg = new EtcdRegistry({ endpoints: [plain], requestTimeoutMs: 3000 });
  t.teardown(() => reg.close());
  const err = await reg.getNetworkConfig().then(() => null, (e: unknown) => e);
  t.ok(err instanceof RegistryError, 'a RegistryError');
  t.match((err as Error).message, new RegExp(`speaks TLS: use ${plain.replace('http://', 'https://').replace(/[.]/g, '\\.')}`));
});

t.test('several endpoints: the log names the one that answered', async (t) => {
  const etcd = await startEtcd(t);
  await withConfig(etcd);
  const dead = `http://127.0.0.1:${await freePort()}`;
  const { log, lines } = memoryLogger();
  const reg = new EtcdRegistry({ endpoints: [dead, etcd.endpoints[0]!], requestTimeoutMs: 3000, log });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), CONFIG);
  const connected = lines.find((l) => l.includes('connected to etcd'));
  t.match(connected ?? '', `connected to etcd (${etcd.endpoints[0]}, of ${dead},${etcd.endpoints[0]})`);
});

t.test('a wrong password: never "connected to etcd", never connected', async (t) => {
  const etcd = await startEtcd(t);
  await enableRBAC(etcd, 'flannel');
  const { log, lines } = memoryLogger();
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, username: 'flannel', password: 'wrong', log });
  t.teardown(() => reg.close());
  const states: string[] = [];
  reg.onConnectionChange((s) => states.push(s.state));
  const refused = { kind: 'auth', message: /authentication failed/ };
  for (let i = 0; i < 3; i++) await t.rejects(reg.getNetworkConfig(), refused);
  await t.rejects(reg.getLeases(), refused);
  t.equal(reg.connection().state, 'connecting', 'still not connected');
  t.match(reg.connection().lastError ?? '', /authentication failed for user "flannel"/, 'the reason is kept');
  t.notOk(states.includes('connected'), `no listener heard "connected" (${states.join(', ')})`);
  t.notOk(lines.some((l) => l.includes('connected to etcd')), 'no "connected to etcd" line');
});
