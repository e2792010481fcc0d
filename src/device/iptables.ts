// flanneld's iptables rules (docs/flanneld-compat.md, "iptables rules"), as data, and their installation through
// `iptables-restore --noflush --wait` with `iptables -C` existence checks.
//
// Masquerade (table nat, comment "flanneld masq"):
//   -A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
//   -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s POD -d CLUSTER -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s CLUSTER -d POD -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG ! -s CLUSTER -d POD -m comment --comment "flanneld masq" -j RETURN
//   -A FLANNEL-POSTRTG -s CLUSTER ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
//   -A FLANNEL-POSTRTG ! -s CLUSTER -d CLUSTER -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
// Forward (table filter, comment "flanneld forward"):
//   -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
//   -A FLANNEL-FWD -s CLUSTER -m comment --comment "flanneld forward" -j ACCEPT
//   -A FLANNEL-FWD -d CLUSTER -m comment --comment "flanneld forward" -j ACCEPT
//
// apply() does what flanneld's CreateIP4Chain + ipTablesBootstrap do, in one atomic
// iptables-restore transaction: the FLANNEL-* chains are created or flushed, a rule that
// already exists is deleted (-D) before it is appended again (-A) so that the order is
// exactly this one. ensure() checks every rule with -C and re-applies the whole set when
// one is missing (flanneld's resync). remove() deletes the rules that exist (flanneld's
// teardown), optionally also the FLANNEL-* chains.

import { spawn } from 'node:child_process';
import { formatCIDR, type IPv4Net } from '../net.js';
import { nullLogger, type Logger } from '../log.js';

export type Table = 'nat' | 'filter';

export interface IptRule {
  readonly table: Table;
  readonly chain: string;
  /** Everything after the chain name, as separate arguments. */
  readonly spec: readonly string[];
}

export const KUBE_PROXY_MARK = '0x4000/0x4000';
export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
export const FWD_CHAIN = 'FLANNEL-FWD';
export const MASQ_COMMENT = 'flanneld masq';
export const FWD_COMMENT = 'flanneld forward';
const OWN_CHAINS = new Set([MASQ_CHAIN, FWD_CHAIN]);

const masq = (...spec: string[]): IptRule => ({ table: 'nat', chain: MASQ_CHAIN, spec });
const mc = ['-m', 'comment', '--comment', MASQ_COMMENT];
const fc = ['-m', 'comment', '--comment', FWD_COMMENT];

/** The masquerade rules for cluster network `cluster` and own lease `pod` (flannel's masqRules). */
export function masqRules(cluster: IPv4Net, pod: IPv4Net, randomFully: boolean): IptRule[] {
  const c = formatCIDR(cluster);
  const p = formatCIDR(pod);
  const rf = randomFully ? ['--random-fully'] : [];
  return [
    { table: 'nat', chain: 'POSTROUTING', spec: [...mc, '-j', MASQ_CHAIN] },
    masq('-m', 'mark', '--mark', KUBE_PROXY_MARK, ...mc, '-j', 'RETURN'),
    masq('-s', p, '-d', c, ...mc, '-j', 'RETURN'),
    masq('-s', c, '-d', p, ...mc, '-j', 'RETURN'),
    masq('!', '-s', c, '-d', p, ...mc, '-j', 'RETURN'),
    masq('-s', c, '!', '-d', '224.0.0.0/4', ...mc, '-j', 'MASQUERADE', ...rf),
    masq('!', '-s', c, '-d', c, ...mc, '-j', 'MASQUERADE', ...rf),
  ];
}

/** The FORWARD accept rules for the cluster network (flannel's forwardRules). */
export function forwardRules(cluster: IPv4Net): IptRule[] {
  const c = formatCIDR(cluster);
  return [
    { table: 'filter', chain: 'FORWARD', spec: [...fc, '-j', FWD_CHAIN] },
    { table: 'filter', chain: FWD_CHAIN, spec: ['-s', c, ...fc, '-j', 'ACCEPT'] },
    { table: 'filter', chain: FWD_CHAIN, spec: ['-d', c, ...fc, '-j', 'ACCEPT'] },
  ];
}

/** One iptables-restore line; the token after --comment is double-quoted, as flanneld does. */
export function ruleLine(r: IptRule, action: '-A' | '-D'): string {
  const parts = [action, r.chain];
  r.spec.forEach((tok, i) => parts.push(i > 0 && r.spec[i - 1] === '--comment' ? `"${tok}"` : tok));
  return parts.join(' ');
}

