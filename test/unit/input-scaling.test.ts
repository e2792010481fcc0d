// Every parser of etcd input is linear: pathological keys, lease values and network configs of
// 1 KB and of 1 MB are parsed, the 1 KB one 1,000 times, and the two totals compared (and the
// same for 1 KB against 60 KB). Linear
// parsing gives about the same total; a backtracking or quadratic parser gives about 1,000
// times more for the megabyte. The bound is 20 times, far from both, so machine load cannot
// decide the outcome; the figures are printed. No single parse of a megabyte may come near
// blocking the main thread for long (flanneld's probes and the lease watch share it).
import t from 'tap';
import { parseNetworkConfig } from '../../src/config/network.js';
import { memoryLogger } from '../../src/log.js';
import { decodeLeaseAttrs, etcdKeys, leaseFromKV, parseSubnetKey } from '../../src/subnet/lease.js';
import type { Registry, WatchEvent } from '../../src/subnet/registry.js';
import { LeaseWatcher } from '../../src/subnet/watcher.js';

// Decimal sizes, so that the pairs divide evenly. Keys, lease values and configs of a megabyte
// are refused for their size before any parsing; the second pair (1 KB against 60 KB, under
// every size bound) shows that the parsers themselves are linear.
const KB = 1000;
const MB = KB * KB;
const PAIRS: [number, number][] = [[KB, MB], [KB, 60 * KB]];
const RATIO_LIMIT = 20;
/** A single parse of a megabyte above this would be a regression of a different order. */
const SINGLE_LIMIT_MS = 1000;

const keys = etcdKeys('/coreos.com/network');
const registry = { keys } as unknown as Registry;

/** Pathological inputs, by name: a function of the size in characters. */
const shapes: Record<string, { make: (n: number) => string; parse: (s: string) => unknown }> = {
  'key of digits': { make: (n) => '1'.repeat(n), parse: parseSubnetKey },
  'key of dotted digits': { make: (n) => `${keys.subnets}/${'1.'.repeat(n / 2)}`, parse: parseSubnetKey },
  'key repeating a subnet name': { make: (n) => '10.5.1.0-24'.repeat(Math.ceil(n / 11)).slice(0, n), parse: parseSubnetKey },
  'key with a subnet name at its end': { make: (n) => `${keys.subnets}/${'x'.repeat(n)}10.5.1.0-24`, parse: parseSubnetKey },
  'value of nested brackets': { make: (n) => '['.repeat(n / 2) + ']'.repeat(n / 2), parse: decodeLeaseAttrs },
  'value of escaped quotes': { make: (n) => `{"PublicIP":"${'\\"'.repeat(n / 2)}"}`, parse: decodeLeaseAttrs },
  'value of an unterminated array': { make: (n) => `{"PublicIP":"192.0.2.1","BackendData":[${'1,'.repeat(n / 2)}`, parse: decodeLeaseAttrs },
  'config of nested brackets': { make: (n) => `{"Network":${'['.repeat(n / 2)}${']'.repeat(n / 2)}}`, parse: parseConfigQuietly },
  'config of an unterminated array': { make: (n) => `{"Network":"10.5.0.0/16","X":[${'1,'.repeat(n / 2)}`, parse: parseConfigQuietly },
  'config of many unknown keys': { make: (n) => `{"Network":"10.5.0.0/16"${',"k":1'.repeat(n / 6)}}`, parse: parseConfigQuietly },
  'watch event with a megabyte key': { make: (n) => `${keys.subnets}/${'9'.repeat(n)}`, parse: watchOnce },
};

function parseConfigQuietly(s: string): unknown {
  try {
    return parseNetworkConfig(s);
  } catch (e) {
    return e;
  }
}

/** One event through a fresh watcher, as the registry makes it from a raw key. */
function watchOnce(key: string): unknown {
  const w = new LeaseWatcher({ registry, ownSubnet: null, accept: 'all', log: memoryLogger(0).log });
  const r = leaseFromKV(key, '{"PublicIP":"192.0.2.1"}', '0', 2);
  const ev: WatchEvent = r.ok ? { type: 'put', key, revision: 2, lease: r.value } : { type: 'invalid', key, revision: 2, error: r.error };
  return w.applyEvents([ev], 2);
}

function timeMs(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

t.test('etcd input parsing is linear: 1 KB x 1000 against 1 MB x 1, and 1 KB x 60 against 60 KB x 1', async (t) => {
  for (const [name, shape] of Object.entries(shapes)) {
    for (const [smallSize, largeSize] of PAIRS) {
      const small = shape.make(smallSize);
      const large = shape.make(largeSize);
      const times = largeSize / smallSize;
      shape.parse(small); // warm up the code paths
      // The best of three runs of each, so that a pause of the machine counts less.
      const best = (f: () => void): number => Math.min(timeMs(f), timeMs(f), timeMs(f));
      const smallTotal = best(() => {
        for (let i = 0; i < times; i++) shape.parse(small);
      });
      const largeOnce = best(() => shape.parse(large));
      const ratio = largeOnce / Math.max(smallTotal, 0.05);
      const what = `${name}, ${largeSize / KB} KB`;
      t.comment(`${what}: 1 KB x ${times} ${smallTotal.toFixed(2)} ms, ${largeSize / KB} KB x 1 ${largeOnce.toFixed(2)} ms, ratio ${ratio.toFixed(2)}`);
      t.ok(ratio < RATIO_LIMIT, `${what}: takes about ${times} times 1 KB's time (ratio ${ratio.toFixed(2)} < ${RATIO_LIMIT})`);
      t.ok(largeOnce < SINGLE_LIMIT_MS, `${what}: parsed in ${largeOnce.toFixed(2)} ms (bound ${SINGLE_LIMIT_MS} ms)`);
    }
  }
});
