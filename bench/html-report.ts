// The self-contained HTML report of a run (latest.html): the charts inline and the tables.
import { BAD, digitsFor, esc, fmtNum, fmtRatioDir, GOOD, ratioIsBetter } from './format.js';
import type { BenchResults } from './results.js';
import { METRICS, type Summary } from './suite.js';

function cell(s: Summary | null, digits: number, scale = 1): string {
  if (!s) return '<td class="na">n/a</td>';
  const spread = s.n > 1 ? `<span class="sp">${fmtNum(s.min * scale, digits)}–${fmtNum(s.max * scale, digits)}</span>` : '';
  return `<td>${fmtNum(s.median * scale, digits)}${spread}</td>`;
}

export function htmlReport(r: BenchResults, svgs: Record<string, string>): string {
  const m = r.machine;
  const s = r.settings;
  const h: string[] = [];
  h.push('<!doctype html><html lang="en"><head><meta charset="utf-8">');
  h.push(`<title>linen benchmark ${esc(r.startedAt)}</title>`);
  h.push(`<style>
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f4}td.name,th.name{text-align:left;font-weight:bold}
td.na{color:#999}.sp{display:block;color:#777;font-size:11px}
.failed{color:#b8473d;font-weight:bold}.err{font-family:monospace;font-size:12px;white-space:pre-wrap;text-align:left;color:#7a2a22}
.facts td{text-align:left}.note{color:#555;font-size:13px}figure{margin:12px 0}
</style></head><body>`);
  h.push(`<h1>linen benchmark: ${esc(r.kind)} run, ${esc(r.startedAt)}</h1>`);
  h.push(`<p class="note">Pod to pod across two simulated hosts (network namespaces joined by a veth pair, underlay MTU ${s?.underlayMtu ?? 1500}); ` +
    `every contender on a fresh topology, one after another. Ratios are to Linux kernel VXLAN measured in the same run. ` +
    `Total time ${r.durationSec.toFixed(0)} s.</p>`);
  h.push('<h2>Machine</h2><table class="facts">');
  const facts: [string, string][] = [
    ['kernel', m.kernel], ['CPU', m.cpuModel], ['CPU clock (MHz, /proc/cpuinfo)', fmtNum(m.cpuMHz, 0)], ['cores', String(m.cores)],
    ['RAM (MiB)', String(m.memTotalMiB ?? 'n/a')], ['virtualization', m.virtualization ?? 'n/a'],
    ['underlay offloads (veth, ethtool -k)', Object.entries(m.underlayOffloads ?? {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'n/a'],
    ['Node', m.node],
    ['linen commit', `${m.linenCommit}${m.linenDirty ? ' (working tree has uncommitted changes)' : ''}`],
    ['iperf3', m.iperf3], ['default TCP congestion control', m.defaultCongestion],
    ['TCP congestion control used', s?.congestion ?? ''], ['load average at start', m.loadavgAtStart.join(' ')],
    ['load average at end', m.loadavgAtEnd?.join(' ') ?? 'n/a'], ['host', m.hostname],
  ];
  for (const [k, v] of facts) h.push(`<tr><th class="name">${esc(k)}</th><td>${esc(v)}</td></tr>`);
  h.push('</table>');
  if (s) {
    h.push('<h2>Settings</h2><table class="facts">');
    const rows: [string, string][] = [
      ['runs per measurement', String(s.runs)], ['iperf3 seconds per run', String(s.durationSec)],
      ['seconds of reverse, bidirectional, service and request/response runs', String(s.shortSec ?? 'n/a')],
      ['UDP loss-free search', s.searchSteps ? `up to ${s.searchSteps} probes of ${s.searchStepSec} s, pass below ${s.lossFreeMaxLossPct} % loss` : 'n/a'],
      ['idle baseline', s.idleSec ? `${s.idleSec} s per run` : 'n/a'],
      ['TCP streams', s.tcpStreams.join(', ')], ['UDP payloads (bytes)', s.udpPayloads.join(', ')],
      ['UDP bitrate (iperf3 -b)', s.udpBitrate === '0' ? '0 (unlimited)' : s.udpBitrate],
      ['UDP socket buffers (iperf3 -w)', s.udpSocketBuffer],
      ['pings per run', `${s.pingCount} at ${s.pingIntervalSec * 1000} ms intervals`], ['linend queues', String(s.linenQueues)],
      ['command', `npm run bench${r.argv.length ? ` -- ${r.argv.join(' ')}` : ''}`],
    ];
    for (const [k, v] of rows) h.push(`<tr><th class="name">${esc(k)}</th><td>${esc(v)}</td></tr>`);
    h.push('</table>');
  }
  if (r.contenders.length) {
    h.push('<h2>Contenders</h2><table><tr><th class="name">name</th><th class="name">what</th><th>pod MTU</th><th class="name">status</th></tr>');
    for (const c of r.contenders) {
      h.push(`<tr><td class="name">${esc(c.name)}</td><td class="name" style="font-weight:normal">${esc(c.description)}</td><td>${c.tunnelMtu}</td>` +
        (c.status === 'failed' ? `<td class="failed">failed</td>` : '<td class="name" style="font-weight:normal">ok</td>') + '</tr>');
    }
    h.push('</table>');
    h.push('<h2>Results (median, min–max below)</h2><table><tr><th class="name">contender</th>');
    for (const d of METRICS) h.push(`<th>${esc(d.label)}<br><small>${esc(d.unit)}</small></th>`);
    h.push('<th class="name">CPU basis</th></tr>');
    for (const c of r.contenders) {
      if (c.status === 'failed') {
        h.push(`<tr><td class="name">${esc(c.name)}</td><td colspan="${METRICS.length + 1}" class="err"><span class="failed">failed:</span> ${esc(c.error ?? '')}</td></tr>`);
        continue;
      }
      h.push(`<tr><td class="name">${esc(c.name)}</td>`);
      for (const d of METRICS) h.push(cell(c.metrics[d.key], digitsFor(d)));
      h.push(`<td class="name" style="font-weight:normal">${esc(c.cpuBasis)}</td></tr>`);
    }
    h.push('</table>');
    h.push('<h2>Ratio to kernel VXLAN (same run)</h2><p class="note">Contender median ÷ kernel VXLAN median, with "better" or "worse" ' +
      'by each metric\'s direction: above 1 is better for rates, worse for latency, jitter, CPU and memory.</p><table><tr><th class="name">contender</th>');
    const ratioMetrics = METRICS.filter((d) => d.ratio);
    for (const d of ratioMetrics) h.push(`<th>${esc(d.label)}<br><small>${esc(d.better)} is better</small></th>`);
    h.push('</tr>');
    for (const c of r.contenders) {
      h.push(`<tr><td class="name">${esc(c.name)}</td>`);
      for (const d of ratioMetrics) {
        const v = c.ratioToKernelVxlan[d.key];
        const good = ratioIsBetter(v, d.better);
        h.push(`<td style="color:${good === null ? '#333' : good ? GOOD : BAD}">${esc(fmtRatioDir(v, d.better))}</td>`);
      }
      h.push('</tr>');
    }
    h.push('</table>');
    if (r.anomalies?.length) {
      h.push('<h2>Anomalies in this run</h2><ul class="note">');
      for (const a of r.anomalies) h.push(`<li class="failed">${esc(a.contender ?? 'machine')}: ${esc(a.message)}</li>`);
      h.push('</ul>');
    }
    h.push('<h2>Where the CPU went (single-stream TCP, per run)</h2><p class="note">CPU seconds over the run, all cores together. ' +
      'cpuPerGbit divides the machine\'s busy time by the gigabits received; the split is detail.</p>' +
      '<table><tr><th class="name">contender</th><th>run</th><th>Gbit</th><th>busy</th><th>dataplane</th><th>iperf3</th><th>softirq</th><th>irq</th><th>rest</th><th>idle</th><th class="name">dataplane threads</th></tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        const sp = run.tcp1?.cpuSplit;
        if (!sp || !run.tcp1) continue;
        const threads = Object.entries(sp.dataplaneThreads).filter(([, v]) => v > 0.005).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ');
        h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td><td>${fmtNum((run.tcp1.bytesReceived * 8) / 1e9)}</td>` +
          [sp.busy, sp.dataplane, sp.iperf3, sp.softirq, sp.irq, sp.rest, sp.idle].map((x) => `<td>${fmtNum(x, 3)}</td>`).join('') +
          `<td class="name" style="font-weight:normal">${esc(threads)}</td></tr>`);
      }
    }
    h.push('</table>');
    h.push('<h2>UDP loss-free rate search</h2><table><tr><th class="name">contender</th><th>run</th><th>payload</th><th class="name">result</th><th class="name">probes (offered kpps: loss %, jitter ms)</th></tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        for (const [size, sr] of [[64, run.udp64Search], [1400, run.udp1400Search]] as const) {
          if (!sr) continue;
          h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td><td>${size} B</td>` +
            `<td class="name" style="font-weight:normal">${fmtNum(sr.lossFreePps / 1000, 1)} kpps (${esc(sr.foundBy)})</td>` +
            `<td class="name" style="font-weight:normal">${esc(sr.probes.map((p) => `${fmtNum(p.offeredPps / 1000, 1)}: ${fmtNum(p.lossPercent, 1)} %, ${fmtNum(p.jitterMs, 3)}`).join('; ') || 'unlimited rate already below the limit')}</td></tr>`);
        }
      }
    }
    h.push('</table>');
    h.push('<h2>Charts</h2>');
    for (const [f, svg] of Object.entries(svgs)) {
      if (!f.startsWith('scaling-')) h.push(`<figure id="${esc(f)}">${svg}<figcaption class="note">${esc(f)}</figcaption></figure>`);
    }
    const errs = r.contenders.flatMap((c) => c.errors.map((e) => ({ c: c.name, ...e })));
    if (errs.length) {
      h.push('<h2>Measurement errors</h2><table><tr><th class="name">contender</th><th>run</th><th class="name">step</th><th class="name">error</th></tr>');
      for (const e of errs) h.push(`<tr><td class="name">${esc(e.c)}</td><td>${e.run}</td><td class="name">${esc(e.step)}</td><td class="err">${esc(e.error)}</td></tr>`);
      h.push('</table>');
    }
    h.push('<h2>Per-run values</h2><table><tr><th class="name">contender</th><th>run</th>');
    for (const d of METRICS) h.push(`<th>${esc(d.label)}</th>`);
    h.push('</tr>');
    for (const c of r.contenders) {
      for (const run of c.runs) {
        h.push(`<tr><td class="name">${esc(c.name)}</td><td>${run.run}</td>`);
        for (const d of METRICS) h.push(`<td>${esc(fmtNum(run.values[d.key], 3))}</td>`);
        h.push('</tr>');
      }
    }
    h.push('</table>');
    const feats = r.contenders.filter((c) => Array.isArray(c.info.features));
    if (feats.length) {
      h.push('<h2>linend features reported at start</h2><table>');
      for (const c of feats) h.push(`<tr><td class="name">${esc(c.name)}</td><td class="err" style="color:#333">${esc((c.info.features as string[]).join('\n'))}</td></tr>`);
      h.push('</table>');
    }
  }
  const sc = r.scaling;
  if (sc) {
    h.push('<h2>Scaling: route-table size</h2>');
    h.push(`<p class="note">${esc(sc.routeTable.note)}.</p><table><tr><th>peers</th><th>mode</th><th>ns/packet (median)</th><th>p25–p75</th><th>min–max</th><th>harness ns/packet (subtracted)</th></tr>`);
    for (const p of sc.routeTable.points) {
      h.push(`<tr><td>${p.routes}</td><td>${p.mode}</td><td>${fmtNum(p.nsPerPacket, 1)}</td><td>${fmtNum(p.p25, 1)}–${fmtNum(p.p75, 1)}</td>` +
        `<td>${fmtNum(p.min, 1)}–${fmtNum(p.max, 1)}</td><td>${fmtNum(p.harnessNsPerPacket, 1)}</td></tr>`);
    }
    h.push('</table>');
    if (svgs['scaling-routes.svg']) h.push(`<figure>${svgs['scaling-routes.svg']}<figcaption class="note">scaling-routes.svg</figcaption></figure>`);
    h.push('<h2>Scaling: workers</h2>');
    h.push(`<table><tr><th>linend --queues</th><th>4-stream TCP Gbit/s</th><th>linend CPU s/Gbit</th><th class="name">status</th></tr>`);
    for (const p of sc.queues.points) {
      h.push(`<tr><td>${p.queues}</td>${cell(p.tcp4Gbps, 2)}${cell(p.cpuPerGbit, 3)}` +
        (p.tcp4Gbps ? '<td class="name" style="font-weight:normal">ok</td>' : `<td class="err"><span class="failed">failed:</span> ${esc(p.error ?? '')}</td>`) + '</tr>');
    }
    h.push('</table>');
    if (svgs['scaling-queues.svg']) h.push(`<figure>${svgs['scaling-queues.svg']}<figcaption class="note">scaling-queues.svg</figcaption></figure>`);
  }
  if (r.scalingError) h.push(`<h2>Scaling</h2><p class="err"><span class="failed">failed:</span> ${esc(r.scalingError)}</p>`);
  if (r.notes.length) {
    h.push('<h2>Notes</h2><ul class="note">');
    for (const n of r.notes) h.push(`<li>${esc(n)}</li>`);
    h.push('</ul>');
  }
  h.push('</body></html>\n');
  return h.join('\n');
}

