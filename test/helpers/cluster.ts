// A cluster (lab/cluster.ts) for one test, destroyed in the test's teardown.
import { buildCluster, type Cluster, type ClusterOptions } from '../../lab/cluster.js';
import type { Teardown } from './netns.js';

export async function testCluster(t: Teardown, o: ClusterOptions): Promise<Cluster> {
  const c = await buildCluster(o);
  t.teardown(() => c.destroy());
  return c;
}
