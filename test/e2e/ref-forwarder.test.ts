// The C reference forwarder (lab/ref-forwarder.c) that docs/performance.md measures linen
// against: in each of its variants it carries a TCP stream between two pods of the lab, and
// its own counters show the path it claims to take (super-packets split on the way out, merged
// TUN writes on the way in) with every merged segment's checksum found valid on the receiving
// host, so a wrong checksum in a split (the --sg gather lists) fails here, not in a figure.
import t from 'tap';

import { startRefForwarders } from '../../lab/ref-forwarder.js';
import { linenTunnelMtu } from '../../lab/linend.js';
import { sh } from '../../lab/netns.js';
import { buildTopology } from '../../lab/topology.js';
import { iperfTcp } from '../../lab/traffic.js';

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const cmd of ['ip', 'iperf3', 'cc']) {
    try { sh('sh', ['-c', `command -v ${cmd}`]); } catch { return `needs ${cmd}`; }
  }
  return undefined;
}

/** The counters a forwarder prints when it stops, by name. */
function counters(log: string): Record<string, number> {
  const line = log.split('\n').find((l) => l.startsWith('ref-forwarder counters:')) ?? '';
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/([a-z_]+) (\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

const skip = missing();
if (skip) {
  t.plan(0, skip);
} else {
  const variants: string[][] = [[], ['--sg'], ['--threads'], ['--threads', '--sg'], ['--flanneld']];
  t.test('every variant carries a TCP stream between the pods', async (t) => {
    const topo = buildTopology();
    t.teardown(() => topo.destroy());
    topo.setPodMtu(linenTunnelMtu('udp', topo.underlayMtu));
    const [a, b] = topo.hosts;
    for (const args of variants) {
      const name = args.join(' ') || 'default';
      const ref = await startRefForwarders(topo, args);
      let received = 0;
      try {
        const r = await iperfTcp({ from: a!.pod, to: b!.pod, seconds: 2 });
        received = r.bytesReceived;
        t.comment(`${name}: ${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits} retransmits`);
      } finally {
        await ref.stop();
      }
      t.ok(received > 1 << 20, `${name}: more than 1 MiB arrived (${received} bytes)`);
      const [out, back] = ref.logs().map(counters);
      if (args.includes('--flanneld')) {
        t.ok(out!.tun_reads! > 0 && back!.tun_writes! > 0, `${name}: one packet per read and per write (${out!.tun_reads} reads, ${back!.tun_writes} writes)`);
        continue;
      }
      t.ok(out!.gso_reads! > 0 && out!.segments! > out!.gso_reads!, `${name}: host 1 split super-packets (${out!.gso_reads} into ${out!.segments} segments)`);
      t.ok(back!.merged_writes! > 0, `${name}: host 2 merged segments into TUN writes (${back!.merged_segments} in ${back!.merged_writes})`);
      t.equal(back!.bad_csum, 0, `${name}: host 2 found every segment's TCP checksum valid`);
      t.equal(out!.dropped, 0, `${name}: host 1 dropped nothing`);
    }
  });
}
