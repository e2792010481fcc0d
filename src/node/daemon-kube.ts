// Kube mode (--kube-subnet-mgr), flanneld's kube subnet manager with linen's data path: the
// network config from --net-config-path, the subnet from the node's pod CIDR, the lease in the
// node's annotations, the peers from a list + watch of the nodes fed to the same peer set
// (and admission) as etcd mode, then NetworkUnavailable=False on the node. The Kubernetes
// client is loaded only here.
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { Options } from './flags.js';
import { createBackend, randomVtepMAC } from '../backend/index.js';
import { startHttpServers } from './http.js';
import type { Metric } from '../metric.js';
import { formatCIDR } from '../net.js';
import { parseNetworkConfig } from '../config/network.js';
import { LeaseWatcher } from '../subnet/watcher.js';
import { readSubnetEnv } from '../config/subnetenv.js';
import { leftoverVtepMAC } from '../device/takeover.js';
import { notifyReady } from './systemd.js';
import { controlPlaneMetrics } from '../metrics/control-plane.js';
import { checkSubnetFile, resolveInterface } from './setup.js';
import { debugHooks } from './debug.js';
import { Readiness } from './readiness.js';
import { NodeParts, aborted, directRoutesFor, httpEndpoints, wireguardSeries, type NodeSetup } from './daemon.js';
import { annotationNames, storedVtepMAC } from '../subnet/kube/annotations.js';
import { KubeLeaseManager, resolveNodeName } from '../subnet/kube/manager.js';
import { KubeLeaseSource } from '../subnet/kube/source.js';

export async function runKube(o: Options, log: Logger, signal: AbortSignal): Promise<number> {
  checkSubnetFile(o.subnetFile);
  const names = annotationNames(o.kubeAnnotationPrefix);
  let confText: string;
  try {
    confText = readFileSync(o.netConfigPath, 'utf8');
  } catch (e) {
    throw new Error(`failed to read net conf: ${(e as Error).message} (--net-config-path)`);
  }
  let config;
  try {
    config = parseNetworkConfig(confText);
  } catch (e) {
    throw new Error(`error parsing subnet config: ${(e as Error).message} (in ${o.netConfigPath})`);
  }
  const { KubeClient, kubeConfigFor } = await import('../subnet/kube/client.js');
  const client = new KubeClient(kubeConfigFor({ apiUrl: o.kubeApiUrl, kubeconfig: o.kubeconfigFile }));
  const nodeName = await resolveNodeName(process.env, client);
  log.info(`Kubernetes subnet manager for node "${nodeName}" (API server ${client.server}, annotation prefix ${names.subnetKubeManaged.replace(/kube-subnet-manager$/, '')})`);
  const source = new KubeLeaseSource(client, names, log.child('kube'));
  const manager = new KubeLeaseManager({ client, nodeName, names, log: log.child('kube') });

  const parts = new NodeParts();
  const ready = new Readiness(log);
  const metrics = (): Metric[] => [
    { name: 'linen_kube_api_connected', help: 'Whether the last request to the Kubernetes API server succeeded.', type: 'gauge', value: source.connection().state === 'connected' ? 1 : 0 },
    ...(parts.peers?.metrics() ?? []),
    ...(parts.kernel?.metrics() ?? []),
    ...wireguardSeries(parts.engine),
    ...ready.metrics(),
    ...controlPlaneMetrics({ etcd: null, lease: null, rules: parts.rules }),
  ];
  const health = await startHttpServers(httpEndpoints(o), { engine: () => parts.engine?.stats() ?? null, refresh: async () => parts.engine?.refresh(), extra: metrics }, debugHooks(() => parts.engine));
  ready.report(health);
  source.onConnectionChange((s) => {
    if (s.state === 'disconnected') log.warn(`Kubernetes API server unreachable (${s.lastError ?? 'unknown error'}); forwarding continues with the ${parts.peers?.size ?? 0} last known peer(s)`);
    else if (s.state === 'connected') log.info('Kubernetes API server connection established');
  });
  try {
    const node = await manager.node(signal);
    // flanneld reads the admin's node-public-ip annotation at start-up as --public-ip.
    const annotatedIP = node.annotations[names.nodePublicIP] ?? '';
    if (annotatedIP !== '') log.info(`Using ${annotatedIP} from node annotation ${names.nodePublicIP} as the public IP`);
    const { ext, publicIP } = resolveInterface(annotatedIP !== '' ? { ...o, publicIP: annotatedIP } : o, log);
    const backend = await createBackend(config.backend);
    parts.kernel = directRoutesFor(backend, ext, publicIP, log);
    const mtu = backend.mtu(ext.mtu);
    const previous = readSubnetEnv(o.subnetFile);
    // The VtepMAC in the node's backend-data is in the peers' FDB: keep it across restarts.
    const stored = storedVtepMAC(names, node);
    const mac = backend.mode === 'vxlan' ? stored ?? leftoverVtepMAC(backend.deviceName) ?? randomVtepMAC() : new Uint8Array(6);
    const own = await manager.acquire(config, backend.leaseAttrs(publicIP, mac), signal);
    log.info(`Acquired lease ${formatCIDR(own)} (node "${nodeName}" podCIDR)`);
    const setup: NodeSetup = { config, backend, ext, publicIP, subnet: own, mac, mtu };
    const peerSet = await parts.start(o, setup, previous, ready, log, signal);
    if (peerSet === null) return 0;

    const watcher = new LeaseWatcher({ registry: source, ownSubnet: own, accept: backend.accept, log: log.child('watch') });
    const watching = peerSet.run(watcher, signal);
    await Promise.race([watcher.ready, aborted(signal)]);
    if (!signal.aborted) {
      if (o.setNodeNetworkUnavailable) {
        await manager.setNetworkAvailable(signal);
        log.info(`Set node "${nodeName}" condition NetworkUnavailable=False`);
      }
      parts.started();
      ready.up();
      notifyReady(log);
      log.info(`Running: ${watcher.peers().size} peer(s)`);
    }
    await aborted(signal);
    await watching;
    return 0;
  } finally {
    await parts.stop(log);
    await health?.close();
  }
}
