// Kube mode's control plane against the lab API server, through the official client: this
// node's lease (pod CIDR, annotations, NetworkUnavailable), the node name from the pod, and the
// peers' list + watch through the same LeaseWatcher as etcd mode (join, PublicIP change,
// leave, 410 Gone, API server restart, 403), and that deploy/kube-linen.yml's ClusterRole is
// enough for all of it.
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeApiServer, kubeconfigYaml } from '../../lab/kube-api.js';
import { makeCerts } from '../helpers/certs.js';
import { KubeClient, kubeConfigFor } from '../../src/subnet/kube/client.js';
import { annotationNames, leaseAnnotations } from '../../src/subnet/kube/annotations.js';
import { KubeLeaseManager, resolveNodeName } from '../../src/subnet/kube/manager.js';
import { KubeLeaseSource } from '../../src/subnet/kube/source.js';
import { LeaseWatcher, type PeerDiff } from '../../src/subnet/watcher.js';
import { vxlanLeaseAttrs } from '../../src/backend/vxlan.js';
import { formatCIDR, formatIPv4, parseCIDR, parseIPv4, parseMAC } from '../../src/net.js';
import { memoryLogger } from '../../src/log.js';
import { repoRoot } from '../../src/paths.js';

const ip = (s: string) => parseIPv4(s)!;
const names = annotationNames('flannel.alpha.coreos.com');
const P = 'flannel.alpha.coreos.com/';
const dir = mkdtempSync(join(tmpdir(), 'linen-kubesub-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function clientFor(api: KubeApiServer, name: string, auth: { token?: string; ca?: string } = {}): KubeClient {
  const cfg = join(dir, `${name}.kubeconfig`);
  writeFileSync(cfg, kubeconfigYaml(api.url, auth));
  return new KubeClient(kubeConfigFor({ apiUrl: '', kubeconfig: cfg }));
}

t.test('own lease: waits for the pod CIDR, annotates the node with one status patch, sets NetworkUnavailable', async (t) => {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('n1', { annotations: { 'other.io/keep': 'x' } });
  const client = clientFor(api, 'own');
  const { log, lines } = memoryLogger();
  const m = new KubeLeaseManager({ client, nodeName: 'n1', names, log, pollMs: 50 });
  const ac = new AbortController();
  const attrs = vxlanLeaseAttrs(ip('192.168.7.1'), 1, parseMAC('0a:58:0a:f4:01:01')!);
  const acquiring = m.acquire({ network: parseCIDR('10.244.0.0/16')! }, attrs, ac.signal);
  await until('the wait to be logged', () => lines.some((l) => l.includes('pod cidr not assigned yet')));
  api.updateNode('n1', { spec: { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24'] } });
  t.equal(formatCIDR(await acquiring), '10.244.3.0/24');
  const patches = api.requests.filter((r) => r.startsWith('PATCH'));
  t.same(patches, ['PATCH /api/v1/nodes/n1/status application/strategic-merge-patch+json'], 'one strategic-merge patch of the status subresource');
  t.same(api.node('n1')!.metadata['annotations'], {
    'other.io/keep': 'x',
    [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:01"}',
    [`${P}backend-type`]: 'vxlan',
    [`${P}kube-subnet-manager`]: 'true',
    [`${P}public-ip`]: '192.168.7.1',
  });
  await m.acquire({ network: parseCIDR('10.244.0.0/16')! }, attrs, ac.signal);
  t.equal(api.requests.filter((r) => r.startsWith('PATCH')).length, 1, 'a restart with the same lease patches nothing');
  await m.setNetworkAvailable(ac.signal);
  const conds = (api.node('n1')!['status'] as { conditions: Record<string, string>[] }).conditions;
  t.match(conds, [{ type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node' }]);
  await t.rejects(m.acquire({ network: parseCIDR('10.10.0.0/16')! }, attrs, ac.signal), /subnet "10\.10\.0\.0\/16" specified in the flannel net config doesn't contain "10\.244\.3\.0\/24" PodCIDR of the "n1" node/);
});

t.test('node name: NODE_NAME, else the pod\'s node, else flanneld\'s error', async (t) => {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  api.addPod('kube-flannel', 'linen-abcde', 'worker-7');
  const client = clientFor(api, 'pod');
  t.equal(await resolveNodeName({ NODE_NAME: 'n9' }, client), 'n9');
  t.equal(await resolveNodeName({ POD_NAME: 'linen-abcde', POD_NAMESPACE: 'kube-flannel' }, client), 'worker-7');
  await t.rejects(resolveNodeName({}, client), /env variables POD_NAME and POD_NAMESPACE must be set/);
  await t.rejects(resolveNodeName({ POD_NAME: 'gone', POD_NAMESPACE: 'kube-flannel' }, client), /error retrieving pod spec for 'kube-flannel\/gone': pods "gone" not found/);
});

t.test('peers: join, PublicIP change, leave, 410 Gone, API server restart', async (t) => {
  const api = new KubeApiServer({ bookmarkMs: 200 });
  await api.start();
  t.teardown(() => api.stop());
  const peerAnn = (pip: string, mac: string) => leaseAnnotations(names, {}, vxlanLeaseAttrs(ip(pip), 1, parseMAC(mac)!));
  api.addNode('self', { podCIDR: '10.244.1.0/24', annotations: peerAnn('192.168.7.1', '0a:00:00:00:00:01') });
  api.addNode('a', { podCIDR: '10.244.2.0/24', annotations: peerAnn('192.168.7.2', '0a:00:00:00:00:02') });
  api.addNode('plain', { podCIDR: '10.244.9.0/24' });
  const { log, lines } = memoryLogger();
  const source = new KubeLeaseSource(clientFor(api, 'peers'), names, log);
  const w = new LeaseWatcher({ registry: source, ownSubnet: parseCIDR('10.244.1.0/24')!, accept: 'vxlan', log, backoffInitialMs: 50, backoffMaxMs: 500 });
  const diffs: PeerDiff[] = [];
  const ac = new AbortController();
  const running = w.run(ac.signal, (d) => { diffs.push(d); });
  t.teardown(async () => { ac.abort(); await running; });
  await w.ready;
  const view = (): string[] => [...w.peers().values()].map((p) => `${formatCIDR(p.subnet)}@${formatIPv4(p.publicIP)}`).sort();
  t.same(view(), ['10.244.2.0/24@192.168.7.2'], 'the snapshot: annotated nodes only, not this one');

  api.addNode('b', { podCIDR: '10.244.3.0/24', annotations: peerAnn('192.168.7.3', '0a:00:00:00:00:03') });
  await until('b to join', () => view().includes('10.244.3.0/24@192.168.7.3'));
  api.updateNode('b', { metadata: { annotations: { [`${P}public-ip`]: '192.168.7.33' } } });
  await until('b\'s new PublicIP', () => view().includes('10.244.3.0/24@192.168.7.33'));
  t.ok(diffs.some((d) => d.changed.some((p) => formatIPv4(p.publicIP) === '192.168.7.33')), 'reported as a change');
  api.updateNode('plain', { metadata: { annotations: peerAnn('192.168.7.9', '0a:00:00:00:00:09') } });
  await until('a node that becomes managed to join', () => view().includes('10.244.9.0/24@192.168.7.9'));
  api.updateNode('plain', { metadata: { annotations: { [`${P}kube-subnet-manager`]: null } } });
  await until('a node that is no longer managed to leave', () => !view().some((v) => v.startsWith('10.244.9.0/24')));
  api.updateNode('a', { metadata: { annotations: { [`${P}public-ip`]: 'not-an-ip' } } });
  await until('the bad annotation to be logged', () => lines.some((l) => l.includes('node/a/10.244.2.0-24') && l.includes('invalid IPv4 address "not-an-ip"')));
  t.ok(view().includes('10.244.2.0/24@192.168.7.2'), 'a bad annotation keeps the last good lease');
  // A second node naming a's pod CIDR neither takes a's route nor removes it when it goes.
  api.addNode('twin', { podCIDR: '10.244.2.0/24', annotations: peerAnn('192.168.7.66', '0a:00:00:00:00:66') });
  await until('the twin to be refused', () => lines.some((l) => l.includes('node/twin/10.244.2.0-24') && l.includes('is held by the key node/a/10.244.2.0-24')));
  api.deleteNode('twin');
  await new Promise((r) => setTimeout(r, 300));
  t.ok(view().includes('10.244.2.0/24@192.168.7.2'), "a twin's pod CIDR neither replaces nor removes the route of the node that holds it");
  api.deleteNode('b');
  await until('b to leave', () => !view().some((v) => v.startsWith('10.244.3.0/24')));

  // 410: while the watch is down a node joins and the history is compacted away; the resumed
  // watch is answered Expired.
  const lists = () => api.requests.filter((r) => /^GET \/api\/v1\/nodes(\?(?!.*watch=true)|$)/.test(r)).length;
  const listsBefore = lists();
  await api.stop();
  api.addNode('c', { podCIDR: '10.244.4.0/24', annotations: peerAnn('192.168.7.4', '0a:00:00:00:00:04') });
  api.compact();
  await api.start();
  await until('c after the re-list', () => view().includes('10.244.4.0/24@192.168.7.4'));
  t.ok(lines.some((l) => /watch of nodes from resource version \d+ expired \(too old resource version/.test(l)), 'the 410 is logged');
  t.ok(lists() > listsBefore, 'answered by a fresh list');

  // The API server restarts on the same port; peers stay meanwhile, changes made in between
  // come from the watch's replay.
  await api.stop();
  api.updateNode('c', { metadata: { annotations: { [`${P}public-ip`]: '192.168.7.44' } } });
  await new Promise((r) => setTimeout(r, 300));
  t.ok(view().includes('10.244.4.0/24@192.168.7.4'), 'peers kept while the API server is down');
  await api.start();
  await until('c\'s change after the restart', () => view().includes('10.244.4.0/24@192.168.7.44'));
  t.equal(source.connection().state, 'connected');
});

t.test('403: a clear error that names the missing permission', async (t) => {
  const certs = makeCerts(dir);
  const api = new KubeApiServer({
    tls: { cert: certs.serverCert, key: certs.serverKey },
    tokens: { ro: { user: 'system:serviceaccount:kube-flannel:linen', grants: { nodes: ['get', 'list', 'watch'] } } },
  });
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('n1', { podCIDR: '10.244.3.0/24' });
  const m = new KubeLeaseManager({ client: clientFor(api, 'ro', { token: 'ro', ca: certs.ca }), nodeName: 'n1', names });
  await t.rejects(
    m.acquire({ network: parseCIDR('10.244.0.0/16')! }, vxlanLeaseAttrs(ip('192.168.7.1'), 1, parseMAC('0a:58:0a:f4:01:01')!), new AbortController().signal),
    /patching node "n1": nodes "n1" is forbidden: User "system:serviceaccount:kube-flannel:linen" cannot patch resource "nodes\/status" in API group "" at the cluster scope \(the ClusterRole bound to linen's service account must allow it/,
  );
});

t.test('deploy/kube-linen.yml\'s ClusterRole grants what linen uses', async (t) => {
  const yml = readFileSync(join(repoRoot(), 'deploy', 'kube-linen.yml'), 'utf8');
  const grants: Record<string, string[]> = {};
  for (const m of yml.matchAll(/^- apiGroups: \[""\]\n {2}resources: \["([^"]+)"\]\n {2}verbs: \[([^\]]+)\]$/gm)) {
    grants[m[1]!] = [...m[2]!.matchAll(/"([^"]+)"/g)].map((v) => v[1]!);
  }
  t.same(grants, { pods: ['get'], nodes: ['get', 'list', 'watch'], 'nodes/status': ['patch'] });
  const certs = makeCerts(dir, { name: 'linen-role-ca' });
  const api = new KubeApiServer({ tls: { cert: certs.serverCert, key: certs.serverKey }, tokens: { sa: { user: 'system:serviceaccount:kube-flannel:flannel', grants } } });
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('n1', { podCIDR: '10.244.3.0/24' });
  api.addNode('n2', { podCIDR: '10.244.4.0/24', annotations: leaseAnnotations(names, {}, vxlanLeaseAttrs(ip('192.168.7.2'), 1, parseMAC('0a:00:00:00:00:02')!)) });
  api.addPod('kube-flannel', 'linen-x', 'n1');
  const client = clientFor(api, 'sa', { token: 'sa', ca: certs.ca });
  const ac = new AbortController();
  t.teardown(() => ac.abort());
  const nodeName = await resolveNodeName({ POD_NAME: 'linen-x', POD_NAMESPACE: 'kube-flannel' }, client);
  const m = new KubeLeaseManager({ client, nodeName, names });
  await m.acquire({ network: parseCIDR('10.244.0.0/16')! }, vxlanLeaseAttrs(ip('192.168.7.1'), 1, parseMAC('0a:00:00:00:00:01')!), ac.signal);
  await m.setNetworkAvailable(ac.signal);
  const w = new LeaseWatcher({ registry: new KubeLeaseSource(client, names, memoryLogger().log), ownSubnet: parseCIDR('10.244.3.0/24')!, accept: 'vxlan' });
  const running = w.run(ac.signal, () => undefined);
  await w.ready;
  api.updateNode('n2', { metadata: { annotations: { [`${P}public-ip`]: '192.168.7.22' } } });
  await until('the watched change', () => [...w.peers().values()].some((p) => formatIPv4(p.publicIP) === '192.168.7.22'));
  ac.abort();
  await running;
  t.ok(api.requests.some((r) => r.includes('watch=true')), 'linen watched');
});

t.test('in-cluster configuration: the service account token and CA', async (t) => {
  const certs = makeCerts(dir, { name: 'linen-incluster-ca' });
  const sa1 = { user: 'system:serviceaccount:kube-flannel:flannel', grants: { nodes: ['get', 'list', 'watch'] } };
  // Mutable: the test revokes the first token once the kubelet has "rotated" it.
  const tokens: Record<string, typeof sa1> = { 'sa-token': sa1 };
  const api = new KubeApiServer({ tls: { cert: certs.serverCert, key: certs.serverKey }, tokens });
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('n1', { podCIDR: '10.244.3.0/24' });
  const root = join(dir, 'pod-root');
  const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
  mkdirSync(sa, { recursive: true });
  writeFileSync(join(sa, 'token'), 'sa-token');
  writeFileSync(join(sa, 'ca.crt'), readFileSync(certs.ca));
  writeFileSync(join(sa, 'namespace'), 'kube-flannel');
  const saved = { host: process.env['KUBERNETES_SERVICE_HOST'], port: process.env['KUBERNETES_SERVICE_PORT'] };
  t.teardown(() => {
    for (const [k, v] of [['KUBERNETES_SERVICE_HOST', saved.host], ['KUBERNETES_SERVICE_PORT', saved.port]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  delete process.env['KUBERNETES_SERVICE_HOST'];
  t.throws(() => kubeConfigFor({ apiUrl: '', kubeconfig: '', inClusterRoot: root }), /not running in a pod \(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset\); give --kubeconfig-file or --kube-api-url/);
  process.env['KUBERNETES_SERVICE_HOST'] = '127.0.0.1';
  process.env['KUBERNETES_SERVICE_PORT'] = String(api.port);
  const client = new KubeClient(kubeConfigFor({ apiUrl: '', kubeconfig: '', inClusterRoot: root }));
  t.equal((await client.getNode('n1')).podCIDR, '10.244.3.0/24', 'read the node over TLS with the service account token');

  // The kubelet rotates the projected token (a new file, trailing newline as written there)
  // and the old one stops being accepted: every later request, the watch included, carries the
  // new one at once, not after a cache period.
  writeFileSync(join(sa, 'token'), 'sa-token-2\n');
  tokens['sa-token-2'] = sa1;
  delete tokens['sa-token'];
  const t0 = Date.now();
  t.equal((await client.getNode('n1')).podCIDR, '10.244.3.0/24', 'a get after the rotation carries the new token');
  const { resourceVersion } = await client.listNodes();
  const ac = new AbortController();
  const events = client.watchNodes(resourceVersion, 30, ac.signal);
  const first = events.next();
  api.updateNode('n1', { metadata: { annotations: { 'other.io/touched': 'yes' } } });
  const ev = await first;
  ac.abort();
  await events.return(undefined);
  t.match(ev.value, { type: 'MODIFIED', node: { name: 'n1' } }, 'so does a watch');
  t.comment(`rotated token in use ${Date.now() - t0} ms after the file changed`);
  // A token file that cannot be read keeps the last token rather than failing every request.
  rmSync(join(sa, 'token'));
  t.equal((await client.getNode('n1')).podCIDR, '10.244.3.0/24', 'a vanished token file keeps the last token');
});
