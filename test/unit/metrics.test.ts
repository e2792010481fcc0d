// /metrics as rendered from an engine's counters: outcomes and side events apart, I/O split,
// one block per metric family, per-peer series bounded by --peer-metrics-limit.
import t from 'tap';
import type { Metric } from '../../src/metric.js';
import { renderMetrics, type MetricsSource } from '../../src/metrics/prometheus.js';
import { PACKET_VERDICTS, DIRECTIONS, SIDE_EVENT_VERDICTS, isOutcome } from '../../src/dataplane/verdicts.js';
import { Metrics } from '../../lab/metrics.js';
import { fakeStats } from '../helpers/promtool.js';

const routes = (n: number): Metric[] => Array.from({ length: n }, (_, i): Metric => ({
  name: 'linen_peer_route', help: 'A route.', type: 'gauge', value: 1, peer: { ip: (0x0a050000 + (n - i) * 256) >>> 0, prefixLen: 24 }, labels: { subnet: `10.5.${n - i}.0/24`, public_ip: `192.0.2.${n - i}` },
}));
const source = (peers: number, extra: Metric[] = routes(peers)): MetricsSource => ({ engine: () => fakeStats(peers), extra: () => extra });

t.test('outcomes in linen_packets_total, side events in linen_events_total, each verdict once', async (t) => {
  const m = Metrics.parse(renderMetrics(source(0), 128));
  const stats = fakeStats(0);
  for (const dir of DIRECTIONS) {
    for (const v of PACKET_VERDICTS) {
      const want = Number(stats.counters[dir][v].packets);
      if (isOutcome(v)) {
        t.equal(m.find('linen_packets_total', { direction: dir, verdict: v }), want, `${dir} ${v}: an outcome`);
        t.equal(m.find('linen_bytes_total', { direction: dir, verdict: v }), want * 1000);
        t.equal(m.find('linen_events_total', { direction: dir, event: v }), undefined);
      } else {
        t.equal(m.find('linen_events_total', { direction: dir, event: v }), want, `${dir} ${v}: a side event`);
        t.equal(m.find('linen_packets_total', { direction: dir, verdict: v }), undefined);
        t.equal(m.find('linen_bytes_total', { direction: dir, verdict: v }), undefined);
      }
    }
    const outcomes = PACKET_VERDICTS.filter(isOutcome).reduce((s, v) => s + Number(stats.counters[dir][v].packets), 0);
    t.equal(m.get('linen_packets_total', { direction: dir }), outcomes, `${dir}: linen_packets_total sums the outcomes only`);
  }
  t.same([...SIDE_EVENT_VERDICTS].sort(), ['checksum_completed', 'icmp_rate_limited', 'icmp_sent', 'wg_staged']);
  t.ok(isOutcome('forwarded') && isOutcome('no_route') && !isOutcome('icmp_sent'), 'a verdict is an outcome unless listed as a side event');
  t.same(m.verdicts('ingress'), Object.fromEntries(PACKET_VERDICTS.map((v, i) => [v, 100 + i + 1])), 'the test helper still reads every verdict by name');
});

t.test('I/O: operations, errors by the operation that failed, wake-ups; no heartbeat', async (t) => {
  const text = renderMetrics(source(0), 128);
  const m = Metrics.parse(text);
  const io = fakeStats(0).io;
  for (const op of ['tun_reads', 'tun_writes', 'udp_sends', 'udp_receives'] as const) t.equal(m.find('linen_io_operations_total', { op }), Number(io[op]), op);
  t.equal(m.find('linen_io_errors_total', { op: 'udp_sends' }), Number(io.send_errors), 'send_errors');
  t.equal(m.find('linen_io_errors_total', { op: 'tun_writes' }), Number(io.tun_write_errors), 'tun_write_errors');
  t.equal(m.find('linen_wakeups_total'), Number(io.wakeups));
  t.notMatch(text, /heartbeat|linen_io_total/);
});

t.test('every family in one block with one HELP and TYPE', async (t) => {
  const text = renderMetrics({ engine: () => fakeStats(3), extra: () => [...routes(3), { name: 'x_a', help: 'a', type: 'gauge', value: 1 }, ...routes(1).map((r) => ({ ...r, labels: { subnet: '10.9.0.0/24', public_ip: '192.0.2.9' } }))] }, 128);
  const order: string[] = [];
  for (const l of text.split('\n')) {
    const name = l.startsWith('#') ? l.split(' ')[2] : /^[a-z_]+/.exec(l)?.[0];
    if (name && order[order.length - 1] !== name) order.push(name);
  }
  t.same(order.filter((n, i) => order.indexOf(n) !== i), [], 'no family is split');
  t.equal(text.match(/# TYPE linen_peer_route /g)?.length, 1);
});

t.test('--peer-metrics-limit: the lowest subnets, the same peers in every per-peer family, the rest counted', async (t) => {
  const all = Metrics.parse(renderMetrics(source(5), 128));
  t.equal(all.samples.filter((s) => s.name === 'linen_peer_packets_total').length, 10, '5 peers x 2 directions');
  t.equal(all.routes().length, 5);
  t.equal(all.find('linen_peer_metrics_omitted_peers'), 0);

  const some = Metrics.parse(renderMetrics(source(5), 2));
  const subnets = (name: string): string[] => [...new Set(some.samples.filter((s) => s.name === name).map((s) => s.labels.subnet!))].sort();
  t.same(subnets('linen_peer_packets_total'), ['10.5.1.0/24', '10.5.2.0/24']);
  t.same(subnets('linen_peer_bytes_total'), ['10.5.1.0/24', '10.5.2.0/24']);
  t.same(subnets('linen_peer_route'), ['10.5.1.0/24', '10.5.2.0/24']);
  t.equal(some.find('linen_peer_metrics_omitted_peers'), 3);
  t.equal(some.get('linen_packets_total'), all.get('linen_packets_total'), 'the totals do not depend on the limit');

  const none = Metrics.parse(renderMetrics(source(5), 0));
  t.equal(none.samples.filter((s) => s.name.startsWith('linen_peer_') && s.name !== 'linen_peer_metrics_omitted_peers').length, 0, '0: no per-peer series');
  t.equal(none.find('linen_peer_metrics_omitted_peers'), 5);
});
