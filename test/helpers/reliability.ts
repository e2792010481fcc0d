// What the reliability and end-to-end tests share beyond the lab: the long-test switch. The
// re-exports below keep `../helpers/reliability.js` working for the test files that import it
// (the code lives in lab/; new code imports lab/ directly).
export const LONG = process.env.LINEN_LONG_TESTS === '1';

export { Metrics, metrics, delta, type Sample } from '../../lab/metrics.js';
export { rssKiB, fdCount, fdTargets, fdsAtRest, fdDiff, threadCount, pidOf } from '../../lab/proc.js';
export { waitFor } from '../../lab/wait.js';
export { partitionFromEtcd, bothWays, startIperf, type Partition, type IperfRun, type IperfHandle } from '../../lab/cluster.js';
export {
  etcdLeases, keyLease, leaseTTL, grantLease, etcdRevision, leaseValue, fakeSubnet, expectedRoutes,
} from '../../lab/leases.js';
export { snmp, linkDrops } from '../../lab/kernel.js';
