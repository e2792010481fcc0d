// linend --kube-subnet-mgr end to end in network namespaces, against the lab API server
// (lab/kube-api.ts, running in the bridge namespace): the node's podCIDR becomes subnet.env,
// the node is annotated byte for byte as flanneld annotates it and its NetworkUnavailable
// condition set as flanneld sets it; a node set up as flanneld's kube mode sets one up (kernel
// VXLAN, annotations written by kubectl) reaches linen pods and back; nodes join, change their
// PublicIP and leave; the API server restarts, and after a compaction the watch is answered
// 410 and linend lists again; udp, vxlan and host-gw all carry pod traffic; a node set up as
// flanneld's host-gw sets one up (plain kernel routes) or its UDP backend does (its UDP loop in
// the lab's C forwarder), annotated by kubectl, mixes with linen nodes of the same backend.
import t, { type Test } from 'tap';
import { buildKubeCluster, type KubeCluster } from '../../lab/kube-cluster.js';
import { configureKernelVxlanNode } from '../../lab/kernel.js';
import { waitFor } from '../../lab/wait.js';
import { bothWays, type ClusterNode } from '../../lab/cluster.js';
import type { KubeObject } from '../../lab/kube-api.js';
import { startFlanneldUdpNode } from '../../lab/ref-forwarder.js';
import { linenTunnelMtu } from '../../lab/linend.js';

const P = 'flannel.alpha.coreos.com/';

async function kubeCluster(t: Test, o: Parameters<typeof buildKubeCluster>[0]): Promise<KubeCluster> {
  const c = await buildKubeCluster(o);
  t.teardown(() => c.destroy());
  return c;
}

const annotations = (n: KubeObject | null): Record<string, string> => (n?.metadata['annotations'] ?? {}) as Record<string, string>;

/** Waits until linend on `n` routes `subnet` via `publicIP` in its data plane (its /metrics), or no longer does. */
async function peerRoute(n: ClusterNode, subnet: string, publicIP: string, present = true, timeoutMs = 30_000): Promise<boolean> {
  const line = `linen_peer_route{subnet="${subnet}",public_ip="${publicIP}"} 1`;
  return (await waitFor(async () => (await n.http('/metrics')).body.includes(line) === present, timeoutMs, 100)) >= 0;
}

function addressPod(c: KubeCluster, i: number, subnet: string, mtu: number): string {
  const h = c.topo.hosts[i]!;
  const base = subnet.replace(/\.0\/24$/, '');
  c.topo.ip(h.ns, 'addr', 'flush', 'dev', h.podGatewayDev);
  c.topo.ip(h.ns, 'addr', 'add', `${base}.1/24`, 'dev', h.podGatewayDev);
  c.topo.ip(h.pod.ns, 'addr', 'flush', 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'link', 'set', 'dev', h.pod.dev, 'mtu', String(mtu));
  c.topo.ip(h.pod.ns, 'addr', 'add', `${base}.2/24`, 'dev', h.pod.dev);
  c.topo.ip(h.pod.ns, 'route', 'replace', 'default', 'via', `${base}.1`);
  return `${base}.2`;
}

