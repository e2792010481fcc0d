import t from 'tap';
import { FLAGS, envName, parseFlags, usage, type Options } from '../../src/node/flags.js';
import { FlagError, parseGoInt } from '../../src/node/goflag.js';
import { createLogger, formatHeader, memoryLogger } from '../../src/log.js';

const run = (argv: string[], env: Record<string, string> = {}): Options => {
  const r = parseFlags(argv, env, { cpus: 4 });
  if (r.kind !== 'run') throw new Error(`expected run, got ${r.kind}`);
  return r.options;
};
const fails = (argv: string[], env: Record<string, string>, message: string | RegExp, exitCode: 1 | 2): void => {
  let err: unknown = null;
  try {
    parseFlags(argv, env, { cpus: 4 });
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof FlagError, `${argv.join(' ')} ${JSON.stringify(env)} fails`);
  if (err instanceof FlagError) {
    if (typeof message === 'string') t.equal(err.message, message);
    else t.match(err.message, message);
    t.equal(err.exitCode, exitCode, 'exit code');
    t.notMatch(err.message, /\n/, 'one line');
  }
};

t.test('defaults match flanneld', async (t) => {
  const o = run([]);
  t.same(o.etcdEndpoints, ['http://127.0.0.1:4001', 'http://127.0.0.1:2379']);
  t.equal(o.etcdPrefix, '/coreos.com/network');
  t.equal(o.subnetFile, '/run/flannel/subnet.env');
  t.equal(o.subnetLeaseRenewMargin, 60);
  t.equal(o.ipMasq, false);
  t.equal(o.ipMasqRandomFullyDisable, false);
  t.equal(o.iptablesResync, 5);
  t.equal(o.iptablesForwardRules, true);
  t.equal(o.ipBlackholeRoute, false);
  t.equal(o.healthzIP, '0.0.0.0');
  t.equal(o.healthzPort, 0);
  t.equal(o.kubeAnnotationPrefix, 'flannel.alpha.coreos.com');
  t.equal(o.netConfigPath, '/etc/kube-flannel/net-conf.json');
  t.equal(o.setNodeNetworkUnavailable, true);
  t.same(o.iface, []);
  t.same(o.ifaceRegex, []);
  t.equal(o.verbosity, 0);
  t.equal(o.engine, 'native');
  t.equal(o.queues, 4, 'number of cores');
  t.equal(o.offload, 'auto');
  t.equal(o.staticPeers, '');
  t.equal(o.peerMetricsLimit, 128, 'linen: per-peer series for up to 128 peers');
  t.equal(o.sources['ip-masq'], 'default');
});

