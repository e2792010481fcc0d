import t, { type Test } from 'tap';
import { ConfigError, overlayMTU, parseNetworkConfig, type NetworkConfig } from '../../src/config/network.js';
import {
  formatCIDR,
  formatIPv4,
  netContains,
  netLast,
  netNext,
  netOverlaps,
  parseCIDR,
  parseIPv4,
  parseIPv6,
  prefixMask,
} from '../../src/net.js';

const cfg = (o: unknown): NetworkConfig => parseNetworkConfig(JSON.stringify(o));
const ip = formatIPv4;

function throwsMsg(tt: Test, text: string, msg: string | RegExp): void {
  tt.throws(() => parseNetworkConfig(text), msg instanceof RegExp ? msg : { message: msg }, `${text} -> ${String(msg)}`);
}

t.test('net: IPv4 parse/format', async (t) => {
  t.equal(parseIPv4('10.5.72.0'), 0x0a054800);
  t.equal(parseIPv4('255.255.255.255'), 0xffffffff);
  t.equal(parseIPv4('0.0.0.0'), 0);
  t.equal(formatIPv4(0x0a054800), '10.5.72.0');
  t.equal(formatIPv4(0xffffffff), '255.255.255.255');
  for (const bad of ['10.5.72', '10.5.72.0.1', '256.1.1.1', '10.05.1.1', '1.2.3.-1', '', 'a.b.c.d', ' 1.2.3.4', '1.2.3.4 ']) {
    t.equal(parseIPv4(bad), null, `rejects ${JSON.stringify(bad)}`);
  }
  t.equal(parseIPv4('::ffff:10.1.2.3'), 0x0a010203, 'IPv4-mapped IPv6 like Go');
  t.equal(parseIPv4('0:0:0:0:0:ffff:10.1.2.3'), 0x0a010203);
  t.equal(parseIPv4('::10.1.2.3'), null, 'IPv4-compatible is not IPv4');
  t.equal(parseIPv4('fd00::1'), null);
});

