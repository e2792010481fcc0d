import t from 'tap';
import { decodeLeaseAttrs, decodeVxlanBackendData, encodeLeaseAttrs, etcdKeys, leaseFromKV, makeSubnetKey, MAX_SUBNET_KEY_NAME, parseSubnetKey, parseSubnetName, subnetKeyName, pathJoin, sameLeaseAttrs } from '../../src/subnet/lease.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { formatCIDR, formatMAC, parseCIDR, parseIPv4, parseMAC } from '../../src/net.js';

const ip = (s: string): number => parseIPv4(s)!;
const canonical = (s: string): string | null => { const m = parseMAC(s); return m === null ? null : formatMAC(m); };

t.test('MAC parse/format like Go net.ParseMAC (6-byte forms)', async (t) => {
  t.equal(canonical('c6:d2:32:6f:8f:44'), 'c6:d2:32:6f:8f:44');
  t.equal(canonical('C6:D2:32:6F:8F:44'), 'c6:d2:32:6f:8f:44');
  t.equal(canonical('c6-d2-32-6f-8f-44'), 'c6:d2:32:6f:8f:44');
  t.equal(canonical('c6d2.326f.8f44'), 'c6:d2:32:6f:8f:44');
  t.equal(formatMAC(new Uint8Array([0, 1, 2, 0xa, 0xb, 0xff])), '00:01:02:0a:0b:ff');
  for (const bad of [
    'c6:d2:32:6f:8f',
    'c6:d2:32:6f:8f:44:00:00',
    'c6:d2-32:6f:8f:44',
    'c6:d2:32:6f:8f:4g',
    'c6:d2:32:6f:8f:4',
    'c6d2.326f.8f4',
    'c6d2:326f:8f44',
    '',
    'c6:d2:32:6f:8f:44 ',
  ]) {
    t.equal(parseMAC(bad), null, `rejects ${JSON.stringify(bad)}`);
  }
});

t.test('subnet keys: format and parse as flannel writes them', async (t) => {
  t.equal(makeSubnetKey(parseCIDR('10.5.72.0/24')!), '10.5.72.0-24');
  const k = parseSubnetKey('/coreos.com/network/subnets/10.5.72.0-24');
  t.ok(k);
  t.equal(formatCIDR(k!.subnet), '10.5.72.0/24');
  t.equal(k!.ipv6, null);
  t.ok(parseSubnetKey('10.5.72.0-24'), 'bare key');
  t.equal(parseSubnetKey('/coreos.com/network/subnets/10.12.13.0-24hi'), null, 'end-anchored: trailing junk rejected');
  t.equal(parseSubnetKey('/coreos.com/network/subnets/10.5.72.0-32'), null, 'v4 length is 5-bit: 32 rejected');
  t.ok(parseSubnetKey('/x/subnets/10.5.72.0-31'));
  t.equal(parseSubnetKey('/x/subnets/10.5.72-24'), null);
  t.equal(parseSubnetKey('/x/subnets/10.5.72.256-24'), null, 'bad octet');
  t.equal(parseSubnetKey('/x/subnets/10.05.72.0-24'), null, 'leading zero like Go >= 1.17');
  t.equal(parseSubnetKey('/x/subnets/'), null);
  t.equal(parseSubnetKey('/x/subnets/hello'), null);
  // the unescaped dots of flannel's regex: "10.5x72x0" matches the regex but is not an IP
  t.equal(parseSubnetKey('/x/subnets/10.5x72x0-24'), null);
  t.equal(formatCIDR(parseSubnetKey('/x/subnets/10.5.72.7-24')!.subnet), '10.5.72.7/24', 'host bits kept as written');
  const ds = parseSubnetKey('/coreos.com/network/subnets/10.5.72.0-24&fd00:5:0:48::-64');
  t.same(ds?.ipv6, { ip: 'fd00:5:0:48::', prefixLen: 64 });
  t.equal(parseSubnetKey('/x/subnets/10.5.72.0-24&FD00::-64'), null, 'upper-case v6 does not parse');
  t.equal(parseSubnetKey('/x/subnets/10.5.72.0-24&fd00::-128'), null, 'v6 length is 7-bit');
  t.equal(parseSubnetKey('/x/subnets/10.5.72.0-24&fd00:::-64'), null, 'bad v6');
});

