// The shipped alert rules and dashboard, and /metrics, checked with promtool (Debian's
// prometheus package): `promtool check rules`, `promtool test rules deploy/alerts.test.yml`
// (each alert fires for series that should fire it and not for others), and
// `promtool check metrics` on what the HTTP server answers for a made-up engine. The same
// check on a live linend is test/e2e/metrics.test.ts.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { startHttpServers } from '../../src/node/http.js';
import { controlPlaneMetrics } from '../../src/metrics/control-plane.js';
import { ALERTS, ALERTS_TEST, DASHBOARD, alertQueries, dashboardQueries, documentedMetrics, exposedNames, fakeStats, metricNames, promtool } from '../helpers/promtool.js';

const installed = !promtool(['--version']).missing;

/** A free TCP port on 127.0.0.1 (healthzPort 0 means "no server" to startHttpServers). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

t.test('promtool is installed', async (t) => {
  t.ok(installed, 'promtool on PATH (scripts/setup.sh installs Debian\'s prometheus package for it)');
});

t.test('promtool check rules deploy/alerts.yml', { skip: !installed }, async (t) => {
  const r = promtool(['check', 'rules', ALERTS]);
  t.comment(r.out);
  t.equal(r.code, 0, 'exit 0');
  t.match(r.out, /SUCCESS: \d+ rules found/);
  const alerts = alertQueries().map((a) => a.title).sort();
  t.same(alerts, ['LinenDown', 'LinenEtcdDisconnected', 'LinenIptablesResyncFailing', 'LinenLeaseCloseToExpiry', 'LinenLeaseRenewalFailing', 'LinenNotReady', 'LinenNotScraped', 'LinenPacketDrops', 'LinenWorkerRestarts'],
    'linend down or not scraped, etcd disconnected, lease close to expiry, worker restarts, drop rate by reason, readiness (and renewal and iptables failures)');
});

t.test('promtool test rules deploy/alerts.test.yml: every alert fires where it should and nowhere else', { skip: !installed }, async (t) => {
  const r = promtool(['test', 'rules', ALERTS_TEST]);
  t.comment(r.out);
  t.equal(r.code, 0, 'exit 0');
  const tested = new Set([...readFileSync(ALERTS_TEST, 'utf8').matchAll(/alertname: (\S+)/g)].map((m) => m[1]));
  t.same(alertQueries().map((a) => a.title).filter((a) => !tested.has(a)), [], 'every alert has a test');
});

t.test('promtool check metrics on /metrics as served (made-up engine, every metric family)', { skip: !installed }, async (t) => {
  const server = await startHttpServers(
    { healthzIP: '127.0.0.1', healthzPort: await freePort(), metricsIP: '127.0.0.1', metricsPort: 0, peerMetricsLimit: 128 },
    { engine: () => fakeStats(3), extra: () => controlPlaneMetrics({ etcd: null, lease: null, rules: null }) },
  );
  t.ok(server, 'server up');
  t.teardown(() => server?.close());
  const body = await (await fetch(`http://127.0.0.1:${server!.port}/metrics`)).text();
  const r = promtool(['check', 'metrics'], body);
  t.equal(r.out, '', `no problems reported${r.out ? `:\n${r.out}` : ''}`);
  t.equal(r.code, 0, 'exit 0');
  const names = exposedNames(body);
  for (const n of ['linen_build_info', 'linen_ready', 'process_resident_memory_bytes', 'process_cpu_seconds_total', 'process_open_fds', 'process_max_fds',
    'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'linen_etcd_reconnects_total', 'linen_lease_renewals_total',
    'linen_lease_renewal_failures_total', 'linen_iptables_resync_failures_total']) t.ok(names.has(n), n);
  t.match(body, /^linen_build_info\{version="\d+\.\d+\.\d+[^"]*",nodejs_version="v\d+[^"]*"\} 1$/m, 'linen_build_info: version labels, value 1');
  t.match(body, /^linen_ready 0$/m, 'linen_ready 0 before setReady');
  server!.setReady(true);
  t.match(await (await fetch(`http://127.0.0.1:${server!.port}/metrics`)).text(), /^linen_ready 1$/m, 'linen_ready 1 after');

  const bad = promtool(['check', 'metrics'], '# HELP linen_things Things.\n# TYPE linen_things counter\nlinen_things 1\n');
  t.match(bad.out, /_total/, `the check can fail: a counter without _total is reported (${bad.out})`);
});

t.test('the dashboard parses and queries only linen_, process_ and nodejs_ metrics', async (t) => {
  const qs = dashboardQueries();
  t.ok(qs.length >= 20, `${qs.length} queries`);
  t.same(qs.filter((q) => metricNames(q.expr).length === 0).map((q) => q.title), [], 'every query reads a metric');
  t.comment(`metrics the dashboard queries: ${[...new Set(qs.flatMap((q) => metricNames(q.expr)))].sort().join(' ')}`);
  t.ok(JSON.parse(readFileSync(DASHBOARD, 'utf8')), 'valid JSON');
});

t.test('every metric the dashboard, the alert rules and the HTTP server use is in README.md\'s list', async (t) => {
  const { all, directOnly } = documentedMetrics();
  t.ok(all.size >= 40, `${all.size} metrics named in README.md, ${directOnly.size} of them for direct routes only`);
  for (const [what, qs] of [['dashboard', dashboardQueries()], ['alerts', alertQueries()]] as const) {
    t.same(qs.flatMap((q) => metricNames(q.expr).filter((n) => !all.has(n)).map((n) => `${q.title}: ${n}`)), [], `${what}: every metric read is documented`);
  }
  const server = await startHttpServers(
    { healthzIP: '127.0.0.1', healthzPort: await freePort(), metricsIP: '127.0.0.1', metricsPort: 0, peerMetricsLimit: 128 },
    { engine: () => fakeStats(3), extra: () => controlPlaneMetrics({ etcd: null, lease: null, rules: null }) },
  );
  t.teardown(() => server?.close());
  const served = exposedNames(await (await fetch(`http://127.0.0.1:${server!.port}/metrics`)).text());
  t.same([...served].filter((n) => !all.has(n)), [], `the ${served.size} series of the data plane, control plane, HTTP server and process are documented`);
});
