#!/usr/bin/env node
// Where one TCP stream's time goes: kernel VXLAN, linen UDP and linen VXLAN on the lab's
// two-host topology, in the same run. For each contender: Gbit/s, and per 64 KiB of TCP payload
// the system calls of each forwarder process (linend, or the C reference forwarder: perf stat
// tracepoints), its threads' wake-ups (voluntary context switches) and CPU, and the machine's
// CPU by kind (/proc/stat), with iperf3's own CPU, and whether the stream's retransmissions were
// losses or late segments (the pods' nstat counters). docs/performance.md is written from its output.
// c-ref-udp measures the design itself on this machine: lab/ref-forwarder.c, a minimal C forwarder
// using the same kernel interfaces as linen UDP (TUN offloads, UDP GSO/GRO, merged TUN writes),
// set up the same way; c-ref-udp+REF_FORWARDER_ARGS=--no-verify runs it without checksum checks,
// =--threads with a thread per direction, =--sg with a split that sends gather lists (no copy).
// c-flanneld-udp is the same program with --flanneld: flanneld's UDP backend loop (TUN without
// offloads, one read+sendto per packet out, one recv+write per datagram in), the baseline linen replaces.
//
//   npm run build && node scripts/perf-probe.mjs [options]
//     --runs N          measured runs per contender (default 3; the median is reported)
//     --seconds S       iperf3 -t (default 5)
//     --only a,b        contenders: kernel-vxlan, linen-udp, linen-vxlan, linen-wireguard, c-ref-udp, c-flanneld-udp; a linen contender may
//                       name another build as linen-vxlan@/path/to/checkout (A/B in one run)
//                       and set variables in linend's environment: linen-vxlan+LINEN_X=1
//     --queues N        linend --queues (default 1)
//     --rounds R        repeat the whole contender list R times (default 1), interleaving the
//                       contenders so that load from outside drifts over all of them alike; the
//                       figures cover every round, and each round's medians are listed at the end
//     --no-syscalls     skip perf stat (it adds a little per-syscall cost to linend)
//     --json FILE       also write the raw figures
//     --udp SIZES       also, per contender and UDP payload size (e.g. 1400,64): iperf3 -u at an
//                       unlimited rate, then the highest rate with < 1 % loss (lab/rate-search),
//                       with the machine's busy cores and the linends' CPU per datagram
//     --latency         also, per contender: 1000 pings 1 ms apart (RTT p50/p99) and 4 s of
//                       one-connection TCP request/response (lab/tcp-rr.c), each with the
//                       machine's busy cores and the linends' CPU while it ran
//     --profile DIR     perf record -a (cpu-clock, call graphs) over each contender's first run
//                       into DIR/<contender>.data, and print the hottest symbols by process
//
// Needs root (network namespaces), iperf3, and perf for the syscall counts. Host 1's pod sends
// to host 2's pod: host 1's linend carries the data out (egress) and the ACKs in; host 2's the
// reverse. Everything runs on this machine's cores, so same-run ratios are the signal.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const root = resolve(new URL('..', import.meta.url).pathname);
const dist = (p) => pathToFileURL(join(root, 'dist', p)).href;
const { buildTopology } = await import(dist('lab/topology.js'));
const { setupKernelVxlan } = await import(dist('lab/kernel.js'));
const { linenTunnelMtu } = await import(dist('lab/linend.js'));
const { startRefForwarders } = await import(dist('lab/ref-forwarder.js'));
const { startIperfServer, startBounded, systemCpuSeconds, readTaskCpu, processCpuSeconds } = await import(dist('lab/traffic.js'));
const { VXLAN_MTU_OVERHEAD } = await import(dist('src/config/network.js'));
const { iperfUdp, ping } = await import(dist('lab/traffic.js'));
const { tcpRr } = await import(dist('lab/rr.js'));
const { udpLossFreeRate } = await import(dist('lab/rate-search.js'));

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' },
    only: { type: 'string', default: 'kernel-vxlan,linen-udp,linen-vxlan' }, queues: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '1' },
    'no-syscalls': { type: 'boolean', default: false }, udp: { type: 'string' }, latency: { type: 'boolean', default: false }, json: { type: 'string' }, profile: { type: 'string' },
  },
});
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);
const QUEUES = Number(values.queues);
const ROUNDS = Number(values.rounds);
const SYSCALLS = !values['no-syscalls'];
const CONTENDERS = values.only.split(',').map((s) => s.trim()).filter(Boolean);
const PER = 65536; // bytes of TCP payload the per-unit figures refer to
// The syscalls linen's (and the C forwarders') data paths make; everything else is lumped into "other".
const SYSCALL_NAMES = ['read', 'writev', 'recvmmsg', 'sendmmsg', 'poll', 'ppoll', 'epoll_wait', 'epoll_pwait', 'futex', 'write', 'sendto', 'recvfrom'];