t.test('Go flag syntax', async (t) => {
  const o = run([
    '-etcd-endpoints=http://10.0.0.1:2379,https://10.0.0.2:2379',
    '--etcd-prefix',
    '/my/net',
    '--ip-masq',
    '-iptables-forward-rules=false',
    '--iface=eth0',
    '-iface',
    '10.0.0.5',
    '--iface-regex=^en',
    '--iface-regex',
    'wl.*',
    '--subnet-lease-renew-margin=0x10',
    '-v=2',
    '--public-ip',
    '192.168.1.10',
    '--etcd-password=a=b',
  ]);
  t.same(o.etcdEndpoints, ['http://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  t.equal(o.etcdPrefix, '/my/net');
  t.equal(o.ipMasq, true);
  t.equal(o.iptablesForwardRules, false);
  t.same(o.iface, ['eth0', '10.0.0.5'], 'repeatable, in order');
  t.same(o.ifaceRegex, ['^en', 'wl.*']);
  t.equal(o.subnetLeaseRenewMargin, 16, 'Go int literal syntax (base 0)');
  t.equal(o.verbosity, 2);
  t.equal(o.publicIP, '192.168.1.10');
  t.equal(o.etcdPassword, 'a=b', 'only the first = splits');
  t.equal(o.sources['ip-masq'], 'flag');
  t.equal(run(['--ip-masq=0']).ipMasq, false);
  t.equal(run(['--ip-masq=T']).ipMasq, true);
  t.equal(run(['-etcd-prefix=']).etcdPrefix, '', 'empty value allowed');
  t.equal(run(['--etcd-prefix', '-x']).etcdPrefix, '-x', 'next arg taken as the value even if it looks like a flag');
  t.same(run(['--ip-masq', '--']).ipMasq, true, '"--" ends the flags');
  t.same(run(['--etcd-endpoints= http://a:1 ,http://b:2']).etcdEndpoints, ['http://a:1', 'http://b:2'], 'blanks trimmed');
});

t.test('syntax errors: Go messages, exit 2', async (t) => {
  fails(['--nope'], {}, 'flag provided but not defined: -nope (see --help)', 2);
  fails(['---x'], {}, 'bad flag syntax: ---x', 2);
  fails(['-=x'], {}, 'bad flag syntax: -=x', 2);
  fails(['--etcd-prefix'], {}, 'flag needs an argument: -etcd-prefix', 2);
  fails(['--iptables-resync=abc'], {}, 'invalid value "abc" for flag -iptables-resync: parse error', 2);
  fails(['--ip-masq=maybe'], {}, 'invalid boolean value "maybe" for -ip-masq: parse error', 2);
  fails(['--ip-masq', 'false'], {}, /^unexpected argument "false": .*--ip-masq=false/, 2);
  fails(['extra'], {}, /unexpected argument "extra"/, 2);
  fails(['--', 'extra'], {}, /after "--"/, 2);
  fails(['-v=0x1'], {}, 'invalid value "0x1" for flag -v: parse error', 2);
});

t.test('help and version', async (t) => {
  for (const h of ['-h', '--help', '-help', '--h']) {
    const r = parseFlags([h]);
    t.equal(r.kind, 'help', h);
  }
  const r = parseFlags(['--help']);
  const text = r.kind === 'help' ? r.text : '';
  for (const f of FLAGS) t.match(text, `--${f.name}`, `help mentions --${f.name}`);
  t.match(text, 'FLANNELD_ETCD_ENDPOINTS');
  t.match(text, 'LINEN_QUEUES');
  t.equal(usage('x').split('\n')[0], 'Usage: x [OPTION]...');
  t.same(parseFlags(['--version']), { kind: 'version' });
  t.same(parseFlags(['--version'], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '0' }), { kind: 'version' }, 'before env and validation');
  t.equal(parseFlags([], { FLANNELD_VERSION: 'true' }, { cpus: 1 }).kind, 'run', 'FLANNELD_VERSION has no effect (quirk kept)');
  fails(['--nope', '--help'], {}, /not defined: -nope/, 2);
});

t.test('help: each flag states its default once, and lists only environment variables that work', async (t) => {
  const text = usage();
  // One block per flag: "  --name..." up to the next flag or section.
  const blocks = text.split(/\n(?=  --)/).slice(1).map((b) => b.split(/\n\n/)[0]);
  t.equal(blocks.length, FLAGS.length);
  for (const b of blocks) {
    const name = /^  --([^=\s]+)/.exec(b)?.[1];
    t.ok((b.match(/\(default/g) ?? []).length <= 1, `--${name}: at most one default`);
  }
  const queues = blocks.find((b) => b.startsWith('  --queues'))!;
  t.equal((queues.match(/number of CPU cores/g) ?? []).length, 1, '--queues: "number of CPU cores" once');
  t.notMatch(text, 'FLANNELD_VERSION', 'FLANNELD_VERSION is not offered: it has no effect');
  t.match(blocks.find((b) => b.startsWith('  --version'))!, /^  --version\n      print the version to stderr and exit$/, '--version has no env line');
});

t.test('environment: FLANNELD_* and LINEN_* for flags not on the command line', async (t) => {
  t.equal(envName(FLAGS.find((f) => f.name === 'etcd-endpoints')!), 'FLANNELD_ETCD_ENDPOINTS');
  t.equal(envName(FLAGS.find((f) => f.name === 'log_backtrace_at')!), 'FLANNELD_LOG_BACKTRACE_AT');
  t.equal(envName(FLAGS.find((f) => f.name === 'static-peers')!), 'LINEN_STATIC_PEERS');
  const o = run(['--etcd-prefix=/cli'], {
    FLANNELD_ETCD_ENDPOINTS: 'http://e1:2379,http://e2:2379',
    FLANNELD_ETCD_PREFIX: '/env',
    FLANNELD_IP_MASQ: 'true',
    FLANNELD_IFACE: 'eth0,eth1',
    FLANNELD_V: '3',
    FLANNELD_PUBLIC_IP: '',
    LINEN_ENGINE: 'dgram',
    LINEN_QUEUES: '2',
    LINEN_OFFLOAD: 'off',
    LINEN_STATIC_PEERS: '/etc/linen/peers',
    FLANNELD_ENGINE: 'native',
  });
  t.same(o.etcdEndpoints, ['http://e1:2379', 'http://e2:2379']);
  t.equal(o.etcdPrefix, '/cli', 'command line wins');
  t.equal(o.ipMasq, true);
  t.same(o.iface, ['eth0,eth1'], 'a single value, commas not split');
  t.equal(o.verbosity, 3);
  t.equal(o.publicIP, '', 'empty env ignored');
  t.equal(o.engine, 'dgram', 'LINEN_ENGINE; FLANNELD_ENGINE is not consulted');
  t.equal(o.queues, 2);
  t.equal(o.offload, 'off');
  t.equal(o.staticPeers, '/etc/linen/peers');
  t.equal(o.sources['ip-masq'], 'env');
  t.same(run(['--iface=a'], { FLANNELD_IFACE: 'b' }).iface, ['a'], 'env not appended to command-line values');
  fails([], { FLANNELD_IP_MASQ: 'yes' }, 'invalid value "yes" for FLANNELD_IP_MASQ (--ip-masq): parse error', 2);
});

t.test('validation: one-line errors naming the flag, exit 1', async (t) => {
  fails(['--subnet-lease-renew-margin=0'], {}, 'Invalid subnet-lease-renew-margin option, out of acceptable range: --subnet-lease-renew-margin=0 (must be 1-1439 minutes)', 1);
  fails(['--subnet-lease-renew-margin=1440'], {}, /out of acceptable range: --subnet-lease-renew-margin=1440/, 1);
  fails([], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '-5' }, /FLANNELD_SUBNET_LEASE_RENEW_MARGIN \(--subnet-lease-renew-margin\)=-5/, 1);
  t.equal(run(['--subnet-lease-renew-margin=1']).subnetLeaseRenewMargin, 1);
  t.equal(run(['--subnet-lease-renew-margin=1439']).subnetLeaseRenewMargin, 1439);
  t.equal(run(['--kube-subnet-mgr']).kubeSubnetMgr, true);
  t.equal(run(['--kube-subnet-mgr', '--kube-annotation-prefix=example.com/team-']).kubeAnnotationPrefix, 'example.com/team-');
  fails(['--kube-subnet-mgr', '--kube-annotation-prefix=a/b/c'], {}, '--kube-annotation-prefix: "a/b/c": subnet/kube: prefix can contain at most single slash', 1);
  fails(['--kube-subnet-mgr', '--kube-annotation-prefix=Flannel'], {}, '--kube-annotation-prefix: "Flannel": subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*', 1);
  fails(['--kube-subnet-mgr', '--static-peers=/x.json'], {}, /^--static-peers: cannot be used with --kube-subnet-mgr/, 1);
  fails(['--public-ip=10.0.0'], {}, '--public-ip: "10.0.0" is not an IPv4 address', 1);
  fails(['--public-ip=fd00::1'], {}, /--public-ip: "fd00::1" is not an IPv4 address/, 1);
  fails(['--public-ipv6=10.0.0.1'], {}, /--public-ipv6: .* is not an IPv6 address/, 1);
  fails(['--healthz-ip=localhost'], {}, /--healthz-ip/, 1);
  fails(['--healthz-port=70000'], {}, /^--healthz-port: 70000 is not a TCP port/, 1);
  fails(['--iptables-resync=0'], {}, /^--iptables-resync: 0: must be at least 1 second/, 1);
  fails(['--iface-regex=('], {}, /^--iface-regex: invalid regular expression "\("/, 1);
  fails(['--etcd-endpoints=http://a:1,,http://b:2'], {}, /^--etcd-endpoints: empty endpoint/, 1);
  fails(['--etcd-endpoints=unix:///run/etcd.sock'], {}, /^--etcd-endpoints: bad endpoint "unix:/, 1);
  fails(['--etcd-endpoints=http://a:99999'], {}, /bad endpoint/, 1);
  t.same(run(['--etcd-endpoints=127.0.0.1:2379,[::1]:2379']).etcdEndpoints, ['127.0.0.1:2379', '[::1]:2379']);
  fails(['--engine=turbo'], {}, '--engine: "turbo": must be "native" or "dgram"', 1);
  fails(['--offload=maybe'], {}, /^--offload: "maybe"/, 1);
  fails(['--queues=0'], {}, '--queues: 0: must be between 1 and 1024', 1);
  fails([], { LINEN_QUEUES: '5000' }, 'LINEN_QUEUES (--queues): 5000: must be between 1 and 1024', 1);
  fails(['-v=-1'], {}, /^--v: -1/, 1);
  fails(['--peer-metrics-limit=-1'], {}, '--peer-metrics-limit: -1: must be between 0 and 1000000 (0: no per-peer series)', 1);
  fails(['--peer-metrics-limit=0x10'], {}, /^invalid value "0x10" for flag -peer-metrics-limit/, 2);
  fails([], { LINEN_PEER_METRICS_LIMIT: 'lots' }, /LINEN_PEER_METRICS_LIMIT \(--peer-metrics-limit\)/, 2);
  t.equal(run(['--peer-metrics-limit=0']).peerMetricsLimit, 0, '0: no per-peer series');
  t.equal(run([], { LINEN_PEER_METRICS_LIMIT: '4096' }).peerMetricsLimit, 4096);
});

t.test('Go integer syntax', async (t) => {
  t.equal(parseGoInt('42'), 42);
  t.equal(parseGoInt('-42'), -42);
  t.equal(parseGoInt('+7'), 7);
  t.equal(parseGoInt('0x1F'), 31);
  t.equal(parseGoInt('0o17'), 15);
  t.equal(parseGoInt('017'), 15, 'leading 0 is octal');
  t.equal(parseGoInt('0b101'), 5);
  t.equal(parseGoInt('1_000'), 1000);
  t.equal(parseGoInt('0x_1F'), 31);
  t.equal(parseGoInt('0'), 0);
  for (const bad of ['', '-', '1__0', '_1', '1_', '08', '0x', '1.5', 'abc', ' 1']) t.equal(parseGoInt(bad), null, `rejects ${JSON.stringify(bad)}`);
  t.equal(parseGoInt('010', 10), 10, 'base 10 for -v');
  t.equal(parseGoInt('1_0', 10), null);
});

t.test('log: klog-style lines, levels, verbosity', async (t) => {
  const d = new Date(2024, 10, 21, 0, 51, 2, 123);
  t.equal(formatHeader('I', d, 12345, 'subnet'), 'I1121 00:51:02.123000   12345 subnet] ');
  const lines: string[] = [];
  const log = createLogger({ verbosity: 1, sink: { write: (l: string) => lines.push(l) }, now: () => d, pid: 7, component: 'x' });
  log.info('hello');
  log.warn('careful');
  log.error('bad\nsecond line');
  log.v(1).info('verbose 1');
  log.v(2).info('verbose 2');
  t.equal(log.v(2).enabled, false);
  log.child('sub').info('from child');
  t.same(lines, [
    'I1121 00:51:02.123000       7 x] hello\n',
    'W1121 00:51:02.123000       7 x] careful\n',
    'E1121 00:51:02.123000       7 x] bad\n    second line\n',
    'I1121 00:51:02.123000       7 x] verbose 1\n',
    'I1121 00:51:02.123000       7 sub] from child\n',
  ]);
  log.setVerbosity(2);
  log.v(2).info('now visible');
  t.equal(lines.length, 6);
  const m = memoryLogger(0);
  m.log.v(1).info('hidden');
  m.log.info('shown');
  t.equal(m.lines.length, 1);
  t.match(m.lines[0], /^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ linen\] shown$/);
});
