// A real etcd for one test (lab/etcd.ts), removed in the test's teardown.
//
//   const etcd = await startEtcd(t);          // waits until it is healthy
//   etcd.endpoints                            // ["http://127.0.0.1:PORT"]
//   await etcd.ctl('put', '/k', 'v')          // etcdctl against this member, stdout back
//   await etcd.stop(); await etcd.start();    // SIGTERM and start again, data kept
//   await etcd.kill();                        // SIGKILL
//   await etcd.restart({ wipe: true })        // stop, delete the data dir, start (same ports)
import { startEtcdServer, startGrpcProxy, type EtcdServer, type EtcdServerOptions, type GrpcProxy } from '../../lab/etcd.js';

export { freePort, putMany, type EtcdTLS } from '../../lab/etcd.js';
export type EtcdHandle = EtcdServer;
export type EtcdOptions = EtcdServerOptions;

import type { Teardown } from './netns.js';

export async function startEtcd(t: Teardown, opts: EtcdOptions = {}): Promise<EtcdHandle> {
  const server = await startEtcdServer(opts);
  t.teardown(() => server.destroy());
  return server;
}

/** `etcd grpc-proxy start` in front of endpoints, killed in the test's teardown. */
export async function startProxy(t: Teardown, endpoints: string[]): Promise<GrpcProxy> {
  const proxy = await startGrpcProxy(endpoints);
  t.teardown(() => proxy.stop());
  return proxy;
}