/** Per thread of pid: comm, CPU seconds, voluntary and involuntary context switches. */
function threads(pid) {
  const out = new Map();
  let tids = [];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try {
      const cpu = readTaskCpu(`/proc/${pid}/task/${tid}/stat`);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const field = (k) => Number((status.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) ?? [])[1] ?? 0);
      out.set(tid, {
        user: cpu.user, sys: cpu.system,
        vol: field('voluntary_ctxt_switches'), invol: field('nonvoluntary_ctxt_switches'),
      });
    } catch { /* thread gone */ }
  }
  return out;
}

function threadDelta(a, b) {
  const rows = [];
  for (const [tid, t1] of b) {
    const t0 = a.get(tid) ?? { user: 0, sys: 0, vol: 0, invol: 0 };
    rows.push({ tid, user: t1.user - t0.user, sys: t1.sys - t0.sys, vol: t1.vol - t0.vol, invol: t1.invol - t0.invol });
  }
  return rows.sort((x, y) => (y.user + y.sys) - (x.user + x.sys));
}

/** Starts `perf stat` counting pid's syscalls for `secs`; resolves to {name: count}. */
function countSyscalls(pid, secs) {
  const events = ['raw_syscalls:sys_enter', ...SYSCALL_NAMES.map((n) => `syscalls:sys_enter_${n}`)];
  const p = startBounded(undefined, 'perf', ['stat', '-x', ';', '-e', events.join(','), '-p', String(pid), '--', 'sleep', String(secs)],
    { timeoutMs: (secs + 10) * 1000 });
  return p.done.then((r) => {
    const counts = {};
    for (const line of r.stderr.split('\n')) {
      const f = line.split(';');
      if (f.length < 3) continue;
      const name = f[2].replace('raw_syscalls:sys_enter', 'total').replace('syscalls:sys_enter_', '');
      counts[name] = Number(f[0]) || 0;
    }
    return counts;
  });
}

/** The iperf3 processes inside network namespace ns (the `timeout` wrappers are not iperf3). */
function iperfPidsIn(ns) {
  const link = `net:[${statSync(`/run/netns/${ns}`).ino}]`;
  const out = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'iperf3' && readlinkSync(`/proc/${pid}/ns/net`) === link) out.push(Number(pid));
    } catch { /* gone */ }
  }
  return out;
}

function procCpu(pid) {
  try { return processCpuSeconds(pid); } catch { return NaN; }
}

