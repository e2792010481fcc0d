// Shared setup for the data path end-to-end tests: a two-host topology with linen on both.
import type { Test } from 'tap';
import { buildTopology, type Topology } from '../../lab/topology.js';
import { linenTunnelMtu, startStaticLinen, type StaticLinen, type StaticLinenOptions } from '../../lab/linend.js';
import { ping } from '../../lab/traffic.js';
import { transfer } from '../../lab/transfer.js';

export const MB = 1 << 20;
export const BIG = Number(process.env.LINEN_E2E_BYTES ?? 200 * MB);

export async function withLinen(t: Test, o: StaticLinenOptions, fn: (topo: Topology, h: StaticLinen) => Promise<void>): Promise<void> {
  const topo = buildTopology({});
  let handle: StaticLinen | null = null;
  t.teardown(async () => {
    if (handle) await handle.stop();
    topo.destroy();
  });
  topo.setPodMtu(linenTunnelMtu(o.mode));
  handle = await startStaticLinen(topo, o);
  try {
    await fn(topo, handle);
  } catch (e) {
    for (const n of handle.nodes) t.comment(`linend in ${n.ns}:\n${n.log()}`);
    throw e;
  }
}

export async function pingAndTransfer(t: Test, o: StaticLinenOptions): Promise<void> {
  await withLinen(t, o, async (topo) => {
    const [a, b] = topo.hosts;
    t.match((await ping({ from: a.pod, to: b.pod })).out, /3 received/, 'pod A pings pod B');
    t.match((await ping({ from: b.pod, to: a.pod })).out, /3 received/, 'pod B pings pod A');
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, BIG, 300000);
    t.equal(r.received, r.sent, `SHA-256 matches on both ends (${r.bytes} bytes in ${r.seconds.toFixed(1)} s, ${(r.bytes * 8 / r.seconds / 1e9).toFixed(2)} Gbit/s)`);
    const back = await transfer(b.pod.ns, a.pod.ns, a.pod.ip, 16 * MB, 120000);
    t.equal(back.received, back.sent, 'and the other way');
  });
}