t.test('alias keys: only the exact <a.b.c.d>-<len> name, anchored at both ends, directly under subnets/', async (t) => {
  const S = '/coreos.com/network/subnets';
  const aliases = [
    `${S}/foo-10.5.72.0-24`, // a prefix before the name
    `${S}/x10.5.72.0-24`,
    `${S}/10.5.72.0-24x`, // a suffix after it
    `${S}/10.5.72.0-24 `,
    `${S}/10.5.72.0-24\n`,
    `${S}/10.5.72.0-24&`,
    `${S}/10.5.72.0-024`, // leading zero in the length: a second name for the same subnet
    `${S}/10.5.72.0-00`,
    `${S}/010.5.72.0-24`,
    `${S}/10.5.72.0-24&fd00::-064`,
    `${S}/10.5.72.0-24&fd00::-64&fd00::-64`,
    `${S}/10x5.72.0-24`,
    `${S}/${'1'.repeat(40)}.5.72.0-24`,
  ];
  for (const key of aliases) t.equal(parseSubnetKey(key), null, `refused: ${JSON.stringify(key.slice(S.length + 1))}`);
  t.equal(formatCIDR(parseSubnetName('10.5.72.0-24')!.subnet), '10.5.72.0/24');
  t.equal(formatCIDR(parseSubnetName('0.0.0.0-0')!.subnet), '0.0.0.0/0', 'a zero length is written 0');
  t.equal(parseSubnetName(`${'1'.repeat(MAX_SUBNET_KEY_NAME + 1)}`), null, 'over the longest name flannel writes');
  // Keys a watch of the subnets prefix sees that are not directly under it.
  t.equal(subnetKeyName(S, `${S}/10.5.72.0-24`), '10.5.72.0-24');
  t.equal(subnetKeyName(S, `${S}/10.5.72.0-24&fd00:5:0:48::-64`), '10.5.72.0-24&fd00:5:0:48::-64');
  t.equal(subnetKeyName(S, `${S}/x/10.5.72.0-24`), null, 'an extra path segment');
  t.equal(subnetKeyName(S, `${S}/10.5.72.0-24/`), null, 'a trailing slash');
  t.equal(subnetKeyName(S, `${S}//10.5.72.0-24`), null, 'an empty segment');
  t.equal(subnetKeyName(S, `${S}x/10.5.72.0-24`), null, 'a sibling of subnets/');
  t.equal(subnetKeyName(S, `/other${S}/10.5.72.0-24`), null, 'another prefix');
  t.equal(subnetKeyName(S, `${S}/${'9'.repeat(1_000_000)}`), null, 'a megabyte key');
});