/** One measured TCP run of SECONDS from pod 1 to pod 2. */
async function tcpRun(topo, linendPids, profileTo) {
  const [a, b] = topo.hosts;
  const port = 5201;
  const server = await startIperfServer({ ns: b.pod.ns, ip: b.pod.ip }, port, (SECONDS + 20) * 1000);
  try {
    const th0 = linendPids.map(threads);
    const tcp0 = [tcpCounters(a.pod.ns), tcpCounters(b.pod.ns)];
    const sys0 = systemCpuSeconds();
    const t0 = process.hrtime.bigint();
    const client = startBounded(a.pod.ns, 'iperf3',
      ['-c', b.pod.ip, '-p', String(port), '-J', '-t', String(SECONDS), '-C', 'cubic', '--connect-timeout', '3000'],
      { timeoutMs: (SECONDS + 15) * 1000 });
    // Count syscalls over the middle of the transfer (skips connection set-up and tear-down).
    const sc = SYSCALLS ? linendPids.map((pid) => sleep(300).then(() => countSyscalls(pid, SECONDS - 0.6))) : [];
    const prof = profileTo ? sleep(300).then(() => startBounded(undefined, 'perf',
      ['record', '-a', '-g', '-e', 'cpu-clock', '-F', '499', '-o', profileTo, '--', 'sleep', String(SECONDS - 0.6)],
      { timeoutMs: (SECONDS + 10) * 1000 }).done) : null;
    let iperfPids = [];
    await sleep(200);
    iperfPids = [...iperfPidsIn(a.pod.ns), ...iperfPidsIn(b.pod.ns)];
    const ip0 = iperfPids.map(procCpu);
    // iperf3's CPU is read shortly before it ends (an exited process has no /proc entry) and
    // scaled to the whole run.
    const ipWindow = SECONDS - 0.5;
    await sleep(ipWindow * 1000);
    const ip1 = iperfPids.map(procCpu);
    const r = await client.done;
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const sys1 = systemCpuSeconds();
    const th1 = linendPids.map(threads);
    const tcp1 = [tcpCounters(a.pod.ns), tcpCounters(b.pod.ns)];
    const syscalls = await Promise.all(sc);
    if (prof) await prof;
    const json = JSON.parse(r.stdout);
    if (json.error) throw new Error(`iperf3: ${json.error}`);
    const recv = json.end.sum_received;
    const sent = json.end.sum_sent;
    const d = (k) => sys1[k] - sys0[k];
    return {
      gbps: recv.bits_per_second / 1e9, bytes: recv.bytes, seconds: recv.seconds, retransmits: sent.retransmits ?? 0, wall,
      machine: {
        user: d('user') + d('nice'), system: d('system'), softirq: d('softirq') + d('irq'), idle: d('idle') + d('iowait'), steal: d('steal'),
      },
      iperf3: ip1.reduce((s, v, i) => s + (v - ip0[i]), 0) * wall / ipWindow,
      // Why segments were sent again: the sender's retransmitted segments, those the receiver
      // reported as received twice (D-SACK: the first copy was late, not lost), the sender's
      // reordering detections, and the receiver's out-of-order queueings.
      tcp: {
        retransSegs: tcp1[0].TcpRetransSegs - tcp0[0].TcpRetransSegs,
        dsackSegs: tcp1[0].TcpExtTCPDSACKRecvSegs - tcp0[0].TcpExtTCPDSACKRecvSegs,
        reorder: tcp1[0].TcpExtTCPSACKReorder - tcp0[0].TcpExtTCPSACKReorder,
        ofo: tcp1[1].TcpExtTCPOFOQueue - tcp0[1].TcpExtTCPOFOQueue,
      },
      linend: linendPids.map((pid, i) => ({ pid, threads: threadDelta(th0[i], th1[i]) })),
      // perf counted for SECONDS - 0.6 s: scale to the transfer's bytes by time
      syscalls: syscalls.map((c) => ({ counts: c, window: SECONDS - 0.6 })),
    };
  } finally {
    server.kill();
    await server.done;
  }
}

const TCP_COUNTERS = ['TcpRetransSegs', 'TcpExtTCPDSACKRecvSegs', 'TcpExtTCPSACKReorder', 'TcpExtTCPOFOQueue'];

/** The namespace's TCP counters that tell loss from reordering (nstat, absolute values). */
function tcpCounters(ns) {
  const k = JSON.parse(execFileSync('ip', ['netns', 'exec', ns, 'nstat', '-az', '--json'], { encoding: 'utf8' })).kernel ?? {};
  return Object.fromEntries(TCP_COUNTERS.map((n) => [n, k[n] ?? 0]));
}

