// Two linend nodes on the wireguard backend (static peers): the first pings of a fresh pair all
// answered (staged during the handshake), pings and SHA-256-checked TCP both
// ways between pods, TSO super-packets split before sealing and merged after opening on the
// real kernel; then one single-stream TCP transfer through linen WireGuard and, in the same
// run, through linen UDP, printed side by side (a short run on a shared machine: indicative).
import t from "tap";

import { withLinen } from "../helpers/dataplane.js";
import { ping } from "../../lab/traffic.js";
import { transfer } from "../../lab/transfer.js";

const MB = 1 << 20;
const gbit = (r: { bytes: number; seconds: number }): string => (r.bytes * 8 / r.seconds / 1e9).toFixed(2);
const figures: Record<string, string> = {};

t.test("linen wireguard between two pods: pings and checksummed TCP both ways", async (t) => {
  await withLinen(t, { mode: "wireguard", offload: "auto" }, async (topo) => {
    const [a, b] = topo.hosts;
    // A fresh pair: the first ping starts the handshake and waits for it in the core.
    const first = await ping({ from: a.pod, to: b.pod, waitSec: 10 });
    t.match(first.out, /3 received/, "pod A's first pings to pod B are all answered");
    t.match((await ping({ from: b.pod, to: a.pod })).out, /3 received/, "pod B pings pod A");
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, 128 * MB, 300_000);
    t.equal(r.received, r.sent, `A -> B: SHA-256 equal (${gbit(r)} Gbit/s)`);
    figures.wireguard = gbit(r);
    const back = await transfer(b.pod.ns, a.pod.ns, a.pod.ip, 32 * MB, 120_000);
    t.equal(back.received, back.sent, "B -> A: SHA-256 equal");
  });
});

t.test("same run, linen UDP for comparison", async (t) => {
  await withLinen(t, { mode: "udp", offload: "auto" }, async (topo) => {
    const [a, b] = topo.hosts;
    const r = await transfer(a.pod.ns, b.pod.ns, b.pod.ip, 128 * MB, 300_000);
    t.equal(r.received, r.sent, `A -> B: SHA-256 equal (${gbit(r)} Gbit/s)`);
    figures.udp = gbit(r);
  });
  t.comment(`single TCP stream, 128 MiB, same run, shared 2-core machine: linen wireguard ${figures.wireguard} Gbit/s, linen udp ${figures.udp} Gbit/s`);
});
