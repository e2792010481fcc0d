// flanneld's command line (etcd mode), parsed the way Go's flag package does it (goflag.ts), plus
// linen's own flags. See docs/flanneld-compat.md, "Command line and lifecycle".
//
//   -flag / --flag, -flag=value, -flag value (not for booleans), booleans as -flag or
//   -flag=false, repeatable --iface / --iface-regex, "--" ends the flags, unknown flag is
//   an error (exit 2), -h / --help prints usage.
//   Environment: for every flag not set on the command line, FLANNELD_<NAME> (upper case,
//   '-' and '.' -> '_') is applied if non-empty (linen's own flags use LINEN_<NAME>).
//   --version is looked at before the environment (FLANNELD_VERSION has no effect).
//
// Where Go's behaviour loses settings silently, linen refuses with a one-line error naming
// the flag: a stray positional argument (`--ip-masq false` would make Go stop parsing and
// ignore every later flag), a bad FLANNELD_* value (flanneld logs and carries on without
// it), a resync period of 0 (a busy loop in flanneld).
//
// parseFlags() only parses and validates. It starts nothing.

import { availableParallelism } from 'node:os';
import { parseIPv4, parseIPv6 } from '../net.js';
import { annotationNames } from '../subnet/kube/annotations.js';
import { DEFAULT_ETCD_PREFIX } from '../subnet/lease.js';
import type { EngineName, OffloadSetting } from '../dataplane/engine.js';
import { FlagError, FlagSet, type FlagKind, type FlagSource, type GoFlag } from './goflag.js';

export interface Options {
  // etcd
  readonly etcdEndpoints: string[];
  readonly etcdPrefix: string;
  readonly etcdKeyfile: string;
  readonly etcdCertfile: string;
  readonly etcdCAFile: string;
  readonly etcdUsername: string;
  readonly etcdPassword: string;
  // interface selection and addresses
  readonly iface: string[];
  readonly ifaceRegex: string[];
  readonly ifaceCanReach: string;
  readonly publicIP: string;
  readonly publicIPv6: string;
  // lease and files
  readonly subnetFile: string;
  /** Minutes, 1-1439. */
  readonly subnetLeaseRenewMargin: number;
  // traffic rules
  readonly ipMasq: boolean;
  readonly ipMasqRandomFullyDisable: boolean;
  /** Seconds. */
  readonly iptablesResync: number;
  readonly iptablesForwardRules: boolean;
  readonly ipBlackholeRoute: boolean;
  // health
  readonly healthzIP: string;
  /** 0 = disabled. */
  readonly healthzPort: number;
  /** linen: where /metrics is served when metricsPort is not 0 (then only there). */
  readonly metricsIP: string;
  readonly metricsPort: number;
  /** linen: peers with per-peer series in /metrics; 0 exports none. */
  readonly peerMetricsLimit: number;
  // kube mode
  readonly kubeSubnetMgr: boolean;
  readonly kubeApiUrl: string;
  readonly kubeconfigFile: string;
  readonly kubeAnnotationPrefix: string;
  readonly netConfigPath: string;
  readonly setNodeNetworkUnavailable: boolean;
  // logging (klog)
  readonly verbosity: number;
  readonly vmodule: string;
  readonly logBacktraceAt: string;
  // linen
  readonly engine: EngineName;
  readonly queues: number;
  readonly offload: OffloadSetting;
  /** Path of a static peers file, or "" for none. */
  readonly staticPeers: string;
  /** Where each flag's value came from. */
  readonly sources: Readonly<Record<string, FlagSource>>;
}

export type ParseResult = { kind: 'run'; options: Options } | { kind: 'help'; text: string } | { kind: 'version' };

interface FlagDef extends GoFlag {
  readonly usage: string;
  /** Env prefix: flanneld flags read FLANNELD_*, linen's LINEN_*. */
  readonly env: 'FLANNELD' | 'LINEN';
  readonly section: string;
  readonly placeholder?: string;
  /** The default as help states it when the value alone would mislead (e.g. -1 = CPU count). */
  readonly defaultText?: string;
  /** Never read from the environment (--version: flanneld ignores FLANNELD_VERSION too). */
  readonly noEnv?: true;
}

const F = (
  section: string,
  name: string,
  kind: FlagKind,
  def: FlagDef['def'],
  usage: string,
  extra: Partial<Pick<FlagDef, 'env' | 'base' | 'placeholder' | 'defaultText' | 'noEnv'>> = {},
): FlagDef => ({ section, name, kind, def, usage, env: extra.env ?? 'FLANNELD', ...extra });

