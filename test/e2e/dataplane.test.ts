// Packets flowing between hosts: two simulated hosts (netns joined by veth) with a pod each,
// linend on both with static peers, native engine (the dgram engine has its own file).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { MB, BIG, withLinen, pingAndTransfer } from '../helpers/dataplane.js';
import { ping } from '../../lab/traffic.js';
import { transfer } from '../../lab/transfer.js';

for (const mode of ['udp', 'vxlan'] as const) {
  for (const offload of ['on', 'off'] as const) {
    t.test(`${mode} mode, native engine, offloads ${offload}: ping and a ${BIG / MB} MB transfer with matching SHA-256`,
      (t) => pingAndTransfer(t, { mode, offload }));
  }
}

t.test('two queues: a multi-queue TUN with one worker each carries parallel flows', async (t) => {
  await withLinen(t, { mode: 'vxlan', offload: 'on', queues: 2 }, async (topo, h) => {
    const [a, b] = topo.hosts;
    t.match(h.nodes[0].log(), /2 queue\(s\)/, 'linend runs two workers');
    const flows = await Promise.all([0, 1, 2, 3].map(() => transfer(a.pod.ns, b.pod.ns, b.pod.ip, 16 * MB, 120000)));
    t.ok(flows.every((r) => r.received === r.sent), 'four parallel transfers arrive intact');
  });
});

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
    t.match((await ping({ from: a.pod, to: b.pod })).out, /3 received/);
    await h.kill(1);
    t.equal((await ping({ from: a.pod, to: b.pod })).received, 0, 'no traffic while the peer is down');
    await h.restart(1);
    let ok = false;
    for (let i = 0; i < 10 && !ok; i++) {
      // As before: one reply of three is enough to say ping works again.
      ok = (await ping({ from: a.pod, to: b.pod })).received > 0;
      if (!ok) await new Promise((r) => setTimeout(r, 500));
    }
    t.ok(ok, 'ping works again');
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, 32 * MB, 60000);
    t.equal(r.received, r.sent, 'and a transfer completes');
    t.equal(h.nodes[0].child.exitCode, null, 'host A linend was never restarted');
  });
});

t.test('static host-gw: linend has no data plane, yet keeps running (and keeping its routes) until it is stopped', async (t) => {
  await withLinen(t, { mode: 'host-gw' }, async (topo, h) => {
    const [a, b] = topo.hosts;
    t.match((await ping({ from: a.pod, to: b.pod })).out, /3 received/, 'pod A pings pod B over the kernel routes');
    // Nothing but the wait for a signal is left once the routes are in: the process must not
    // end on an empty event loop (it did, seconds after start).
    await new Promise((r) => setTimeout(r, 3000));
    t.equal(h.nodes[0].child.exitCode, null, 'linend on host A still runs 3 s later');
    t.equal(h.nodes[1].child.exitCode, null, 'linend on host B still runs 3 s later');
  });
});
