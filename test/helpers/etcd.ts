// A real etcd for one test (lab/etcd.ts), removed in the test's teardown.
//
//   const etcd = await startEtcd(t);          // waits until it is healthy
//   etcd.endpoints                            // ["http://127.0.0.1:PORT"]
//   await etcd.ctl('put', '/k', 'v')          // etcdctl against this member, stdout back
//   await etcd.stop(); await etcd.start();    // SIGTERM and start again, data kept
//   await etcd.kill();                        // SIGKILL
//   await etcd.restart({ wipe: true })        // stop, delete the data dir, start (same ports)
import { createRequire } from 'node:module';
import { nsExec } from '../../lab/netns.js';
import { startEtcdServer, type EtcdServer, type EtcdServerOptions } from '../../lab/etcd.js';

const require = createRequire(import.meta.url);

export { freePort, type EtcdTLS } from '../../lab/etcd.js';
export type EtcdHandle = EtcdServer;
export type EtcdOptions = EtcdServerOptions;

import type { Teardown } from './netns.js';

export async function startEtcd(t: Teardown, opts: EtcdOptions = {}): Promise<EtcdHandle> {
  const server = await startEtcdServer(opts);
  t.teardown(() => server.destroy());
  return server;
}

/**
 * Writes many keys fast from inside a network namespace (where the etcd address is reachable):
 * a short-lived node process with the etcd3 client sends transactions of up to 128 puts (etcd's
 * default --max-txn-ops), 8 at a time. Bounded: killed after timeoutMs (default 120 s).
 */
export function putMany(ns: string, endpoints: string[], kvs: readonly (readonly [string, string])[], timeoutMs = 120_000): void {
  const script = `
    const { Etcd3 } = require(${JSON.stringify(require.resolve('etcd3'))});
    const kvs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const client = new Etcd3({ hosts: ${JSON.stringify(endpoints)} });
    const batches = [];
    for (let i = 0; i < kvs.length; i += 128) batches.push(kvs.slice(i, i + 128));
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const b = batches[next++];
        await client.kv.txn({ success: b.map(([k, v]) => ({ request_put: { key: Buffer.from(k), value: Buffer.from(v) } })) });
      }
    };
    Promise.all(Array.from({ length: 8 }, worker)).then(() => client.close(), (e) => { console.error(e); process.exit(1); });
  `;
  nsExec(ns, process.execPath, ['-e', script], { input: JSON.stringify(kvs), timeout: timeoutMs });
}
