// The health and metrics server under hostile clients: linend runs as root on every node and
// its health port is reachable from pods (flanneld's --healthz-ip defaults to 0.0.0.0), so no
// request may end the process, hold the server, or leak descriptors. A host with
// --healthz-ip=0.0.0.0 and the debug hooks on (and a second host beside it); the clients run inside the host's namespace
// (loopback) and inside its pod (another address).
import t from 'tap';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCluster, HEALTH_PORT, type Cluster, type ClusterNode } from '../../lab/cluster.js';
import { HTTP_LIMITS } from '../../src/node/http.js';
import { fdDiff, fdsAtRest, metrics, pidOf } from '../helpers/reliability.js';

t.setTimeout(300_000);

const fuzzScript = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'http-fuzz.mjs');
const METRICS_PORT = 18472;
let c: Cluster;

t.before(async () => {
  c = await buildCluster({ hosts: 2, backend: 'udp', args: ['--healthz-ip=0.0.0.0'], env: { LINEN_DEBUG_HOOKS: '1' } });
  await c.ready();
});
t.teardown(() => c?.destroy());

function runIn<T>(ns: string, args: string[], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, fuzzScript, ...args], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (e, out, err) => {
      if (e) reject(new Error(`http-fuzz: ${e.message} ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1)!) as T);
    });
  });
}

/** Sends each raw request on its own connection from inside ns; the status codes answered (0: none). */
const raw = (ns: string, host: string, port: number, reqs: string[]): Promise<number[]> =>
  runIn<number[]>(ns, [host, String(port), 'raw', ...reqs.map((r) => Buffer.from(r, 'latin1').toString('base64'))], 60_000);

/** The host's address on the pod side (the gateway attachPod gave the pod, inside the lease). */
const podGateway = (n: ClusterNode): string => n.subnetEnv()!['FLANNEL_SUBNET']!.split('/')[0]!;

const get = (target: string): string => `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;

t.test('malformed request targets are answered 400; linend stays up and keeps answering', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  const bad = ['//', '//[', 'http://[::1', 'http://a:99999/', '*', 'healthz'];
  const codes = await raw(a.host.ns, '127.0.0.1', HEALTH_PORT, bad.map(get));
  t.same(codes, bad.map(() => 400), `each of ${bad.map((b) => JSON.stringify(b)).join(', ')} answered 400 (${codes.join(', ')})`);
  t.ok(a.alive(), 'linend is still running');
  const abs = await raw(a.host.ns, '127.0.0.1', HEALTH_PORT, [get('http://x/healthz'), get('http://[::1]:8471/readyz')]);
  t.same(abs, [200, 200], 'absolute-form targets are served, as HTTP/1.1 requires');
  t.equal((await a.http('/healthz')).status, 200, '/healthz answers');
  t.ok((await metrics(a)).get('linen_http_bad_requests_total') >= bad.length, 'the refusals are counted in /metrics');
});

t.test('debug hooks: bad query values are refused, and only loopback clients reach them', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  const restarts = (await metrics(a)).get('linen_worker_restarts_total');
  const vals = ['abc', '-1', '99999', '1e9', '%zz', ''];
  const codes = await raw(a.host.ns, '127.0.0.1', HEALTH_PORT, vals.map((v) => get(`/debug/crash-worker?index=${v}`)));
  t.same(codes, vals.map(() => 400), `index=${vals.join('|')}: each answered 400 (${codes.join(', ')})`);
  t.ok(a.alive(), 'linend is still running');
  // From the pod, through the host's pod-side address: not loopback, so not a debug client.
  const fromPod = await raw(a.host.pod.ns, podGateway(a), HEALTH_PORT, [get('/debug/crash-worker?index=0'), get('/healthz')]);
  t.same(fromPod, [404, 200], `from the pod: /debug/ is 404, /healthz is 200 (${fromPod.join(', ')})`);
  t.equal((await metrics(a)).get('linen_worker_restarts_total'), restarts, 'no worker was crashed');
});

t.test('10,000 hostile requests: linend stays up, /healthz answers after every batch, no descriptor growth', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  const pid = pidOf(a);
  const before = await fdsAtRest(pid);
  const batches = 10;
  const perBatch = 1000;
  const t0 = Date.now();
  const r = await runIn<{ sent: number; statuses: Record<string, number>; healthAfterBatch: number[]; slowClients: number; slowCut: number }>(
    a.host.ns, ['127.0.0.1', String(HEALTH_PORT), String(batches), String(perBatch), '12345'], 240_000);
  const ms = Date.now() - t0;
  t.ok(r.sent >= batches * perBatch, `${r.sent} hostile requests sent in ${(ms / 1000).toFixed(1)} s (answers by status: ${JSON.stringify(r.statuses)})`);
  t.same(r.healthAfterBatch, Array(batches).fill(200), `/healthz answered 200 after each of the ${batches} batches, with ${r.slowClients / batches} slow clients connected`);
  t.ok(a.alive(), 'linend is still running');
  t.equal((await a.http('/healthz')).status, 200, '/healthz answers');
  const after = await fdsAtRest(pid);
  t.ok(after.count <= before.count, `descriptors at rest ${before.count} -> ${after.count} ${fdDiff(before.targets, after.targets)}`);
  t.notMatch(a.log(), /uncaught|TypeError|RangeError/i, 'nothing thrown into the log');
});