t.test('net: IPv6 parse', async (t) => {
  t.ok(parseIPv6('::'));
  t.ok(parseIPv6('fd00:5:0:48::'));
  t.ok(parseIPv6('2001:db8::1.2.3.4'));
  t.ok(parseIPv6('1:2:3:4:5:6:7:8'));
  t.same(Array.from(parseIPv6('::1')!), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  for (const bad of ['1:2:3:4:5:6:7', '1::2::3', ':1', '1:2:3:4:5:6:7:8:9', '12345::', 'g::', '1.2.3.4']) {
    t.equal(parseIPv6(bad), null, `rejects ${bad}`);
  }
});

t.test('net: CIDR parse masks host bits, contains/overlaps', async (t) => {
  const n = parseCIDR('10.5.3.0/16')!;
  t.equal(formatCIDR(n), '10.5.0.0/16');
  t.equal(formatCIDR(parseCIDR('10.5.72.9/24')!), '10.5.72.0/24');
  t.equal(formatCIDR(parseCIDR('0.0.0.0/0')!), '0.0.0.0/0');
  t.equal(formatCIDR(parseCIDR('1.2.3.4/32')!), '1.2.3.4/32');
  for (const bad of ['10.5.0.0', '10.5.0.0/33', '10.5.0.0/-1', '10.5.0.0/', '10.5.0/16', 'fd00::/64', '10.5.0.0/1x']) {
    t.equal(parseCIDR(bad), null, `rejects ${bad}`);
  }
  t.ok(netContains(n, parseIPv4('10.5.255.255')!));
  t.notOk(netContains(n, parseIPv4('10.6.0.0')!));
  t.ok(netOverlaps(parseCIDR('10.5.0.0/16')!, parseCIDR('10.5.7.0/24')!));
  t.ok(netOverlaps(parseCIDR('10.5.7.0/24')!, parseCIDR('10.5.0.0/16')!));
  t.notOk(netOverlaps(parseCIDR('10.5.7.0/24')!, parseCIDR('10.5.8.0/24')!));
  t.equal(formatCIDR(netNext(parseCIDR('10.5.255.0/24')!)), '10.6.0.0/24');
  t.equal(formatCIDR(netNext(parseCIDR('255.255.255.0/24')!)), '0.0.0.0/24', 'wraps like Go uint32');
  t.equal(ip(netLast(parseCIDR('10.5.0.0/16')!)), '10.5.255.255');
  t.equal(prefixMask(0), 0);
  t.equal(prefixMask(32), 0xffffffff);
  t.equal(prefixMask(24), 0xffffff00);
});

t.test('config: docs example and defaults', async (t) => {
  const c = parseNetworkConfig(
    '{"Network":"10.0.0.0/8","SubnetLen":20,"SubnetMin":"10.10.0.0","SubnetMax":"10.99.0.0","Backend":{"Type":"udp","Port":7890}}',
  );
  t.equal(formatCIDR(c.network), '10.0.0.0/8');
  t.equal(c.subnetLen, 20);
  t.equal(ip(c.subnetMin), '10.10.0.0');
  t.equal(ip(c.subnetMax), '10.99.0.0');
  t.same(c.backend, { type: 'udp', port: 7890, directRouting: false });
  t.equal(c.backendType, 'udp');

  const d = cfg({ Network: '10.5.0.0/16' });
  t.equal(d.subnetLen, 24);
  t.equal(ip(d.subnetMin), '10.5.1.0');
  t.equal(ip(d.subnetMax), '10.5.255.0');
  t.same(d.backend, { type: 'udp', port: 8285, directRouting: false }, 'absent Backend => udp (code, not docs)');
  t.equal(d.enableIPv4, true);
  t.equal(d.enableNFTables, false);

  t.equal(cfg({ Network: '10.5.3.0/16' }).network.ip, parseIPv4('10.5.0.0'), 'host bits masked');
  t.equal(cfg({ Network: '10.0.0.0/22' }).subnetLen, 24);
  const p23 = cfg({ Network: '10.0.0.0/23' });
  t.equal(p23.subnetLen, 25);
  t.equal(ip(p23.subnetMin), '10.0.0.128');
  t.equal(ip(p23.subnetMax), '10.0.1.128');
  const p28 = cfg({ Network: '10.0.0.0/28' });
  t.equal(p28.subnetLen, 30);
  t.equal(ip(p28.subnetMin), '10.0.0.4');
  t.equal(ip(p28.subnetMax), '10.0.0.12');
  t.equal(cfg({ Network: '10.0.0.0/8', SubnetLen: 0 }).subnetLen, 24, 'SubnetLen 0 means default');
  t.equal(cfg({ Network: '10.0.0.0/8', SubnetLen: null }).subnetLen, 24, 'null leaves the field unset, as Go');
  t.equal(cfg({ Network: '10.5.0.0/16', SubnetMin: '0.0.0.0' }).subnetMin, parseIPv4('10.5.1.0'), '0.0.0.0 = unset');
  t.equal(cfg({ Network: '128.0.0.0/1' }).subnetMax, parseIPv4('255.255.255.0'), 'no overflow at the top');
});

t.test('config: case-insensitive names, unknown fields, last one wins', async (t) => {
  const c = cfg({ network: '10.5.0.0/16', SUBNETLEN: 26, subnetmin: '10.5.0.64', bogus: [1, 2], backend: { TYPE: 'vxlan', vni: 7 } });
  t.equal(c.subnetLen, 26);
  t.equal(ip(c.subnetMin), '10.5.0.64');
  t.equal(c.backend.type, 'vxlan');
  t.equal(c.backend.type === 'vxlan' && c.backend.vni, 7);
  t.equal(parseNetworkConfig('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}').network.ip, parseIPv4('10.2.0.0'));
  t.equal(cfg({ Network: '10.5.0.0/16', BackendType: 'vxlan' }).backend.type, 'udp', 'top-level BackendType ignored');
});

t.test('config: validation errors with flannel texts', async (t) => {
  throwsMsg(t, '{}', 'please define a correct Network parameter in the flannel config');
  throwsMsg(t, 'null', 'please define a correct Network parameter in the flannel config');
  throwsMsg(t, '{"Network":"0.0.0.0/0"}', 'please define a correct Network parameter in the flannel config');
  throwsMsg(t, '{"Network":"10.0.0.0/8","SubnetLen":31}', 'SubnetLen must be less than /31');
  throwsMsg(t, '{"Network":"10.0.0.0/16","SubnetLen":17}', 'network must be able to accommodate at least four subnets');
  t.equal(cfg({ Network: '10.0.0.0/16', SubnetLen: 18 }).subnetLen, 18);
  throwsMsg(t, '{"Network":"10.0.0.0/29"}', 'network is too small. Minimum useful network prefix is /28');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', 'SubnetMin is not in the range of the Network');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetMax":"10.4.0.0"}', 'SubnetMax is not in the range of the Network');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.5"}', 'SubnetMin is not on a SubnetLen boundary: 10.5.1.5');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetMax":"10.5.9.128"}', 'SubnetMax is not on a SubnetLen boundary: 10.5.9.128');
  t.throws(() => parseNetworkConfig('{"Network":"10.5.0.0/16"'), ConfigError, 'bad JSON is a ConfigError');
  throwsMsg(t, '[1]', 'json: cannot unmarshal array into Go value of type Config');
  throwsMsg(t, '{"Network":"10.5.0.0"}', 'Network: invalid CIDR address: 10.5.0.0');
  throwsMsg(t, '{"Network":"fd00::/64"}', 'Network: invalid IPv4 CIDR format');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetMin":"nope"}', /SubnetMin: invalid IP address/);
});