export const DEFAULT_ETCD_ENDPOINTS = 'http://127.0.0.1:4001,http://127.0.0.1:2379';

/**
 * --peer-metrics-limit's default. Each peer adds 5 series to a node's /metrics (packets and
 * bytes both ways, its route), so across N nodes they grow as N x (N-1) x 5. 128 keeps full
 * per-peer detail for clusters up to 129 nodes (flannel's UDP and VXLAN backends are mostly
 * run well below that) and caps a node at 640 per-peer series beyond, a few times the ~150
 * other series of a scrape; the cluster-wide totals (linen_packets_total) stay complete.
 */
export const DEFAULT_PEER_METRICS_LIMIT = 128;

/** Every flag linen accepts, in help order. */
export const FLAGS: readonly FlagDef[] = [
  F('etcd', 'etcd-endpoints', 'string', DEFAULT_ETCD_ENDPOINTS, 'comma-separated list of etcd endpoints', { placeholder: 'urls' }),
  F('etcd', 'etcd-prefix', 'string', DEFAULT_ETCD_PREFIX, 'etcd prefix under which the network config and the subnet leases live', { placeholder: 'path' }),
  F('etcd', 'etcd-keyfile', 'string', '', 'TLS client key for etcd; TLS is used only when both key and cert files are given', { placeholder: 'file' }),
  F('etcd', 'etcd-certfile', 'string', '', 'TLS client certificate for etcd', { placeholder: 'file' }),
  F('etcd', 'etcd-cafile', 'string', '', 'CA bundle that signed the etcd server certificate (used only with key and cert)', { placeholder: 'file' }),
  F('etcd', 'etcd-username', 'string', '', 'etcd v3 auth user name', { placeholder: 'name' }),
  F('etcd', 'etcd-password', 'string', '', 'etcd v3 auth password', { placeholder: 'secret' }),

  F('interface', 'iface', 'list', [], 'interface (name or IP) for inter-host traffic; repeat to try several in order, first match wins', { placeholder: 'name|ip' }),
  F('interface', 'iface-regex', 'list', [], 'regular expression matched against interface IPs, then names; repeatable; checked after --iface', { placeholder: 'regex' }),
  F('interface', 'iface-can-reach', 'string', '', 'use the interface the kernel would use to reach this IP (like `ip route get`)', { placeholder: 'ip' }),
  F('interface', 'public-ip', 'string', '', 'IPv4 advertised to other nodes as PublicIP (default: the interface address)', { placeholder: 'ip' }),
  F('interface', 'public-ipv6', 'string', '', 'IPv6 advertised to other nodes (IPv6 networks are not supported by linen)', { placeholder: 'ip' }),

  F('lease', 'subnet-file', 'string', '/run/flannel/subnet.env', 'where FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ are written', { placeholder: 'file' }),
  F('lease', 'subnet-lease-renew-margin', 'int', 60, 'renew the 24 h subnet lease this many minutes before it expires (1-1439)', { placeholder: 'minutes' }),

  F('rules', 'ip-masq', 'bool', false, 'masquerade traffic from the pod network to destinations outside it'),
  F('rules', 'ip-masq-fully-random-disable', 'bool', false, 'do not add --random-fully to the MASQUERADE rules'),
  F('rules', 'iptables-resync', 'int', 5, 'seconds between checks that the iptables rules are still in place', { placeholder: 'seconds' }),
  F('rules', 'iptables-forward-rules', 'bool', true, 'add ACCEPT rules for the pod network to the FORWARD chain'),
  F('rules', 'ip-blackhole-route', 'bool', false, 'add a blackhole route for the own subnet'),

  F('health', 'healthz-ip', 'string', '0.0.0.0', 'address of the /healthz and /readyz HTTP server', { placeholder: 'ip' }),
  F('health', 'healthz-port', 'int', 0, 'port of the /healthz and /readyz HTTP server (0 disables it)', { placeholder: 'port' }),
  F('health', 'metrics-ip', 'string', '127.0.0.1', 'address of the separate /metrics server (linen; used with --metrics-port)', { env: 'LINEN', placeholder: 'ip' }),
  F('health', 'metrics-port', 'int', 0, 'serve /metrics on --metrics-ip:this port only (linen; 0: /metrics beside /healthz on the healthz server)', { env: 'LINEN', placeholder: 'port' }),
  F('health', 'peer-metrics-limit', 'int', DEFAULT_PEER_METRICS_LIMIT, 'peers (lowest subnets first) with per-peer series in /metrics (linen; 0: none, the totals stay)', { env: 'LINEN', base: 10, placeholder: 'n' }),

  F('kube', 'kube-subnet-mgr', 'bool', false, 'use the Kubernetes API instead of etcd: the subnet is the node\'s podCIDR, leases are node annotations'),
  F('kube', 'kube-api-url', 'string', '', 'Kubernetes API server URL (kube mode only)', { placeholder: 'url' }),
  F('kube', 'kubeconfig-file', 'string', '', 'kubeconfig file (kube mode only)', { placeholder: 'file' }),
  F('kube', 'kube-annotation-prefix', 'string', 'flannel.alpha.coreos.com', 'node annotation prefix (kube mode only)', { placeholder: 'prefix' }),
  F('kube', 'net-config-path', 'string', '/etc/kube-flannel/net-conf.json', 'network config file (kube mode only)', { placeholder: 'file' }),
  F('kube', 'set-node-network-unavailable', 'bool', true, 'set the node condition NetworkUnavailable=false when ready (kube mode only)'),

  F('general', 'version', 'bool', false, 'print the version to stderr and exit', { noEnv: true }),
  F('general', 'v', 'int', 0, 'log verbosity (klog -v); 1 adds data-path messages', { base: 10, placeholder: 'level' }),
  F('general', 'vmodule', 'string', '', 'accepted for klog compatibility (ignored)', { placeholder: 'pattern=N,...' }),
  F('general', 'log_backtrace_at', 'string', '', 'accepted for klog compatibility (ignored)', { placeholder: 'file:line' }),

  F('linen', 'engine', 'string', 'native', 'data path: "native" (batched TUN/UDP I/O through the addon) or "dgram" (Node dgram baseline)', { env: 'LINEN', placeholder: 'native|dgram' }),
  F('linen', 'queues', 'int', -1, 'worker threads / TUN queues', { env: 'LINEN', base: 10, placeholder: 'n', defaultText: 'number of CPU cores' }),
  F('linen', 'offload', 'string', 'auto', 'TSO/GSO/GRO offloads: "auto" (use what the kernel offers), "on" (fail without them) or "off"', { env: 'LINEN', placeholder: 'auto|on|off' }),
  F('linen', 'static-peers', 'string', '', 'run without etcd: a JSON file with the network config, this node\'s Subnet (and VtepMAC) and its Peers (see README)', { env: 'LINEN', placeholder: 'file' }),
];

