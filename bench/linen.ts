// linen as a contender: linend in every host namespace, wired by hand with static peers
// (no etcd; lab/linend.ts), in either mode and with either engine.
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
    description: `linen ${o.mode === 'udp' ? 'UDP (flannel wire format)' : 'VXLAN'} mode, ${engine} engine` +
      (engine === 'native' ? `, offloads ${offload}` : ', one packet per call'),
    tunnelMtu: linenTunnelMtu(o.mode, o.underlayMtu),
    async setup(topo) {
      const linen = await startStaticLinen(topo, o);
      return { ...linen, nodes: linen.nodes, info: { engine, offload, mode: o.mode } };
    },
  };
}
