// Every retry path of the lease watcher and of the own-lease watch backs off, compaction answers
// included: an etcd (or a proxy) that answers every watch with "compacted" must not be asked for
// a full listing, or the own key, many times a second. A real etcd behind a registry whose
// watches are replaced, one way of failing per test.
import t, { type Test } from 'tap';
import { startEtcd } from '../helpers/etcd.js';
import { EtcdRegistry } from '../../src/subnet/etcd.js';
import { LeaseWatcher } from '../../src/subnet/watcher.js';
import { LeaseManager } from '../../src/subnet/manager.js';
import { RegistryError, type Registry, type WatchItem } from '../../src/subnet/registry.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import { parseIPv4 } from '../../src/net.js';
import { memoryLogger } from '../../src/log.js';

t.setTimeout(120_000);

const WINDOW_MS = 4000;
/** 100 ms doubling: 100 + 200 + 400 + 800 + 1600 = 3.1 s, so about 6 tries in the window; a storm makes hundreds. */
const MAX_TRIES = 15;

type Overrides = Partial<Pick<Registry, 'watchLeases' | 'watchLease' | 'getLeases' | 'getLease'>>;

/** The registry with some methods replaced; the rest go to the real one. */
function wrap(inner: EtcdRegistry, over: Overrides): Registry {
  return new Proxy(inner, {
    get(target, prop, receiver) {
      const o = (over as Record<PropertyKey, unknown>)[prop];
      if (o !== undefined) return o;
      const v: unknown = Reflect.get(target, prop, receiver);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as Registry;
}

async function* compacted(from: number): AsyncGenerator<WatchItem> {
  yield { kind: 'compacted', compactRevision: from, reason: 'compacted' };
}
async function* failing(): AsyncGenerator<WatchItem> {
  throw new RegistryError('watch canceled by etcd: a test', 'other');
}

async function setup(t: Test): Promise<EtcdRegistry> {
  const etcd = await startEtcd(t);
  await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints });
  t.teardown(() => reg.close());
  return reg;
}

/** Runs the lease watcher for WINDOW_MS on reg with `over`; the number of listings it made. */
async function watcherListings(reg: EtcdRegistry, over: (count: () => void) => Overrides): Promise<number> {
  let listings = 0;
  const r = wrap(reg, over(() => listings++));
  const w = new LeaseWatcher({ registry: r, ownSubnet: null, accept: 'all' });
  const ac = new AbortController();
  const run = w.run(ac.signal, () => undefined);
  await new Promise((res) => setTimeout(res, WINDOW_MS));
  ac.abort();
  await run;
  return listings;
}

/** Acquires a lease on r and runs its renewal and own-lease watch for WINDOW_MS; how run ended. */
async function runOwnLease(r: Registry, publicIP: string): Promise<string> {
  const m = new LeaseManager({ registry: r, attrs: udpLeaseAttrs(parseIPv4(publicIP)!) });
  await m.acquire(parseNetworkConfig('{"Network":"10.5.0.0/16"}'));
  const ac = new AbortController();
  const run = m.run(ac.signal);
  await new Promise((res) => setTimeout(res, WINDOW_MS));
  ac.abort();
  return run;
}

t.test('lease watcher: every watch answered "compacted"', async (t) => {
  const reg = await setup(t);
  const n = await watcherListings(reg, (count) => ({
    getLeases: () => (count(), reg.getLeases()),
    watchLeases: (from) => compacted(from),
  }));
  t.ok(n >= 2 && n <= MAX_TRIES, `${n} listings in ${WINDOW_MS} ms (at most ${MAX_TRIES})`);
});

t.test('lease watcher: every watch fails at once after a listing that works', async (t) => {
  const reg = await setup(t);
  let watches = 0;
  const n = await watcherListings(reg, (count) => ({
    getLeases: () => (count(), reg.getLeases()),
    watchLeases: () => (watches++, failing()),
  }));
  t.ok(watches >= 2 && watches <= MAX_TRIES, `${watches} watches, ${n} listing(s) in ${WINDOW_MS} ms (at most ${MAX_TRIES})`);
});

t.test('own-lease watch: every watch answered "compacted"', async (t) => {
  const reg = await setup(t);
  let reads = 0;
  const r = wrap(reg, {
    getLease: (s) => (reads++, reg.getLease(s)),
    watchLease: (_s, from) => compacted(from),
  });
  t.equal(await runOwnLease(r, '192.168.5.3'), 'stopped');
  t.ok(reads >= 2 && reads <= MAX_TRIES, `${reads} reads of the own key in ${WINDOW_MS} ms (at most ${MAX_TRIES})`);
});

t.test('own-lease watch: every watch fails at once', async (t) => {
  const reg = await setup(t);
  let watches = 0;
  const r = wrap(reg, { watchLease: () => (watches++, failing()) });
  t.equal(await runOwnLease(r, '192.168.5.4'), 'stopped');
  t.ok(watches >= 2 && watches <= MAX_TRIES, `${watches} watches in ${WINDOW_MS} ms (at most ${MAX_TRIES})`);
});

t.test('a 6 s etcd restart: a few log lines, not one per retry', async (t) => {
  const etcd = await startEtcd(t);
  await etcd.ctl('put', '/coreos.com/network/config', '{"Network":"10.5.0.0/16"}');
  // Verbosity 0, as linend runs by default.
  const { log, lines } = memoryLogger(0);
  const reg = new EtcdRegistry({ endpoints: etcd.endpoints, requestTimeoutMs: 2000, log: log.child('etcd') });
  t.teardown(() => reg.close());
  const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(parseIPv4('192.168.5.9')!), log: log.child('lease') });
  const own = (await m.acquire(parseNetworkConfig('{"Network":"10.5.0.0/16"}'))).subnet;
  const w = new LeaseWatcher({ registry: reg, ownSubnet: own, accept: 'all', log: log.child('watch') });
  const ac = new AbortController();
  const watching = w.run(ac.signal, () => undefined);
  const running = m.run(ac.signal);
  await w.ready;
  const before = lines.length;
  await etcd.stop();
  await new Promise((res) => setTimeout(res, 6000));
  await etcd.start();
  // Back: a lease written now reaches the watcher.
  await etcd.ctl('put', '/coreos.com/network/subnets/10.5.77.0-24', '{"PublicIP":"192.168.5.77"}');
  const t0 = Date.now();
  while (w.peers().size === 0 && Date.now() - t0 < 30_000) await new Promise((res) => setTimeout(res, 50));
  t.equal(w.peers().size, 1, `the watcher is back (${Date.now() - t0} ms after etcd)`);
  ac.abort();
  await Promise.all([watching, running]);
  const during = lines.slice(before);
  t.comment(during.join('\n'));
  t.ok(during.length <= 6, `${during.length} log lines for the restart (at most 6)`);
});