/** The environment variable consulted for a flag: FLANNELD_ETCD_ENDPOINTS, LINEN_QUEUES... */
export function envName(f: FlagDef): string {
  return `${f.env}_${f.name.toUpperCase().replace(/[-.]/g, '_')}`;
}

export interface ParseFlagsOptions {
  /** CPU count for the --queues default; default os.availableParallelism(). */
  cpus?: number;
  /** Program name in the usage text. */
  program?: string;
}

/**
 * Parses argv (without node and script, like os.Args[1:]) and the environment. Throws
 * FlagError with a one-line message naming the flag (or variable) on any problem.
 */
export function parseFlags(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}, opts: ParseFlagsOptions = {}): ParseResult {
  const fs = new FlagSet(FLAGS);

  // --- command line (flag.FlagSet.Parse) -------------------------------------------
  if (fs.parse(argv) === 'help') return { kind: 'help', text: usage(opts.program) };

  // --- --version before the environment (flanneld quirk kept: FLANNELD_VERSION is inert)
  if (fs.bool('version')) return { kind: 'version' };

  // --- environment (flagutil.SetFlagsFromEnv) ----------------------------------------
  for (const f of FLAGS) {
    if (fs.sources.get(f.name) === 'flag' || f.noEnv) continue;
    const key = envName(f);
    const v = env[key];
    if (v === undefined || v === '') continue;
    const err = fs.set(f, v, 'env');
    if (err !== null) throw new FlagError(`invalid value ${JSON.stringify(v)} for ${key} (--${f.name}): ${err}`, 2);
  }

  return { kind: 'run', options: validate(fs, opts) };
}

/** Describes where a value came from, for error messages. */
function origin(fs: FlagSet<FlagDef>, name: string): string {
  const f = fs.lookup(name)!;
  return fs.sources.get(name) === 'env' ? `${envName(f)} (--${name})` : `--${name}`;
}

