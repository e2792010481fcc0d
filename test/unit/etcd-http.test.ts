// The etcd gateway client's own logic, without etcd: the watch stream parser on any chunking,
// the JSON mapping (base64, int64 as strings, omitted zeros), gateway error bodies into
// RegistryError kinds, failover past a hung endpoint, re-authentication, and node's TLS errors
// in words. A small local HTTP server answers with the bodies etcd 3.4's gateway sends
// (recorded from Debian's etcd-server 3.4.23); the integration tests run against real etcd.
import t, { type Test } from 'tap';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { b64, fromB64, gatewayError, int64, JsonObjectSplitter } from '../../src/subnet/etcd-http.js';
import { EtcdRegistry, prefixEnd, tlsFailure } from '../../src/subnet/etcd.js';
import { RegistryError } from '../../src/subnet/registry.js';
import { makeCerts } from '../helpers/certs.js';

t.test('watch stream parser: the same objects whatever the chunk boundaries', async (t) => {
  const objects = [
    { result: { header: { revision: '7' }, created: true } },
    { result: { events: [{ kv: { key: b64('/a'), value: b64('{"x": "}{\\"'), mod_revision: '8' } }] } },
    { result: { cancel_reason: 'text with } and { and \\" and é€' } },
    { error: { grpc_code: 14, http_code: 503, message: 'etcdserver: no leader', http_status: 'Service Unavailable' } },
  ];
  const stream = Buffer.from(objects.map((o) => JSON.stringify(o)).join('\n') + '\n');
  const parse = (chunks: Buffer[]): unknown[] => {
    const s = new JsonObjectSplitter();
    return chunks.flatMap((c) => s.push(c)).map((x) => JSON.parse(x) as unknown);
  };
  t.same(parse([stream]), objects, 'one chunk');
  let ok = true;
  for (let cut = 1; cut < stream.length; cut++) {
    if (JSON.stringify(parse([stream.subarray(0, cut), stream.subarray(cut)])) !== JSON.stringify(objects)) {
      ok = false;
      t.fail(`split at byte ${cut}`);
      break;
    }
  }
  t.ok(ok, `every split into two chunks (${stream.length - 1} of them, also inside multi-byte characters)`);
  t.same(parse(Array.from(stream, (b) => Buffer.from([b]))), objects, 'one byte at a time');
  t.same(parse([Buffer.from('{"a":1}{"b":{"c":2}}')]), [{ a: 1 }, { b: { c: 2 } }], 'objects without a delimiter');
  const small = new JsonObjectSplitter(16);
  t.same(small.push(Buffer.from('{"a":"0123"}')), ['{"a":"0123"}'], 'an object under the limit');
  t.throws(() => small.push(Buffer.from('{"a":"0123456789abcdef"')), /larger than 16 bytes/, 'an unfinished object over the limit');
});

t.test('JSON mapping: bytes in base64, int64 as strings, zero values omitted', async (t) => {
  t.equal(b64('/coreos.com/network/config'), 'L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc=');
  t.same(fromB64(b64(Buffer.from([0, 0xff, 0x80]))), Buffer.from([0, 0xff, 0x80]), 'any bytes round-trip');
  t.equal(fromB64(undefined).length, 0, 'an omitted value is empty');
  t.equal(int64('123456789012'), 123456789012);
  t.equal(int64(undefined), 0, 'an omitted revision is 0');
  t.same(prefixEnd(Buffer.from('/a/subnets')), Buffer.from('/a/subnett'));
  t.same(prefixEnd(Buffer.from([0x61, 0xff])), Buffer.from([0x62]), 'a trailing 0xff is dropped and the byte before it incremented');
  t.same(prefixEnd(Buffer.from([0xff])), Buffer.from([0]), 'all 0xff: to the end of the keyspace');
});

t.test('gateway error bodies: unary and stream shapes', async (t) => {
  t.same(gatewayError({ error: 'etcdserver: permission denied', code: 7, message: 'etcdserver: permission denied' }), { code: 7, message: 'etcdserver: permission denied' });
  t.same(gatewayError({ error: { grpc_code: 14, http_code: 503, message: 'etcdserver: no leader', http_status: 'Service Unavailable' } }), { code: 14, message: 'etcdserver: no leader' });
  t.equal(gatewayError({ result: { header: {} } }), null, 'a result is no error');
  t.equal(gatewayError({ header: { revision: '1' } }), null, 'an answer is no error');
});

