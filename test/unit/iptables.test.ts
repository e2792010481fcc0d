import t from 'tap';
import {
  applyPayload,
  forwardRules,
  IPTables,
  masqRules,
  removePayload,
  ruleLine,
  versionAtLeast162,
  type Exec,
  type IptRule,
} from '../../src/device/iptables.js';
import { parseCIDR } from '../../src/net.js';
import { FORWARD, MASQ } from '../helpers/flanneld-rules.js';

const cluster = parseCIDR('10.5.0.0/16')!;
const pod = parseCIDR('10.5.72.0/24')!;
const lines = (rs: IptRule[]): string[] => rs.map((r) => `${r.table} ${ruleLine(r, '-A')}`);

t.test('masquerade rules, byte for byte', async (t) => {
  t.same(lines(masqRules(cluster, pod, true)), MASQ.map((l) => `nat ${l}`));
  const noRF = lines(masqRules(cluster, pod, false));
  t.equal(noRF[5], 'nat -A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE');
  t.equal(noRF[6], 'nat -A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE');
  t.same(masqRules(cluster, pod, true)[5]?.spec, ['-s', '10.5.0.0/16', '!', '-d', '224.0.0.0/4', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'MASQUERADE', '--random-fully'], 'args unquoted for exec');
});

t.test('forward rules, byte for byte', async (t) => {
  t.same(lines(forwardRules(cluster)), FORWARD.map((l) => `filter ${l}`));
});

t.test('iptables-restore payloads', async (t) => {
  t.equal(
    applyPayload([...masqRules(cluster, pod, true), ...forwardRules(cluster)]),
    [
      '*nat',
      ':FLANNEL-POSTRTG - [0:0]',
      ...MASQ,
      'COMMIT',
      '*filter',
      ':FLANNEL-FWD - [0:0]',
      ...FORWARD,
      'COMMIT',
      '',
    ].join('\n'),
  );
  const fwd = forwardRules(cluster);
  t.equal(
    applyPayload(fwd, new Set(['filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'])),
    [
      '*filter',
      ':FLANNEL-FWD - [0:0]',
      '-D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      'COMMIT',
      '',
    ].join('\n'),
    'an existing jump is deleted and appended again (moves to the end)',
  );
  const all = new Set(lines(fwd));
  t.equal(
    removePayload(fwd, all, false),
    [
      '*filter',
      '-D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-D FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      '-D FLANNEL-FWD -d 10.5.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      'COMMIT',
      '',
    ].join('\n'),
    'teardown like flanneld: -D what exists',
  );
  t.equal(
    removePayload(fwd, all, true, new Set(['filter FLANNEL-FWD'])),
    ['*filter', ':FLANNEL-FWD - [0:0]', '-D FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD', '-X FLANNEL-FWD', 'COMMIT', ''].join('\n'),
    'with chains: flush, drop the jump, delete the chain',
  );
  t.equal(removePayload(fwd, new Set(), false), '', 'nothing to do');
});

t.test('version check for --random-fully / --wait', async (t) => {
  t.ok(versionAtLeast162('iptables v1.8.9 (nf_tables)'));
  t.ok(versionAtLeast162('iptables v1.6.2'));
  t.notOk(versionAtLeast162('iptables v1.6.1'));
  t.notOk(versionAtLeast162('iptables v1.4.21'));
  t.notOk(versionAtLeast162('garbage'));
});

t.test('commands issued (fake exec)', async (t) => {
  const calls: string[] = [];
  const inputs: string[] = [];
  const present = new Set<string>(['-t filter -C FORWARD -m comment --comment flanneld forward -j FLANNEL-FWD']);
  const exec: Exec = async (cmd, args, input) => {
    calls.push(`${cmd} ${args.join(' ')}`);
    if (input !== undefined && input !== '') inputs.push(input);
    if (cmd === 'iptables' && args[0] === '--version') return { code: 0, stdout: 'iptables v1.8.9 (nf_tables)\n', stderr: '' };
    if (cmd === 'iptables') {
      const key = args.filter((a) => a !== '--wait').join(' ');
      return { code: present.has(key) ? 0 : 1, stdout: '', stderr: '' };
    }
    return { code: 0, stdout: '', stderr: '' };
  };
  const ipt = new IPTables({ exec });
  t.equal(await ipt.hasRandomFully(), true);
  await ipt.apply(forwardRules(cluster));
  t.same(calls.slice(1), [
    'iptables --wait -t filter -C FORWARD -m comment --comment flanneld forward -j FLANNEL-FWD',
    'iptables-restore --noflush --wait',
  ]);
  t.match(inputs[0], /^\*filter\n:FLANNEL-FWD - \[0:0\]\n-D FORWARD .*\n-A FORWARD /);
  const failing = new IPTables({ exec: async () => ({ code: 2, stdout: '', stderr: 'iptables-restore: line 3 failed' }) });
  await t.rejects(failing.apply(forwardRules(cluster)), { message: /iptables -t filter -C FORWARD .* failed \(exit 2\)/ });
  const restoreFails = new IPTables({ exec: async (cmd) => (cmd === 'iptables' ? { code: 1, stdout: '', stderr: '' } : { code: 1, stdout: '', stderr: 'line 2 failed\n' }) });
  await t.rejects(restoreFails.apply(forwardRules(cluster)), { message: 'iptables-restore --noflush failed (exit 1): line 2 failed' });
  const noWait = new IPTables({ exec, wait: false });
  calls.length = 0;
  await noWait.ruleExists(forwardRules(cluster)[1]!);
  t.same(calls, ['iptables -t filter -C FLANNEL-FWD -s 10.5.0.0/16 -m comment --comment flanneld forward -j ACCEPT']);
});
