// The benchmark's report logic that needs no network: ratios in words by each metric's
// direction, when an axis turns logarithmic, the anomaly flags, and the YAML export (parsed
// back with the yaml package tap already brings).
import t from 'tap';
import { parse } from 'yaml';

import { findAnomalies } from '../../bench/anomalies.js';
import { toYaml } from '../../bench/export.js';
import { barChartSvg, wantsLogScale } from '../../bench/svg-chart.js';
import { fmtRatioDir, ratioIsBetter } from '../../bench/format.js';
import { METRICS, summarize, type ContenderResult, type MachineFacts, type MetricKey, type Summary } from '../../bench/suite.js';

t.test('ratios say better or worse by the metric\'s direction', async (t) => {
  t.equal(fmtRatioDir(75, 'lower'), '75.00× worse', 'a 75× RTT is worse, not a win');
  t.equal(fmtRatioDir(0.52, 'higher'), '0.52× worse');
  t.equal(fmtRatioDir(1.5, 'higher'), '1.50× better');
  t.equal(fmtRatioDir(0.5, 'lower'), '0.50× better');
  t.equal(fmtRatioDir(1.01, 'lower'), '1.01×', 'within 2 %: no verdict');
  t.equal(fmtRatioDir(null, 'higher'), '–');
  t.equal(ratioIsBetter(3, 'lower'), false);
  t.equal(ratioIsBetter(3, 'higher'), true);
  t.equal(ratioIsBetter(1, 'higher'), null);
});

t.test('axes turn logarithmic when values span 30× or more', async (t) => {
  t.equal(wantsLogScale([0.01, 30]), true);
  t.equal(wantsLogScale([5, 13]), false);
  t.equal(wantsLogScale([0, 5, 13]), false, 'zeros do not count');
  const svg = barChartSvg({
    title: 't', unit: 'ms', series: [{ label: 'p50', color: '#000' }],
    rows: [{ name: 'a', values: [{ median: 0.01 }] }, { name: 'b', values: [{ median: 0.3 }] }],
  });
  t.match(svg, /ms \(log scale\)/, 'the unit says so');
  t.match(svg, />0\.01</, 'ticks at powers of ten');
  const lin = barChartSvg({ title: 't', unit: 'Gbit/s', series: [{ label: 'x', color: '#000' }], rows: [{ name: 'a', values: [{ median: 5 }] }] });
  t.notMatch(lin, /log scale/);
});

function contender(name: string, values: Partial<Record<MetricKey, number[]>>): ContenderResult {
  const metrics = Object.fromEntries(METRICS.map((m) => [m.key, values[m.key] ? summarize(values[m.key]!) : null])) as Record<MetricKey, Summary | null>;
  return {
    name, description: '', tunnelMtu: 1450, status: 'ok', errors: [], info: {}, cpuBasis: 'machine-wide busy CPU (user+nice+system+irq+softirq+steal, every process)',
    metrics, ratioToKernelVxlan: Object.fromEntries(METRICS.map((m) => [m.key, null])) as Record<MetricKey, number | null>, runs: [], seconds: 0,
  };
}

t.test('anomalies: fewer Gbit/s with more streams, wide spreads, an overloaded machine', async (t) => {
  const machine = { cores: 2, loadavgAtStart: [3.5, 2, 1], loadavgAtEnd: [1, 1, 1] } as MachineFacts;
  const a = findAnomalies([
    contender('host-gw', { tcp1Gbps: [30.4], tcp4Gbps: [9.65], tcp8Gbps: [31] }),
    contender('linen-udp', { tcp1Gbps: [5, 5.1, 9], rttP50Ms: [0.2, 0.21, 0.22] }),
  ], METRICS, machine);
  t.same(a.map((x) => [x.kind, x.contender, x.metric]), [
    ['streams', 'host-gw', 'tcp4Gbps'],
    ['spread', 'linen-udp', 'tcp1Gbps'],
    ['load', undefined, undefined],
  ]);
  t.match(a[0]!.message, /4-stream TCP 9\.65 Gbit\/s below 1-stream 30\.40/);
  t.match(a[2]!.message, /3\.5 2 1 at start is above the 2 cores/);
  const gone = contender('linen-host-gw', { tcp1Gbps: [30] });
  gone.runs = [{ run: 1, values: {} as Record<MetricKey, number>, errors: [], rss: [{ pid: 7, rssMiB: 0, hwmMiB: 0, exited: true }] }];
  t.match(findAnomalies([gone], METRICS, { cores: 2, loadavgAtStart: [0, 0, 0] } as MachineFacts), [{ kind: 'exited', contender: 'linen-host-gw' }],
    'a process that exited during the measurements');
});

t.test('YAML export parses back to the same values', async (t) => {
  const v = {
    schema: 2, kind: 'quick', list: [1, 'two', { a: null, 'odd key': [] }], empty: {}, nested: { deep: { x: 1.5, s: 'a: b # c' } },
    rows: [{ name: 'x', n: 1 }, { name: 'y', n: 2 }], nan: NaN,
  };
  t.same(parse(toYaml(v)), { ...v, nan: null });
});
