// Packets flowing between hosts: two simulated hosts (netns joined by veth) with a pod each,
// linend on both with static peers, in every mode and engine.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { buildTopology, type Topology } from '../../bench/topology.js';
import { linenContender, type LinenContenderOptions, type LinenHandle } from '../../bench/linen.js';
import { startContender } from '../../bench/contenders.js';
import { transfer } from '../helpers/transfer.js';

const MB = 1 << 20;
const BIG = Number(process.env.LINEN_E2E_BYTES ?? 200 * MB);

async function withLinen(t: Test, o: LinenContenderOptions, fn: (topo: Topology, h: LinenHandle) => Promise<void>): Promise<void> {
  const topo = buildTopology({});
  let handle: LinenHandle | null = null;
  t.teardown(async () => {
    if (handle) await handle.stop();
    topo.destroy();
  });
  handle = await startContender(linenContender(o), topo) as LinenHandle;
  try {
    await fn(topo, handle);
  } catch (e) {
    for (const n of handle.nodes) t.comment(`linend in ${n.ns}:\n${n.log()}`);
    throw e;
  }
}

function ping(topo: Topology, ns: string, ip: string, args: string[] = []): string {
  return topo.exec(ns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', ...args, ip], { timeout: 15000 });
}

const configs: [string, LinenContenderOptions][] = [
  ['UDP mode, native engine, offloads on', { mode: 'udp', offload: 'on' }],
  ['UDP mode, native engine, offloads off', { mode: 'udp', offload: 'off' }],
  ['UDP mode, dgram engine', { mode: 'udp', engine: 'dgram' }],
  ['VXLAN mode, native engine, offloads on', { mode: 'vxlan', offload: 'on' }],
  ['VXLAN mode, native engine, offloads off', { mode: 'vxlan', offload: 'off' }],
  ['VXLAN mode, dgram engine', { mode: 'vxlan', engine: 'dgram' }],
];

for (const [name, o] of configs) {
  t.test(`${name}: ping and a ${BIG / MB} MB transfer with matching SHA-256`, async (t) => {
    await withLinen(t, o, async (topo) => {
      const [a, b] = topo.hosts;
      t.match(ping(topo, a.pod.ns, b.pod.ip), /3 received/, 'pod A pings pod B');
      t.match(ping(topo, b.pod.ns, a.pod.ip), /3 received/, 'pod B pings pod A');
      const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, BIG, 180000);
      t.equal(r.received, r.sent, `SHA-256 matches on both ends (${r.bytes} bytes in ${r.seconds.toFixed(1)} s, ${(r.bytes * 8 / r.seconds / 1e9).toFixed(2)} Gbit/s)`);
      const back = await transfer(b.pod.ns, a.pod.ns, a.pod.ip, 16 * MB, 120000);
      t.equal(back.received, back.sent, 'and the other way');
    });
  });
}

t.test('path MTU: DF packets over the tunnel MTU get fragmentation needed, and TCP adapts', async (t) => {
  await withLinen(t, { mode: 'udp', offload: 'on' }, async (topo, h) => {
    const [a, b] = topo.hosts;
    // Let 1500-byte packets reach linen: the pods and the TUNs think the path is 1500.
    topo.setPodMtu(1500);
    for (const host of topo.hosts) topo.ip(host.ns, 'link', 'set', 'dev', 'flannel0', 'mtu', '1500');
    void h;
    let out = '';
    try {
      out = topo.exec(a.pod.ns, 'ping', ['-c', '1', '-W', '2', '-M', 'do', '-s', '1472', b.pod.ip], { timeout: 10000 });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? '') + String((e as { stderr?: string }).stderr ?? '');
    }
    t.match(out, /[Ff]rag needed and DF set \(mtu = 1472\)|mtu = 1472/, 'ping gets frag needed with the tunnel MTU');
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, 32 * MB, 60000);
    t.equal(r.received, r.sent, 'a transfer completes after path-MTU discovery');
    const route = execFileSync('ip', ['netns', 'exec', a.pod.ns, 'ip', 'route', 'get', b.pod.ip], { encoding: 'utf8' });
    t.match(route, /mtu 1472/, 'the pod learned the path MTU');
  });
});

t.test('a peer killed and started again: traffic resumes without restarting this host', async (t) => {
  await withLinen(t, { mode: 'vxlan', offload: 'on' }, async (topo, h) => {
    const [a, b] = topo.hosts;
    t.match(ping(topo, a.pod.ns, b.pod.ip), /3 received/);
    await h.kill(1);
    t.throws(() => ping(topo, a.pod.ns, b.pod.ip), 'no traffic while the peer is down');
    await h.restart(1);
    let ok = false;
    for (let i = 0; i < 10 && !ok; i++) {
      try { ping(topo, a.pod.ns, b.pod.ip); ok = true; } catch { await new Promise((r) => setTimeout(r, 500)); }
    }
    t.ok(ok, 'ping works again');
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, 32 * MB, 60000);
    t.equal(r.received, r.sent, 'and a transfer completes');
    t.equal(h.nodes[0].child.exitCode, null, 'host A linend was never restarted');
  });
});
