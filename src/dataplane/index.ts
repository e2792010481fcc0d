// Starting the data plane for a backend: picks the engine, opens the TUN through it, and
// configures the device once it exists.
import { configureTun } from '../device/tun.js';
import type { IPv4Net } from '../net.js';
import { DgramEngine } from './dgram-engine.js';
import { NativeEngine } from './native-engine.js';
import type { Engine, EngineEvents, EngineFeatures, EngineName, EngineOptions, OffloadSetting, RouteSource } from './engine.js';
import type { Mode } from './core.js';
import type { WireguardEngineOptions } from './engine.js';

/** What the data plane needs of the backend (src/backend/'s Backend has it): the tunnel's framing,
 * device and port. Declared here so that dataplane/ imports nothing from backend/, which is above it. */
export interface TunnelSpec {
  readonly mode: Mode;
  readonly deviceName: string;
  readonly port: number;
  readonly vni: number;
  readonly wireguard?: () => WireguardEngineOptions;
}

/** Makes the native engine; the default is NativeEngine's constructor. */
export type NativeEngineFactory = (opts: EngineOptions, routes: RouteSource, events: EngineEvents) => Engine;

export interface DataplaneOptions {
  backend: TunnelSpec;
  engine: EngineName;
  queues: number;
  offload: OffloadSetting;
  bindAddr: string;
  mtu: number;
  network: IPv4Net;
  subnet: IPv4Net;
  mac: Uint8Array;
  /** The peer set: the engine reads its routes from there. */
  routes: RouteSource;
  events?: EngineEvents;
  /** A test wrapper of the native engine (the debug hooks'). */
  nativeEngine?: NativeEngineFactory;
}

export async function startDataplane(o: DataplaneOptions): Promise<{ engine: Engine; features: EngineFeatures }> {
  if (o.backend.mode === 'wireguard' && o.engine !== 'native') {
    throw new Error('the wireguard backend needs the native engine (--engine native): the dgram engine does not encrypt');
  }
  const engineOpts = {
    mode: o.backend.mode, device: o.backend.deviceName, bindAddr: o.bindAddr, port: o.backend.port,
    mtu: o.mtu, subnet: o.subnet, network: o.network, vni: o.backend.vni, mac: o.mac, offload: o.offload,
    // WireGuard: one worker, as a session's send counter must be one sequence.
    queues: o.backend.mode === 'wireguard' ? 1 : o.queues,
    wireguard: o.backend.wireguard?.(),
  };
  const tun = { name: o.backend.deviceName, addr: o.subnet.ip, mtu: o.mtu, network: o.network };
  // A worker that died took a single-queue TUN with it; its replacement creates a bare one.
  const events: EngineEvents = {
    ...o.events,
    workerRestarted: (i) => {
      try { configureTun(tun); } catch (e) { o.events?.workerRestart?.(i, `reconfiguring ${tun.name} failed: ${(e as Error).message}`); }
      o.events?.workerRestarted?.(i);
    },
  };
  const native = o.nativeEngine ?? ((opts, routes, ev) => new NativeEngine(opts, routes, ev));
  const engine: Engine = o.engine === 'dgram' ? new DgramEngine(engineOpts, o.routes, events) : native(engineOpts, o.routes, events);
  const features = await engine.start();
  try {
    configureTun(tun);
  } catch (e) {
    await engine.stop();
    throw e;
  }
  return { engine, features };
}
