// linen as a contender: linend in every host namespace, wired by hand with static peers
// (no etcd; lab/linend.ts), in either overlay mode and with either engine, or as host-gw.
import type { Contender, ContenderHandle } from './contenders.js';
import type { Topology } from '../lab/topology.js';
import { linenTunnelMtu, startStaticLinen, type StaticLinen, type StaticLinenOptions } from '../lab/linend.js';

export interface LinenContenderOptions extends StaticLinenOptions {
  underlayMtu?: number;
}

export interface LinenHandle extends ContenderHandle, StaticLinen {}

export function linenContender(o: LinenContenderOptions): Contender & { setup(topo: Topology): Promise<LinenHandle> } {
  const engine = o.engine ?? 'native';
  const offload = o.offload ?? 'auto';
  const name = `linen-${o.mode}` + (engine === 'dgram' ? '-dgram' : offload === 'off' ? '-nooffload' : '');
  return {
    name,
    description: o.mode === 'host-gw'
      ? 'linen host-gw backend: linend keeps kernel routes via the peers\' underlay IPs, the kernel forwards (should match host-gw)'
      : `linen ${o.mode === 'udp' ? 'UDP (flannel wire format)' : o.mode === 'wireguard' ? 'WireGuard (one worker, batch ChaCha20-Poly1305 in the addon)' : 'VXLAN'} mode, ${engine} engine` +
        (engine === 'native' ? `, offloads ${offload}` : ', one packet per call'),
    tunnelMtu: linenTunnelMtu(o.mode, o.underlayMtu),
    async setup(topo) {
      const linen = await startStaticLinen(topo, o);
      // host-gw: the kernel forwards (softirq), linend only keeps routes, so its CPU is counted
      // on the kernel contenders' basis (no dataplane processes), as plain host-gw's.
      const pids = o.mode === 'host-gw' ? (): number[] => [] : linen.pids;
      return { ...linen, pids, daemons: linen.pids, nodes: linen.nodes, info: { engine, offload, mode: o.mode } };
    },
  };
}