function validate(fs: FlagSet<FlagDef>, opts: ParseFlagsOptions): Options {
  const bad = (name: string, msg: string): never => {
    throw new FlagError(`${origin(fs, name)}: ${msg}`, 1);
  };

  const margin = fs.int('subnet-lease-renew-margin');
  if (margin < 1 || margin > 1439) {
    throw new FlagError(
      `Invalid subnet-lease-renew-margin option, out of acceptable range: ${origin(fs, 'subnet-lease-renew-margin')}=${margin} (must be 1-1439 minutes)`,
      1,
    );
  }
  const kubeSubnetMgr = fs.bool('kube-subnet-mgr');
  if (kubeSubnetMgr) {
    try {
      annotationNames(fs.str('kube-annotation-prefix'));
    } catch (e) {
      bad('kube-annotation-prefix', `${JSON.stringify(fs.str('kube-annotation-prefix'))}: ${(e as Error).message}`);
    }
    if (fs.str('static-peers') !== '') bad('static-peers', 'cannot be used with --kube-subnet-mgr: the peers come from the Kubernetes nodes');
  }

  // etcd endpoints: split on ',' as flanneld; surrounding blanks are tolerated.
  const endpoints = fs
    .str('etcd-endpoints')
    .split(',')
    .map((e) => e.trim());
  for (const e of endpoints) {
    if (e === '') bad('etcd-endpoints', `empty endpoint in ${JSON.stringify(fs.str('etcd-endpoints'))}`);
    const m = /^(?:(https?):\/\/)?(\[[0-9a-fA-F:.]+\]|[^/:\s[\]]+)(?::(\d{1,5}))?\/?$/.exec(e);
    if (m === null || (m[3] !== undefined && Number(m[3]) > 65535)) {
      bad('etcd-endpoints', `bad endpoint ${JSON.stringify(e)} (expected http://host:port or https://host:port)`);
    }
  }

  const ipFlag = (name: string, want: 4 | 6 | 46): string => {
    const v = fs.str(name);
    if (v === '') return v;
    const ok4 = parseIPv4(v) !== null && !v.includes(':');
    const ok6 = parseIPv6(v) !== null;
    if (want === 4 && !ok4) bad(name, `${JSON.stringify(v)} is not an IPv4 address`);
    if (want === 6 && !ok6) bad(name, `${JSON.stringify(v)} is not an IPv6 address`);
    if (want === 46 && !ok4 && !ok6) bad(name, `${JSON.stringify(v)} is not an IP address`);
    return v;
  };
  ipFlag('public-ip', 4);
  ipFlag('public-ipv6', 6);
  ipFlag('iface-can-reach', 46);
  ipFlag('healthz-ip', 46);
  ipFlag('metrics-ip', 46);

  for (const re of fs.list('iface-regex')) {
    try {
      new RegExp(re);
    } catch (e) {
      bad('iface-regex', `invalid regular expression ${JSON.stringify(re)}: ${(e as Error).message}`);
    }
  }
  for (const i of fs.list('iface')) if (i === '') bad('iface', 'empty interface name');

  const port = fs.int('healthz-port');
  if (port < 0 || port > 65535) bad('healthz-port', `${port} is not a TCP port (0-65535, 0 disables)`);
  const metricsPort = fs.int('metrics-port');
  if (metricsPort < 0 || metricsPort > 65535) bad('metrics-port', `${metricsPort} is not a TCP port (0-65535, 0: /metrics on the healthz server)`);
  if (metricsPort !== 0 && metricsPort === port) bad('metrics-port', `${metricsPort} is also --healthz-port: give /metrics a port of its own, or 0 to serve it beside /healthz`);
  const peerMetricsLimit = fs.int('peer-metrics-limit');
  if (peerMetricsLimit < 0 || peerMetricsLimit > 1_000_000) bad('peer-metrics-limit', `${peerMetricsLimit}: must be between 0 and 1000000 (0: no per-peer series)`);
  const resync = fs.int('iptables-resync');
  if (resync < 1) bad('iptables-resync', `${resync}: must be at least 1 second`);
  const v = fs.int('v');
  if (v < 0 || v > 2 ** 31 - 1) bad('v', `${v}: verbosity must be 0 or more`);

  const engine = fs.str('engine');
  if (engine !== 'native' && engine !== 'dgram') bad('engine', `${JSON.stringify(engine)}: must be "native" or "dgram"`);
  const offload = fs.str('offload');
  if (offload !== 'auto' && offload !== 'on' && offload !== 'off') bad('offload', `${JSON.stringify(offload)}: must be "auto", "on" or "off"`);
  let queues = fs.int('queues');
  if (fs.sources.get('queues') === 'default') queues = Math.max(1, opts.cpus ?? availableParallelism());
  else if (queues < 1 || queues > 1024) bad('queues', `${queues}: must be between 1 and 1024`);

  return {
    etcdEndpoints: endpoints,
    etcdPrefix: fs.str('etcd-prefix'),
    etcdKeyfile: fs.str('etcd-keyfile'),
    etcdCertfile: fs.str('etcd-certfile'),
    etcdCAFile: fs.str('etcd-cafile'),
    etcdUsername: fs.str('etcd-username'),
    etcdPassword: fs.str('etcd-password'),
    iface: fs.list('iface'),
    ifaceRegex: fs.list('iface-regex'),
    ifaceCanReach: fs.str('iface-can-reach'),
    publicIP: fs.str('public-ip'),
    publicIPv6: fs.str('public-ipv6'),
    subnetFile: fs.str('subnet-file'),
    subnetLeaseRenewMargin: margin,
    ipMasq: fs.bool('ip-masq'),
    ipMasqRandomFullyDisable: fs.bool('ip-masq-fully-random-disable'),
    iptablesResync: resync,
    iptablesForwardRules: fs.bool('iptables-forward-rules'),
    ipBlackholeRoute: fs.bool('ip-blackhole-route'),
    healthzIP: fs.str('healthz-ip'),
    healthzPort: port,
    metricsIP: fs.str('metrics-ip'),
    metricsPort,
    peerMetricsLimit,
    kubeSubnetMgr,
    kubeApiUrl: fs.str('kube-api-url'),
    kubeconfigFile: fs.str('kubeconfig-file'),
    kubeAnnotationPrefix: fs.str('kube-annotation-prefix'),
    netConfigPath: fs.str('net-config-path'),
    setNodeNetworkUnavailable: fs.bool('set-node-network-unavailable'),
    verbosity: v,
    vmodule: fs.str('vmodule'),
    logBacktraceAt: fs.str('log_backtrace_at'),
    engine: engine as EngineName,
    queues,
    offload: offload as OffloadSetting,
    staticPeers: fs.str('static-peers'),
    sources: Object.fromEntries(fs.sources),
  };
}

