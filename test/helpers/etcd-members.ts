// A multi-member etcd cluster for a linen test cluster (lab/cluster.ts): every member in a
// network namespace of its own, joined to the topology's underlay bridge by a veth, at
// 192.168.x.(240+n) with client port 2379 and peer port 2380. The hosts reach every member;
// the members reach each other over the bridge.
//
//   const m = await startEtcdMembers(c, 3);
//   m.endpoints                       // for linend's --etcd-endpoints
//   await m.ctl('put', k, v)          // etcdctl against every live member
//   await m.leader()                  // the member that leads now
//   await m.members[0].server.kill()  // SIGKILL one member (data kept; start() again)
//   m.partition(m.members[1])         // drops its peer traffic (clients still reach it)
//   await m.replace(m.members[2])     // member remove + member add of a fresh one, same address
import { execFile } from 'node:child_process';
import type { Cluster } from '../../lab/cluster.js';
import { ETCDCTL, startEtcdServer, type EtcdServer } from '../../lab/etcd.js';
import { nsExec } from '../../lab/netns.js';

export interface EtcdMember {
  /** etcd's member name (changes when the member is replaced). */
  name: string;
  readonly ns: string;
  readonly ip: string;
  readonly clientURL: string;
  readonly peerURL: string;
  server: EtcdServer;
}

export interface EtcdMembers {
  readonly members: EtcdMember[];
  readonly endpoints: string[];
  /** etcdctl with --endpoints of the members that run and are not cut off; stdout. */
  ctl(...args: string[]): Promise<string>;
  /** The member that is leader now, according to the running members (null: none agree). */
  leader(): Promise<EtcdMember | null>;
  /** Drops the member's peer traffic in its namespace; returns heal(). */
  partition(m: EtcdMember): { heal(): void };
  /** Takes the member's link down: nothing reaches it, nothing is reset. Returns heal(). */
  unplug(m: EtcdMember): { heal(): void };
  /** Removes the member from the cluster, wipes it, and adds a fresh one at the same address. */
  replace(m: EtcdMember): Promise<void>;
  destroy(): Promise<void>;
}

const TIMING = ['--heartbeat-interval=100', '--election-timeout=1000'];

