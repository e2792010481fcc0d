// Applies and removes flanneld's rule sets with the real iptables, inside a throwaway
// network namespace (never the host's tables).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { forwardRules, IPTables, masqRules, netnsExec, type Exec } from '../../src/device/iptables.js';
import { parseCIDR } from '../../src/net.js';
import { FORWARD, MASQ } from '../helpers/flanneld-rules.js';

t.setTimeout(60_000);

const ns = `linen-ipt-${process.pid}-${randomBytes(3).toString('hex')}`;
let created = false;
const cleanup = (): void => {
  if (!created) return;
  created = false;
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
};
process.on('exit', cleanup);

execFileSync('ip', ['netns', 'add', ns]);
created = true;
t.teardown(cleanup);

const exec: Exec = netnsExec(ns);
const sh = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
const rulesOf = (table: string): string[] =>
  sh('iptables', '-t', table, '-S')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-P '));

const cluster = parseCIDR('10.5.0.0/16')!;
const pod = parseCIDR('10.5.72.0/24')!;

const NAT = ['-N FLANNEL-POSTRTG', ...MASQ];
const FILTER = ['-N FLANNEL-FWD', ...FORWARD];

t.test('apply, re-apply, repair and remove in a network namespace', async (t) => {
  const ipt = new IPTables({ exec });
  const rf = await ipt.hasRandomFully();
  t.ok(rf, 'this iptables supports --random-fully');
  const masq = masqRules(cluster, pod, rf);
  const fwd = forwardRules(cluster);
  t.notOk(await ipt.allExist(masq), 'nothing there yet');

  await ipt.apply(masq);
  await ipt.apply(fwd);
  t.same(rulesOf('nat'), NAT, 'nat table exactly as flanneld');
  t.same(rulesOf('filter'), FILTER, 'filter table exactly as flanneld');
  t.ok(await ipt.allExist(masq));
  t.ok(await ipt.allExist(fwd));

  // Idempotent: applying again leaves exactly the same rules (no duplicates).
  await ipt.apply(masq);
  await ipt.apply(fwd);
  t.same(rulesOf('nat'), NAT);
  t.same(rulesOf('filter'), FILTER);

  // Someone appends a rule after our jump: re-applying moves the jump to the end (flanneld).
  sh('iptables', '-t', 'nat', '-A', 'POSTROUTING', '-s', '192.0.2.0/24', '-j', 'RETURN');
  await ipt.apply(masq);
  const post = rulesOf('nat').filter((l) => l.startsWith('-A POSTROUTING'));
  t.same(post, ['-A POSTROUTING -s 192.0.2.0/24 -j RETURN', '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG']);
  sh('iptables', '-t', 'nat', '-D', 'POSTROUTING', '-s', '192.0.2.0/24', '-j', 'RETURN');

  // A rule goes missing: ensure() notices and restores the whole set in order.
  sh('iptables', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', '-s', '10.5.0.0/16', '-d', '10.5.72.0/24', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'RETURN');
  t.notOk(await ipt.allExist(masq));
  t.equal(await ipt.ensure(masq), true, 're-applied');
  t.same(rulesOf('nat'), NAT);
  t.equal(await ipt.ensure(masq), false, 'nothing to do when complete');
  // The whole chain deleted by someone: also repaired.
  sh('iptables', '-t', 'filter', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD');
  sh('iptables', '-t', 'filter', '-F', 'FLANNEL-FWD');
  sh('iptables', '-t', 'filter', '-X', 'FLANNEL-FWD');
  t.equal(await ipt.ensure(fwd), true);
  t.same(rulesOf('filter'), FILTER);

  // Stale rules of a previous subnet are removed without touching the chains (flanneld).
  const oldMasq = masqRules(cluster, parseCIDR('10.5.9.0/24')!, rf);
  await ipt.remove(oldMasq);
  // flanneld deletes the previous subnet's rule set; the rules shared with the current set
  // (jump, mark, cluster-wide masquerade) go too and come back with the next apply.
  t.same(rulesOf('nat'), [NAT[0], NAT[3], NAT[4], NAT[5]], 'old set deleted, current pod rules kept');
  await ipt.apply(masq);
  t.same(rulesOf('nat'), NAT);

  // Remove everything, chains included.
  await ipt.remove(masq, { deleteChains: true });
  await ipt.remove(fwd, { deleteChains: true });
  t.same(rulesOf('nat'), [], 'nat empty');
  t.same(rulesOf('filter'), [], 'filter empty');
  await ipt.remove(masq, { deleteChains: true });
  t.pass('removing again is harmless');

  // The resync loop: keep() applies, then repairs on the next tick.
  const ac = new AbortController();
  let ticks = 0;
  const kept = ipt.keep(fwd, 1, ac.signal, async () => {
    ticks++;
    if (ticks === 1) sh('iptables', '-t', 'filter', '-D', 'FLANNEL-FWD', '-d', '10.5.0.0/16', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT');
    if (ticks === 2) ac.abort();
  });
  await kept;
  t.same(rulesOf('filter'), FILTER, 'repaired by keep()');
  await ipt.remove(fwd, { deleteChains: true });
});
