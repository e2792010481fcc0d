// EtcdRegistry.getLeases reads <prefix>/subnets in pages (a large cluster's listing is megabytes
// in one answer). The pages together are one snapshot: exactly the
// keys etcd held at the listing's revision, even while another writer adds keys, so that the
// watch from revision + 1 neither misses nor repeats anything.
import t from 'tap';
import { startEtcd } from '../helpers/etcd.js';
import { EtcdRegistry } from '../../src/subnet/etcd.js';
import { encodeLeaseAttrs } from '../../src/subnet/lease.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { parseIPv4 } from '../../src/net.js';

t.setTimeout(60_000);

const P = '/coreos.com/network/subnets';
const value = encodeLeaseAttrs(udpLeaseAttrs(parseIPv4('192.0.2.1')!));
const key = (i: number): string => `${P}/10.9.${i}.0-24`;

t.test('pages of 3 keys: every lease in key order, bad entries reported, one revision', async (t) => {
  const etcd = await startEtcd(t);
  for (let i = 0; i < 20; i++) await etcd.ctl('put', key(i), value);
  await etcd.ctl('put', `${P}/not-a-subnet`, value);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, listPageKeys: 3 });
  t.teardown(() => reg.close());
  const list = await reg.getLeases();
  t.same(list.leases.map((l) => l.key), Array.from({ length: 20 }, (_, i) => key(i)).sort(), 'all 20 leases, in key order');
  t.same(list.skipped.map((s) => s.key), [`${P}/not-a-subnet`], 'the bad key is reported once');
  const rev = JSON.parse(await etcd.ctl('get', `${P}/`, '-w', 'json')) as { header: { revision: number } };
  t.equal(list.revision, rev.header.revision, 'the revision of the snapshot');
  t.equal(reg.listings, 1, 'counted as one listing, however many pages');
});

t.test('a writer adding keys while the pages are read: the listing is exactly etcd at its revision', async (t) => {
  const etcd = await startEtcd(t);
  for (let i = 0; i < 40; i++) await etcd.ctl('put', key(i), value);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, listPageKeys: 1 });
  const writer = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(async () => { await reg.close(); await writer.close(); });
  // Keys after every existing one (10.9.2xx sorts after 10.9.1xx and 10.9.<n>): a listing
  // that read each page at the newest revision would pick some of them up.
  let writing = true;
  let added = 0;
  const writes = (async () => {
    for (let i = 200; writing && i < 256; i++, added++) {
      await writer.updateLease({ ip: parseIPv4(`10.9.${i}.0`)!, prefixLen: 24 }, udpLeaseAttrs(parseIPv4('192.0.2.2')!), null);
    }
  })();
  const list = await reg.getLeases();
  writing = false;
  await writes;
  t.ok(added > 0, `${added} keys were added while the listing ran`);
  const atRev = JSON.parse(await etcd.ctl('get', '--prefix', P, `--rev=${list.revision}`, '--keys-only', '-w', 'json')) as { kvs?: { key: string }[] };
  const expected = (atRev.kvs ?? []).map((kv) => Buffer.from(kv.key, 'base64').toString());
  t.same(list.leases.map((l) => l.key), expected, `exactly the ${expected.length} keys etcd held at revision ${list.revision}`);
  const now = JSON.parse(await etcd.ctl('get', '--prefix', P, '--keys-only', '-w', 'json')) as { kvs?: unknown[] };
  t.ok((now.kvs?.length ?? 0) > expected.length, 'etcd holds more keys now');
});
