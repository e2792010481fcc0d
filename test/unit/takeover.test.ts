// Which devices of linend's name are flanneld leftovers that may be replaced, from
// `ip -d -j link show` output as iproute2 prints it.
import t from 'tap';
import { describeLink, mayReplace, removalMessage, type LinkJson } from '../../src/device/takeover.js';

const vxlan: LinkJson = {
  ifname: 'flannel.1', address: 'ee:6f:85:d3:6f:43',
  linkinfo: { info_kind: 'vxlan', info_data: { id: 1, local: '192.168.7.1', port: 8472, learning: false } },
};
const tun = (persist: boolean, multiQueue = false): LinkJson => ({
  ifname: 'flannel0', linkinfo: { info_kind: 'tun', info_data: { type: 'tun', pi: false, vnet_hdr: false, multi_queue: multiQueue, persist } },
});

t.test('flanneld leftovers are replaced; a TUN in use and foreign devices are refused', async (t) => {
  t.same(mayReplace(vxlan), { replace: true }, 'kernel vxlan device (flanneld VXLAN)');
  t.same(mayReplace(tun(true)), { replace: true }, 'persistent TUN');
  const busy = mayReplace(tun(false));
  t.equal(busy.replace, false, 'non-persistent TUN: a process holds it');
  t.match(busy, { why: /running process holds open/ });
  t.match(mayReplace({ ifname: 'flannel.1', linkinfo: { info_kind: 'bridge' } }), { replace: false, why: /is a bridge device/ });
  t.match(mayReplace({ ifname: 'flannel0' }), { replace: false, why: /is a plain device/ }, 'no linkinfo');
});

t.test('what is logged', async (t) => {
  t.same(describeLink(vxlan), { name: 'flannel.1', kind: 'vxlan', mac: 'ee:6f:85:d3:6f:43', attrs: 'VNI 1, local 192.168.7.1, port 8472' });
  t.equal(describeLink(tun(true, true)).attrs, 'tun, persistent, multi-queue');
  t.equal(
    removalMessage({ leftover: describeLink(vxlan), addresses: ['10.5.1.0/32'], routes: ['10.5.2.0/24 via 10.5.2.0'], neighbours: 1, fdb: 1 }),
    'Replaced flannel.1 left behind by flanneld: deleted vxlan device (VNI 1, local 192.168.7.1, port 8472, MAC ee:6f:85:d3:6f:43) ' +
      'with address(es) 10.5.1.0/32, 1 route(s) (10.5.2.0/24 via 10.5.2.0), 1 neighbour entry, 1 FDB entry',
  );
  const many = Array.from({ length: 10 }, (_, i) => `10.5.${i}.0/24 via 10.5.${i}.0`);
  t.match(removalMessage({ leftover: describeLink(tun(true)), addresses: [], routes: many, neighbours: 0, fdb: 0 }),
    /address\(es\) none, 10 route\(s\) \(10\.5\.0\.0\/24 via 10\.5\.0\.0, .*10\.5\.7\.0\/24 via 10\.5\.7\.0, \.\.\.\), 0 neighbour entries, 0 FDB entries$/, 'long route lists are cut');
});
