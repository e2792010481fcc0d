// Whatever an endpoint answers is an error to handle, never a crash: a server that is not etcd
// (HTTP/1.1 JSON of the wrong shape, as a misconfigured proxy or etcd's JSON gateway on another
// path would give), and a gRPC server whose answers decode to the wrong shape or not at all. The
// registry rejects with a RegistryError that linen's loops retry with backoff ('unavailable'),
// and the watcher and the lease acquisition keep retrying instead of ending the process.
import t, { type Test } from 'tap';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createH2Server, type Http2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { EtcdRegistry, prefixEnd, tlsFailure } from '../../src/subnet/etcd.js';
import { RegistryError } from '../../src/subnet/registry.js';
import { LeaseWatcher } from '../../src/subnet/watcher.js';
import { LeaseManager } from '../../src/subnet/manager.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import { udpLeaseAttrs } from '../../src/backend/udp.js';
import { parseIPv4 } from '../../src/net.js';

t.setTimeout(60_000);

const listen = async <S extends Server | Http2Server>(t: Test, s: S): Promise<string> => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
};

/** A gRPC server (cleartext HTTP/2) that answers every call with `message` and status OK. */
function grpcServer(message: Buffer): Http2Server {
  const s = createH2Server();
  s.on('stream', (stream) => {
    stream.on('data', () => undefined);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    const frame = Buffer.alloc(5);
    frame.writeUInt32BE(message.length, 1);
    stream.end(Buffer.concat([frame, message]));
  });
  s.on('sessionError', () => undefined);
  return s;
}

/** Every registry call linen makes at start-up, each expected to reject with a RegistryError. */
async function everyCallRejects(t: Test, endpoint: string, label: string): Promise<void> {
  const reg = new EtcdRegistry({ endpoints: [endpoint], requestTimeoutMs: 2000, probeIntervalMs: 200 });
  t.teardown(() => reg.close());
  const calls: [string, () => Promise<unknown>][] = [
    ['config', () => reg.getNetworkConfig()],
    ['list', () => reg.getLeases()],
    ['get', () => reg.getLease({ ip: 0x0a050400, prefixLen: 24 })],
    ['create', () => reg.createLease({ ip: 0x0a050400, prefixLen: 24 }, udpLeaseAttrs(parseIPv4('1.2.3.4')!), 60)],
    ['watch', async () => {
      for await (const _ of reg.watchLeases(1, AbortSignal.timeout(5000))) return 'an item';
      return 'the end';
    }],
  ];
  for (const [name, call] of calls) {
    const e = await call().then((v) => new Error(`resolved: ${String(v)}`), (err: unknown) => err);
    t.ok(e instanceof RegistryError, `${label}, ${name}: ${(e as Error).message.slice(0, 200)}`);
    t.equal((e as RegistryError).kind, 'unavailable', `${label}, ${name}: retried with backoff`);
  }
  t.not(reg.connection().state, 'connected', `${label}: not connected`);
}

t.test('an HTTP/1.1 server of JSON in the wrong shape (kvs an object)', async (t) => {
  const s = createHttpServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ header: { revision: '5' }, kvs: { key: 'x' }, result: { events: 'none' } }));
  });
  await everyCallRejects(t, await listen(t, s), 'HTTP/1.1');
});

t.test('gRPC answers that decode to nothing (no header, no revision)', async (t) => {
  await everyCallRejects(t, await listen(t, grpcServer(Buffer.alloc(0))), 'empty messages');
});

t.test('gRPC answers that do not decode', async (t) => {
  // Field 1 (header, a message) with a length running past the end; then a stray group end.
  await everyCallRejects(t, await listen(t, grpcServer(Buffer.from([0x0a, 0x7f, 0x01, 0x0c]))), 'garbage');
});

t.test('the watcher and the lease acquisition retry, with backoff, against such an endpoint', async (t) => {
  const s = createHttpServer((req, res) => {
    req.resume();
    res.end('{"kvs":{}}');
  });
  let connections = 0;
  s.on('connection', () => connections++);
  const endpoint = await listen(t, s);
  const reg = new EtcdRegistry({ endpoints: [endpoint], requestTimeoutMs: 1000, probeIntervalMs: 500 });
  t.teardown(() => reg.close());
  const w = new LeaseWatcher({ registry: reg, ownSubnet: null, accept: 'all' });
  const ac = new AbortController();
  const watching = w.run(ac.signal, () => undefined);
  const m = new LeaseManager({ registry: reg, attrs: udpLeaseAttrs(parseIPv4('1.2.3.4')!) });
  const acquiring = m.acquire(parseNetworkConfig('{"Network":"10.5.0.0/16"}'), ac.signal).then(() => 'acquired', (e: Error) => e.message);
  await new Promise((r) => setTimeout(r, 3000));
  ac.abort();
  await watching;
  t.equal(await acquiring, 'interrupted while acquiring a lease', 'acquisition retried until stopped');
  t.ok(connections > 0 && connections < 200, `${connections} connection(s) in 3 s: tried, and not in a tight loop`);
});

t.test('prefixEnd and tlsFailure', async (t) => {
  t.same(prefixEnd(Buffer.from('/a/subnets')), Buffer.from('/a/subnett'));
  t.same(prefixEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]), 'a trailing 0xff is dropped and the byte before it incremented');
  t.same(prefixEnd(Buffer.from([0xff])), Buffer.from([0]), 'all 0xff: to the end of the keyspace');
  t.equal(tlsFailure('connect ECONNREFUSED 127.0.0.1:2379'), null, 'not a TLS error');
  t.match(tlsFailure('C0:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1605:SSL alert number 48') ?? '', /refused this client's certificate \(TLS alert "unknown ca"\)/);
  t.match(tlsFailure('14 UNAVAILABLE: No connection established. Last error: Error: self-signed certificate in certificate chain (2026-12-06T05:00:00.000Z). Resolution note: ') ?? '', /server certificate was not accepted \(self-signed certificate in certificate chain\)/);
});