t.test('values that throw: any decoding failure is a refused lease, size and depth bounded', async (t) => {
  const nested = (n: number): string => '['.repeat(n) + ']'.repeat(n);
  const cases: [string, string | Uint8Array, RegExp][] = [
    ['10 KB of nested brackets', nested(5000), /nested more than 16 levels/],
    ['nested brackets in BackendData', `{"PublicIP":"192.0.2.1","BackendData":${nested(5000)}}`, /nested more than/],
    ['nested objects in BackendV6Data', `{"PublicIP":"192.0.2.1","BackendV6Data":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`, /nested more than/],
    ['a million nested brackets', nested(500_000), /bytes is more than the 65536 accepted|more than the 65536 a lease may have/],
    ['one level too deep', `{"PublicIP":"192.0.2.1","BackendData":${nested(16)}}`, /nested more than 16 levels/],
    ['a megabyte value as bytes', new Uint8Array(1 << 20).fill(0x20), /1048576 bytes, more than the 65536/],
    ['brackets inside strings do not count, but the value is too long', `{"PublicIP":"192.0.2.1","X":"${'['.repeat(70_000)}"}`, /more than the 65536/],
  ];
  for (const [what, value, error] of cases) {
    let r: ReturnType<typeof decodeLeaseAttrs> | undefined;
    t.doesNotThrow(() => { r = decodeLeaseAttrs(value); }, `${what}: does not throw`);
    t.equal(r?.ok, false, `${what}: refused`);
    if (r !== undefined && !r.ok) t.match(r.error, error, `${what}: ${r.error}`);
  }
  const deepest = `{"PublicIP":"192.0.2.1","BackendData":${nested(15)}}`;
  t.equal(decodeLeaseAttrs(deepest).ok, true, '16 levels (the object and 15 in BackendData) decode');
  t.equal(decodeLeaseAttrs(`{"PublicIP":"192.0.2.1","X":"${'['.repeat(1000)}"}`).ok, true, 'brackets inside a string are text');
  const vx = decodeVxlanBackendData(nested(5000));
  t.equal(vx.ok, false, 'BackendData decoding refuses deep nesting too');
  const kv = leaseFromKV('/coreos.com/network/subnets/10.5.9.0-24', `{"PublicIP":"192.0.2.1","BackendData":${nested(5000)}}`, '0', 1);
  t.equal(kv.ok, false, 'a lease with such a value is refused, not thrown');
});

t.test('path.Join and key layout', async (t) => {
  t.equal(pathJoin('/coreos.com/network', 'config'), '/coreos.com/network/config');
  t.equal(pathJoin('/coreos.com/network/', 'subnets'), '/coreos.com/network/subnets');
  t.equal(pathJoin('//a//b/', 'c/'), '/a/b/c');
  t.equal(pathJoin('a', '../b'), 'b');
  t.equal(pathJoin('/', 'config'), '/config');
  t.equal(pathJoin('', 'config'), 'config');
  const k = etcdKeys('/coreos.com/network/');
  t.equal(k.config, '/coreos.com/network/config');
  t.equal(k.subnets, '/coreos.com/network/subnets');
  t.equal(k.subnet(parseCIDR('10.5.72.0/24')!), '/coreos.com/network/subnets/10.5.72.0-24');
});

t.test('lease JSON encoding is byte-exact', async (t) => {
  t.equal(encodeLeaseAttrs(udpLeaseAttrs(ip('192.168.1.10'))), '{"PublicIP":"192.168.1.10","PublicIPv6":null}');
  t.equal(
    encodeLeaseAttrs(vxlanLeaseAttrs(ip('192.168.64.3'), 1, parseMAC('C6-D2-32-6F-8F-44')!)),
    '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}',
  );
  t.equal(encodeLeaseAttrs(udpLeaseAttrs(0)), '{"PublicIP":"0.0.0.0","PublicIPv6":null}');
  t.equal(
    encodeLeaseAttrs({
      publicIP: ip('1.2.3.4'),
      publicIPv6: 'fd00::1',
      backendType: 'vxlan',
      backendData: '{ "VNI" : 1 , "VtepMAC":"aa:bb:cc:dd:ee:ff" }',
      backendV6Data: '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}',
    }),
    '{"PublicIP":"1.2.3.4","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}}',
    'RawMessage is compacted as Go does',
  );
  t.throws(() => vxlanLeaseAttrs(1, 1, new Uint8Array(5)), /VtepMAC/);
});

