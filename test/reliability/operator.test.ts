// Bad input from the operator: every flag of src/node/flags.ts FLAGS given a wrong value, unknown
// flags, stray arguments, bad FLANNELD_* / LINEN_* environment values and a static peers file
// with each field wrong. Each must give a one-line error naming the flag (or variable, or
// field) and a non-zero exit, before anything is changed on the host: linend runs in a fresh
// namespace holding a reachable etcd with a network config (so a linend that went ahead would
// lease a subnet), and `ip monitor` watches the namespace for any device, address or route.
// A control run with valid flags shows that these checks do see a linend that goes ahead.
import t from 'tap';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { linendPath } from '../../lab/linend.js';
import { startEtcdServer, type EtcdServer } from '../../lab/etcd.js';
import { ipNs, listLinks, nsExec, nsSysctl, runId, sh } from '../../lab/netns.js';
import { FLAGS } from '../../src/node/flags.js';
import { makeCerts } from '../helpers/certs.js';

t.setTimeout(180_000);

const ns = `${runId()}-op`;
const dev = `${ns}-e`.slice(0, 14);
const dir = mkdtempSync(join(tmpdir(), 'linen-operator-'));
const subnetFile = join(dir, 'run', 'subnet.env');
const PREFIX = '/coreos.com/network';
let etcd: EtcdServer;
let monitor: ReturnType<typeof spawn> | null = null;
let monitored = '';

const cleanup = (): void => {
  monitor?.kill('SIGKILL');
  try { sh('ip', ['netns', 'del', ns]); } catch { /* gone */ }
  rmSync(dir, { recursive: true, force: true });
};