/** Own chains a rule set lives in or jumps to (FLANNEL-POSTRTG / FLANNEL-FWD), per table. */
function ownChains(rules: readonly IptRule[]): { table: Table; chain: string }[] {
  const out: { table: Table; chain: string }[] = [];
  const add = (table: Table, chain: string): void => {
    if (OWN_CHAINS.has(chain) && !out.some((x) => x.table === table && x.chain === chain)) out.push({ table, chain });
  };
  for (const r of rules) {
    add(r.table, r.chain);
    add(r.table, r.spec[r.spec.length - 1] ?? '');
  }
  return out;
}

const ruleKey = (r: IptRule): string => `${r.table} ${ruleLine(r, '-A')}`;

/** Groups lines per table in first-appearance order and wraps them in *table ... COMMIT. */
function payload(blocks: Map<Table, string[]>): string {
  let s = '';
  for (const [table, lines] of blocks) {
    if (lines.length === 0) continue;
    s += `*${table}\n${lines.join('\n')}\nCOMMIT\n`;
  }
  return s;
}

function block(blocks: Map<Table, string[]>, t: Table): string[] {
  let b = blocks.get(t);
  if (b === undefined) {
    b = [];
    blocks.set(t, b);
  }
  return b;
}

/**
 * The iptables-restore --noflush input that installs `rules` in order: own chains declared
 * (created, or flushed if present), then for each rule a -D if it already exists
 * (`existing`, by ruleKey) followed by its -A.
 */
export function applyPayload(rules: readonly IptRule[], existing: ReadonlySet<string> = new Set()): string {
  const blocks = new Map<Table, string[]>();
  for (const r of rules) block(blocks, r.table);
  for (const { table, chain } of ownChains(rules)) block(blocks, table).push(`:${chain} - [0:0]`);
  for (const r of rules) {
    const b = block(blocks, r.table);
    // Rules inside own chains were just flushed; only the jumps in built-in chains can remain.
    if (!OWN_CHAINS.has(r.chain) && existing.has(ruleKey(r))) b.push(ruleLine(r, '-D'));
    b.push(ruleLine(r, '-A'));
  }
  return payload(blocks);
}

/**
 * The input that deletes the rules of `rules` that exist; with deleteChains, also flushes
 * and deletes the own chains (after the jumps into them are gone).
 */
export function removePayload(rules: readonly IptRule[], existing: ReadonlySet<string>, deleteChains: boolean, chainsPresent: ReadonlySet<string> = new Set()): string {
  const blocks = new Map<Table, string[]>();
  const chains = deleteChains ? ownChains(rules).filter((c) => chainsPresent.has(`${c.table} ${c.chain}`)) : [];
  for (const c of chains) block(blocks, c.table).push(`:${c.chain} - [0:0]`);
  for (const r of rules) {
    if (deleteChains && OWN_CHAINS.has(r.chain)) continue; // flushed with the chain
    if (existing.has(ruleKey(r))) block(blocks, r.table).push(ruleLine(r, '-D'));
  }
  for (const c of chains) block(blocks, c.table).push(`-X ${c.chain}`);
  return payload(blocks);
}

// ---------------------------------------------------------------------------------------
// Running iptables

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command; `input` goes to stdin. Never rejects for a non-zero exit. */
export type Exec = (cmd: string, args: readonly string[], input?: string) => Promise<ExecResult>;

export const spawnExec: Exec = (cmd, args, input) =>
  new Promise((resolve, reject) => {
    const p = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code: code ?? 128, stdout, stderr }));
    p.stdin.on('error', () => undefined);
    p.stdin.end(input ?? '');
  });

/** An Exec that runs every command inside a network namespace (`ip netns exec NAME ...`). */
export function netnsExec(netns: string, base: Exec = spawnExec): Exec {
  return (cmd, args, input) => base('ip', ['netns', 'exec', netns, cmd, ...args], input);
}

export class IptablesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IptablesError';
  }
}

export interface IPTablesOptions {
  exec?: Exec;
  /** Pass --wait (xtables lock); flanneld does when iptables >= 1.6.2. Default true. */
  wait?: boolean;
  iptables?: string;
  iptablesRestore?: string;
  log?: Logger;
}

/** iptables >= 1.6.2 has --random-fully (and --wait for restore), as go-iptables checks. */
export function versionAtLeast162(versionText: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (m === null) return false;
  const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
}

