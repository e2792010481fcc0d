// Kube mode's node annotations: names and prefix validation as flanneld's, the exact values a
// node publishes for each backend, and nodes read back as leases.
import t from 'tap';
import { annotationNames, annotationPatch, leaseAnnotations, nodeLease, nodeLeaseKeySubnet, nodePodCIDR, storedVtepMAC, type NodeView } from '../../src/subnet/kube/annotations.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { hostGwLeaseAttrs } from '../../src/backend/hostgw.js';
import { formatCIDR, parseIPv4, parseMAC } from '../../src/net.js';

const ip = (s: string) => parseIPv4(s)!;
const names = annotationNames('flannel.alpha.coreos.com');
const P = 'flannel.alpha.coreos.com/';
const node = (annotations: Record<string, string>, podCIDR = '10.244.1.0/24', podCIDRs: string[] = [podCIDR]): NodeView => ({ name: 'n1', annotations, podCIDR, podCIDRs });

t.test('prefix validation and names, as flanneld', async (t) => {
  t.equal(names.subnetKubeManaged, `${P}kube-subnet-manager`);
  t.equal(names.publicIPOverwrite, `${P}public-ip-overwrite`);
  t.equal(annotationNames('example.com/team').backendData, 'example.com/team-backend-data');
  t.equal(annotationNames('example.com/team-').backendType, 'example.com/team-backend-type');
  t.equal(annotationNames('example.com/').publicIP, 'example.com/public-ip');
  t.throws(() => annotationNames('a.b/c/d'), /at most single slash/);
  t.throws(() => annotationNames('nodots'), /must be in a format: fqdn/);
  t.throws(() => annotationNames('example.COM'), /must be in a format/);
  t.equal(annotationNames('Upper.case').publicIP, 'Upper.case/public-ip', 'the check is anchored at the end only, as flanneld\'s');
});

t.test('a fresh node gets the four annotations, byte for byte', async (t) => {
  const vx = vxlanLeaseAttrs(ip('192.168.1.10'), 1, parseMAC('12:c6:65:89:b4:e3')!);
  const ch = leaseAnnotations(names, {}, vx);
  t.same(Object.keys(ch), [`${P}backend-data`, `${P}backend-type`, `${P}kube-subnet-manager`, `${P}public-ip`], 'sorted as Go writes a map');
  t.equal(annotationPatch(ch),
    '{"metadata":{"annotations":{"flannel.alpha.coreos.com/backend-data":"{\\"VNI\\":1,\\"VtepMAC\\":\\"12:c6:65:89:b4:e3\\"}","flannel.alpha.coreos.com/backend-type":"vxlan","flannel.alpha.coreos.com/kube-subnet-manager":"true","flannel.alpha.coreos.com/public-ip":"192.168.1.10"}}}');
  t.same(leaseAnnotations(names, {}, udpLeaseAttrs(ip('192.168.1.10'))), { [`${P}backend-data`]: 'null', [`${P}backend-type`]: '', [`${P}kube-subnet-manager`]: 'true', [`${P}public-ip`]: '192.168.1.10' });
  t.same(leaseAnnotations(names, {}, hostGwLeaseAttrs(ip('192.168.1.10'))), { [`${P}backend-data`]: 'null', [`${P}backend-type`]: 'host-gw', [`${P}kube-subnet-manager`]: 'true', [`${P}public-ip`]: '192.168.1.10' });
});

t.test('only what changed is patched; nothing when all is in place; the overwrite wins', async (t) => {
  const vx = vxlanLeaseAttrs(ip('192.168.1.10'), 1, parseMAC('12:c6:65:89:b4:e3')!);
  const full = { ...leaseAnnotations(names, {}, vx), 'other.io/keep': 'x' };
  t.same(leaseAnnotations(names, full, vx), {});
  t.same(leaseAnnotations(names, full, vxlanLeaseAttrs(ip('192.168.1.11'), 1, parseMAC('12:c6:65:89:b4:e3')!)), { [`${P}public-ip`]: '192.168.1.11' });
  const over = { ...full, [`${P}public-ip-overwrite`]: '203.0.113.7' };
  t.same(leaseAnnotations(names, over, vx), { [`${P}public-ip`]: '203.0.113.7' });
  t.same(leaseAnnotations(names, { ...over, [`${P}public-ip`]: '203.0.113.7' }, vx), {}, 'an applied overwrite is left alone... ');
});

t.test('nodes read as leases', async (t) => {
  const vx = leaseAnnotations(names, {}, vxlanLeaseAttrs(ip('192.168.1.10'), 1, parseMAC('12:c6:65:89:b4:e3')!));
  const l = nodeLease(names, node(vx), 42);
  t.ok(l.ok && l.value !== null);
  if (l.ok && l.value !== null) {
    t.equal(formatCIDR(l.value.subnet), '10.244.1.0/24');
    t.equal(l.value.key, 'node/n1/10.244.1.0-24', 'the key names the node and its pod CIDR');
    t.equal(formatCIDR(nodeLeaseKeySubnet(l.value.key)!.subnet), '10.244.1.0/24', 'and reads back as that subnet');
    t.equal(l.value.attrs.backendType, 'vxlan');
    t.equal(l.value.attrs.backendData, '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}');
  }
  t.same(nodeLease(names, node({}), 1), { ok: true, value: null }, 'not managed: no lease');
  for (const k of ['node/n1', 'node//10.244.1.0-24', 'node/n1/10.244.1.0-24/x', 'nodes/n1/10.244.1.0-24', 'node/n1/010.244.1.0-24']) {
    t.equal(nodeLeaseKeySubnet(k), null, `${k}: names no subnet`);
  }
  t.same(nodeLease(names, node(vx, '', []), 1), { ok: true, value: null }, 'no pod CIDR yet: no lease');
  t.match(nodeLease(names, node({ ...vx, [`${P}public-ip`]: 'nope' }), 1), { ok: false, error: /public-ip: invalid IPv4 address "nope"/ });
  const dual = nodePodCIDR(node(vx, 'fd00::/64', ['fd00::/64', '10.244.9.0/24']));
  t.ok(dual.ok && dual.value !== null && formatCIDR(dual.value) === '10.244.9.0/24', 'dual stack: the IPv4 one');
  t.match(nodePodCIDR(node(vx, 'a', ['10.0.0.0/24', '10.0.1.0/24', '10.0.2.0/24'])), { ok: false, error: /pod cidrs should be IPv4\/IPv6 only or dualstack/ });
  t.match(nodePodCIDR(node(vx, 'garbage', [])), { ok: false, error: /invalid pod CIDR "garbage"/ });
  const u = nodeLease(names, node(leaseAnnotations(names, {}, udpLeaseAttrs(ip('192.168.1.10')))), 1);
  t.ok(u.ok && u.value !== null && u.value.attrs.backendData === null && u.value.attrs.backendType === '', 'UDP: "null" data reads as none');
  t.same(storedVtepMAC(names, node(vx)), parseMAC('12:c6:65:89:b4:e3'));
  t.equal(storedVtepMAC(names, node({ [`${P}backend-data`]: '{garbage' })), null);
});
