// etcd with TLS and client-certificate authentication (a throwaway CA made for the test):
// linend connects with --etcd-cafile/--etcd-certfile/--etcd-keyfile and forwards; with a client
// certificate from another CA, or a CA that did not sign etcd's certificate, it says what is
// wrong in its log, keeps retrying at a steady pace (no crash loop) and never becomes ready;
// given the right files again it joins.
import t from 'tap';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildCluster, type Cluster } from '../../lab/cluster.js';
import { makeCerts, type TestCerts } from '../helpers/certs.js';
import { bothWays, etcdLeases, metrics, waitFor } from '../helpers/reliability.js';

t.setTimeout(180_000);

const dir = mkdtempSync(join(tmpdir(), 'linen-tls-rel-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let good: TestCerts | null = null;
let c: Cluster;

t.before(async () => {
  c = await buildCluster({
    hosts: 2, backend: 'vxlan',
    tls: (ip) => {
      mkdirSync(join(dir, 'good'));
      good = makeCerts(join(dir, 'good'), { serverIps: [ip], name: 'linen-cluster-ca' });
      return { certFile: good.serverCert, keyFile: good.serverKey, caFile: good.ca, clientCertFile: good.clientCert, clientKeyFile: good.clientKey };
    },
  });
});
t.teardown(() => c?.destroy());

t.test('linend joins an etcd that requires client certificates', async (t) => {
  t.match(c.etcdEndpoint, /^https:\/\//, 'etcd serves https only');
  t.equal((await etcdLeases(c)).size, 2, 'both nodes hold a lease');
  for (const n of c.nodes) {
    t.notMatch(n.log(), /insecure/, `host ${n.index + 1}: no "insecure" warning`);
    t.equal((await metrics(n)).get('linen_etcd_connected'), 1, `host ${n.index + 1}: connected`);
  }
  t.ok(await bothWays(c, 0, 1), 'pods reach each other');
});

t.test('wrong certificates: a clear error, steady retries, no readiness; the right ones: it joins', async (t) => {
  const n = c.nodes[1];
  mkdirSync(join(dir, 'rogue'));
  const rogue = makeCerts(join(dir, 'rogue'), { serverIps: ['127.0.0.1'], name: 'linen-rogue-ca' });
  await n.stop('SIGTERM');
  const cases: { what: string; args: string[]; expect: RegExp }[] = [
    {
      what: 'a client certificate signed by another CA',
      args: [`--etcd-certfile=${rogue.clientCert}`, `--etcd-keyfile=${rogue.clientKey}`],
      expect: /TLS handshake failed .*refused this client's certificate .*--etcd-certfile/,
    },
    {
      what: "a CA that did not sign etcd's certificate",
      args: [`--etcd-cafile=${rogue.ca}`],
      expect: /TLS handshake failed .*server certificate was not accepted .*--etcd-cafile/,
    },
  ];
  for (const k of cases) {
    const from = n.log().length;
    await n.start({ wait: false, args: k.args });
    // At least 8 s, and on a starved machine (where loading the etcd client takes seconds) until a
    // second error shows the retry, up to 60 s.
    const watchMs = 8000;
    const t0 = Date.now();
    let everReady = false;
    const errorLines = (): string[] => n.log().slice(from).split('\n').filter((l) => /^E\d{4} /.test(l));
    while (Date.now() - t0 < watchMs || (errorLines().length < 2 && Date.now() - t0 < 60_000)) {
      if ((await n.http('/readyz')).status === 200) everReady = true;
      await sleep(250);
    }
    const watchedS = (Date.now() - t0) / 1000;
    const errors = errorLines();
    t.ok(n.alive(), `${k.what}: linend is still running after ${watchedS.toFixed(0)} s`);
    t.notOk(everReady, `${k.what}: /readyz never said ready`);
    t.match(errors[0] ?? '', k.expect, `${k.what}: the error says what is wrong: ${(errors[0] ?? '').slice(0, 300)}`);
    t.ok(errors.length >= 2 && errors.length <= watchedS + 2, `${k.what}: it keeps retrying, about once a second (${errors.length} errors in ${watchedS.toFixed(1)} s)`);
    t.equal((await metrics(n).catch(() => null))?.get('linen_etcd_connected') ?? 0, 0, `${k.what}: linen_etcd_connected 0`);
    t.comment(`figures: tls_case="${k.what}" errors=${errors.length} first="${(errors[0] ?? '').replace(/^\S+ \S+ +\d+ /, '').slice(0, 200)}"`);
    await n.stop('SIGTERM');
  }
  await n.start();
  t.ok(await waitFor(() => bothWays(c, 0, 1), 10_000, 200) >= 0, 'with the right files again it joins and pods reach each other');
});