/** A stub gateway on 127.0.0.1: `answer` decides per request; requests are counted per path. */
async function stub(t: Test, answer: (path: string, body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; hits: Map<string, number>; server: Server }> {
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const path = req.url ?? '';
      hits.set(path, (hits.get(path) ?? 0) + 1);
      answer(path, JSON.parse(Buffer.concat(parts).toString() || '{}') as Record<string, unknown>, req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits, server };
}

const json = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
};
const header = { cluster_id: '14841639068965178418', member_id: '10276657743932975437', revision: '12', raft_term: '2' };
const grpcError = (code: number, message: string): { error: string; code: number; message: string } => ({ error: message, code, message });

t.test('gateway errors become RegistryError kinds; the require-leader header is sent', async (t) => {
  const cases: [number, ReturnType<typeof grpcError>, string][] = [
    [503, grpcError(14, 'etcdserver: no leader'), 'unavailable'],
    [504, grpcError(4, 'context deadline exceeded'), 'timeout'],
    [403, grpcError(7, 'etcdserver: permission denied'), 'permission'],
    [400, grpcError(3, 'etcdserver: user name is empty'), 'permission'],
    [429, grpcError(8, 'grpc: received message larger than max'), 'other'],
    [400, grpcError(3, 'etcdserver: key is not provided'), 'other'],
  ];
  for (const [status, body, kind] of cases) {
    const leaderHeaders: (string | undefined)[] = [];
    const s = await stub(t, (_p, _b, req, res) => {
      leaderHeaders.push(req.headers['grpc-metadata-hasleader'] as string | undefined);
      json(res, status, body);
    });
    const reg = new EtcdRegistry({ endpoints: [s.url] });
    const e = await reg.getNetworkConfig().catch((e: unknown) => e);
    await reg.close();
    t.ok(e instanceof RegistryError, `${body.message}: a RegistryError`);
    t.equal((e as RegistryError).kind, kind, `${body.message} (code ${body.code}) is '${kind}': ${(e as Error).message}`);
    // etcd lost; etcd there (it refused); unknown (state unchanged).
    const state = kind === 'unavailable' || kind === 'timeout' ? 'disconnected' : kind === 'permission' ? 'connected' : 'connecting';
    t.equal(reg.connection().state, state, `${body.message}: connection state ${state}`);
    t.same(leaderHeaders.slice(0, 1), ['true'], 'the call carries Grpc-Metadata-hasleader: true');
  }
});

t.test('answers: base64 and omitted fields read right; a missing config is ConfigNotFoundError', async (t) => {
  const s = await stub(t, (path, body, _req, res) => {
    if (path === '/v3/kv/range' && body.key === b64('/coreos.com/network/config')) json(res, 200, { header, kvs: [{ key: body.key, value: b64('{"Network":"10.0.0.0/8"}'), create_revision: '5', mod_revision: '5', version: '1' }], count: '1' });
    else if (path === '/v3/kv/range') json(res, 200, { header });
    else if (path === '/v3/lease/timetolive') json(res, 200, { header, ID: body.ID, TTL: '-1' });
    else json(res, 404, grpcError(5, 'Not Found'));
  });
  const reg = new EtcdRegistry({ endpoints: [s.url] });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), '{"Network":"10.0.0.0/8"}');
  t.equal(reg.connection().state, 'connected');
  const list = await reg.getLeases();
  t.same({ leases: list.leases.length, revision: list.revision }, { leases: 0, revision: 12 }, 'an empty listing (no kvs field) at the header revision');
  t.equal(await reg.leaseTimeToLive('7587869383386434563'), -1, 'a lease etcd does not know');
  t.same(await reg.getLease({ ip: 0x0a010200, prefixLen: 24 }), { lease: null, invalid: null, revision: 12 });
});

