// A Kubernetes ClusterIP service emulated as kube-proxy (iptables mode) programs it: on the
// sending host, nat PREROUTING jumps to KUBE-SERVICES, which matches the service address and
// port and jumps to a KUBE-SVC chain, which jumps to one KUBE-SEP chain per endpoint that DNATs
// to the pod. Replies are un-NATed by conntrack on the way back through the same host. Pod-to-
// service traffic thus pays for conntrack and NAT on the sender's host, as in a cluster.
import { nsExec } from './netns.js';
import type { Topology } from './topology.js';

export interface ClusterIpService {
  /** The service's virtual address (what clients connect to). */
  ip: string;
  /** Ports served (TCP and UDP alike). */
  ports: number[];
  /** The pod the service forwards to. */
  backend: string;
  /** The host namespace that holds the rules. */
  ns: string;
}

/**
 * A service address for a topology: 10.96.0.10 (Kubernetes' usual first service address),
 * or 10.97.0.10 when the topology's cluster network is 10.96.0.0/16.
 */
export function serviceAddressFor(topo: Pick<Topology, 'clusterNet'>): string {
  return topo.clusterNet.startsWith('10.96.') ? '10.97.0.10' : '10.96.0.10';
}

const ipt = (ns: string, ...args: string[]): string => nsExec(ns, 'iptables', ['-w', '5', ...args], { timeout: 15_000 });

/**
 * Programs a ClusterIP service in host namespace `ns` (the sending pod's host): `ip`:`port` for
 * TCP and UDP → `backend`:`port`. The rules go with the namespace; remove() deletes them earlier.
 */
export function addClusterIpService(ns: string, ip: string, backend: string, ports: readonly number[]): ClusterIpService & { remove(): void } {
  const svc = 'KUBE-SVC-LINENBENCH';
  const sep = 'KUBE-SEP-LINENBENCH';
  ipt(ns, '-t', 'nat', '-N', 'KUBE-SERVICES');
  ipt(ns, '-t', 'nat', '-N', svc);
  ipt(ns, '-t', 'nat', '-N', sep);
  ipt(ns, '-t', 'nat', '-I', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES');
  ipt(ns, '-t', 'nat', '-I', 'OUTPUT', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES');
  for (const port of ports) {
    for (const proto of ['tcp', 'udp']) {
      ipt(ns, '-t', 'nat', '-A', 'KUBE-SERVICES', '-d', `${ip}/32`, '-p', proto, '--dport', String(port), '-j', svc);
      ipt(ns, '-t', 'nat', '-A', sep, '-p', proto, '--dport', String(port), '-j', 'DNAT', '--to-destination', `${backend}:${port}`);
    }
  }
  // One endpoint: kube-proxy still goes through the statistic-free last jump to the KUBE-SEP chain.
  ipt(ns, '-t', 'nat', '-A', svc, '-j', sep);
  return {
    ip, ports: [...ports], backend, ns,
    remove() {
      for (const chain of ['PREROUTING', 'OUTPUT']) {
        try { ipt(ns, '-t', 'nat', '-D', chain, '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'); } catch { /* gone */ }
      }
      for (const chain of ['KUBE-SERVICES', svc, sep]) {
        try { ipt(ns, '-t', 'nat', '-F', chain); ipt(ns, '-t', 'nat', '-X', chain); } catch { /* gone */ }
      }
    },
  };
}
