// linend's wireguard backend (static peers, the native engine) against Debian's wireguard-go set
// up as flanneld sets up its wireguard device: flannel-wg with the lease subnet's address /32
// and the whole network routed to it, ListenPort 51820, the peer with its public key, PSK,
// endpoint (PublicIP:Port from its lease), allowed IPs (its subnet) and keepalive.
// Pings and SHA-256-checked TCP transfers both ways, tshark's dissection of the wire, the
// wireguard-go side restarted, linend restarted with the same key from its key file, and a PSK
// mismatch refused.
import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";

import { netnsLab } from "../helpers/netns.js";
import { linendPath } from "../../lab/linend.js";
import { transfer } from "../../lab/transfer.js";
import { waitFor } from "../../lab/wait.js";
import { startWireguardGoDevice, type WireguardGoDevice } from "../../lab/wireguard-go.js";
import { publicKeyOf } from "../../src/wireguard/crypto.js";
import type { Netns, ShError } from "../../lab/netns.js";

const MB = 1 << 20;
const PORT = 51820;
const NETWORK = "10.6.0.0/16";
const LINEN_SUBNET = "10.6.1.0/24";
const WG_SUBNET = "10.6.2.0/24";
const LINEN_IP = "192.168.78.2";
const WG_IP = "192.168.78.1";
const UNDERLAY_MTU = 1500;

interface Transfer { linenRx: number; linenTx: number; wgoRx: number; wgoTx: number }

/** UDP datagrams the namespace's kernel dropped for a full receive buffer. */
function udpReceiveErrors(ns: Netns): number {
  const [names, values] = ns.exec("cat", ["/proc/net/snmp"]).split("\n").filter((l) => l.startsWith("Udp:")).map((l) => l.split(/\s+/));
  return Number(values?.[names?.indexOf("RcvbufErrors") ?? -1] ?? NaN);
}

function pingOut(ns: Netns, to: string, count = 3): string {
  try {
    return ns.exec("ping", ["-c", String(count), "-i", "0.3", "-W", "3", to], { timeout: 60_000 });
  } catch (e) {
    return (e as ShError).stdout ?? "";
  }
}