t.test('a hung endpoint: the call goes on to the next, and the hung one is passed over afterwards', async (t) => {
  const hung = await stub(t, () => undefined); // takes requests, never answers
  const good = await stub(t, (_p, _b, _req, res) => json(res, 200, { header, kvs: [{ key: b64('/coreos.com/network/config'), value: b64('{}') }] }));
  const reg = new EtcdRegistry({ endpoints: [hung.url, good.url], requestTimeoutMs: 300 });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), '{}', 'the first call times out on the hung member and is answered by the next');
  for (let i = 0; i < 3; i++) await reg.getNetworkConfig();
  t.equal(hung.hits.get('/v3/kv/range'), 1, 'the hung endpoint got one call only');
  t.equal(good.hits.get('/v3/kv/range'), 4, 'the others went to the live one');
});

t.test('auth: a token per endpoint, fetched again once when etcd says it is invalid', async (t) => {
  let tokens = 0;
  let expireNext = true;
  const seen: (string | undefined)[] = [];
  const s = await stub(t, (path, body, req, res) => {
    if (path === '/v3/auth/authenticate') {
      if (body.name !== 'linen' || body.password !== 'pw') return json(res, 400, grpcError(3, 'etcdserver: authentication failed, invalid user ID or password'));
      return json(res, 200, { header, token: `tok${++tokens}` });
    }
    seen.push(req.headers.authorization);
    if (expireNext) {
      expireNext = false;
      return json(res, 401, grpcError(16, 'etcdserver: invalid auth token'));
    }
    json(res, 200, { header, kvs: [{ key: b64('/coreos.com/network/config'), value: b64('{}') }] });
  });
  const reg = new EtcdRegistry({ endpoints: [s.url], username: 'linen', password: 'pw' });
  t.teardown(() => reg.close());
  t.equal(await reg.getNetworkConfig(), '{}');
  t.same(seen, ['tok1', 'tok2'], 'the invalid token was replaced and the call sent again once');
  await reg.getNetworkConfig();
  t.equal(tokens, 2, 'the token is kept for later calls');
  const bad = new EtcdRegistry({ endpoints: [s.url], username: 'linen', password: 'wrong' });
  t.teardown(() => bad.close());
  const e = await bad.getNetworkConfig().catch((e: unknown) => e);
  t.equal((e as RegistryError).kind, 'auth', `a wrong password: ${(e as Error).message}`);
});

t.test('watch: events across chunk boundaries, then "no leader" in the stream', async (t) => {
  const key = '/coreos.com/network/subnets/10.1.2.0-24';
  const value = b64('{"PublicIP":"192.0.2.1","BackendType":"udp"}');
  const s = await stub(t, (path, body, _req, res) => {
    if (path !== '/v3/watch') return json(res, 200, { header, count: '1' });
    const create = (body.create_request ?? {}) as Record<string, unknown>;
    t.same(create, { key: b64('/coreos.com/network/subnets'), range_end: b64('/coreos.com/network/subnett'), start_revision: 9, progress_notify: true }, 'the create request');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    const stream = [
      { result: { header, created: true } },
      { result: { header, events: [{ kv: { key: b64(key), value, mod_revision: '10', lease: '7587869383386434563' } }, { type: 'DELETE', kv: { key: b64(key), mod_revision: '11' } }] } },
      { error: { grpc_code: 14, http_code: 503, message: 'etcdserver: no leader', http_status: 'Service Unavailable' } },
    ].map((o) => JSON.stringify(o) + '\n').join('');
    res.write(stream.slice(0, 70));
    setTimeout(() => res.write(stream.slice(70, 200)), 20);
    setTimeout(() => res.end(stream.slice(200)), 40);
  });
  const reg = new EtcdRegistry({ endpoints: [s.url] });
  t.teardown(() => reg.close());
  const items = [];
  let error: unknown = null;
  try {
    for await (const it of reg.watchLeases(9, new AbortController().signal)) items.push(it);
  } catch (e) {
    error = e;
  }
  t.equal(items.length, 1, 'one batch (the created answer carries no events)');
  const batch = items[0]!;
  t.ok(batch.kind === 'events' && batch.events.length === 2, 'two events');
  if (batch.kind === 'events') {
    const [put, del] = batch.events;
    t.ok(put?.type === 'put' && put.lease.leaseId === '7587869383386434563' && put.revision === 10, 'a put with its lease id as a decimal string and its revision');
    t.ok(del?.type === 'delete' && del.subnet !== null && del.revision === 11, 'a delete of a subnet key');
  }
  t.ok(error instanceof RegistryError && error.kind === 'unavailable' && /no leader/.test(error.message), `then the stream's error: ${(error as Error)?.message}`);
});