t.test('lease JSON decoding: tolerant but strict', async (t) => {
  const u = decodeLeaseAttrs('{"PublicIP":"192.168.1.10","PublicIPv6":null}');
  t.ok(u.ok);
  if (u.ok) {
    t.equal(u.value.publicIP, ip('192.168.1.10'));
    t.equal(u.value.backendType, '');
    t.equal(u.value.backendData, null);
    t.same(u.value, udpLeaseAttrs(ip('192.168.1.10')));
    t.equal(encodeLeaseAttrs(u.value), '{"PublicIP":"192.168.1.10","PublicIPv6":null}', 'round trip');
  }
  const lc = decodeLeaseAttrs('{"publicip":"10.0.0.1","backendtype":"vxlan","backenddata":{"vni":1,"vtepmac":"aa:bb:cc:dd:ee:ff"},"Extra":[1]}');
  t.ok(lc.ok, 'case-insensitive names, unknown fields ignored');
  if (lc.ok) {
    t.equal(lc.value.publicIP, ip('10.0.0.1'));
    t.equal(lc.value.backendType, 'vxlan');
    const vx = decodeVxlanBackendData(lc.value.backendData);
    t.same(vx, { ok: true, value: { vni: 1, vtepMAC: parseMAC('aa:bb:cc:dd:ee:ff')! } });
  }
  const missing = decodeLeaseAttrs('{"PublicIPv6":null}');
  t.ok(missing.ok && missing.value.publicIP === 0, 'missing PublicIP decodes as 0.0.0.0');
  const nullDoc = decodeLeaseAttrs('null');
  t.ok(nullDoc.ok && nullDoc.value.publicIP === 0, 'null document decodes to zero attrs, as Go');

  for (const bad of [
    '{"PublicIP":null}',
    '{"PublicIP":"nope"}',
    '{"PublicIP":"fd00::1"}',
    '{"PublicIP":17}',
    '{"PublicIP":"1.2.3.4","PublicIPv6":"nope"}',
    '{"PublicIP":"1.2.3.4","BackendType":5}',
    '[]',
    '"x"',
    '{"PublicIP":"1.2.3.4"',
    '',
  ]) {
    const r = decodeLeaseAttrs(bad);
    t.equal(r.ok, false, `rejects ${bad}`);
    if (!r.ok) t.type(r.error, 'string');
  }
  t.ok(decodeLeaseAttrs(Buffer.from('{"PublicIP":"1.2.3.4"}')).ok, 'accepts bytes');
});

t.test('VXLAN BackendData decoding', async (t) => {
  t.same(decodeVxlanBackendData('{"VNI":1,"VtepMAC":"c6d2.326f.8f44"}'), { ok: true, value: { vni: 1, vtepMAC: parseMAC('c6:d2:32:6f:8f:44')! } });
  t.same(decodeVxlanBackendData('{"VtepMAC":"c6:d2:32:6f:8f:44"}'), { ok: true, value: { vni: 0, vtepMAC: parseMAC('c6:d2:32:6f:8f:44')! } });
  for (const bad of [null, '{"VNI":1}', '{"VNI":1,"VtepMAC":null}', '{"VNI":1,"VtepMAC":"zz"}', '{"VNI":-1,"VtepMAC":"c6:d2:32:6f:8f:44"}', '{"VNI":"1","VtepMAC":"c6:d2:32:6f:8f:44"}', '[1]', 'null']) {
    t.equal(decodeVxlanBackendData(bad).ok, false, `rejects ${String(bad)}`);
  }
});

t.test('leaseFromKV and sameLeaseAttrs', async (t) => {
  const l = leaseFromKV('/coreos.com/network/subnets/10.5.7.0-24', '{"PublicIP":"1.2.3.4","PublicIPv6":null}', '123', 9);
  t.ok(l.ok);
  if (l.ok) {
    t.equal(formatCIDR(l.value.subnet), '10.5.7.0/24');
    t.equal(l.value.leaseId, '123');
    t.equal(l.value.modRevision, 9);
  }
  const badKey = leaseFromKV('/coreos.com/network/subnets-foo', '{"PublicIP":"1.2.3.4"}', '0', 1);
  t.same(badKey, { ok: false, error: 'not a subnet key' });
  t.equal(leaseFromKV('/x/subnets/10.5.7.0-24', '{"PublicIP":null}', '0', 1).ok, false);
  t.ok(sameLeaseAttrs(udpLeaseAttrs(1), udpLeaseAttrs(1)));
  t.notOk(sameLeaseAttrs(udpLeaseAttrs(1), udpLeaseAttrs(2)));
  t.notOk(sameLeaseAttrs(vxlanLeaseAttrs(1, 1, parseMAC('aa:bb:cc:dd:ee:ff')!), vxlanLeaseAttrs(1, 1, parseMAC('aa:bb:cc:dd:ee:fe')!)));
});
