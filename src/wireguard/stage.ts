// WireGuard mode's stage of a worker loop (the WireguardStage the data plane's loop defines):
// the batch crypto around the core (WgDataPath) and the handshake control path with its timers
// (WgControl), on the addon. A worker loads this module only in wireguard mode, by the URL the
// backend puts in its options (stageModule), so that the data plane imports nothing from here.
import type { Core } from "../dataplane/core.js";
import type { NativeIO } from "../addon/native.js";
import type { WireguardStage } from "../dataplane/loop.js";
import type { StartStage } from "../dataplane/addon-io.js";
import type { UdpPorts } from "../dataplane/io.js";
import { LAYOUT as L } from "../dataplane/abi.js";
import type { SlottedRoute, WorkerData, WorkerReport } from "../dataplane/protocol.js";
import type { WgNative } from "./crypto.js";
import { WgDataPath } from "./datapath.js";
import { WgControl } from "./control.js";
import { formatCIDR } from "../net.js";

// WireGuard's timers (retransmits, keepalives, expiry) are checked at least this often.
const WG_TICK_MS = 100;
// The peers' state and the control path's counters go to the main thread at most this often
// (and on every publish request), not with every publish.
const WG_REPORT_MS = 1000;
// A TUN read batch ends at this many bytes (four TCP super-packets). A batch is sealed whole
// before any of it is sent, and sealing costs about twice what the rest of forwarding does, so
// a full batch (64 super-packets, 4 MiB) would hold its first packet for milliseconds while
// the other host's worker waits for it: one TCP stream then leaves cores idle.
const WG_EGRESS_BUDGET = 256 << 10;

class AddonWireguardStage implements WireguardStage {
  readonly tickMs = WG_TICK_MS;
  readonly egressBudget = WG_EGRESS_BUDGET;
  private readonly dp: WgDataPath;
  private readonly control: WgControl;
  private reportedAt = 0;

  constructor(
    native: NativeIO & WgNative, core: Core, options: NonNullable<WorkerData["options"]["wireguard"]>,
    private readonly listenPort: number, private readonly udp: UdpPorts, private readonly post: (r: WorkerReport) => void,
  ) {
    this.dp = new WgDataPath(core, native);
    this.control = new WgControl(this.dp, options);
  }

  setPeer({ route }: SlottedRoute, routeIndex: number): void {
    const w = route.wireguard;
    if (w) this.control.setPeer({ route: routeIndex, publicKey: w.publicKey, addr: route.publicIP, port: w.port, allowedIps: formatCIDR(route.subnet) });
  }

  removePeer(routeIndex: number): void { this.control.removePeer(routeIndex); }

  tick(now: number): void {
    this.control.tick(now);
  }

  afterEgress(now: number): void {
    this.dp.sealEgress();
    const wants = this.dp.wants();
    if (wants.length > 0) this.control.want(wants, now);
  }

  beforeIngress(count: number, now: number): void {
    const handshakes = this.dp.openIngress(count);
    if (handshakes.length > 0) this.control.receive(handshakes, now);
  }

  drain(): number {
    const { messages, keepalives, installed } = this.control.drain();
    const n = messages.length + keepalives.length > 0 ? this.dp.queueControl(messages, keepalives) : 0;
    let sent = n > 0 ? this.udp.sendBatch(L.WG_OUT_DESC, n) : 0;
    // After the handshake messages, so that a responder's confirmation goes out first.
    const staged = installed ? this.dp.releaseStaged(Date.now()) : 0;
    if (staged > 0) sent += this.udp.sendBatch(L.SEND_DESC, staged);
    return sent;
  }

  report(now: number, force: boolean): void {
    if (!force && now - this.reportedAt < WG_REPORT_MS) return;
    this.reportedAt = now;
    this.post({
      type: "wireguard", publicKey: Buffer.from(this.control.publicKey).toString("base64"), listenPort: this.listenPort,
      peers: this.control.status(), events: { ...this.control.events },
    });
  }
}

/** WireGuard mode's stage of a worker. Its datagrams go out through `udp`, the worker's UDP ports. */
export const startStage: StartStage = (native, core, data, udp) => {
  const o = data.options.wireguard;
  if (!o) throw new Error("linen: wireguard mode needs the node's keys");
  return new AddonWireguardStage(
    native as NativeIO & WgNative, core, o, data.options.port, udp, (r) => data.port.postMessage(r),
  );
};
