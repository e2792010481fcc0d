// linend in etcd mode on the wireguard backend learns a flanneld wireguard node from etcd: the
// other node is Debian's wireguard-go, configured exactly as flanneld's wireguard backend
// configures the kernel device (listen port, the peer's public key, PSK, endpoint PublicIP:Port
// and allowed IPs from linen's lease, the lease subnet's address /32, the network routed to the
// device, MTU less WireGuard's overhead), with its own lease written by etcdctl in flanneld's JSON. No static
// peers: linen takes the peer's key and port from the lease's BackendData. Pings (the first
// ones all answered) and SHA-256-checked TCP both ways; linen's /metrics shows the peer as
// `wg show` would; a paced transfer of 140 s outlasts linen's rekey at 120 s; then wireguard-go
// restarted, and linend restarted with the same key.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";

import { buildCluster, ETCD_PREFIX } from "../../lab/cluster.js";
import { putFlannelLease, leaseKey } from "../../lab/leases.js";
import { ping } from "../../lab/traffic.js";
import { transfer } from "../../lab/transfer.js";
import { waitFor } from "../../lab/wait.js";
import { namespaceOf, startWireguardGoDevice, type WireguardGoDevice } from "../../lab/wireguard-go.js";
import { WIREGUARD_MTU_OVERHEAD } from "../../src/config/network.js";

const MB = 1 << 20;
const PORT = 51820;
const gbit = (r: { bytes: number; seconds: number }): string => (r.bytes * 8 / r.seconds / 1e9).toFixed(2);