t.before(async () => {
  sh('ip', ['netns', 'add', ns]);
  ipNs(ns, 'link', 'set', 'lo', 'up');
  // No IPv6 on the namespace's devices: the kernel would add link-local addresses to the veth
  // whenever duplicate address detection finishes (seconds later on a loaded machine), and the
  // monitor below would take them for linend's doing.
  nsSysctl(ns, 'net.ipv6.conf.all.disable_ipv6', '1');
  nsSysctl(ns, 'net.ipv6.conf.default.disable_ipv6', '1');
  // The "external interface": one end of a veth pair kept inside the namespace.
  ipNs(ns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}p`.slice(0, 15));
  ipNs(ns, 'addr', 'add', '192.0.2.1/24', 'dev', dev);
  ipNs(ns, 'link', 'set', dev, 'up');
  ipNs(ns, 'link', 'set', `${dev}p`.slice(0, 15), 'up');
  etcd = await startEtcdServer({ ns, host: '127.0.0.1' });
  await etcd.ctl('put', `${PREFIX}/config`, JSON.stringify({ Network: '10.77.0.0/16', Backend: { Type: 'vxlan' } }));
});
t.teardown(async () => {
  await etcd?.destroy();
  cleanup();
});
process.once('exit', cleanup);

/** Valid flags every run starts from; a case replaces the ones it tests (repeatable --iface would otherwise still match). */
const BASE: Record<string, string> = {
  'etcd-endpoints': 'http://127.0.0.1:2379', iface: dev, 'subnet-file': subnetFile, 'healthz-ip': '127.0.0.1', 'healthz-port': '18471',
  'ip-masq': 'true', queues: '1',
};
function baseArgs(without: string[], port: number): string[] {
  return Object.entries({ ...BASE, 'healthz-port': String(port) }).filter(([k]) => !without.includes(k)).map(([k, v]) => `--${k}=${v}`);
}
/** The flag that an argument (or a FLANNELD_ or LINEN_ variable) sets. */
function flagOf(argOrEnv: string): string {
  const m = /^-{1,2}([^=]+)/.exec(argOrEnv);
  if (m) return m[1]!;
  return argOrEnv.replace(/^(FLANNELD|LINEN)_/, '').toLowerCase().replace(/_/g, '-');
}

interface Run { code: number | null; signal: string | null; stderr: string; stdout: string; ms: number }

// 30 s: a bad setting is refused within about a second, but a loaded machine (CI beside other
// work) can take several seconds just to start Node; a linend that wrongly goes ahead is killed.
function linend(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    // A clean environment: only PATH and what the case sets (no FLANNELD_*/LINEN_* leaking in).
    execFile('ip', ['netns', 'exec', ns, process.execPath, linendPath(), ...args],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: timeoutMs, killSignal: 'SIGKILL' },
      (e, stdout, stderr) => {
        const err = e as (Error & { code?: number | string; signal?: string }) | null;
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, signal: err?.signal ?? null, stdout, stderr, ms: Date.now() - t0 });
      });
  });
}

/** Everything linend could have changed in the namespace. */
async function hostState(): Promise<{ links: string[]; rules: string[]; subnetFile: boolean; keys: string[] }> {
  const links = listLinks(ns);
  const rules = nsExec(ns, 'iptables-save', []).split('\n').filter((l) => /FLANNEL|flanneld/.test(l));
  const keys = (await etcd.ctl('get', '--prefix', '--keys-only', `${PREFIX}/subnets`)).split('\n').filter(Boolean);
  return { links: links.sort(), rules, subnetFile: existsSync(subnetFile), keys };
}

const clean = { links: [] as string[], rules: [] as string[], subnetFile: false, keys: [] as string[] };

t.test('control: with valid flags linend does change the host, and these checks see it', async (t) => {
  clean.links = (await hostState()).links;
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, linendPath(), ...baseArgs([], 18470)], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: process.env.PATH } });
  let err = '';
  p.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise((r) => p.once('exit', r));
  const killer = setTimeout(() => p.kill('SIGKILL'), 30_000);
  const t0 = Date.now();
  while (Date.now() - t0 < 25_000 && !/Running: /.test(err)) await sleep(100);
  const during = await hostState();
  p.kill('SIGTERM');
  await exited;
  clearTimeout(killer);
  t.match(err, /Running: /, 'it started');
  t.ok(during.links.includes('flannel.1'), 'device created');
  t.ok(during.rules.length > 0, 'iptables rules installed');
  t.ok(during.subnetFile, 'subnet file written');
  t.equal(during.keys.length, 1, 'lease key in etcd');
  // Back to a clean host for the real cases.
  for (const k of during.keys) await etcd.ctl('del', k);
  rmSync(join(dir, 'run'), { recursive: true, force: true });
  const after = await hostState();
  t.same(after, clean, 'clean again (SIGTERM removed device and rules; key and file removed by the test)');
});

interface Case { what: string; args?: string[]; env?: Record<string, string>; names: RegExp; exit?: number }

const cases: Case[] = [];
const add = (c: Case): void => { cases.push(c); };

const linkToZero = join(dir, 'zero.env');
symlinkSync('/dev/zero', linkToZero);
const fifo = join(dir, 'fifo.env');
execFileSync('mkfifo', [fifo]);

// Every flag in FLAGS, given a value of the wrong kind (or out of range, or not what it names).
const wrong: Record<string, string[]> = {
  'etcd-endpoints': ['', 'ftp://127.0.0.1:2379', 'http://127.0.0.1:99999', 'http://a b:2379', 'http://127.0.0.1:2379,,http://127.0.0.1:2380'],
  iface: ['', 'no-such-dev0'],
  'iface-regex': ['(', '[a-'],
  'iface-can-reach': ['not-an-ip', '300.1.1.1'],
  'public-ip': ['1.2.3', '::1', '999.1.1.1'],
  'public-ipv6': ['1.2.3.4', 'fe80::zz'],
  // A link to /dev/zero and a FIFO would hang the read of the previous subnet.env.
  'subnet-file': ['/etc/hostname/subnet.env', '/proc/sys/linen/subnet.env', dir, linkToZero, fifo],
  'subnet-lease-renew-margin': ['x', '0', '1440', '-5', '1.5'],
  'ip-masq': ['maybe'],
  'ip-masq-fully-random-disable': ['2'],
  'iptables-resync': ['x', '0', '-1'],
  'iptables-forward-rules': ['yes'],
  'ip-blackhole-route': ['on'],
  'healthz-ip': ['localhost', '1.2.3.4.5'],
  'healthz-port': ['x', '-1', '65536'],
  'metrics-ip': ['localhost', '1.2.3.4.5'],
  'metrics-port': ['x', '-1', '65536'],
  'peer-metrics-limit': ['x', '-1', '1.5', '1000001'],
  'kube-subnet-mgr': ['nope'],
  'set-node-network-unavailable': ['nope'],
  version: ['nope'],
  v: ['x', '-1', '0x10'],
  engine: ['turbo', ''],
  queues: ['x', '0', '1025', '-2'],
  offload: ['maybe', 'ON'],
  'static-peers': ['/nonexistent/peers.json'],
};
// Flags whose every value is acceptable (free text, or accepted and ignored in etcd mode).
const anyValue = new Set(['etcd-prefix', 'etcd-username', 'etcd-password', 'kube-api-url', 'kubeconfig-file', 'kube-annotation-prefix', 'net-config-path', 'vmodule', 'log_backtrace_at']);

for (const f of FLAGS) {
  const vals = wrong[f.name];
  if (vals === undefined) continue;
  for (const v of vals) add({ what: `--${f.name}=${JSON.stringify(v)}`, args: [`--${f.name}=${v}`], names: new RegExp(`-${f.name.replace(/[-.]/g, '[-_.]')}\\b`) });
}
// TLS files: used only when both key and cert are given (as flanneld), so they are tried together.
const junk = join(dir, 'junk.pem');
writeFileSync(junk, 'not a PEM file\n');
mkdirSync(join(dir, 'pki'));
const pki = makeCerts(join(dir, 'pki'));
add({ what: 'key and cert files that do not exist', args: ['--etcd-keyfile=/nonexistent/key.pem', '--etcd-certfile=/nonexistent/cert.pem'], names: /cannot read --etcd-keyfile/ });
add({ what: 'a cert file that does not exist', args: [`--etcd-keyfile=${pki.clientKey}`, '--etcd-certfile=/nonexistent/cert.pem'], names: /cannot read --etcd-certfile/ });
add({ what: 'a CA file that does not exist', args: [`--etcd-keyfile=${pki.clientKey}`, `--etcd-certfile=${pki.clientCert}`, '--etcd-cafile=/nonexistent/ca.pem'], names: /cannot read --etcd-cafile/ });
add({ what: 'a key file that is not a PEM key', args: [`--etcd-keyfile=${junk}`, `--etcd-certfile=${pki.clientCert}`], names: /--etcd-keyfile .* is not a PEM private key/ });
add({ what: 'a cert file that is not a PEM certificate', args: [`--etcd-keyfile=${pki.clientKey}`, `--etcd-certfile=${pki.clientKey}`], names: /--etcd-certfile .* is not a PEM certificate/ });
add({ what: 'a CA file that is not a PEM certificate', args: [`--etcd-keyfile=${pki.clientKey}`, `--etcd-certfile=${pki.clientCert}`, `--etcd-cafile=${junk}`], names: /--etcd-cafile .* is not a PEM certificate/ });
const tlsFlags = ['etcd-keyfile', 'etcd-certfile', 'etcd-cafile'];
add({ what: '--metrics-port equal to --healthz-port', args: ['--healthz-port=18475', '--metrics-port=18475'], names: /-metrics-port\b/ });
// Kube mode: a prefix flanneld would refuse, a network config file that is not there.
add({ what: 'a bad --kube-annotation-prefix', args: ['--kube-subnet-mgr', '--kube-annotation-prefix=a/b/c'], names: /-kube-annotation-prefix\b.*at most single slash/ });
add({ what: 'a --net-config-path that does not exist', args: ['--kube-subnet-mgr', '--net-config-path=/nonexistent/net-conf.json'], names: /failed to read net conf: .*\/nonexistent\/net-conf\.json.*--net-config-path/ });
// Value missing entirely, in the separate-argument form.
add({ what: '--queues with no value', args: ['--queues'], names: /-queues/ });
add({ what: '--etcd-endpoints with no value', args: ['--etcd-endpoints'], names: /-etcd-endpoints/ });
// Syntax.
add({ what: 'an unknown flag', args: ['--no-such-flag'], names: /no-such-flag/, exit: 2 });
add({ what: 'an unknown flag with a value', args: ['--etcd-endpoint=http://127.0.0.1:2379'], names: /etcd-endpoint\b/, exit: 2 });
add({ what: 'a stray positional argument', args: ['--ip-masq', 'false'], names: /"false".*--ip-masq=false/, exit: 2 });
add({ what: 'bad flag syntax', args: ['---ip-masq'], names: /---ip-masq/, exit: 2 });
// Environment.
const envCases: [string, string][] = [
  ['FLANNELD_IP_MASQ', 'maybe'], ['FLANNELD_SUBNET_LEASE_RENEW_MARGIN', '0'], ['FLANNELD_SUBNET_LEASE_RENEW_MARGIN', 'soon'],
  ['FLANNELD_HEALTHZ_PORT', 'x'], ['FLANNELD_HEALTHZ_PORT', '70000'], ['FLANNELD_PUBLIC_IP', 'bad'], ['FLANNELD_ETCD_ENDPOINTS', 'gopher://x'],
  ['FLANNELD_IFACE_REGEX', '('], ['FLANNELD_IPTABLES_RESYNC', '0'], ['FLANNELD_KUBE_SUBNET_MGR', 'nope'], ['FLANNELD_V', 'loud'],
  ['LINEN_QUEUES', '0'], ['LINEN_QUEUES', 'many'], ['LINEN_ENGINE', 'turbo'], ['LINEN_OFFLOAD', 'sometimes'], ];
for (const [k, v] of envCases) add({ what: `${k}=${JSON.stringify(v)}`, env: { [k]: v }, names: new RegExp(k) });
add({ what: 'LINEN_STATIC_PEERS="/nonexistent/p.json"', env: { LINEN_STATIC_PEERS: '/nonexistent/p.json' }, names: /static-peers.*\/nonexistent\/p\.json/ });

// A static peers file with each field wrong (static mode never touches etcd).
const good = { Network: '10.77.0.0/16', Backend: { Type: 'vxlan' }, Subnet: '10.77.1.0/24', VtepMAC: '0a:58:0a:4d:01:00',
  Peers: [{ Subnet: '10.77.2.0/24', PublicIP: '192.0.2.2', VtepMAC: '0a:58:0a:4d:02:00' }] };
const peersCases: [string, unknown, RegExp][] = [
  ['not JSON', '{"Network": ', /not JSON/],
  ['not an object', [1, 2], /JSON object/],
  ['Network missing', { ...good, Network: undefined }, /peers-\d+\.json: .*Network/],
  ['Network not a CIDR', { ...good, Network: '10.77.0.0/99' }, /peers-\d+\.json: .*Network/],
  ['Backend.Type unknown', { ...good, Backend: { Type: 'carrier-pigeon' } }, /peers-\d+\.json: .*carrier-pigeon/],
  ['Subnet missing', { ...good, Subnet: undefined }, /Subnet/],
  ['Subnet not a CIDR', { ...good, Subnet: 'ten' }, /Subnet/],
  ['Subnet outside Network', { ...good, Subnet: '10.78.1.0/24' }, /Subnet .*not inside Network/],
  ['VtepMAC not a MAC', { ...good, VtepMAC: 'zz:zz' }, /VtepMAC/],
  ['Peers not an array', { ...good, Peers: {} }, /Peers must be an array/],
  ['Peers[0] not an object', { ...good, Peers: ['x'] }, /Peers\[0\]/],
  ['Peers[0].PublicIP missing', { ...good, Peers: [{ ...good.Peers[0], PublicIP: undefined }] }, /Peers\[0\]\.PublicIP/],
  ['Peers[0].PublicIP not IPv4', { ...good, Peers: [{ ...good.Peers[0], PublicIP: '1.2.3' }] }, /Peers\[0\]\.PublicIP/],
  ['Peers[0].Subnet not a CIDR', { ...good, Peers: [{ ...good.Peers[0], Subnet: 5 }] }, /Peers\[0\]\.Subnet/],
  ['Peers[0].Subnet outside Network', { ...good, Peers: [{ ...good.Peers[0], Subnet: '172.16.0.0/24' }] }, /Peers\[0\]\.Subnet/],
  ['Peers[0].VtepMAC missing (vxlan)', { ...good, Peers: [{ ...good.Peers[0], VtepMAC: undefined }] }, /Peers\[0\]\.VtepMAC/],
  ['Peers[0].VtepMAC not a MAC', { ...good, Peers: [{ ...good.Peers[0], VtepMAC: '0a:58' }] }, /Peers\[0\]\.VtepMAC/],
];
peersCases.forEach(([what, body, names], i) => {
  const file = join(dir, `peers-${i}.json`);
  writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
  add({ what: `static peers: ${what}`, args: [`--static-peers=${file}`], names });
});

t.test(`${cases.length} wrong settings: a one-line error naming each, a non-zero exit, nothing changed on the host`, async (t) => {
  const untried = FLAGS.filter((f) => wrong[f.name] === undefined && !anyValue.has(f.name) && !tlsFlags.includes(f.name)).map((f) => f.name);
  t.same(untried, [], 'every flag in FLAGS is either tried with wrong values or takes any value');
  monitor = spawn('ip', ['-n', ns, 'monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
  monitor.stdout?.on('data', (d: Buffer) => { monitored += d.toString(); });
  await sleep(200);
  const results: { c: Case; r: Run }[] = [];
  // Four at a time (each is a short-lived node process).
  for (let i = 0; i < cases.length; i += 4) {
    const batch = cases.slice(i, i + 4);
    const rs = await Promise.all(batch.map((c, k) => {
      const tested = [...(c.args ?? []), ...Object.keys(c.env ?? {})].map(flagOf);
      return linend([...baseArgs(tested, 18480 + i + k), ...(c.args ?? [])], c.env ?? {});
    }));
    batch.forEach((c, k) => results.push({ c, r: rs[k]! }));
  }
  let slowest = 0;
  for (const { c, r } of results) {
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    const errors = lines.filter((l) => l.startsWith('linend: '));
    const last = lines[lines.length - 1] ?? '';
    const ok = r.code !== null && r.code !== 0 && r.signal === null && (c.exit === undefined || r.code === c.exit) &&
      errors.length === 1 && last === errors[0] && c.names.test(last);
    t.ok(ok, `${c.what}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}, ${r.ms} ms: ${last.slice(0, 240)}`);
    if (!ok) t.comment(r.stderr.slice(-1500));
    slowest = Math.max(slowest, r.ms);
  }
  await sleep(300);
  monitor.kill('SIGKILL');
  t.equal(monitored.trim(), '', 'ip monitor saw no device, address or route change in the namespace');
  t.same(await hostState(), clean, 'no device, no iptables rule, no subnet file, no etcd key');
  t.comment(`figures: bad_settings=${cases.length} flags_in_FLAGS=${FLAGS.length} slowest_ms=${slowest}`);
});