t.test('config: types are checked and errors name the field', async (t) => {
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetLen":"24"}', 'json: cannot unmarshal string into Go struct field Config.SubnetLen of type uint');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetLen":-1}', 'json: cannot unmarshal number -1 into Go struct field Config.SubnetLen of type uint');
  throwsMsg(t, '{"Network":"10.5.0.0/16","SubnetLen":24.5}', /Config\.SubnetLen/);
  throwsMsg(t, '{"Network":10}', 'json: cannot unmarshal number 10 into Go struct field Config.Network of type string');
  throwsMsg(t, '{"Network":"10.5.0.0/16","EnableIPv4":"yes"}', /Config\.EnableIPv4 of type bool/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":"8285"}}', /^error decoding UDP backend config: .*\.Port of type int/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}', /^error decoding VXLAN backend config: .*VXLANConfig\.VNI of type int/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","GBP":1}}', /VXLANConfig\.GBP of type bool/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":7}}', /^error decoding Backend property of config: .*Type of type string/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":"udp"}', /^error decoding Backend property of config: json: cannot unmarshal string/);
});

t.test('config: backend type resolution', async (t) => {
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{}}', 'unknown backend type: ');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":null}', 'unknown backend type: ');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Port":1}}', 'unknown backend type: ');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"frobnicate"}}', 'unknown backend type: frobnicate');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"ipip"}}', 'backend type "ipip" is not supported by linen (supported: udp, vxlan, host-gw, wireguard)');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"IPsec"}}', /"IPsec" is not supported by linen/);
  const up = cfg({ Network: '10.5.0.0/16', Backend: { Type: 'UDP' } });
  t.same(up.backend, { type: 'udp', port: 8285, directRouting: false });
  t.equal(up.backendType, 'UDP', 'type kept as written');
  t.same(cfg({ Network: '10.5.0.0/16', Backend: { type: 'Vxlan' } }).backend, {
    type: 'vxlan',
    vni: 1,
    port: 8472,
    mtu: null,
    gbp: false,
    learning: false,
    directRouting: false,
  });
  t.same(
    cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: 42, Port: 4789, MTU: 9000, GBP: false, Learning: true, directRouting: true } }).backend,
    { type: 'vxlan', vni: 42, port: 4789, mtu: 9000, gbp: false, learning: true, directRouting: true },
  );
  t.match(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', Port: 0 } }).backend, { port: 8472 }, 'Port 0 => kernel default 8472');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}', /VNI 16777216 is out of range/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":70000}}', /Port 70000/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","MTU":100}}', /MTU 100 is out of range/);
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","Port":0}}', /Port 0 is not a UDP port/);
});

t.test('config: host-gw, and DirectRouting for vxlan and (a linen extension) udp', async (t) => {
  const hg = cfg({ Network: '10.5.0.0/16', Backend: { Type: 'host-gw' } });
  t.same(hg.backend, { type: 'host-gw' });
  t.equal(hg.backendType, 'host-gw');
  t.same(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'Host-GW', Port: 'ignored', DirectRouting: true } }).backend, { type: 'host-gw' },
    'type lower-cased; options ignored as flanneld ignores them (it decodes none)');
  t.equal(overlayMTU(hg.backend, 1500), 1500, 'host-gw: the interface MTU, nothing added');
  t.equal(overlayMTU(hg.backend, 9000), 9000);
  t.match(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } }).backend, { type: 'vxlan', directRouting: true });
  t.same(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'udp', DirectRouting: true } }).backend, { type: 'udp', port: 8285, directRouting: true });
  t.same(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'udp', directrouting: true, Port: 9000 } }).backend, { type: 'udp', port: 9000, directRouting: true },
    'case-insensitive as Go');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"udp","DirectRouting":"yes"}}', /error decoding UDP backend config: .*DirectRouting/);
});