export async function startEtcdMembers(c: Cluster, count: number): Promise<EtcdMembers> {
  const topo = c.topo;
  const br = topo.bridgeNs;
  if (br === undefined) throw new Error('etcd members need a topology with a bridge');
  const x = c.etcdEndpoint.split('.')[2];
  const token = `${topo.id}-etcd`;
  const members: EtcdMember[] = [];
  for (let i = 1; i <= count; i++) {
    const ns = `${topo.id}-e${i}`;
    topo.addNamespace(ns);
    const dev = `${topo.id}-e${i}`;
    const port = `${topo.id}-f${i}`;
    topo.ip(ns, 'link', 'add', dev, 'type', 'veth', 'peer', 'name', port, 'netns', br);
    topo.ip(br, 'link', 'set', port, 'master', `${topo.id}-br`);
    topo.ip(br, 'link', 'set', port, 'up');
    const ip = `192.168.${x}.${240 + i}`;
    topo.ip(ns, 'addr', 'add', `${ip}/24`, 'dev', dev);
    topo.ip(ns, 'link', 'set', dev, 'up');
    members.push({ name: `m${i}`, ns, ip, clientURL: `http://${ip}:2379`, peerURL: `http://${ip}:2380`, server: null as unknown as EtcdServer });
  }
  const cluster = (ms: EtcdMember[]): string => ms.map((m) => `${m.name}=${m.peerURL}`).join(',');
  // startEtcdServer's own single-member flags come first; these repeat them and win.
  const start = (m: EtcdMember, initial: string, state: 'new' | 'existing'): Promise<EtcdServer> => startEtcdServer({
    ns: m.ns, host: m.ip, clientPort: 2379, peerPort: 2380, startTimeout: 60_000,
    args: [`--name=${m.name}`, `--initial-cluster=${initial}`, `--initial-cluster-state=${state}`, `--initial-cluster-token=${token}`, ...TIMING],
  });
  const started = await Promise.allSettled(members.map((m) => start(m, cluster(members), 'new')));
  for (const [i, r] of started.entries()) if (r.status === 'fulfilled') members[i]!.server = r.value;
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await Promise.all(members.map((m) => m.server?.destroy()));
    throw failed.reason;
  }

  const cut = new Set<EtcdMember>();
  const live = (): EtcdMember[] => members.filter((m) => m.server.running && !cut.has(m));
  const ctlAt = (at: EtcdMember[], args: string[]): Promise<string> => new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', br, ETCDCTL, `--endpoints=${at.map((m) => m.clientURL).join(',')}`, ...args],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 20_000 },
      (e, stdout, stderr) => (e ? reject(new Error(`etcdctl ${args.join(' ')}: ${e.message}\n${stderr}`)) : resolve(stdout)));
  });
  const ctl = (...args: string[]): Promise<string> => ctlAt(live(), args);

  /** Each live member's own id and the leader id it knows (ids exceed 2^53: digit strings). */
  const statuses = async (): Promise<{ member: EtcdMember; id: string; leader: string }[]> => {
    const out = await Promise.all(live().map(async (member) => {
      const text = await ctlAt([member], ['endpoint', 'status', '-w', 'json', '--command-timeout=2s']).catch(() => null);
      const id = text === null ? undefined : /"member_id":(\d+)/.exec(text)?.[1];
      const leader = text === null ? undefined : /"leader":(\d+)/.exec(text)?.[1];
      return id !== undefined && leader !== undefined ? { member, id, leader } : null;
    }));
    return out.filter((x): x is { member: EtcdMember; id: string; leader: string } => x !== null);
  };

  const self: EtcdMembers = {
    members,
    endpoints: members.map((m) => m.clientURL),
    ctl,
    async leader() {
      const st = await statuses();
      const ids = new Set(st.map((s) => s.leader).filter((l) => l !== '0'));
      if (ids.size !== 1) return null;
      const id = [...ids][0];
      return st.find((s) => s.id === id)?.member ?? null;
    },
    partition(m) {
      const rules = [['INPUT', '-p', 'tcp', '--dport', '2380'], ['INPUT', '-p', 'tcp', '--sport', '2380'],
        ['OUTPUT', '-p', 'tcp', '--dport', '2380'], ['OUTPUT', '-p', 'tcp', '--sport', '2380']];
      for (const r of rules) nsExec(m.ns, 'iptables', ['-w', '-I', ...r, '-j', 'DROP']);
      cut.add(m);
      let healed = false;
      return {
        heal() {
          if (healed) return;
          healed = true;
          for (const r of rules) nsExec(m.ns, 'iptables', ['-w', '-D', ...r, '-j', 'DROP']);
          cut.delete(m);
        },
      };
    },
    unplug(m) {
      const dev = `${topo.id}-e${members.indexOf(m) + 1}`;
      topo.ip(m.ns, 'link', 'set', dev, 'down');
      cut.add(m);
      let healed = false;
      return {
        heal() {
          if (healed) return;
          healed = true;
          topo.ip(m.ns, 'link', 'set', dev, 'up');
          cut.delete(m);
        },
      };
    },
    async replace(m) {
      const list = JSON.parse((await ctl('member', 'list', '-w', 'json')).replace(/"ID":(\d+)/g, '"ID":"$1"')) as { members: { ID: string; name: string }[] };
      const old = list.members.find((x) => x.name === m.name);
      if (!old) throw new Error(`member ${m.name} is not in the cluster`);
      // etcd refuses to remove a member while the cluster is not healthy (just after an election).
      // Asked through the others only: the removed member stops itself once it applies the
      // removal, and answers a request it serves with "server stopped" (seen in a CI run).
      for (let tries = 0; ; tries++) {
        try {
          await ctlAt(live().filter((x) => x !== m), ['member', 'remove', BigInt(old.ID).toString(16)]);
          break;
        } catch (e) {
          if (tries >= 60 || !/unhealthy cluster/.test((e as Error).message)) throw e;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      await m.server.destroy();
      m.name = `${m.name}r`;
      await ctl('member', 'add', m.name, `--peer-urls=${m.peerURL}`);
      m.server = await start(m, cluster(members), 'existing');
    },
    async destroy() {
      await Promise.all(members.map((m) => m.server?.destroy()));
    },
  };
  return self;
}