const SECTION_TITLES: Record<string, string> = {
  etcd: 'etcd',
  interface: 'Interface and addresses',
  lease: 'Subnet lease',
  rules: 'iptables and routes',
  health: 'Health endpoints',
  kube: 'Kubernetes mode',
  general: 'General',
  linen: 'linen data path (not in flanneld)',
};

/** The --help text. */
export function usage(program = 'linend'): string {
  const lines: string[] = [
    `Usage: ${program} [OPTION]...`,
    '',
    'linen: a userspace drop-in for flanneld (UDP backend, plus userspace VXLAN). It reads the',
    "network config from etcd (<prefix>/config), leases a subnet, writes the subnet file and",
    'forwards packets between a TUN device and the other nodes.',
    '',
    'Flags take one or two dashes: -flag, --flag, --flag=value or --flag value; booleans as',
    '--flag or --flag=false. --iface and --iface-regex may be repeated.',
  ];
  let section = '';
  for (const f of FLAGS) {
    if (f.section !== section) {
      section = f.section;
      lines.push('', `${SECTION_TITLES[section] ?? section}:`);
    }
    const arg = f.kind === 'bool' ? '' : `=${f.placeholder ?? 'value'}`;
    let def = '';
    if (f.defaultText !== undefined) def = ` (default: ${f.defaultText})`;
    else if (f.kind === 'bool') def = f.def === true ? ' (default true)' : '';
    else if (f.kind === 'list') def = '';
    else if (f.def !== '' && f.def !== 0) def = ` (default ${typeof f.def === 'string' ? JSON.stringify(f.def) : String(f.def)})`;
    lines.push(`  --${f.name}${arg}`);
    lines.push(`      ${f.usage}${def}`);
    if (!f.noEnv) lines.push(`      env: ${envName(f)}`);
  }
  lines.push(
    '',
    'Environment: every flag not given on the command line is read from FLANNELD_<FLAG> (linen',
    "flags: LINEN_<FLAG>), upper case with '-' turned into '_', e.g. FLANNELD_ETCD_ENDPOINTS,",
    'FLANNELD_IP_MASQ=true, LINEN_QUEUES=4. The command line wins; --version is read from it only.',
    '',
  );
  return lines.join('\n');
}
