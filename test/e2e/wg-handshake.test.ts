// linen's WireGuard handshake and transport messages against a peer no one here wrote: Debian's
// wireguard-go, configured with `wg` as flanneld configures its device (private key, listen
// port; the peer with its public key, preshared key, endpoint, allowed IPs and keepalive).
// linen's side is test/fixtures/wg-endpoint.mjs on dist/src/wireguard, in its own namespace:
//   - linen initiates, pings through wireguard-go's device and gets the replies;
//   - wireguard-go, restarted, initiates to linen (a real `ping` from its namespace) and linen answers;
//   - a wrong preshared key is refused on both sides;
//   - tshark dissects the capture as WireGuard handshake and transport messages.
import { execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";

import { netnsLab } from "../helpers/netns.js";
import { generatePrivateKey, publicKeyOf } from "../../src/wireguard/crypto.js";
import type { ShError } from "../../lab/netns.js";

const ENDPOINT = fileURLToPath(new URL("../fixtures/wg-endpoint.mjs", import.meta.url));
const WG_PORT = 51820;
const LINEN_PORT = 51821;
const b64 = (b: Uint8Array): string => Buffer.from(b).toString("base64");

interface EndpointResult {
  handshakes: number;
  refusals: Record<string, number>;
  echoRequestsAnswered: number;
  echoRepliesReceived: number;
  replayRefused: boolean;
  keepalives: number;
  initiationsSent: number;
}

t.test("linen's handshake and transport interoperate with wireguard-go", async (t) => {
  const lab = netnsLab(t);
  const dir = mkdtempSync(join(tmpdir(), "linen-wg-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const peerNs = lab.ns();
  const linenNs = lab.ns();
  const [peerLink] = lab.veth(peerNs, linenNs, { aAddr: "192.168.77.1/24", bAddr: "192.168.77.2/24" });
  const dev = lab.name("w");

  const wgKey = execFileSync("wg", ["genkey"]).toString().trim();
  const wgPub = execFileSync("wg", ["pubkey"], { input: wgKey }).toString().trim();
  const linenKey = generatePrivateKey();
  const linenPub = b64(publicKeyOf(linenKey));
  const psk = execFileSync("wg", ["genpsk"]).toString().trim();
  writeFileSync(join(dir, "key"), wgKey + "\n", { mode: 0o400 });
  writeFileSync(join(dir, "psk"), psk + "\n", { mode: 0o400 });
  const capture = join(dir, "wg.pcap");
  const tshark = peerNs.spawn("tshark", ["-q", "-i", peerLink, "-w", capture, "-f", "udp"]);
  t.teardown(() => { if (tshark.exitCode === null) tshark.kill("SIGINT"); });

  let wireguardGo: ChildProcess | undefined;
  t.teardown(() => { if (wireguardGo?.exitCode === null) wireguardGo.kill("SIGKILL"); });
  const startWireguardGo = async (): Promise<void> => {
    const child = peerNs.spawn("wireguard-go", ["-f", dev]);
    wireguardGo = child;
    child.stderr?.resume();
    child.stdout?.resume();
    for (let i = 0; i < 100; i++) {
      try { peerNs.ip("link", "show", dev); break; } catch { await sleep(50); }
    }
    // As flanneld configures its device: key, port, then the peer from the other node's lease.
    peerNs.exec("wg", ["set", dev, "private-key", join(dir, "key"), "listen-port", String(WG_PORT),
      "peer", linenPub, "preshared-key", join(dir, "psk"), "endpoint", `192.168.77.2:${LINEN_PORT}`,
      "allowed-ips", "10.9.2.0/24", "persistent-keepalive", "25"]);
    peerNs.ip("addr", "add", "10.9.1.0/32", "dev", dev);
    peerNs.ip("link", "set", dev, "up");
    peerNs.ip("route", "add", "10.9.0.0/16", "dev", dev);
  };
  await startWireguardGo();
  await sleep(500);

  const runEndpoint = (mode: "initiate" | "respond", pskText: string, pings: number, seconds: number): Promise<EndpointResult> => {
    const cfg = {
      mode, privateKey: b64(linenKey), peerPublicKey: wgPub, presharedKey: pskText, listenPort: LINEN_PORT,
      peer: `192.168.77.1:${WG_PORT}`, address: "10.9.2.1", peerAddress: "10.9.1.0", pings, seconds,
    };
    const child = linenNs.spawn(process.execPath, [ENDPOINT, JSON.stringify(cfg)]);
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
    return new Promise((resolve, reject) => {
      child.once("exit", (code) => {
        const last = out.trim().split("\n").pop() ?? "";
        try { resolve(JSON.parse(last) as EndpointResult); } catch { reject(new Error(`wg-endpoint exited ${code}: ${err}${out}`)); }
      });
    });
  };

  // 1. linen initiates.
  const first = await runEndpoint("initiate", psk, 3, 20);
  t.comment(JSON.stringify(first));
  t.equal(first.handshakes, 1, "linen's initiation was answered and the response authenticated");
  t.equal(first.echoRepliesReceived, 3, "three echo replies came back through wireguard-go");
  t.ok(first.replayRefused, "a transport message received twice is refused the second time");
  const shown = peerNs.exec("wg", ["show", dev, "dump"]);
  t.match(shown, new RegExp(`${linenPub.replace(/[+/]/g, "\\$&")}\\t${psk.replace(/[+/]/g, "\\$&")}\\t192\\.168\\.77\\.2:${LINEN_PORT}`), "wireguard-go saw linen's endpoint");
  t.notMatch(shown.split("\n")[1] ?? "", /\t0\t0\t0\t/, "wireguard-go recorded a handshake and transfer");

  // 2. wireguard-go restarted: it initiates (a kernel ping from its namespace), linen responds.
  wireguardGo?.kill("SIGKILL");
  for (let i = 0; i < 100; i++) {
    try { peerNs.ip("link", "show", dev); await sleep(50); } catch { break; }
  }
  await startWireguardGo();
  const responder = runEndpoint("respond", psk, 3, 30);
  await sleep(500);
  let ping: string;
  try {
    ping = peerNs.exec("ping", ["-c", "3", "-i", "0.3", "-W", "5", "10.9.2.1"]);
  } catch (e) {
    ping = (e as ShError).stdout;
  }
  const second = await responder;
  t.comment(JSON.stringify(second));
  t.match(ping, /3 received/, "the kernel's pings through wireguard-go were answered by linen");
  t.ok(second.handshakes >= 1, "linen consumed wireguard-go's initiation and its response was accepted");
  t.equal(second.echoRequestsAnswered, 3);

  // 3. A PSK mismatch: wireguard-go's response does not authenticate for linen, and nothing passes.
  const wrong = await runEndpoint("initiate", b64(new Uint8Array(32).fill(7)), 1, 3);
  t.comment(JSON.stringify(wrong));
  t.equal(wrong.handshakes, 0, "no session with a wrong preshared key");
  t.ok((wrong.refusals["decrypt"] ?? 0) >= 1, "the response was refused as not authentic");
  t.equal(wrong.echoRepliesReceived, 0);

  // 4. What the wire carried, as tshark dissects it.
  tshark.kill("SIGINT");
  await new Promise((r) => tshark.once("exit", r));
  const types = peerNs.exec("tshark", ["-r", capture, "-d", `udp.port==${WG_PORT},wg`, "-d", `udp.port==${LINEN_PORT},wg`, "-Y", "wg", "-T", "fields", "-e", "wg.type"]);
  const seen = new Set(types.split("\n").map((s) => s.trim()).filter(Boolean));
  t.comment(`tshark wg.type values: ${[...seen].join(",")}`);
  t.ok(seen.has("1") && seen.has("2") && seen.has("4"), "handshake initiations, responses and transport data on the wire");
});
