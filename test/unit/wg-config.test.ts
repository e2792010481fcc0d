// The wireguard backend's config, lease and key file, as flanneld's wireguard backend has them.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";

import { overlayMTU, parseNetworkConfig, type WireguardBackendConfig } from "../../src/config/network.js";
import { createBackend } from "../../src/backend/index.js";
import { wireguardBackend, wireguardLeaseAttrs } from "../../src/backend/wireguard.js";
import { decodeWireguardBackendData, encodeLeaseAttrs } from "../../src/subnet/lease.js";
import { publicKeyOf } from "../../src/wireguard/crypto.js";
import { keyFilePath, loadOrCreatePrivateKey } from "../../src/wireguard/keyfile.js";
import { parseStaticSetup } from "../../src/node/static.js";

const config = (backend: object) => parseNetworkConfig(JSON.stringify({ Network: "10.5.0.0/16", Backend: backend }));
const PSK = Buffer.alloc(32, 7).toString("base64");
const KEY = Buffer.alloc(32, 9).toString("base64");

t.test("config: flanneld's fields and defaults; what linen refuses says why", async (t) => {
  const d = config({ Type: "wireguard" }).backend as WireguardBackendConfig;
  t.same(d, { type: "wireguard", listenPort: 51820, presharedKey: null, persistentKeepalive: 0, mtu: null });
  t.equal(overlayMTU(d, 1500), 1420, "the external MTU less 80, as flanneld");
  const c = config({ Type: "WireGuard", ListenPort: 51999, PSK, PersistentKeepaliveInterval: 25, MTU: 9000, Mode: "auto" }).backend as WireguardBackendConfig;
  t.equal(c.listenPort, 51999);
  t.same(c.presharedKey, new Uint8Array(32).fill(7));
  t.equal(c.persistentKeepalive, 25);
  t.equal(overlayMTU(c, 1500), 8920);
  t.throws(() => config({ Type: "wireguard", Mode: "ipv6" }), /Mode "ipv6" is not supported by linen/);
  t.throws(() => config({ Type: "wireguard", Mode: "both" }), /no valid Mode configured/);
  t.throws(() => config({ Type: "wireguard", PSK: "c2hvcnQ=" }), /could not parse PSK/);
  t.throws(() => config({ Type: "wireguard", ListenPort: 70000 }), /ListenPort 70000/);
  t.throws(() => config({ Type: "wireguard", PersistentKeepaliveInterval: -1 }), /PersistentKeepaliveInterval/);
});

t.test("lease: BackendType and BackendData byte for byte as flanneld's json.Marshal; peers decoded", async (t) => {
  const pub = new Uint8Array(32).fill(1);
  const attrs = wireguardLeaseAttrs(0xc0a80102, pub, 51820);
  t.equal(encodeLeaseAttrs(attrs),
    `{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"wireguard","BackendData":{"PublicKey":"${Buffer.from(pub).toString("base64")}","Port":51820}}`);
  const d = decodeWireguardBackendData(attrs.backendData);
  t.ok(d.ok && d.value.port === 51820 && Buffer.from(d.value.publicKey).equals(Buffer.from(pub)));
  t.notOk(decodeWireguardBackendData('{"PublicKey":"bm9wZQ==","Port":1}').ok, "a short key");
  t.notOk(decodeWireguardBackendData('{"PublicKey":"' + KEY + '","Port":-1}').ok, "a bad port");
  t.notOk(decodeWireguardBackendData(null).ok);
  const be = wireguardBackend(config({ Type: "wireguard" }).backend as WireguardBackendConfig, () => new Uint8Array(32).fill(3));
  t.equal(be.accept, "wireguard");
  t.equal(be.deviceName, "flannel-wg");
  const peer = { key: "k", subnet: { ip: 0x0a050200, prefixLen: 24 }, publicIP: 0xc0a80102, vxlan: null };
  const r = be.route({ ...peer, attrs: { ...attrs, backendData: `{"PublicKey":"${KEY}"}` } });
  t.equal(r?.wireguard?.port, 51820, "a lease without Port is reached on our own ListenPort, as flanneld does");
  t.equal(be.route({ ...peer, attrs: { ...attrs, backendData: '{"PublicKey":"x"}' } }), null, "a lease without a usable key is no peer");
  t.equal(encodeLeaseAttrs(be.leaseAttrs(0xc0a80101, new Uint8Array(6))).includes(Buffer.from(publicKeyOf(new Uint8Array(32).fill(3))).toString("base64")), true);
  t.equal((await createBackend(config({ Type: "wireguard" }).backend)).mode, "wireguard");
});

t.test("key file: created 0400 in wg's base64 form, then reused; a bad file is an error that says what to do", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "linen-wgkey-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.equal(keyFilePath({}), "/run/flannel/wgkey");
  t.equal(keyFilePath({ WIREGUARD_KEY_FILE: "/x/y" }), "/x/y");
  const path = join(dir, "sub", "wgkey");
  const k1 = loadOrCreatePrivateKey(path);
  t.equal((statSync(path).mode & 0o777).toString(8), "400");
  t.equal(readFileSync(path, "utf8"), Buffer.from(k1).toString("base64"));
  t.same(loadOrCreatePrivateKey(path), k1, "the same key on the next start");
  const bad = join(dir, "bad");
  writeFileSync(bad, "not a key");
  t.throws(() => loadOrCreatePrivateKey(bad), /could not parse private key from file .*remove the file/);
});

t.test("static peers: the wireguard backend needs each peer's PublicKey", async (t) => {
  const base = { Network: "10.5.0.0/16", Backend: { Type: "wireguard" }, Subnet: "10.5.1.0/24" };
  const s = parseStaticSetup(JSON.stringify({ ...base, Peers: [{ Subnet: "10.5.2.0/24", PublicIP: "192.168.1.2", PublicKey: KEY, Port: 51999 }] }));
  t.equal(s.peers[0].wireguard?.port, 51999);
  t.throws(() => parseStaticSetup(JSON.stringify({ ...base, Peers: [{ Subnet: "10.5.2.0/24", PublicIP: "192.168.1.2" }] })), /PublicKey/);
});
