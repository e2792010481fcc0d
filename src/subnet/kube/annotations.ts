// The node annotations that hold a lease in kube mode, byte-compatible with flanneld's
// kube subnet manager: their names under --kube-annotation-prefix, the values a node writes
// for its own lease, and a node read back as a lease (the peers' side). Nothing here talks to
// the API server; decoders never throw on bad input.
import { formatIPv4, parseCIDR, parseIPv4, parseMAC, type IPv4Net } from '../../net.js';
import { makeSubnetKey, parseSubnetName, type Lease, type LeaseAttrs, type Result, type SubnetKey } from '../lease.js';

export interface AnnotationNames {
  readonly subnetKubeManaged: string;
  readonly backendData: string;
  readonly backendV6Data: string;
  readonly backendType: string;
  readonly publicIP: string;
  readonly publicIPv6: string;
  readonly nodePublicIP: string;
  readonly nodePublicIPv6: string;
  readonly publicIPOverwrite: string;
  readonly publicIPv6Overwrite: string;
}

/**
 * The annotation names for a prefix, validated as flanneld validates it: at most one '/'
 * (none: '/' is appended), a prefix that ends neither in '/' nor '-' gets a '-', and the
 * result must be `fqdn/` optionally followed by a `name-` part, in lower case. Throws an
 * Error with flanneld's text otherwise.
 */