t.test('config: IPv6 is refused clearly, but its fields parse', async (t) => {
  throwsMsg(t, '{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}', /IPv6 .* not supported by linen/);
  throwsMsg(t, '{"EnableIPv4":false,"EnableIPv6":false}', /EnableIPv4/);
  const c = cfg({ Network: '10.5.0.0/16', IPv6Network: 'fd00::/56', IPv6SubnetLen: 64, IPv6SubnetMin: 'fd00:0:0:1::' });
  t.equal(c.enableIPv6, false);
  throwsMsg(t, '{"Network":"10.5.0.0/16","IPv6Network":"nope"}', 'IPv6Network: invalid CIDR address: nope');
  throwsMsg(t, '{"Network":"10.5.0.0/16","IPv6SubnetLen":"64"}', /Config\.IPv6SubnetLen of type uint/);
});

t.test('config: overlay MTU', async (t) => {
  t.equal(overlayMTU({ type: 'udp', port: 8285, directRouting: false }, 1500), 1472);
  const vx = cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan' } }).backend;
  t.equal(overlayMTU(vx, 1500), 1450);
  const vx9k = cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', MTU: 9000 } }).backend;
  t.equal(overlayMTU(vx9k, 1500), 8950, 'config MTU is the underlay MTU');
});

t.test('config: what linen does not implement is refused or warned about, never silently dropped', async (t) => {
  t.same(cfg({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: 1, Port: 8472, MTU: 1500, GBP: false, Learning: false, DirectRouting: true } }).warnings, [],
    'every field flanneld reads, at values linen implements: no warning');
  throwsMsg(t, '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","GBP":true}}', 'error decoding VXLAN backend config: GBP (Group Based Policy) is not supported by linen\'s VXLAN (set GBP to false)');
  const cases: [string, unknown, RegExp][] = [
    ['EnableNFTables', { Network: '10.5.0.0/16', EnableNFTables: true }, /^EnableNFTables is ignored: linen writes its masquerade and forward rules with iptables/],
    ['VXLAN Learning', { Network: '10.5.0.0/16', Backend: { Type: 'vxlan', Learning: true } }, /^Backend: Learning is ignored/],
    ['IPv6Network with IPv6 off', { Network: '10.5.0.0/16', IPv6Network: 'fd00::/56' }, /^IPv6Network is ignored: EnableIPv6 is false/],
    ['IPv6SubnetLen with IPv6 off', { Network: '10.5.0.0/16', IPv6SubnetLen: 64 }, /^IPv6SubnetLen is ignored/],
    ['an unknown top-level field', { Network: '10.5.0.0/16', SubnetLength: 26 }, /^"SubnetLength" is not a field linen \(or flanneld\) reads; it is ignored/],
    ['an unknown VXLAN option', { Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: 1, Vni2: 2 } }, /^Backend: "Vni2" is not a field/],
    ['an unknown UDP option', { Network: '10.5.0.0/16', Backend: { Type: 'udp', MTU: 1400 } }, /^Backend: "MTU" is not a field/],
    ['a host-gw option (host-gw has none)', { Network: '10.5.0.0/16', Backend: { Type: 'host-gw', DirectRouting: true } }, /^Backend: "DirectRouting" is not a field/],
  ];
  for (const [what, o, warning] of cases) {
    const w = cfg(o).warnings;
    t.equal(w.length, 1, `${what}: one warning`);
    t.match(w[0] ?? '', warning, `${what}: ${w[0]}`);
  }
  t.same(cfg({ Network: '10.5.0.0/16', EnableNFTables: false }).warnings, [], 'EnableNFTables false is what linen does');
});

t.test('config: a JSON syntax error names the line, the column and the key it is under', async (t) => {
  throwsMsg(t, '{"Network":"10.5.0.0/16",\n "Backend": {"Type": "vxlan",}}', 'invalid JSON at line 2, column 30 (offset 55) under the key "Backend": "}" where a quoted key should be');
  throwsMsg(t, '{"Network":"10.5.0.0/16"', 'invalid JSON at line 1, column 25 (offset 24) under the key "Network": the text ends where \',\' or \'}\' should be');
  throwsMsg(t, '{"Network": 10.5.0.0/16}', /^invalid JSON at line 1, column 17 \(offset 16\) under the key "Network": "\." where ',' or '}' should be$/);
  throwsMsg(t, '{"Backend": {"VNI": tru}}', /under the key "Backend\.VNI": "t" where a value should be/);
  throwsMsg(t, '{"Network":"10.5.0.0/16"} x', /line 1, column 27 .*: "x" where the end of the text should be/);
  throwsMsg(t, '', /the text ends where a value should be/);
  throwsMsg(t, `{"Backend":${'['.repeat(100)}${']'.repeat(100)}}`, 'invalid JSON: nested more than 64 levels deep');
});