t.test('slow clients: connections over the cap are refused at once, the rest cut off by the header timeout; then /healthz answers', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  const n = HTTP_LIMITS.maxConnections + 16;
  const r = await runIn<{ cutAt: number[] }>(a.host.ns, ['127.0.0.1', String(HEALTH_PORT), 'slowloris', String(n), '30000'], 60_000);
  const never = r.cutAt.filter((x) => x < 0).length;
  const early = r.cutAt.filter((x) => x >= 0 && x < 1000).length;
  const last = Math.max(...r.cutAt);
  t.equal(never, 0, `all ${n} slow clients were cut off (the last after ${last} ms; header timeout ${HTTP_LIMITS.headersTimeoutMs} ms)`);
  t.ok(early >= n - HTTP_LIMITS.maxConnections, `${early} over the cap of ${HTTP_LIMITS.maxConnections} closed within a second`);
  t.ok(last < 20_000, 'none held on past 20 s');
  t.equal((await a.http('/healthz')).status, 200, '/healthz answers after them');
});

t.test('a pod holding slow and pipelining connections: the node\'s own /healthz, /readyz and /metrics keep answering', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  const refusedBefore = (await metrics(a)).get('linen_http_connections_refused_total');
  const floodMs = 25_000;
  // From the pod: twice the whole connection cap, reopened as soon as the server closes one.
  const slow = HTTP_LIMITS.maxConnections;
  const pipelining = HTTP_LIMITS.maxConnections;
  const flood = runIn<{ opened: number; refusedFast: number; cut: number; notCut: number; maxHeld: number }>(
    a.host.pod.ns, [podGateway(a), String(HEALTH_PORT), 'flood', String(slow), String(pipelining), String(floodMs)], floodMs + 120_000);
  // What the server holds from clients other than the node, sampled through the flood.
  let othersMax = 0;
  let samples = 0;
  let flooding = true;
  const sampling = (async () => {
    while (flooding) {
      const m = await metrics(a).catch(() => null);
      if (m) {
        samples++;
        othersMax = Math.max(othersMax, m.get('linen_http_connections', { client: 'other' }));
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  await new Promise((r) => setTimeout(r, 2000));
  type Probe = Record<string, { ok: number; asked: number; slowestMs: number }>;
  const probe = await runIn<Probe>(a.host.ns, ['127.0.0.1', String(HEALTH_PORT), 'probe', String(floodMs - 4000), '200', '/healthz', '/readyz', '/metrics'], floodMs + 60_000);
  const f = await flood;
  flooding = false;
  await sampling;
  t.comment(`flood from the pod: ${f.opened} connections opened, ${f.refusedFast} closed within a second, ${f.cut} cut by the server later, ${f.notCut} still open when the client gave up`);
  for (const [path, r] of Object.entries(probe)) {
    t.ok(r.asked >= 3, `${path}: probed ${r.asked} times`);
    t.equal(r.ok, r.asked, `${path}: answered 200 to ${r.ok} of ${r.asked} probes from loopback during the flood (slowest ${r.slowestMs} ms)`);
  }
  t.ok(samples >= 3, `linen_http_connections sampled ${samples} times during the flood`);
  t.ok(othersMax <= HTTP_LIMITS.maxConnectionsPerClient, `the server held at most ${othersMax} connections from the pod at once (its share: ${HTTP_LIMITS.maxConnectionsPerClient})`);
  const refused = (await metrics(a)).get('linen_http_connections_refused_total') - refusedBefore;
  t.ok(refused > 0, `${refused} connections refused, counted in linen_http_connections_refused_total`);
  t.ok(a.alive(), 'linend is still running');
});

t.test('--metrics-port: /metrics only on its own loopback server, /healthz and /readyz stay where flanneld has them', async (t) => {
  const [a] = c.nodes as [ClusterNode];
  await a.stop('SIGTERM');
  await a.start({ args: [`--metrics-port=${METRICS_PORT}`] });
  t.equal((await a.http('/metrics')).status, 404, '/metrics is not on the healthz port');
  t.equal((await a.http('/readyz')).status, 200, '/readyz is');
  const m = await raw(a.host.ns, '127.0.0.1', METRICS_PORT, [get('/metrics'), get('/healthz')]);
  t.same(m, [200, 404], 'the metrics port serves /metrics and nothing else');
  const fromPod = await raw(a.host.pod.ns, podGateway(a), METRICS_PORT, [get('/metrics')]);
  t.same(fromPod, [0], 'the metrics server (default --metrics-ip 127.0.0.1) is not reachable from the pod');
});