/** Runs fn and returns its result with the machine's busy cores and the linends' CPU (cores) while it ran. */
async function withCpu(linendPids, fn) {
  const sys0 = systemCpuSeconds();
  const l0 = linendPids.map(processCpuSeconds);
  const t0 = process.hrtime.bigint();
  const result = await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const sys1 = systemCpuSeconds();
  const l1 = linendPids.map(processCpuSeconds);
  const busy = (s) => s.user + s.nice + s.system + s.irq + s.softirq + s.steal;
  const perHost = l1.map((v, i) => (v - l0[i]) / wall);
  return { result, busyCores: (busy(sys1) - busy(sys0)) / wall, linendCores: perHost.reduce((a, v) => a + v, 0), perHost };
}

/** Ping RTT at 1 ms intervals and one-connection request/response, pod 1 to pod 2. */
async function latencyRun(topo, linendPids) {
  const [a, b] = topo.hosts;
  const p = await withCpu(linendPids, () => ping({ from: a.pod, to: b.pod.ip, count: 1000, intervalSec: 0.001, waitSec: 1, deadline: true }));
  const rr = await withCpu(linendPids, () => tcpRr({ from: a.pod, to: b.pod, seconds: 4, bytes: 1 }));
  return {
    rttP50Ms: p.result.rttMs.p50, rttP99Ms: p.result.rttMs.p99, pingBusyCores: p.busyCores, pingLinendCores: p.linendCores,
    rrTps: rr.result.tps, rrP50Us: rr.result.latencyUs.p50, rrBusyCores: rr.busyCores, rrLinendCores: rr.linendCores,
  };
}

/** UDP datagrams of `size` payload bytes, pod 1 to pod 2: unlimited rate, then the loss-free rate. */
async function udpRun(topo, linendPids, size) {
  const [a, b] = topo.hosts;
  const common = { from: a.pod, to: b.pod, payloadBytes: size, clientArgs: ['-w', '4M'] };
  const u = await withCpu(linendPids, () => iperfUdp({ ...common, seconds: SECONDS, bitrate: 0 }));
  const search = await udpLossFreeRate({ ...common, seconds: 2, unlimited: u.result, steps: 5 });
  return {
    size, unlimitedPps: u.result.packetsPerSecond, unlimitedLossPercent: u.result.lossPercent,
    busyUsPerPacket: u.busyCores / u.result.packetsPerSecond * 1e6, linendUsPerPacket: u.linendCores / u.result.packetsPerSecond * 1e6,
    hostUsPerPacket: u.perHost.map((c) => c / u.result.packetsPerSecond * 1e6), sentPps: u.result.sentPacketsPerSecond,
    lossFreePps: search.lossFreePps, probes: search.probes.map((p) => `${(p.offeredPps / 1000).toFixed(0)}k:${p.lossPercent.toFixed(1)}%`).join(' '),
  };
}

async function startContender(name, topo) {
  // name: kind[@DIR][+VAR=value...]; the variables are set in linend's environment.
  const [head, ...vars] = name.split('+');
  const [kind, alt] = head.split('@');
  const saved = {};
  for (const v of vars) {
    const [k, val] = v.split('=');
    saved[k] = process.env[k];
    process.env[k] = val;
  }
  try {
    return await startOne(kind, alt, topo);
  } finally {
    for (const [k, val] of Object.entries(saved)) {
      if (val === undefined) delete process.env[k];
      else process.env[k] = val;
    }
  }
}