t.test("linend learns a wireguard-go node (flanneld's device, lease by etcdctl) from etcd: pings and TCP both ways", async (t) => {
  const c = await buildCluster({ hosts: 2, backend: "wireguard", start: false });
  t.teardown(() => c.destroy());
  const dir = mkdtempSync(join(tmpdir(), "linen-wge-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [h1, h2] = c.topo.hosts;
  const linen = c.nodes[0]!;

  const psk = execFileSync("wg", ["genpsk"]).toString().trim();
  writeFileSync(join(dir, "psk"), psk, { mode: 0o400 });
  const wgKey = execFileSync("wg", ["genkey"]).toString().trim();
  const wgPub = execFileSync("wg", ["pubkey"], { input: wgKey }).toString().trim();
  writeFileSync(join(dir, "wg.key"), wgKey, { mode: 0o400 });
  await c.etcd.ctl("put", `${ETCD_PREFIX}/config`, JSON.stringify({
    Network: c.network, Backend: { Type: "wireguard", PSK: psk, PersistentKeepaliveInterval: 0 },
  }));

  // Host 2 as a flanneld wireguard node: its lease first, byte for byte as flanneld writes it.
  const s2 = h2!.podSubnet;
  const lease2 = `{"PublicIP":"${h2!.underlayIP}","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"${wgPub}","Port":${PORT}}}`;
  await putFlannelLease(c, s2, lease2);

  await linen.start();
  const s1 = `${linen.podIp!.replace(/\.\d+$/, "")}.0/24`;
  const lease1 = JSON.parse(await c.etcd.ctl("get", "--print-value-only", leaseKey(s1))) as {
    PublicIP: string; BackendType: string; BackendData: { PublicKey: string; Port: number };
  };
  t.equal(lease1.BackendType, "wireguard");
  t.equal(lease1.BackendData.Port, PORT);
  t.equal(Buffer.from(lease1.BackendData.PublicKey, "base64").length, 32, "linen's lease carries its public key");

  const dev = `${c.topo.id}-wg`;
  let wgo: WireguardGoDevice | undefined;
  t.teardown(() => wgo?.stop());
  /** wireguard-go's device on host 2, configured as flanneld configures the kernel's. */
  const startWireguardGo = async (): Promise<void> => {
    wgo = await startWireguardGoDevice(namespaceOf(c.topo, h2!.ns), {
      dev, keyFile: join(dir, "wg.key"), listenPort: PORT, subnet: s2, network: c.network, underlayMtu: c.topo.underlayMtu,
      peers: [{ publicKey: lease1.BackendData.PublicKey, pskFile: join(dir, "psk"), endpoint: `${lease1.PublicIP}:${lease1.BackendData.Port}`, allowedIps: s1 }],
    });
    t.pass("wireguard-go made its device");
  };
  const stopWireguardGo = async (): Promise<void> => { await wgo?.stop(); };
  await startWireguardGo();
  // Host 2's pod, as the CNI plugin would address it from flanneld's subnet.env.
  const base2 = s2.replace(/\.0\/24$/, "");
  c.topo.ip(h2!.ns, "addr", "flush", "dev", h2!.podGatewayDev);
  c.topo.ip(h2!.ns, "addr", "add", `${base2}.1/24`, "dev", h2!.podGatewayDev);
  c.topo.ip(h2!.pod.ns, "addr", "flush", "dev", h2!.pod.dev);
  c.topo.ip(h2!.pod.ns, "addr", "add", `${base2}.2/24`, "dev", h2!.pod.dev);
  c.topo.ip(h2!.pod.ns, "link", "set", "dev", h2!.pod.dev, "mtu", String(c.topo.underlayMtu - WIREGUARD_MTU_OVERHEAD));
  c.topo.ip(h2!.pod.ns, "route", "replace", "default", "via", `${base2}.1`);
  const pod2 = `${base2}.2`;

  // linen learned the peer from etcd (no static peers on this node).
  let peers = "";
  const learned = await waitFor(async () => {
    peers = /^linen_peers (\d+)/m.exec((await linen.http("/metrics")).body)?.[1] ?? "";
    return peers === "1";
  }, 30_000, 200);
  t.ok(learned >= 0, `linen took host 2's lease from etcd: linen_peers ${peers} (${learned} ms)`);

  const first = await ping({ from: h1!.pod, to: pod2, waitSec: 10 });
  t.match(first.out, /3 received/, "linen's pod pings wireguard-go's pod: the first pings all answered");
  t.match((await ping({ from: h2!.pod, to: linen.podIp!, waitSec: 10 })).out, /3 received/, "wireguard-go's pod pings linen's");
  const there = await transfer(h1!.pod.ns, h2!.pod.ns, pod2, 32 * MB, 180_000);
  t.equal(there.received, there.sent, `TCP linen -> wireguard-go, SHA-256 equal (${gbit(there)} Gbit/s, shared machine)`);
  const back = await transfer(h2!.pod.ns, h1!.pod.ns, linen.podIp!, 32 * MB, 180_000);
  t.equal(back.received, back.sent, `TCP wireguard-go -> linen, SHA-256 equal (${gbit(back)} Gbit/s)`);

  // wg show's view of linen's side, through its /metrics (the worker reports it once a second).
  let metrics = "";
  const series = (name: string): string => new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, "m").exec(metrics)?.slice(1).join(" ") ?? "";
  const value = (name: string): number => Number(series(name).split(" ")[1]);
  await waitFor(async () => {
    metrics = (await linen.http("/metrics")).body;
    return value("linen_wireguard_peer_receive_bytes_total") > 32 * MB;
  }, 10_000, 500);
  t.match(series("linen_wireguard_peer_last_handshake_seconds"), `public_key="${wgPub}"`, "the peer by its public key");
  t.match(series("linen_wireguard_peer_last_handshake_seconds"), `endpoint="${h2!.underlayIP}:${PORT}"`, "its endpoint");
  t.match(series("linen_wireguard_peer_last_handshake_seconds"), `allowed_ips="${s2}"`, "its allowed IPs");
  t.ok(value("linen_wireguard_peer_last_handshake_seconds") > 1.7e9, "its latest handshake");
  t.ok(value("linen_wireguard_peer_receive_bytes_total") > 32 * MB, `bytes received from it: ${value("linen_wireguard_peer_receive_bytes_total")}`);
  t.ok(value("linen_wireguard_peer_transmit_bytes_total") > 32 * MB, `bytes sent to it: ${value("linen_wireguard_peer_transmit_bytes_total")}`);

  const dump = c.topo.exec(h2!.ns, "wg", ["show", dev, "dump"]).split("\n")[1]?.split("\t") ?? [];
  t.equal(dump[2], `${h1!.underlayIP}:${PORT}`, "wireguard-go's peer endpoint is linen's lease PublicIP and Port");
  t.ok(Number(dump[4]) > 0, "wireguard-go recorded a handshake with linen");

  // A transfer that outlasts a rekey: linen initiated the session, so it rekeys 120 s after.
  const event = (name: string): number => Number(new RegExp(`^linen_wireguard_events_total\\{event="${name}"\\} (\\d+)`, "m").exec(metrics)?.[1] ?? NaN);
  const handshakesBefore = event("handshakes_completed");
  const rate = 512 * 1024;
  const long = await transfer(h1!.pod.ns, h2!.pod.ns, pod2, 140 * rate, 400_000, rate);
  t.equal(long.received, long.sent, `a ${long.seconds.toFixed(0)} s transfer linen -> wireguard-go across a rekey, SHA-256 equal`);
  await waitFor(async () => {
    metrics = (await linen.http("/metrics")).body;
    return event("rekeys") >= 1;
  }, 10_000, 500);
  t.ok(event("rekeys") >= 1, `linen rekeyed during it (rekeys ${event("rekeys")})`);
  t.ok(event("handshakes_completed") > handshakesBefore, `with wireguard-go (handshakes ${handshakesBefore} -> ${event("handshakes_completed")})`);

  // wireguard-go restarted: it lost its sessions, linen still holds one. Its node's traffic makes
  // it initiate; linen's traffic gets no answer on the old session until linen handshakes anew.
  await stopWireguardGo();
  await startWireguardGo();
  const afterWgo = await ping({ from: h2!.pod, to: linen.podIp!, waitSec: 10 });
  t.match(afterWgo.out, / [1-3] received/, "after wireguard-go restarted, its pod reaches linen's");
  t.match((await ping({ from: h1!.pod, to: pod2, waitSec: 10 })).out, /3 received/, "and linen's pod reaches its pod");
  const again = await transfer(h1!.pod.ns, h2!.pod.ns, pod2, 8 * MB, 180_000);
  t.equal(again.received, again.sent, "TCP linen -> restarted wireguard-go, SHA-256 equal");

  // linend restarted: the same private key from its key file, so wireguard-go's peer entry (made
  // from linen's lease) still holds, and linen learns the peer from etcd again.
  const keyBefore = lease1.BackendData.PublicKey;
  await linen.stop();
  await linen.start();
  const lease1b = JSON.parse(await c.etcd.ctl("get", "--print-value-only", leaseKey(s1))) as { BackendData: { PublicKey: string } };
  t.equal(lease1b.BackendData.PublicKey, keyBefore, "linend restarted publishes the same public key");
  const relearned = await waitFor(async () => /^linen_peers 1$/m.test((await linen.http("/metrics")).body), 30_000, 200);
  t.ok(relearned >= 0, `linen took host 2's lease from etcd again (${relearned} ms)`);
  const afterLinen = await ping({ from: h1!.pod, to: pod2, waitSec: 10 });
  t.match(afterLinen.out, / [1-3] received/, "after linend restarted, linen's pod reaches wireguard-go's");
  t.match((await ping({ from: h2!.pod, to: linen.podIp!, waitSec: 10 })).out, /3 received/, "and back");
});
