// This node's lease in kube mode, as flanneld's kube subnet manager holds it: the subnet is the
// node's pod CIDR (assigned by the controller manager; linen waits for it), the lease is
// published by annotating the node (a strategic-merge patch of nodes/status that carries only
// the annotations that change), and once linen is up the node's NetworkUnavailable condition
// is set False with flanneld's reason and message. There is nothing to renew.
import type { NetworkConfig } from '../../config/network.js';
import { formatCIDR, netContains, type IPv4Net } from '../../net.js';
import { nullLogger, type Logger } from '../../log.js';
import { Backoff } from '../../backoff.js';
import { realClock, type Clock } from '../clock.js';
import type { LeaseAttrs } from '../lease.js';
import { RegistryError } from '../registry.js';
import { annotationPatch, leaseAnnotations, nodePodCIDR, type AnnotationNames, type NodeView } from './annotations.js';
import { NodeNotFoundError, type KubeClient } from './client.js';

/** flanneld's condition reason and message: kube tooling sees the same thing with linen. */
export const NETWORK_UP_REASON = 'FlannelIsUp';
export const NETWORK_UP_MESSAGE = 'Flannel is running on this node';

export interface KubeLeaseOptions {
  client: Pick<KubeClient, 'getNode' | 'patchNodeStatus'>;
  nodeName: string;
  names: AnnotationNames;
  log?: Logger;
  clock?: Clock;
  /** Between two looks at a node that has no pod CIDR yet; default 3 s. */
  pollMs?: number;
}

/** Errors worth waiting out: the API server unreachable, or the node not registered yet. */
const waitable = (e: unknown): boolean => e instanceof NodeNotFoundError || (e instanceof RegistryError && (e.kind === 'unavailable' || e.kind === 'timeout'));

export class KubeLeaseManager {
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly pollMs: number;

  constructor(private readonly o: KubeLeaseOptions) {
    this.log = o.log ?? nullLogger;
    this.clock = o.clock ?? realClock;
    this.pollMs = o.pollMs ?? 3000;
  }

  /** The node, waiting while it is not registered yet or the API server does not answer. */
  async node(signal: AbortSignal): Promise<NodeView> {
    const backoff = new Backoff(this.pollMs, 30_000);
    for (;;) {
      if (signal.aborted) throw new Error(`interrupted while reading node "${this.o.nodeName}"`);
      try {
        return await this.o.client.getNode(this.o.nodeName);
      } catch (e) {
        if (!waitable(e)) throw e;
        const d = backoff.next();
        this.log.warn(`${(e as Error).message}; trying again in ${Math.round(d / 1000)} s`);
        await this.clock.sleep(d, signal);
      }
    }
  }

  /**
   * Waits for the node's pod CIDR, checks it lies in the network, and publishes `attrs` in the
   * node's annotations. Returns the subnet.
   */
  async acquire(config: Pick<NetworkConfig, 'network'>, attrs: LeaseAttrs, signal: AbortSignal): Promise<IPv4Net> {
    let node = await this.node(signal);
    let subnet: IPv4Net | null;
    for (;;) {
      const cidr = nodePodCIDR(node);
      if (!cidr.ok) throw new Error(cidr.error);
      subnet = cidr.value;
      if (subnet !== null) break;
      this.log.warn(`node "${this.o.nodeName}" pod cidr not assigned yet (spec.podCIDR is empty): waiting for the controller manager to assign one (kube-controller-manager --allocate-node-cidrs)`);
      await this.clock.sleep(this.pollMs, signal);
      if (signal.aborted) throw new Error(`interrupted while waiting for node "${this.o.nodeName}" to get a pod CIDR`);
      node = await this.node(signal);
    }
    const net = config.network;
    if (subnet.prefixLen < net.prefixLen || !netContains(net, subnet.ip)) {
      throw new Error(`subnet "${formatCIDR(net)}" specified in the flannel net config doesn't contain "${formatCIDR(subnet)}" PodCIDR of the "${this.o.nodeName}" node`);
    }
    const changes = leaseAnnotations(this.o.names, node.annotations, attrs);
    const overwrite = node.annotations[this.o.names.publicIPOverwrite] ?? '';
    if (overwrite !== '' && changes[this.o.names.publicIP] !== undefined) {
      this.log.info(`Overriding public ip with '${overwrite}' from node annotation '${this.o.names.publicIPOverwrite}'`);
    }
    if (Object.keys(changes).length > 0) await this.patch(annotationPatch(changes), signal);
    return subnet;
  }

  /** Sets NetworkUnavailable=False with flanneld's reason, as flanneld does once it is up. */
  async setNetworkAvailable(signal: AbortSignal): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = { type: 'NetworkUnavailable', status: 'False', lastHeartbeatTime: now, lastTransitionTime: now, reason: NETWORK_UP_REASON, message: NETWORK_UP_MESSAGE };
    await this.patch(JSON.stringify({ status: { conditions: [condition] } }), signal);
  }

  /** One status patch, tried again while the API server is unreachable. */
  private async patch(body: string, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(1000, 30_000);
    for (;;) {
      try {
        await this.o.client.patchNodeStatus(this.o.nodeName, body);
        return;
      } catch (e) {
        if (!waitable(e) || signal.aborted) throw e;
        const d = backoff.next();
        this.log.warn(`${(e as Error).message}; trying again in ${Math.round(d / 1000)} s`);
        await this.clock.sleep(d, signal);
      }
    }
  }
}

/**
 * The node linend runs on, as flanneld finds it: NODE_NAME, else the node of the pod named by
 * POD_NAME and POD_NAMESPACE.
 */
export async function resolveNodeName(env: NodeJS.ProcessEnv, client: Pick<KubeClient, 'podNodeName'>): Promise<string> {
  const node = env['NODE_NAME'] ?? '';
  if (node !== '') return node;
  const pod = env['POD_NAME'] ?? '';
  const ns = env['POD_NAMESPACE'] ?? '';
  if (pod === '' || ns === '') throw new Error('env variables POD_NAME and POD_NAMESPACE must be set');
  const name = await client.podNodeName(ns, pod);
  if (name === '') throw new Error(`node name not present in pod spec '${ns}/${pod}'`);
  return name;
}