async function startOne(kind, alt, topo) {
  if (kind === 'kernel-vxlan') {
    topo.setPodMtu(topo.underlayMtu - VXLAN_MTU_OVERHEAD);
    const mesh = setupKernelVxlan(topo);
    return { pids: [], stop: async () => mesh.stop() };
  }
  if (kind === 'c-ref-udp' || kind === 'c-flanneld-udp') {
    // Both set up alike (device, MTU, address, route, port); c-flanneld-udp runs flanneld's loop.
    topo.setPodMtu(linenTunnelMtu('udp', topo.underlayMtu));
    const args = [...(kind === 'c-flanneld-udp' ? ['--flanneld'] : []), ...(process.env.REF_FORWARDER_ARGS ?? '').split(/\s+/).filter(Boolean)];
    const ref = await startRefForwarders(topo, args);
    return {
      pids: ref.pids(),
      stop: async () => {
        await ref.stop();
        // Its counters over all runs (warm-up included): segments per merged TUN write, etc.
        ref.logs().forEach((l, i) => console.log(`  ${kind} host ${i + 1}: ${l.trim().replace(/^ref-forwarder counters: /, '')}`));
      },
    };
  }
  const mode = kind === 'linen-udp' ? 'udp' : kind === 'linen-vxlan' ? 'vxlan' : kind === 'linen-wireguard' ? 'wireguard' : null;
  if (!mode) throw new Error(`unknown contender ${kind}`);
  // linen-vxlan@DIR: that checkout's built linend (its lab/linend.js finds its own dist/).
  const lab = alt ? await import(pathToFileURL(join(resolve(alt), 'dist', 'lab', 'linend.js')).href) : await import(dist('lab/linend.js'));
  topo.setPodMtu(linenTunnelMtu(mode, topo.underlayMtu));
  // WireGuard: one worker (a session's send counter is one sequence).
  const l = await lab.startStaticLinen(topo, { mode, queues: mode === 'wireguard' ? 1 : QUEUES });
  return { pids: l.pids(), stop: () => l.stop() };
}

const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const f = (v, d = 2) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');

function summarize(name, runs) {
  const per = (r) => PER / r.bytes * 1; // multiply a count over the run by this to get per 64 KiB
  const out = { name, gbps: runs.map((r) => r.gbps), retransmits: runs.map((r) => r.retransmits) };
  const sum = (k) => runs.reduce((a, r) => a + r.tcp[k], 0);
  out.tcp = { retransSegs: sum('retransSegs'), dsackSegs: sum('dsackSegs'), reorder: sum('reorder'), ofo: sum('ofo') };
  const wall = (r) => r.wall;
  // machine CPU, in cores (CPU seconds per second) and in CPU seconds per Gbit moved
  for (const k of ['user', 'system', 'softirq', 'idle']) out[`cores_${k}`] = median(runs.map((r) => r.machine[k] / wall(r)));
  out.cores_busy = median(runs.map((r) => (r.machine.user + r.machine.system + r.machine.softirq + r.machine.steal) / wall(r)));
  out.cpuPerGbit = median(runs.map((r) => (r.machine.user + r.machine.system + r.machine.softirq + r.machine.steal) / (r.gbps * r.seconds)));
  out.cores_iperf3 = median(runs.map((r) => r.iperf3 / wall(r)));
  out.hosts = [];
  const nHosts = runs[0].linend.length;
  for (let h = 0; h < nHosts; h++) {
    const busiest = (r) => r.linend[h].threads[0] ?? { user: 0, sys: 0, vol: 0, invol: 0 };
    const rest = (r) => r.linend[h].threads.slice(1).reduce((s, t) => s + t.user + t.sys, 0);
    const host = {
      worker_cores: median(runs.map((r) => (busiest(r).user + busiest(r).sys) / wall(r))),
      worker_user_cores: median(runs.map((r) => busiest(r).user / wall(r))),
      worker_sys_cores: median(runs.map((r) => busiest(r).sys / wall(r))),
      other_threads_cores: median(runs.map((r) => rest(r) / wall(r))),
      wakeups_per64k: median(runs.map((r) => busiest(r).vol * per(r))),
      preempted_per64k: median(runs.map((r) => busiest(r).invol * per(r))),
      all_wakeups_per64k: median(runs.map((r) => r.linend[h].threads.reduce((s, t) => s + t.vol, 0) * per(r))),
    };
    if (runs[0].syscalls.length) {
      const names = ['total', ...SYSCALL_NAMES];
      host.syscalls_per64k = {};
      for (const n of names) {
        host.syscalls_per64k[n] = median(runs.map((r) => {
          const s = r.syscalls[h];
          const bytesInWindow = r.bytes * s.window / r.seconds;
          return (s.counts[n] ?? 0) * PER / bytesInWindow;
        }));
      }
    }
    out.hosts.push(host);
  }
  return out;
}