t.test('vxlan: podCIDR to subnet.env, flanneld\'s annotations and condition, a flanneld kube-mode node, join/change/leave, restart, 410', async (t) => {
  const c = await kubeCluster(t, { hosts: 3, backend: 'vxlan', start: false });
  const [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
  const [h1, h2, h3] = [c.topo.hosts[0]!, c.topo.hosts[1]!, c.topo.hosts[2]!];
  await n1.start({ wait: false });
  await n2.start({ wait: false });
  await c.ready();

  const env = n1.subnetEnv()!;
  t.equal(env['FLANNEL_NETWORK'], c.network);
  t.equal(env['FLANNEL_SUBNET'], h1.podSubnet.replace(/\.0\/24$/, '.1/24'), 'FLANNEL_SUBNET is the node\'s podCIDR');
  t.equal(env['FLANNEL_MTU'], '1450');

  // linen's device is a TUN device: its VtepMAC lives only in the lease.
  const vtepMAC = async (node: string): Promise<string> => {
    const m = /^\{"VNI":1,"VtepMAC":"([0-9a-f]{2}(?::[0-9a-f]{2}){5})"\}$/.exec(annotations(await c.api.node(node))[`${P}backend-data`] ?? '');
    return m?.[1] ?? '';
  };
  const mac1 = await vtepMAC('node-1');
  t.not(mac1, '', 'backend-data holds a VtepMAC in flanneld\'s form');
  t.same(annotations(await c.api.node('node-1')), {
    [`${P}backend-data`]: `{"VNI":1,"VtepMAC":"${mac1}"}`,
    [`${P}backend-type`]: 'vxlan',
    [`${P}kube-subnet-manager`]: 'true',
    [`${P}public-ip`]: h1.underlayIP,
  }, 'node-1 annotated exactly as flanneld annotates a vxlan node');
  const patches = (await c.api.call<string[]>('requests')).filter((r) => r.startsWith('PATCH /api/v1/nodes/node-1'));
  t.same(patches, ['PATCH /api/v1/nodes/node-1/status application/strategic-merge-patch+json', 'PATCH /api/v1/nodes/node-1/status application/strategic-merge-patch+json'],
    'two strategic-merge patches of nodes/status: the annotations, then the condition');
  const conds = JSON.parse(await c.api.kubectl('get', 'node', 'node-1', '-o', 'jsonpath={.status.conditions}')) as Record<string, string>[];
  t.match(conds, [{ type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node' }]);
  t.ok(await bothWays(c, 0, 1), 'linen pods reach each other');

  // Host 3 as flanneld's kube mode sets a node up: the kernel VXLAN device, its annotations
  // (written here by kubectl, as flanneld's patch would), and the linen nodes as its peers.
  const kernel = configureKernelVxlanNode({
    ns: h3.ns, vni: 1, port: 0, localIP: h3.underlayIP, underlayDev: h3.underlayDev, ownSubnet: h3.podSubnet,
    peers: [{ subnet: h1.podSubnet, publicIP: h1.underlayIP, vtepMAC: mac1 }, { subnet: h2.podSubnet, publicIP: h2.underlayIP, vtepMAC: await vtepMAC('node-2') }],
  });
  t.teardown(() => kernel.destroy());
  await c.api.kubectl('annotate', 'node', 'node-3',
    `${P}backend-data={"VNI":1,"VtepMAC":"${kernel.vtepMAC}"}`, `${P}backend-type=vxlan`, `${P}kube-subnet-manager=true`, `${P}public-ip=${h3.underlayIP}`);
  const pod3 = addressPod(c, 2, h3.podSubnet, kernel.mtu);
  t.ok(await peerRoute(n1, h3.podSubnet, h3.underlayIP), 'linend routes the flanneld node\'s podCIDR once kubectl annotated it');
  c.nodes[2]!.podIp = pod3;
  t.ok(await waitFor(() => c.reachable(0, 2, 1), 20_000, 200) >= 0, 'linen pod → flanneld-style node pod');
  t.ok(await c.reachable(2, 0, 2), 'flanneld-style node pod → linen pod');
  t.ok(await c.reachable(2, 1, 2), 'flanneld-style node pod → the other linen pod');

  // The flanneld node's PublicIP changes (an admin's public-ip-overwrite applied): linen follows.
  await c.api.kubectl('annotate', '--overwrite', 'node', 'node-3', `${P}public-ip=192.0.2.33`);
  t.ok(await peerRoute(n1, h3.podSubnet, '192.0.2.33'), 'a changed public-ip moves the route');
  await c.api.kubectl('annotate', '--overwrite', 'node', 'node-3', `${P}public-ip=${h3.underlayIP}`);
  t.ok(await peerRoute(n1, h3.podSubnet, h3.underlayIP), 'and back');

  // The API server restarts; a change made meanwhile arrives through the resumed watch.
  await c.api.call('stop');
  await c.api.call('updateNode', 'node-3', { metadata: { annotations: { [`${P}public-ip`]: '192.0.2.34' } } });
  await new Promise((r) => setTimeout(r, 500));
  t.ok(await peerRoute(n1, h3.podSubnet, h3.underlayIP, true, 1000), 'the route stays while the API server is down');
  await c.api.call('start');
  t.ok(await peerRoute(n1, h3.podSubnet, '192.0.2.34'), 'the change made while it was down arrives after the restart');

  // Down again, a change, and the history compacted away: the watch is answered 410 Gone.
  await c.api.call('stop');
  await c.api.call('updateNode', 'node-3', { metadata: { annotations: { [`${P}public-ip`]: h3.underlayIP } } });
  await c.api.call('compact');
  await c.api.call('start');
  t.ok(await peerRoute(n1, h3.podSubnet, h3.underlayIP), 'after 410 Gone, a fresh list brings the change');
  t.match(n1.log(), /watch of nodes from resource version \d+ expired/, 'linend logged the 410');
  t.ok(await c.reachable(2, 0, 2), 'traffic flows again');

  // The node leaves.
  await c.api.kubectl('delete', 'node', 'node-3');
  t.ok(await peerRoute(n1, h3.podSubnet, h3.underlayIP, false), 'a deleted node\'s route goes');
  t.ok(await peerRoute(n2, h3.podSubnet, h3.underlayIP, false), 'on every linen node');

  // A linen node restarts: the VtepMAC is kept from its annotation, nothing is patched again.
  const before = (await c.api.call<string[]>('requests')).filter((r) => r.startsWith('PATCH /api/v1/nodes/node-2')).length;
  const mac2 = await vtepMAC('node-2');
  await n2.stop();
  await n2.start();
  t.equal(await vtepMAC('node-2'), mac2, 'VtepMAC kept across a restart');
  const after = (await c.api.call<string[]>('requests')).filter((r) => r.startsWith('PATCH /api/v1/nodes/node-2')).length;
  t.equal(after - before, 1, 'a restart patches only the condition');
  t.ok(await bothWays(c, 0, 1), 'linen pods reach each other after the restart');
});

/** Waits until `ns`'s kernel routes `subnet` via `gateway` (or no longer routes it at all). */
async function kernelRoute(c: KubeCluster, ns: string, subnet: string, gateway: string | null, timeoutMs = 60_000): Promise<boolean> {
  const want = (out: string): boolean => (gateway === null ? out.trim() === '' : new RegExp(`^${subnet.replace(/\./g, '\\.')} via ${gateway.replace(/\./g, '\\.')} `, 'm').test(out));
  return (await waitFor(() => want(c.topo.ip(ns, 'route', 'show', subnet)), timeoutMs, 100)) >= 0;
}

t.test('host-gw: a node set up as flanneld\'s kube mode sets one up reaches linen pods and back', async (t) => {
  const c = await kubeCluster(t, { hosts: 3, backend: 'host-gw', start: false });
  const [n1, n2] = [c.nodes[0]!, c.nodes[1]!];
  const [h1, h2, h3] = [c.topo.hosts[0]!, c.topo.hosts[1]!, c.topo.hosts[2]!];
  await n1.start({ wait: false });
  await n2.start({ wait: false });
  await c.ready();
  t.ok(await bothWays(c, 0, 1), 'linen pods reach each other');

  // Host 3 as flanneld's host-gw sets a node up: a plain kernel route to each peer's pod CIDR
  // via the peer's PublicIP on the external interface, and its annotations (written here by
  // kubectl, as flanneld's patch would: host-gw has no backend data, Go writes it as null).
  for (const peer of [h1, h2]) c.topo.ip(h3.ns, 'route', 'replace', peer.podSubnet, 'via', peer.underlayIP, 'dev', h3.underlayDev);
  await c.api.kubectl('annotate', 'node', 'node-3',
    `${P}backend-data=null`, `${P}backend-type=host-gw`, `${P}kube-subnet-manager=true`, `${P}public-ip=${h3.underlayIP}`);
  const pod3 = addressPod(c, 2, h3.podSubnet, 1500);
  const t0 = Date.now();
  t.ok(await kernelRoute(c, h1.ns, h3.podSubnet, h3.underlayIP), 'linend on node-1 routes the flanneld node\'s podCIDR via its public-ip');
  t.ok(await kernelRoute(c, h2.ns, h3.podSubnet, h3.underlayIP), 'so does linend on node-2');
  t.comment(`routes to the flanneld-style node installed ${Date.now() - t0} ms after kubectl annotated it`);
  c.nodes[2]!.podIp = pod3;
  t.ok(await waitFor(() => c.reachable(0, 2, 1), 30_000, 200) >= 0, 'linen pod → flanneld-style node pod');
  t.ok(await waitFor(() => c.reachable(1, 2, 1), 30_000, 200) >= 0, 'the other linen pod → flanneld-style node pod');
  t.ok(await waitFor(() => c.reachable(2, 0, 1), 30_000, 200) >= 0, 'flanneld-style node pod → linen pod');
  t.ok(await waitFor(() => c.reachable(2, 1, 1), 30_000, 200) >= 0, 'flanneld-style node pod → the other linen pod');

  // The node leaves: its route goes from every linen node.
  await c.api.kubectl('delete', 'node', 'node-3');
  t.ok(await kernelRoute(c, h1.ns, h3.podSubnet, null), 'a deleted node\'s route goes');
  t.ok(await kernelRoute(c, h2.ns, h3.podSubnet, null), 'on every linen node');
  t.ok(await bothWays(c, 0, 1), 'linen pods still reach each other');
});

t.test('udp: a node set up as flanneld\'s kube mode sets one up reaches a linen pod and back', async (t) => {
  const c = await kubeCluster(t, { hosts: 2, backend: 'udp', start: false });
  const n1 = c.nodes[0]!;
  const [h1, h2] = [c.topo.hosts[0]!, c.topo.hosts[1]!];
  await n1.start({ wait: false });
  await c.ready();

  // Host 2 as flanneld's UDP backend sets a node up: flanneld's UDP loop on a TUN device (the
  // lab's C rendering of it), and its annotations written by kubectl as flanneld's patch would
  // (the UDP backend sets no backend type and has no backend data).
  const flanneld = await startFlanneldUdpNode(c.topo, h2, h1);
  t.teardown(() => flanneld.stop());
  await c.api.kubectl('annotate', 'node', 'node-2',
    `${P}backend-data=null`, `${P}backend-type=`, `${P}kube-subnet-manager=true`, `${P}public-ip=${h2.underlayIP}`);
  t.same(annotations(await c.api.node('node-2')), {
    [`${P}backend-data`]: 'null', [`${P}backend-type`]: '', [`${P}kube-subnet-manager`]: 'true', [`${P}public-ip`]: h2.underlayIP,
  }, 'node-2 annotated as flanneld annotates a UDP node');
  const pod2 = addressPod(c, 1, h2.podSubnet, linenTunnelMtu('udp', c.topo.underlayMtu));
  const t0 = Date.now();
  t.ok(await peerRoute(n1, h2.podSubnet, h2.underlayIP, true, 60_000), 'linend routes the flanneld node\'s podCIDR once kubectl annotated it');
  t.comment(`route to the flanneld-style node in linen's data plane ${Date.now() - t0} ms after kubectl annotated it`);
  c.nodes[1]!.podIp = pod2;
  t.ok(await waitFor(() => c.reachable(0, 1, 1), 30_000, 200) >= 0, 'linen pod → flanneld-style node pod');
  t.ok(await waitFor(() => c.reachable(1, 0, 1), 30_000, 200) >= 0, 'flanneld-style node pod → linen pod');

  await c.api.kubectl('delete', 'node', 'node-2');
  t.ok(await peerRoute(n1, h2.podSubnet, h2.underlayIP, false, 60_000), 'a deleted node\'s route goes');
  await flanneld.stop();
  const counters = flanneld.logs()[0]!.split('\n').find((l) => l.startsWith('ref-forwarder counters:')) ?? '';
  t.comment(`flanneld-style node: ${counters}`);
  t.match(counters, /tun_reads [1-9]\d* .*tun_writes [1-9]/, 'the traffic went through the flanneld-style node\'s UDP loop both ways');
});

for (const backend of ['udp', 'host-gw'] as const) {
  t.test(`${backend}: pods reach each other, annotations as flanneld's`, async (t) => {
    const c = await kubeCluster(t, { hosts: 2, backend });
    t.ok(await bothWays(c, 0, 1), `${backend} pods reach each other in kube mode`);
    t.same(annotations(await c.api.node('node-2')), {
      [`${P}backend-data`]: 'null',
      [`${P}backend-type`]: backend === 'udp' ? '' : 'host-gw',
      [`${P}kube-subnet-manager`]: 'true',
      [`${P}public-ip`]: c.topo.hosts[1]!.underlayIP,
    });
  });
}

t.test('a node without a podCIDR: linend waits with a clear log line', async (t) => {
  const c = await kubeCluster(t, { hosts: 2, backend: 'vxlan', start: false });
  await c.api.call('updateNode', 'node-1', { spec: { podCIDR: null, podCIDRs: null } });
  await c.nodes[0]!.start({ wait: false });
  const logged = await waitFor(() => c.nodes[0]!.log().includes('node "node-1" pod cidr not assigned yet'), 60_000, 100);
  t.ok(logged >= 0, 'the wait is logged');
  await c.api.call('updateNode', 'node-1', { spec: { podCIDR: c.topo.hosts[0]!.podSubnet, podCIDRs: [c.topo.hosts[0]!.podSubnet] } });
  await c.nodes[1]!.start({ wait: false });
  await c.ready();
  t.ok(await bothWays(c, 0, 1), 'once assigned, the node comes up');
});
