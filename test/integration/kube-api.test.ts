// The lab Kubernetes API server speaks the real protocol: Debian's kubectl drives it (get,
// annotate, patch of the node and of nodes/status, get -w), and a bearer-token table gives the
// real server's 401 and 403 answers.
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KubeApiServer, kubeconfigYaml } from '../../lab/kube-api.js';
import { makeCerts } from '../helpers/certs.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'linen-kubeapi-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

async function kubectl(cfg: string, ...args: string[]): Promise<string> {
  const { stdout } = await run('kubectl', ['--kubeconfig', cfg, ...args], { timeout: 30_000 });
  return stdout;
}

t.test('kubectl get, annotate, patch and get -w', async (t) => {
  const api = new KubeApiServer();
  await api.start();
  t.teardown(() => api.stop());
  const cfg = join(dir, 'open.kubeconfig');
  writeFileSync(cfg, kubeconfigYaml(api.url));
  api.addNode('n1', { podCIDR: '10.244.1.0/24' });

  const names = await kubectl(cfg, 'get', 'nodes', '-o', 'name');
  t.equal(names.trim(), 'node/n1');
  t.equal(await kubectl(cfg, 'get', 'node', 'n1', '-o', 'jsonpath={.spec.podCIDR}'), '10.244.1.0/24');

  await kubectl(cfg, 'annotate', 'node', 'n1', 'flannel.alpha.coreos.com/public-ip=192.168.9.1', 'flannel.alpha.coreos.com/kube-subnet-manager=true');
  t.same(api.node('n1')!.metadata['annotations'], {
    'flannel.alpha.coreos.com/public-ip': '192.168.9.1',
    'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
  });
  t.ok(api.requests.some((r) => r.startsWith('PATCH /api/v1/nodes/n1') && r.includes('merge-patch+json')), 'kubectl annotate sent a merge patch');

  // A strategic merge patch of the status subresource merges conditions by type.
  const cond = (type: string, s: string) => ({ type, status: s, reason: 'R', message: 'm' });
  // (Debian's kubectl 1.20 has no --subresource: the status is patched over plain HTTP.)
  const patchStatus = async (body: unknown): Promise<void> => {
    const r = await fetch(`${api.url}/api/v1/nodes/n1/status`, { method: 'PATCH', headers: { 'content-type': 'application/strategic-merge-patch+json' }, body: JSON.stringify(body) });
    t.equal(r.status, 200);
  };
  await patchStatus({ status: { conditions: [cond('Ready', 'True')] } });
  await patchStatus({ status: { conditions: [cond('NetworkUnavailable', 'False')] } });
  await kubectl(cfg, 'patch', 'node', 'n1', '-p', JSON.stringify({ status: { conditions: [cond('Ready', 'False')] } }));
  t.equal(JSON.stringify(api.node('n1')!['status']).includes('"Ready","status":"False"'), false, 'a patch of the node itself leaves its status alone');
  const conds = JSON.parse(await kubectl(cfg, 'get', 'node', 'n1', '-o', 'jsonpath={.status.conditions}')) as { type: string; status: string }[];
  t.same(conds.map((c) => `${c.type}=${c.status}`), ['Ready=True', 'NetworkUnavailable=False']);
  // A status patch leaves spec alone; a main-resource patch leaves status alone.
  await patchStatus({ spec: { podCIDR: '10.9.9.0/24' } });
  t.equal(api.node('n1')!['spec'] !== null && (api.node('n1')!['spec'] as { podCIDR: string }).podCIDR, '10.244.1.0/24');
  await kubectl(cfg, 'patch', 'node', 'n1', '--type=json', '-p', '[{"op":"add","path":"/metadata/labels/x","value":"y"}]');
  t.equal((api.node('n1')!.metadata['labels'] as Record<string, string>)['x'], 'y');

  // get -w: the list, then the changes as they happen.
  const w = spawn('kubectl', ['--kubeconfig', cfg, 'get', 'nodes', '-w', '-o', 'custom-columns=NAME:.metadata.name,IP:.metadata.annotations.flannel\\.alpha\\.coreos\\.com/public-ip', '--no-headers']);
  t.teardown(() => { w.kill(); });
  let out = '';
  w.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const waitFor = async (re: RegExp): Promise<void> => {
    const until = Date.now() + 30_000;
    while (!re.test(out) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  };
  await waitFor(/n1\s+192\.168\.9\.1/);
  api.addNode('n2', { podCIDR: '10.244.2.0/24', annotations: { 'flannel.alpha.coreos.com/public-ip': '192.168.9.2' } });
  await waitFor(/n2\s+192\.168\.9\.2/);
  await kubectl(cfg, 'annotate', '--overwrite', 'node', 'n1', 'flannel.alpha.coreos.com/public-ip=192.168.9.3');
  await waitFor(/n1\s+192\.168\.9\.3/);
  t.match(out, /n1\s+192\.168\.9\.1[\s\S]*n2\s+192\.168\.9\.2[\s\S]*n1\s+192\.168\.9\.3/, `kubectl get -w printed every change:\n${out}`);
  t.ok(api.requests.some((r) => /^GET \/api\/v1\/nodes\?.*watch=true.*resourceVersion=\d+/.test(r) || /^GET \/api\/v1\/nodes\?.*resourceVersion=\d+.*watch=true/.test(r)), 'kubectl watched from the list\'s resource version');

  await kubectl(cfg, 'delete', 'node', 'n2');
  t.equal(api.node('n2'), undefined);
});

t.test('watch history: 410 Gone for an old resource version, bookmarks when asked for', async (t) => {
  const api = new KubeApiServer({ bookmarkMs: 100 });
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('a', { podCIDR: '10.244.1.0/24' });
  const rv = api.resourceVersion;
  api.addNode('b', { podCIDR: '10.244.2.0/24' });
  const fromOld = await fetch(`${api.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&timeoutSeconds=1`);
  const lines = (await fromOld.text()).trim().split('\n').map((l) => JSON.parse(l) as { type: string; object: { metadata: { name?: string } } });
  t.same(lines.map((l) => `${l.type} ${l.object.metadata.name}`), ['ADDED b'], 'a watch replays what came after its resource version');
  api.compact();
  const gone = await fetch(`${api.url}/api/v1/nodes?watch=true&resourceVersion=${rv}`);
  t.equal(gone.status, 200);
  const err = JSON.parse((await gone.text()).trim()) as { type: string; object: { code: number; reason: string } };
  t.same([err.type, err.object.code, err.object.reason], ['ERROR', 410, 'Expired']);
  const bm = await fetch(`${api.url}/api/v1/nodes?watch=true&resourceVersion=${api.resourceVersion}&allowWatchBookmarks=true&timeoutSeconds=1`);
  t.match(await bm.text(), /"type":"BOOKMARK"/);
});

t.test('bearer tokens: 401 without one, 403 for a verb not granted', async (t) => {
  const certs = makeCerts(dir);
  const api = new KubeApiServer({
    tls: { cert: certs.serverCert, key: certs.serverKey },
    tokens: { 'tok-ro': { user: 'system:serviceaccount:kube-flannel:ro', grants: { nodes: ['get', 'list', 'watch'] } } },
  });
  await api.start();
  t.teardown(() => api.stop());
  api.addNode('n1', { podCIDR: '10.244.1.0/24' });
  const none = join(dir, 'none.kubeconfig');
  writeFileSync(none, kubeconfigYaml(api.url, { token: 'wrong', ca: certs.ca }));
  await t.rejects(kubectl(none, 'get', 'nodes'), /Unauthorized|must be logged in/);
  const ro = join(dir, 'ro.kubeconfig');
  writeFileSync(ro, kubeconfigYaml(api.url, { token: 'tok-ro', ca: certs.ca }));
  t.equal((await kubectl(ro, 'get', 'nodes', '-o', 'name')).trim(), 'node/n1');
  await t.rejects(
    kubectl(ro, 'annotate', 'node', 'n1', 'x.io/y=z'),
    /nodes "n1" is forbidden: User "system:serviceaccount:kube-flannel:ro" cannot patch resource "nodes" in API group "" at the cluster scope/,
  );
});