function print(s, kernel) {
  const g = median(s.gbps);
  const ratio = kernel ? ` (${(g / median(kernel.gbps)).toFixed(2)}x kernel VXLAN)` : '';
  console.log(`\n${s.name}: ${f(g)} Gbit/s median of [${s.gbps.map((v) => f(v)).join(', ')}]${ratio}, retransmits [${s.retransmits.join(', ')}]`);
  console.log(`  machine cores: busy ${f(s.cores_busy)} = user ${f(s.cores_user)} + sys ${f(s.cores_system)} + softirq ${f(s.cores_softirq)}; idle ${f(s.cores_idle)}; iperf3 (both ends) ${f(s.cores_iperf3)}`);
  console.log(`  machine CPU s per Gbit: ${f(s.cpuPerGbit, 3)}`);
  const t = s.tcp;
  console.log(`  all runs: ${t.retransSegs} segments sent again, ${t.dsackSegs} of them reported received twice (D-SACK: late, not lost); ` +
    `${t.reorder} reorderings seen by the sender, ${t.ofo} out-of-order queueings at the receiver`);
  s.hosts.forEach((h, i) => {
    console.log(`  forwarder host ${i + 1} (${i === 0 ? 'data out, ACKs in' : 'data in, ACKs out'}): worker ${f(h.worker_cores)} cores ` +
      `(user ${f(h.worker_user_cores)}, sys ${f(h.worker_sys_cores)}), other threads ${f(h.other_threads_cores)}; ` +
      `per 64 KiB: worker wake-ups ${f(h.wakeups_per64k)}, preemptions ${f(h.preempted_per64k)}, all threads' wake-ups ${f(h.all_wakeups_per64k)}`);
    if (h.syscalls_per64k) {
      const sc = Object.entries(h.syscalls_per64k).filter(([, v]) => v >= 0.005).map(([k, v]) => `${k} ${f(v)}`).join(', ');
      console.log(`    syscalls per 64 KiB: ${sc}`);
    }
  });
}

