// Packets flowing between hosts: two simulated hosts (netns joined by veth) with a pod each,
// linend on both with static peers, native engine (the dgram engine has its own file).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MB, BIG, withLinen, pingAndTransfer } from '../helpers/dataplane.js';
import { ping, runBounded, startBounded } from '../../lab/traffic.js';
import { transfer } from '../../lab/transfer.js';

for (const mode of ['udp', 'vxlan'] as const) {
  for (const offload of ['on', 'off'] as const) {
    t.test(`${mode} mode, native engine, offloads ${offload}: ping and a ${BIG / MB} MB transfer with matching SHA-256`,
      (t) => pingAndTransfer(t, { mode, offload }));
  }
}

const UDP_BURST = fileURLToPath(new URL('../fixtures/udp-burst.py', import.meta.url));

/** Packets the kernel counted as received on a device (for a TUN: the writes linend made). */
function rxPackets(ns: string, dev: string): number {
  const j = JSON.parse(execFileSync('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' })) as { stats64: { rx: { packets: number } } }[];
  return j[0]!.stats64.rx.packets;
}

for (const mode of ['udp', 'vxlan'] as const) {
  t.test(`${mode} mode: UDP datagrams in bursts arrive whole and in order, merged into fewer TUN writes`, async (t) => {
    await withLinen(t, { mode, offload: 'on' }, async (topo) => {
      const [a, b] = topo.hosts;
      const dev = mode === 'udp' ? 'flannel0' : 'flannel.1';
      const count = 20000, size = 1200, port = 5302;
      const tun0 = rxPackets(b.ns, dev);
      const receiver = startBounded(b.pod.ns, 'python3', [UDP_BURST, 'recv', b.pod.ip, String(port), String(count), String(size), '3'], { timeoutMs: 120000 });
      t.teardown(() => receiver.kill());
      const bound = () => execFileSync('ip', ['netns', 'exec', b.pod.ns, 'ss', '-Hnul', `sport = :${port}`], { encoding: 'utf8' }).trim() !== '';
      for (let i = 0; i < 200 && !bound(); i++) await new Promise((r) => setTimeout(r, 50));
      const sent = await runBounded(a.pod.ns, 'python3', [UDP_BURST, 'send', b.pod.ip, String(port), String(count), String(size), '32'], { timeoutMs: 120000 });
      t.equal(sent.code, 0, 'sender finished');
      const r = await receiver.done;
      const got = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { received: number; corrupt: number; reordered: number };
      const writes = rxPackets(b.ns, dev) - tun0;
      t.comment(`${got.received} of ${count} datagrams received, ${writes} TUN writes on the receiving host`);
      t.equal(got.corrupt, 0, 'no datagram cut, merged or changed');
      t.equal(got.reordered, 0, 'in order');
      // UDP may drop under load (a worker waiting for a vCPU, the TUN queue full); what is
      // asserted is that what arrives is whole and in order, and that a good part arrives.
      t.ok(got.received >= count * 0.25, `at least a quarter arrive (${got.received}, ${(100 * got.received / count).toFixed(1)} %)`);
      t.ok(writes < got.received, 'bursts were merged: fewer TUN writes than datagrams');
    });
  });
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
