// The iptables rules linend keeps while it runs: flanneld's masquerade rules (--ip-masq) and
// forward rules (--iptables-forward-rules), checked every --iptables-resync seconds and put
// back when something removed them. Unlike flanneld, linend removes them when it stops.
import { formatCIDR, netEqual, type IPv4Net } from '../net.js';
import type { Logger } from '../log.js';
import type { PreviousSubnetEnv } from '../config/subnetenv.js';
import { IPTables, forwardRules, masqRules, type IptRule } from './iptables.js';

export interface TrafficRules {
  remove(): Promise<void>;
  /** Periodic checks that found rules missing and put them back, and checks that failed (for /metrics). */
  resyncs(): { readonly restored: number; readonly failed: number };
}

/** The CLI flags the rules depend on (flags.ts's Options has them). */
export interface TrafficRuleOptions {
  ipMasq: boolean;
  ipMasqRandomFullyDisable: boolean;
  iptablesForwardRules: boolean;
  /** Seconds between checks that the rules are still there. */
  iptablesResync: number;
}

export async function installTrafficRules(o: TrafficRuleOptions, network: IPv4Net, own: IPv4Net, previous: PreviousSubnetEnv | null, log: Logger): Promise<TrafficRules> {
  const sets: IptRule[][] = [];
  if (!o.ipMasq && !o.iptablesForwardRules) return { remove: async () => undefined, resyncs: () => ({ restored: 0, failed: 0 }) };
  const ipt = new IPTables({ log: log.child('iptables') });
  if (o.ipMasq) {
    const randomFully = !o.ipMasqRandomFullyDisable && (await ipt.hasRandomFully());
    // Rules built from a previous network or subnet would masquerade the wrong traffic.
    if (previous?.network && previous.subnet && (!netEqual(previous.network, network) || !netEqual(previous.subnet, own))) {
      log.info(`Removing masquerade rules of the previous lease ${formatCIDR(previous.subnet)} in ${formatCIDR(previous.network)}`);
      await ipt.remove(masqRules(previous.network, previous.subnet, randomFully));
    }
    sets.push(masqRules(network, own, randomFully));
  }
  if (o.iptablesForwardRules) sets.push(forwardRules(network));
  for (const s of sets) await ipt.apply(s);
  log.info(`Installed iptables rules: ${[o.ipMasq ? 'masquerade' : '', o.iptablesForwardRules ? 'forward' : ''].filter(Boolean).join(' and ')}`);
  let checking = false;
  const counts = { restored: 0, failed: 0 };
  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void (async () => {
      for (const s of sets) {
        if (await ipt.ensure(s)) {
          counts.restored++;
          log.warn('iptables rules were missing and have been restored');
        }
      }
    })().catch((e: Error) => {
      counts.failed++;
      log.error(`checking iptables rules: ${e.message}`);
    }).finally(() => { checking = false; });
  }, Math.max(1, o.iptablesResync) * 1000);
  timer.unref();
  return {
    resyncs: () => ({ ...counts }),
    async remove() {
      clearInterval(timer);
      for (const s of sets) {
        try { await ipt.remove(s, { deleteChains: true }); } catch (e) { log.error(`removing iptables rules: ${(e as Error).message}`); }
      }
    },
  };
}