if (process.getuid?.() !== 0) { console.error('perf-probe: needs root'); process.exit(2); }
const topo = buildTopology();
const results = {};
const profiles = [];
if (values.profile) mkdirSync(values.profile, { recursive: true });
try {
  console.log(`perf-probe: ${RUNS} run(s) of ${SECONDS} s per contender${ROUNDS > 1 ? ` in each of ${ROUNDS} rounds` : ''}, TCP cubic, 1 stream, linend --queues ${QUEUES}, syscalls ${SYSCALLS ? 'on' : 'off'}`);
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of CONTENDERS) {
      let c;
      try {
        c = await startContender(name, topo);
        // One unrecorded second first: a userspace path compiles its hot code in its first moments.
        await tcpRun(topo, c.pids).catch(() => null);
        const runs = results[name]?.runs ?? [];
        for (let i = 0; i < RUNS; i++) {
          const profileTo = values.profile && round === 0 && i === 0 ? join(values.profile, `${name.replace(/[^\w.-]+/g, '_')}.data`) : undefined;
          const r = await tcpRun(topo, c.pids, profileTo);
          if (profileTo) profiles.push([name, profileTo]);
          console.log(`  ${name}${ROUNDS > 1 ? ` round ${round + 1}` : ''} run ${i + 1}: ${f(r.gbps)} Gbit/s, ${r.retransmits} retransmits`);
          runs.push({ ...r, round });
        }
        results[name] = { runs, summary: summarize(name, runs) };
        if (round === ROUNDS - 1) {
          print(results[name].summary, name === 'kernel-vxlan' ? null : results['kernel-vxlan']?.summary);
          // Latency and UDP rates once, in the last round.
          if (values.latency) {
            const l = await latencyRun(topo, c.pids);
            results[name].latency = l;
            console.log(`  latency: ping RTT p50 ${f(l.rttP50Ms, 3)} ms, p99 ${f(l.rttP99Ms, 3)} ms (machine busy ${f(l.pingBusyCores)} cores, forwarders ${f(l.pingLinendCores)}); ` +
              `request/response ${f(l.rrTps, 0)}/s, p50 ${f(l.rrP50Us, 1)} µs (machine busy ${f(l.rrBusyCores)} cores, forwarders ${f(l.rrLinendCores)})`);
          }
          results[name].udp = [];
          for (const size of (values.udp ?? '').split(',').filter(Boolean).map(Number)) {
            const u = await udpRun(topo, c.pids, size);
            results[name].udp.push(u);
            console.log(`  UDP ${size} B: unlimited ${f(u.sentPps / 1000, 1)} kpps sent, ${f(u.unlimitedPps / 1000, 1)} kpps received, ${f(u.unlimitedLossPercent, 1)} % lost; ` +
              `machine ${f(u.busyUsPerPacket, 2)} µs busy per datagram received, forwarders ${f(u.linendUsPerPacket, 2)} µs` +
              (u.hostUsPerPacket.length ? ` (host 1 ${f(u.hostUsPerPacket[0], 2)}, host 2 ${f(u.hostUsPerPacket[1], 2)})` : '') + '; ' +
              `loss-free ${f(u.lossFreePps / 1000, 1)} kpps (probes ${u.probes})`);
          }
        }
        if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2));
      } catch (e) {
        // One contender failing (a broken variant) must not lose the others' figures.
        console.log(`  ${name}: FAILED: ${e.message}`);
      } finally {
        await c?.stop();
      }
    }
  }
} finally {
  topo.destroy();
}
console.log('\nsummary (medians; ratios to kernel VXLAN from this run):');
for (const name of CONTENDERS) {
  const s = results[name]?.summary;
  if (s) console.log(`  ${name}: ${f(median(s.gbps))} Gbit/s` + (results['kernel-vxlan'] && name !== 'kernel-vxlan'
    ? `, ${(median(s.gbps) / median(results['kernel-vxlan'].summary.gbps)).toFixed(2)}x kernel VXLAN` : '') +
    (results[name].latency ? `; RTT p50 ${f(results[name].latency.rttP50Ms, 3)} ms, request/response ${f(results[name].latency.rrTps, 0)}/s` : '') +
    (results[name].udp ?? []).map((u) => `; UDP ${u.size} B loss-free ${f(u.lossFreePps / 1000, 1)} kpps` +
      (results['kernel-vxlan'] && name !== 'kernel-vxlan'
        ? ` (${(u.lossFreePps / (results['kernel-vxlan'].udp?.find((k) => k.size === u.size)?.lossFreePps ?? NaN)).toFixed(2)}x)` : '')).join(''));
}
for (let round = 0; ROUNDS > 1 && round < ROUNDS; round++) {
  const of = (name) => median((results[name]?.runs ?? []).filter((r) => r.round === round).map((r) => r.gbps));
  console.log(`  round ${round + 1}: ` + CONTENDERS.map((name) => `${name} ${f(of(name))}`).join(', '));
}
for (const [name, file] of profiles) {
  // Where the machine's CPU went: share of all samples by process and symbol.
  const r = await startBounded(undefined, 'perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', 'comm,dso,sym',
    '--percent-limit', '1.5', '-g', 'none'], { timeoutMs: 60000 }).done;
  const lines = r.stdout.split('\n').filter((l) => /^\s+\d/.test(l)).slice(0, 30);
  console.log(`\nprofile ${name} (${file}), samples over both CPUs by comm/dso/symbol:\n${lines.join('\n')}`);
}
if (values.json) writeFileSync(values.json, JSON.stringify(results, null, 2));
process.exit(0);