t.test("TLS errors in words, from node's own TLS errors", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'linen-etcd-http-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'good'));
  mkdirSync(join(dir, 'rogue'));
  const good = makeCerts(join(dir, 'good'), { name: 'linen-good-ca' });
  const rogue = makeCerts(join(dir, 'rogue'), { name: 'linen-rogue-ca' });
  const server = createTlsServer(
    { key: readFileSync(good.serverKey), cert: readFileSync(good.serverCert), ca: readFileSync(good.ca), requestCert: true, rejectUnauthorized: true },
    (_req, res) => json(res, 200, { header, kvs: [{ key: b64('/coreos.com/network/config'), value: b64('{}') }] }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const endpoint = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const attempt = async (files: { keyFile: string; certFile: string; caFile: string }): Promise<unknown> => {
    const reg = new EtcdRegistry({ endpoints: [endpoint], ...files });
    try {
      return await reg.getNetworkConfig();
    } catch (e) {
      return e;
    } finally {
      await reg.close();
    }
  };
  t.equal(await attempt({ keyFile: good.clientKey, certFile: good.clientCert, caFile: good.ca }), '{}', 'the right files: an answer');
  const badClient = await attempt({ keyFile: rogue.clientKey, certFile: rogue.clientCert, caFile: good.ca });
  t.match((badClient as Error).message, /TLS handshake failed .*refused this client's certificate .*--etcd-certfile/, `a client certificate from another CA: ${(badClient as Error).message}`);
  t.equal((badClient as RegistryError).kind, 'unavailable', 'retried (unavailable)');
  const badCA = await attempt({ keyFile: good.clientKey, certFile: good.clientCert, caFile: rogue.ca });
  t.match((badCA as Error).message, /TLS handshake failed .*server certificate was not accepted .*--etcd-cafile/, `a CA that did not sign the server's certificate: ${(badCA as Error).message}`);
  t.equal(tlsFailure('connect ECONNREFUSED 127.0.0.1:2379'), null, 'not a TLS error');
  t.match(tlsFailure('C0:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1605:SSL alert number 48') ?? '', /refused this client's certificate \(TLS alert "unknown ca"\)/);
});

t.test('watches on a member that stops answering: one probe for all of them, and they end at most 15 s after its last answer', async (t) => {
  let probes = 0;
  const s = await stub(t, (path, body, _req, res) => {
    if (path === '/v3/watch') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.write(JSON.stringify({ result: { header, created: true } }) + '\n'); // then silence, the connection open
    } else if (body.serializable === true && ++probes === 1) {
      json(res, 200, { header, count: '0' }); // the watches' first probe is answered, every later call hangs
    }
  });
  const reg = new EtcdRegistry({ endpoints: [s.url] });
  t.teardown(() => reg.close());
  const started = Date.now();
  const watchUntilError = async (w: AsyncIterable<unknown>): Promise<{ error: unknown; ms: number }> => {
    try {
      for await (const _ of w) { /* nothing comes */ }
      return { error: null, ms: Date.now() - started };
    } catch (e) {
      return { error: e, ms: Date.now() - started };
    }
  };
  const ac = new AbortController();
  const ends = Promise.all([
    watchUntilError(reg.watchLeases(1, ac.signal)),
    watchUntilError(reg.watchLease({ ip: 0x0a010200, prefixLen: 24 }, 1, ac.signal)),
  ]);
  const results = await ends;
  t.equal(s.hits.get('/v3/watch'), 2, 'two watches');
  t.equal(probes, 2, 'one probe each 10 s for both: answered, then one that hung');
  for (const r of results) {
    t.ok(r.error instanceof RegistryError && r.error.kind === 'timeout' && /failed a probe/.test(r.error.message), `the watch ended: ${(r.error as Error)?.message}`);
    t.ok(r.ms < 40_000, `after ${r.ms} ms (expected about 25 s: the last answer at 10 s, the next probe at 20 s, 5 s to answer)`);
  }
  t.equal(reg.connection().state, 'disconnected', 'etcd is reported lost');
});