export class IPTables {
  private readonly exec: Exec;
  private readonly wait: boolean;
  private readonly bin: string;
  private readonly restoreBin: string;
  private readonly log: Logger;
  /** Serialises restores, as flanneld's mutex does. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: IPTablesOptions = {}) {
    this.exec = opts.exec ?? spawnExec;
    this.wait = opts.wait ?? true;
    this.bin = opts.iptables ?? 'iptables';
    this.restoreBin = opts.iptablesRestore ?? 'iptables-restore';
    this.log = opts.log ?? nullLogger;
  }

  private waitArgs(): string[] {
    return this.wait ? ['--wait'] : [];
  }

  /** Whether MASQUERADE --random-fully is available (iptables >= 1.6.2). */
  async hasRandomFully(): Promise<boolean> {
    const r = await this.exec(this.bin, ['--version']);
    return r.code === 0 && versionAtLeast162(r.stdout + r.stderr);
  }

  async chainExists(table: Table, chain: string): Promise<boolean> {
    const r = await this.exec(this.bin, [...this.waitArgs(), '-t', table, '-S', chain]);
    if (r.code === 0) return true;
    if (r.code === 1) return false;
    throw new IptablesError(`iptables -t ${table} -S ${chain} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  /** `iptables -C`: true if the rule exists. A missing chain or jump target means no. */
  async ruleExists(r: IptRule): Promise<boolean> {
    const res = await this.exec(this.bin, [...this.waitArgs(), '-t', r.table, '-C', r.chain, ...r.spec]);
    if (res.code === 0) return true;
    if (res.code === 1 || /does not exist|No chain\/target\/match|Bad rule/.test(res.stderr)) return false;
    throw new IptablesError(`iptables -t ${r.table} -C ${ruleLine(r, '-A').slice(3)} failed (exit ${res.code}): ${res.stderr.trim()}`);
  }

  /** flanneld's ipTablesRulesExist: every own chain and every rule is present. */
  async allExist(rules: readonly IptRule[]): Promise<boolean> {
    for (const c of ownChains(rules)) if (!(await this.chainExists(c.table, c.chain))) return false;
    for (const r of rules) if (!(await this.ruleExists(r))) return false;
    return true;
  }

  private async existing(rules: readonly IptRule[]): Promise<Set<string>> {
    const s = new Set<string>();
    for (const r of rules) if (await this.ruleExists(r)) s.add(ruleKey(r));
    return s;
  }

  private async restore(input: string): Promise<void> {
    if (input === '') return;
    const run = async (): Promise<void> => {
      this.log.v(6).info(`iptables-restore --noflush payload:\n${input}`);
      const r = await this.exec(this.restoreBin, ['--noflush', ...this.waitArgs()], input);
      if (r.code !== 0) {
        throw new IptablesError(`iptables-restore --noflush failed (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
      }
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Installs the rules in order (see applyPayload). */
  async apply(rules: readonly IptRule[]): Promise<void> {
    const builtinRules = rules.filter((r) => !OWN_CHAINS.has(r.chain));
    await this.restore(applyPayload(rules, await this.existing(builtinRules)));
  }

  /** Deletes the rules that exist; with deleteChains also the FLANNEL-* chains. */
  async remove(rules: readonly IptRule[], opts: { deleteChains?: boolean } = {}): Promise<void> {
    const present = new Set<string>();
    for (const c of ownChains(rules)) if (await this.chainExists(c.table, c.chain)) present.add(`${c.table} ${c.chain}`);
    const checkable = rules.filter((r) => !OWN_CHAINS.has(r.chain) || present.has(`${r.table} ${r.chain}`));
    const existing = await this.existing(checkable);
    await this.restore(removePayload(rules, existing, opts.deleteChains === true, present));
  }

  /** Re-applies the whole set if any chain or rule is missing; true if it did. */
  async ensure(rules: readonly IptRule[]): Promise<boolean> {
    if (await this.allExist(rules)) return false;
    this.log.info('Some iptables rules are missing; deleting and recreating rules');
    await this.apply(rules);
    return true;
  }

  /**
   * Applies the rules, then checks them every `intervalMs` (--iptables-resync) until
   * `signal` aborts. Errors are logged, not thrown. `sleep` is injectable for tests.
   */
  async keep(
    rules: readonly IptRule[],
    intervalMs: number,
    signal: AbortSignal,
    sleep: (ms: number, signal: AbortSignal) => Promise<void> = defaultSleep,
  ): Promise<void> {
    try {
      await this.apply(rules);
    } catch (e) {
      this.log.error(`Failed to bootstrap IPTables: ${(e as Error).message}`);
    }
    while (!signal.aborted) {
      await sleep(intervalMs, signal);
      if (signal.aborted) break;
      try {
        await this.ensure(rules);
      } catch (e) {
        this.log.error(`Failed to ensure iptables rules: ${(e as Error).message}`);
      }
    }
  }
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