t.test("linend's wireguard backend interoperates with wireguard-go configured as flanneld's device", async (t) => {
  const lab = netnsLab(t);
  const dir = mkdtempSync(join(tmpdir(), "linen-wgi-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const wgNs = lab.ns();
  const linenNs = lab.ns();
  const [wgLink, linenLink] = lab.veth(wgNs, linenNs, { aAddr: `${WG_IP}/24`, bAddr: `${LINEN_IP}/24`, mtu: UNDERLAY_MTU });
  const dev = lab.name("w"); // the UAPI socket path is global: a unique name, not flannel-wg

  const wgKey = execFileSync("wg", ["genkey"]).toString().trim();
  const wgPub = execFileSync("wg", ["pubkey"], { input: wgKey }).toString().trim();
  const psk = execFileSync("wg", ["genpsk"]).toString().trim();
  writeFileSync(join(dir, "wg.key"), wgKey, { mode: 0o400 });
  writeFileSync(join(dir, "psk"), psk, { mode: 0o400 });
  const keyFile = join(dir, "run", "wgkey");

  const capture = join(dir, "wire.pcap");
  const tshark = wgNs.spawn("tshark", ["-q", "-i", wgLink, "-w", capture, "-f", `udp port ${PORT}`]);
  t.teardown(() => { if (tshark.exitCode === null) tshark.kill("SIGKILL"); });

  // --- linend ---
  let linend: ChildProcess | null = null;
  let linenLog = "";
  const startLinend = async (pskText: string): Promise<void> => {
    const file = join(dir, "static.json");
    writeFileSync(file, JSON.stringify({
      Network: NETWORK, Backend: { Type: "wireguard", PSK: pskText, PersistentKeepaliveInterval: 0 }, Subnet: LINEN_SUBNET,
      Peers: [{ Subnet: WG_SUBNET, PublicIP: WG_IP, PublicKey: wgPub, Port: PORT }],
    }));
    linenLog = "";
    const child = linenNs.spawn(process.execPath, [linendPath(), "--static-peers", file, "--subnet-file", join(dir, "subnet.env"),
      "--iface", linenLink, "--engine", "native", "--queues", "1", "--healthz-port", "8471"], { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, WIREGUARD_KEY_FILE: keyFile } });
    child.stderr?.on("data", (d: Buffer) => { linenLog += d.toString(); });
    linend = child;
    const took = await waitFor(() => {
      if (linenLog.includes("Static peers:")) return true;
      if (child.exitCode !== null) throw new Error(`linend exited:\n${linenLog}`);
      return false;
    }, 90_000);
    if (took < 0) throw new Error(`linend not ready after 90 s:\n${linenLog}`);
  };
  const stopLinend = async (): Promise<void> => {
    const c = linend;
    if (!c || c.exitCode !== null) return;
    const gone = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await gone;
  };
  t.teardown(async () => { if (linend && linend.exitCode === null) linend.kill("SIGKILL"); });

  await startLinend(psk);
  const mode = statSync(keyFile).mode & 0o777;
  t.equal(mode.toString(8), "400", "the key file is created with mode 0400");
  const linenPub = Buffer.from(publicKeyOf(new Uint8Array(Buffer.from(readFileSync(keyFile, "utf8"), "base64")))).toString("base64");

  // --- wireguard-go, as flanneld configures its device ---
  let wgo: WireguardGoDevice | null = null;
  const startWireguardGo = async (): Promise<void> => {
    wgo = await startWireguardGoDevice(wgNs, {
      dev, keyFile: join(dir, "wg.key"), listenPort: PORT, subnet: WG_SUBNET, network: NETWORK, underlayMtu: UNDERLAY_MTU,
      peers: [{ publicKey: linenPub, pskFile: join(dir, "psk"), endpoint: `${LINEN_IP}:${PORT}`, allowedIps: LINEN_SUBNET }],
    });
  };
  const stopWireguardGo = async (): Promise<void> => { await wgo?.stop(); };
  t.teardown(() => wgo?.stop());
  await startWireguardGo();

  /** Polls both sides' transfer counters (linen's /metrics, wireguard-go's wg show) until
   * `holds` is true of them, at most 30 s; took is -1 if it never was. */
  const transferAgrees = async (holds: (c: Transfer) => boolean): Promise<{ took: number; shown: Transfer }> => {
    let shown: Transfer = { linenRx: NaN, linenTx: NaN, wgoRx: NaN, wgoTx: NaN };
    const took = await waitFor(() => {
      const m = linenNs.exec("curl", ["-sf", "http://127.0.0.1:8471/metrics"]);
      const peer = wgNs.exec("wg", ["show", dev, "dump"]).split("\n")[1]?.split("\t") ?? [];
      shown = {
        linenRx: Number(/^linen_wireguard_peer_receive_bytes_total\{[^}]*\} (\d+)/m.exec(m)?.[1] ?? NaN),
        linenTx: Number(/^linen_wireguard_peer_transmit_bytes_total\{[^}]*\} (\d+)/m.exec(m)?.[1] ?? NaN),
        wgoRx: Number(peer[5]), wgoTx: Number(peer[6]),
      };
      return holds(shown);
    }, 30_000, 500);
    return { took, shown };
  };
  const linenSide = () => linenLog.split("\n").slice(-20).join("\n");
  try {
    // The first packet starts the handshake; linen keeps it (and those after it) until then.
    t.match(pingOut(linenNs, "10.6.2.0"), /3 received/, "linen's first pings to wireguard-go's node are all answered");
    t.match(pingOut(wgNs, "10.6.1.0"), /3 received/, "wireguard-go's node pings linen");
    // Transfer as wg show counts it: once both sides are quiet, what linen says it sent is what
    // wireguard-go says it received, and the other way round (linen reports once a second).
    const quiet = await transferAgrees((c) => c.linenTx === c.wgoRx && c.linenRx === c.wgoTx);
    t.ok(quiet.took >= 0, `after the pings linen's transfer counters equal wireguard-go's wg show: ${JSON.stringify(quiet.shown)} (${quiet.took} ms)`);
    const there = await transfer(linenNs.name, wgNs.name, "10.6.2.0", 32 * MB, 120_000);
    t.equal(there.received, there.sent, `TCP linen -> wireguard-go, SHA-256 equal (${(there.bytes * 8 / there.seconds / 1e9).toFixed(2)} Gbit/s on a shared 2-core machine)`);
    const back = await transfer(wgNs.name, linenNs.name, "10.6.1.0", 32 * MB, 120_000);
    t.equal(back.received, back.sent, `TCP wireguard-go -> linen, SHA-256 equal (${(back.bytes * 8 / back.seconds / 1e9).toFixed(2)} Gbit/s)`);
    const dump = wgNs.exec("wg", ["show", dev, "dump"]).split("\n")[1]?.split("\t") ?? [];
    t.equal(dump[2], `${LINEN_IP}:${PORT}`, "wireguard-go's peer endpoint is linen's PublicIP and ListenPort");
    t.ok(Number(dump[4]) > 0, "wireguard-go recorded a handshake with linen");
    const metrics = linenNs.exec("curl", ["-sf", "http://127.0.0.1:8471/metrics"]);
    const sample = (re: RegExp): number => Number(re.exec(metrics)?.[1] ?? NaN);
    t.ok(sample(/linen_wireguard_events_total\{event="handshakes_completed"\} (\d+)/) >= 1, "/metrics counts the completed handshake");
    t.ok(sample(/linen_wireguard_peer_last_handshake_seconds\{[^}]*public_key="[^"]+"[^}]*\} (\d+)/) > 1.7e9, "and shows the peer's last handshake time");
    t.match(metrics, /linen_packets_total\{[^}]*verdict="forwarded"/, "with the usual packet counters");
    // After the transfers: wireguard-go's side loses datagrams it cannot take in time (its UDP
    // receive errors), which linen counted as sent; linen takes in all that wireguard-go sent.
    const after = await transferAgrees((c) => c.linenRx === c.wgoTx && c.linenTx >= c.wgoRx);
    const { linenTx, wgoRx } = after.shown;
    const dropped = udpReceiveErrors(wgNs);
    t.ok(after.took >= 0, `after the transfers, received by linen = sent by wireguard-go, and linen sent ${linenTx - wgoRx} bytes more than wireguard-go took in (${dropped} UDP receive errors there): ${JSON.stringify(after.shown)}`);
    t.equal(linenTx > wgoRx, dropped > 0, "linen counted more than wireguard-go only where wireguard-go's kernel dropped datagrams");
    t.ok(after.shown.linenRx > 32 * MB && linenTx > 32 * MB, "the counters carry both transfers");

    // wireguard-go restarted: it has no sessions; its node's traffic makes it initiate.
    await stopWireguardGo();
    await startWireguardGo();
    pingOut(wgNs, "10.6.1.0", 1);
    t.match(pingOut(wgNs, "10.6.1.0"), /3 received/, "after wireguard-go restarted, its node pings linen");
    t.match(pingOut(linenNs, "10.6.2.0"), /3 received/, "and linen pings back");

    // linend restarted: the same key from the key file, so wireguard-go still knows it.
    await stopLinend();
    await startLinend(psk);
    pingOut(linenNs, "10.6.2.0", 1);
    t.match(pingOut(linenNs, "10.6.2.0"), /3 received/, "after linend restarted with its key file, linen pings wireguard-go");
    t.match(pingOut(wgNs, "10.6.1.0"), /3 received/, "and wireguard-go's node pings linen");

    // A PSK mismatch: no session, nothing passes.
    await stopLinend();
    await startLinend(execFileSync("wg", ["genpsk"]).toString().trim());
    pingOut(linenNs, "10.6.2.0", 1);
    t.match(pingOut(linenNs, "10.6.2.0"), /0 received/, "with another PSK nothing passes from linen");
    t.match(pingOut(wgNs, "10.6.1.0"), /0 received/, "nor from wireguard-go's node");
  } catch (e) {
    t.comment(`linend log:\n${linenSide()}`);
    throw e;
  }

  tshark.kill("SIGINT");
  await new Promise((r) => tshark.once("exit", r));
  await sleep(100);
  const types = wgNs.exec("tshark", ["-r", capture, "-d", `udp.port==${PORT},wg`, "-Y", "wg", "-T", "fields", "-e", "wg.type"]);
  const counts = new Map<string, number>();
  for (const ty of types.split("\n").map((s) => s.trim()).filter(Boolean)) counts.set(ty, (counts.get(ty) ?? 0) + 1);
  t.comment(`tshark: WireGuard messages by type ${JSON.stringify(Object.fromEntries(counts))}`);
  t.ok((counts.get("1") ?? 0) > 0 && (counts.get("2") ?? 0) > 0, "handshake initiations and responses on the wire");
  t.ok((counts.get("4") ?? 0) > 1000, "transport data messages on the wire");
});