export function annotationNames(prefix: string): AnnotationNames {
  const slashes = prefix.split('/').length - 1;
  if (slashes > 1) throw new Error('subnet/kube: prefix can contain at most single slash');
  let p = slashes === 0 ? `${prefix}/` : prefix;
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  // Anchored only at the end, exactly as flanneld's check.
  if (!/(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new Error('subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*');
  }
  return {
    subnetKubeManaged: `${p}kube-subnet-manager`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    backendType: `${p}backend-type`,
    publicIP: `${p}public-ip`,
    publicIPv6: `${p}public-ipv6`,
    nodePublicIP: `${p}node-public-ip`,
    nodePublicIPv6: `${p}node-public-ipv6`,
    publicIPOverwrite: `${p}public-ip-overwrite`,
    publicIPv6Overwrite: `${p}public-ipv6-overwrite`,
  };
}

/** What linen reads of a Node: its name, annotations and pod CIDRs. */
export interface NodeView {
  readonly name: string;
  readonly annotations: Readonly<Record<string, string>>;
  readonly podCIDR: string;
  readonly podCIDRs: readonly string[];
}

/**
 * The key a node's lease goes by in the lease watcher, logs and the peer set (kube mode has no
 * etcd key): `node/<name>/<a.b.c.d>-<len>` with the pod CIDR it names, as an etcd lease key
 * names its subnet, so that the watcher's rule holds here too: the first node to name a subnet
 * holds it, and another node with the same pod CIDR can neither replace nor remove its route.
 * `node/<name>` alone when the node names no readable pod CIDR. Node names never hold a '/'.
 */
export const nodeLeaseKey = (name: string, subnet: IPv4Net | null): string =>
  subnet === null ? `node/${name}` : `node/${name}/${makeSubnetKey(subnet)}`;

/** The subnet a node lease key names, or null (the watcher's subnetOfKey in kube mode). */
export function nodeLeaseKeySubnet(key: string): SubnetKey | null {
  const parts = key.split('/');
  return parts.length === 3 && parts[0] === 'node' && parts[1] !== '' ? parseSubnetName(parts[2]!) : null;
}

/** The node's IPv4 pod CIDR when it is readable, else null (for keys of nodes that are refused). */
export function readablePodCIDR(node: NodeView): IPv4Net | null {
  const r = nodePodCIDR(node);
  return r.ok ? r.value : null;
}

/**
 * The node's IPv4 pod CIDR as flanneld picks it: spec.podCIDRs when set (at most two, one per
 * family), else spec.podCIDR. null when none is assigned yet (or only an IPv6 one).
 */
export function nodePodCIDR(node: NodeView): Result<IPv4Net | null> {
  const list = node.podCIDRs.length > 0 ? node.podCIDRs : node.podCIDR !== '' ? [node.podCIDR] : [];
  if (list.length > 2) return { ok: false, error: `node "${node.name}" pod cidrs should be IPv4/IPv6 only or dualstack` };
  for (const c of list) {
    if (c.includes(':')) continue;
    const n = parseCIDR(c);
    if (n === null) return { ok: false, error: `node "${node.name}": invalid pod CIDR ${JSON.stringify(c)}` };
    return { ok: true, value: n };
  }
  return { ok: true, value: null };
}

/** The BackendData text a lease publishes, as Go marshals a json.RawMessage ("null" when none). */
const backendDataText = (a: LeaseAttrs): string => a.backendData ?? 'null';

/**
 * The annotation changes that publish `attrs` on a node that has `current`, as flanneld's
 * AcquireLease decides them: nothing when everything is in place, else backend-type,
 * backend-data, public-ip (the admin's public-ip-overwrite when set) and kube-subnet-manager,
 * reduced to the keys whose value differs. Keys in sorted order, as Go writes a map.
 */
export function leaseAnnotations(names: AnnotationNames, current: Readonly<Record<string, string>>, attrs: LeaseAttrs): Record<string, string> {
  const bd = backendDataText(attrs);
  const ip = formatIPv4(attrs.publicIP);
  const overwrite = current[names.publicIPOverwrite] ?? '';
  const stale =
    current[names.backendData] !== bd ||
    current[names.backendType] !== attrs.backendType ||
    current[names.publicIP] !== ip ||
    current[names.subnetKubeManaged] !== 'true' ||
    (overwrite !== '' && overwrite !== ip);
  if (!stale) return {};
  const want: Record<string, string> = { [names.backendType]: attrs.backendType };
  if (attrs.backendType !== 'vxlan' || bd !== 'null') {
    want[names.backendData] = bd;
    want[names.publicIP] = overwrite !== '' ? overwrite : ip;
  }
  want[names.subnetKubeManaged] = 'true';
  const out: Record<string, string> = {};
  for (const k of Object.keys(want).sort()) if (current[k] !== want[k]) out[k] = want[k]!;
  return out;
}

/** The strategic-merge patch body for annotation changes, as flanneld's two-way diff writes it. */
export const annotationPatch = (changes: Readonly<Record<string, string>>): string =>
  JSON.stringify({ metadata: { annotations: changes } });

/**
 * A node read as a peer's lease, as flanneld's nodeToLease: null when the node is not managed
 * (no kube-subnet-manager=true) or has no IPv4 pod CIDR yet; an error when its public-ip is
 * no IPv4 address or its pod CIDRs are bad. The rest is judged by the peer set's admission.
 */
export function nodeLease(names: AnnotationNames, node: NodeView, resourceVersion: number): Result<Lease | null> {
  if (node.annotations[names.subnetKubeManaged] !== 'true') return { ok: true, value: null };
  const cidr = nodePodCIDR(node);
  if (!cidr.ok) return cidr;
  if (cidr.value === null) return { ok: true, value: null };
  const ipText = node.annotations[names.publicIP] ?? '';
  const publicIP = parseIPv4(ipText);
  if (publicIP === null) return { ok: false, error: `annotation ${names.publicIP}: invalid IPv4 address ${JSON.stringify(ipText)}` };
  const data = node.annotations[names.backendData];
  const attrs: LeaseAttrs = {
    publicIP,
    publicIPv6: null,
    backendType: node.annotations[names.backendType] ?? '',
    backendData: data === undefined || data === '' || data === 'null' ? null : data,
    backendV6Data: null,
  };
  return { ok: true, value: { key: nodeLeaseKey(node.name, cidr.value), subnet: cidr.value, ipv6: null, attrs, leaseId: '0', modRevision: resourceVersion } };
}

/** The VtepMAC a node published in its backend-data annotation, if any (kept across restarts). */
export function storedVtepMAC(names: AnnotationNames, node: NodeView): Uint8Array | null {
  const data = node.annotations[names.backendData];
  if (data === undefined) return null;
  try {
    const v = JSON.parse(data) as unknown;
    if (typeof v === 'object' && v !== null && 'VtepMAC' in v && typeof v.VtepMAC === 'string') return parseMAC(v.VtepMAC);
  } catch {
    // not JSON: no MAC to keep
  }
  return null;
}
