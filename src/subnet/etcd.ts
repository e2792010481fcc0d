// Registry on etcd v3 through etcd's JSON gateway (etcd-http.ts), doing exactly the etcd calls flanneld does
// (docs/flanneld-compat.md, "etcd calls") so that linen and flanneld nodes can share one etcd:
//
//   config      Get(<prefix>/config)
//   list        Get(<prefix>/subnets, prefix)              (no trailing slash, as flanneld), in pages
//               of LIST_PAGE_KEYS keys at the revision of the first page
//   create      Grant(ttl); Txn(If Version(key)==0 Then Put(key, json, lease)); Revoke if not
//   update      Grant(ttl); Put(key, json, lease)           (no compare); Revoke on error
//   delete      Delete(key)
//   watch       Watch(<prefix>/subnets, prefix, from rev)    compaction reported, not hidden
//
// Every call carries etcd's require-leader metadata (as clientv3's WithRequireLeader): with
// several endpoints, a member cut off from its cluster refuses calls at once and cancels its
// watches, so they go to a member that has a leader instead of stalling.
//
// Differences, on purpose: listing does not call LeaseTimeToLive for every key (only the own
// lease's TTL matters, see leaseTimeToLive); the own-key watch is on the exact key, not a
// prefix; a reused reservation (key without lease) can be rewritten without a lease.
//
// Getting back after a network partition: a half-open connection (packets dropped, nothing
// reset) is noticed by a call running into its deadline, or, under a watch, by the probe
// call that goes to the watch's member every 10 s and may take 5 (etcd-http.ts). From then on the registry is 'disconnected' and probes etcd every second with a
// fresh client (fresh TCP connections: the old one may sit in exponential retransmission
// backoff for as long as the partition lasted); the first probe that gets an answer replaces
// the client and reports 'connected', which wakes the watch and renewal loops at once.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import type { IPv4Net } from '../net.js';
import { nullLogger, type Logger } from '../log.js';
import { encodeLeaseAttrs, etcdKeys, leaseFromKV, parseSubnetKey, type Lease, type LeaseAttrs } from './lease.js';
import {
  b64,
  EtcdCallError,
  EtcdHttpClient,
  fromB64,
  GrpcCode,
  int64,
  MAX_RECEIVE_BYTES,
  TLS_CLOSED_AFTER_HANDSHAKE,
  type CallDeadline,
  type EtcdHttpOptions,
  type KeyValue,
  type RangeResponse,
  type ResponseHeader,
  type WatchResponse,
} from './etcd-http.js';
import {
  ConfigNotFoundError,
  RegistryError,
  SubnetExistsError,
  type ConnectionStatus,
  type LeaseGrant,
  type LeaseList,
  type Registry,
  type SkippedEntry,
  type WatchEvent,
  type WatchItem,
} from './registry.js';

export { MAX_RECEIVE_BYTES, STALLED_ENDPOINT_SKIP_MS } from './etcd-http.js';

export interface EtcdRegistryOptions {
  /** e.g. ["http://127.0.0.1:2379"]; "host:port" without a scheme also works. */
  endpoints: string[];
  /** --etcd-prefix, default /coreos.com/network. */
  prefix?: string;
  /** TLS is used only when both keyFile and certFile are set (as flanneld). */
  keyFile?: string;
  certFile?: string;
  /** CA bundle; used only together with keyFile + certFile. */
  caFile?: string;
  username?: string;
  password?: string;
  /** Deadline for each unary call, default 10 s. */
  requestTimeoutMs?: number;
  /** While disconnected: how often a fresh client probes etcd, default 1 s (also its deadline). */
  probeIntervalMs?: number;
  /** Keys per page of the lease listing, default LIST_PAGE_KEYS. */
  listPageKeys?: number;
  log?: Logger;
}

/** Per-call options of the writes that have a deadline of their own (lease renewal). */
export interface CallTimeout {
  /** Deadline of each etcd call made, instead of the registry's request timeout. */
  timeoutMs?: number;
}

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

/** Keys per page of the lease listing: about 1 MB of VXLAN leases, a quarter of the default limit. */
export const LIST_PAGE_KEYS = 5000;

/** The exclusive end of a prefix range: the prefix with its last byte incremented. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i] = end[i]! + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff: to the end of the keyspace
}

function readTLSFile(flag: string, path: string, kind: 'key' | 'certificate'): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (e) {
    throw new RegistryError(`cannot read ${flag} ${path}: ${(e as Error).message}`, 'other', e);
  }
  // Checked here, where the flag is known: OpenSSL would only say "PEM routines::no start line".
  try {
    // node:crypto is loaded only here, with TLS: without it linend takes about 1 MB less.
    const { createPrivateKey, X509Certificate } = createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
    if (kind === 'key') createPrivateKey(data);
    else new X509Certificate(data);
  } catch (e) {
    throw new RegistryError(`${flag} ${path} is not a PEM ${kind === 'key' ? 'private key' : 'certificate'}: ${(e as Error).message}`, 'other', e);
  }
  return data;
}

/**
 * What went wrong in a TLS handshake, in words, from node's error text (null when the error
 * is not about TLS). OpenSSL's text is kept, without its source-file coordinates.
 */
export function tlsFailure(msg: string): string | null {
  const text = msg.replace(/^Error: /, '').replace(/\s+/g, ' ').trim();
  const clean = (s: string): string => s.replace(/:\.\.\/deps\/\S+/g, '').replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '');
  const alert = /alert ([a-z ]+?)(?::|$)/i.exec(text)?.[1]?.trim();
  const refused = (why: string): string =>
    `etcd refused this client's certificate (${why}): --etcd-certfile must be signed by a CA etcd trusts (--trusted-ca-file)`;
  if (alert !== undefined && /certificate|unknown ca|certificate required|access denied/i.test(alert)) return refused(`TLS alert "${alert}"`);
  if (text.includes(TLS_CLOSED_AFTER_HANDSHAKE)) return refused(TLS_CLOSED_AFTER_HANDSHAKE);
  if (/unable to verify|self[- ]signed|certificate (has expired|is not yet valid)|unable to get (local )?issuer|Hostname\/IP does not match|ERR_TLS_CERT/i.test(text)) {
    return `etcd's server certificate was not accepted (${clean(text)}): --etcd-cafile must be the CA that signed it, and it must name this endpoint`;
  }
  if (/SSL routines|wrong version number|tlsv1 alert|handshake|secure TLS connection/i.test(text)) {
    return `${clean(text)} (check --etcd-cafile, --etcd-certfile and --etcd-keyfile)`;
  }
  return null;
}

/** A small async queue for turning stream callbacks into an async iterator. */
class Channel<T> {
  private items: T[] = [];
  private waiters: ((v: IteratorResult<T> | { error: unknown }) => void)[] = [];
  private failure: { error: unknown } | null = null;
  private ended = false;

  push(v: T): void {
    const w = this.waiters.shift();
    if (w !== undefined) w({ value: v, done: false });
    else this.items.push(v);
  }
  fail(error: unknown): void {
    if (this.ended || this.failure !== null) return;
    this.failure = { error };
    for (const w of this.waiters.splice(0)) w({ error });
  }
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }
  async next(): Promise<IteratorResult<T>> {
    const v = this.items.shift();
    if (v !== undefined) return { value: v, done: false };
    if (this.failure !== null) throw this.failure.error;
    if (this.ended) return { value: undefined, done: true };
    const r = await new Promise<IteratorResult<T> | { error: unknown }>((resolve) => this.waiters.push(resolve));
    if ('error' in r) throw r.error;
    return r;
  }
}

const revisionOf = (h: ResponseHeader | undefined): number => int64(h?.revision);

/** An answer over the receive limit (ours, or etcd's own gRPC limit). */
const tooLarge = (e: unknown): boolean => e instanceof EtcdCallError && (e.reason === 'too-large' || e.code === GrpcCode.RESOURCE_EXHAUSTED);

export class EtcdRegistry implements Registry {
  readonly keys: { readonly config: string; readonly subnets: string; subnet(sn: IPv4Net): string };
  private client: EtcdHttpClient;
  private readonly clientOptions: EtcdHttpOptions;
  private readonly timeoutMs: number;
  private readonly probeIntervalMs: number;
  private readonly listPageKeys: number;
  private listed = 0;
  private probing = false;
  private readonly log: Logger;
  private readonly endpointsText: string;
  private readonly username: string;
  private status: ConnectionStatus = { state: 'connecting', lastError: null, since: Date.now() };
  private readonly listeners = new Set<(s: ConnectionStatus) => void>();
  private closed = false;
  private reconnectCount = 0;

  constructor(opts: EtcdRegistryOptions) {
    if (opts.endpoints.length === 0) throw new RegistryError('no etcd endpoints given', 'other');
    this.log = opts.log ?? nullLogger;
    this.keys = etcdKeys(opts.prefix ?? DEFAULT_ETCD_PREFIX);
    this.endpointsText = opts.endpoints.join(',');
    this.username = opts.username ?? '';
    this.timeoutMs = opts.requestTimeoutMs ?? 10_000;

    const key = opts.keyFile ?? '';
    const cert = opts.certFile ?? '';
    let tls: EtcdHttpOptions['tls'] = null;
    if (key !== '' && cert !== '') {
      tls = {
        // No --etcd-cafile: verify against the system roots, as Go does with RootCAs nil.
        ca: opts.caFile ? readTLSFile('--etcd-cafile', opts.caFile, 'certificate') : null,
        key: readTLSFile('--etcd-keyfile', key, 'key'),
        cert: readTLSFile('--etcd-certfile', cert, 'certificate'),
      };
    } else {
      if (key !== '' || cert !== '') {
        this.log.warn(`only one of --etcd-keyfile/--etcd-certfile given: TLS client authentication needs both (as flanneld), not using it`);
      }
      if (opts.endpoints.some((e) => !e.startsWith('https://'))) {
        this.log.warn('no certificate provided: connecting to etcd with http. This is insecure');
      }
    }
    this.clientOptions = {
      endpoints: opts.endpoints,
      tls,
      auth: this.username === '' ? null : { username: this.username, password: opts.password ?? '' },
      // Endpoints passed over until then (ms): outlives each client.
      stalled: new Map(),
    };
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.listPageKeys = Math.max(1, opts.listPageKeys ?? LIST_PAGE_KEYS);
    this.client = new EtcdHttpClient(this.clientOptions);
  }

  // --- connection state ----------------------------------------------------------------

  connection(): ConnectionStatus {
    return this.status;
  }

  /** Times the connection came back after being lost (for /metrics). */
  reconnects(): number {
    return this.reconnectCount;
  }

  onConnectionChange(listener: (s: ConnectionStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private setState(state: ConnectionStatus['state'], lastError: string | null): void {
    if (this.status.state === state && (state !== 'disconnected' || this.status.lastError === lastError)) return;
    const changed = this.status.state !== state;
    if (changed && state === 'connected' && this.status.state === 'disconnected') this.reconnectCount++;
    this.status = { state, lastError, since: changed ? Date.now() : this.status.since };
    if (changed) {
      if (state === 'connected') this.log.info(`connected to etcd (${this.endpointsText})`);
      else if (state === 'disconnected') this.log.warn(`lost etcd (${this.endpointsText}): ${lastError ?? ''}`);
    }
    for (const l of this.listeners) l(this.status);
    if (state === 'disconnected') void this.recover();
  }

  /**
   * While disconnected: every probeIntervalMs, a fresh client asks etcd for the config key's
   * revision (with that same deadline). The first answer makes it the client; the old one is
   * closed, which ends whatever still hangs on it (its callers retry on the new one).
   */
  private async recover(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      while (!this.closed && this.status.state === 'disconnected') {
        const started = Date.now();
        const fresh = new EtcdHttpClient(this.clientOptions);
        try {
          await fresh.call('/v3/kv/range', { key: b64(this.keys.config), count_only: true }, { timeoutMs: this.probeIntervalMs, deadline: started + this.probeIntervalMs });
          if (this.closed || this.status.state !== 'disconnected') {
            fresh.close();
            return;
          }
          const old = this.client;
          this.client = fresh;
          old.close();
          this.setState('connected', null);
          return;
        } catch {
          fresh.close();
        }
        await new Promise((r) => setTimeout(r, Math.max(0, this.probeIntervalMs - (Date.now() - started))));
      }
    } finally {
      this.probing = false;
    }
  }

  /** Turns what the gateway client throws into a RegistryError with a clear message. */
  private mapError(op: string, key: string, e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    const msg = e instanceof Error ? e.message : String(e);
    const where = `${op} ${key}`;
    const c = e instanceof EtcdCallError ? e : null;
    if (c?.reason === 'network') {
      const tls = tlsFailure(msg);
      if (tls !== null) {
        // Still 'unavailable' (retried): the other side may be fixed while linend waits.
        return new RegistryError(`etcd TLS handshake failed (endpoints ${this.endpointsText}, during ${where}): ${tls}`, 'unavailable', e);
      }
    }
    if (tooLarge(c)) {
      // An answer larger than the receive limit: etcd is there, asking again the same way fails again.
      return new RegistryError(`etcd answer too large (${where}): ${msg}`, 'other', e);
    }
    if (c?.reason === 'timeout' || c?.code === GrpcCode.DEADLINE_EXCEEDED) {
      return new RegistryError(`etcd request timed out (${where}, endpoints ${this.endpointsText}): ${msg}`, 'timeout', e);
    }
    if (/authentication failed|invalid user ID or password/.test(msg)) {
      return new RegistryError(
        `etcd authentication failed for user ${JSON.stringify(this.username)} (check --etcd-username/--etcd-password): ${msg}`,
        'auth',
        e,
      );
    }
    if (c?.code === GrpcCode.PERMISSION_DENIED || c?.code === GrpcCode.UNAUTHENTICATED || /user name is empty|permission denied/.test(msg)) {
      const who = this.username === '' ? 'no user (etcd auth is enabled: set --etcd-username/--etcd-password)' : `user ${JSON.stringify(this.username)}`;
      return new RegistryError(`etcd permission denied for ${where} as ${who}: ${msg}`, 'permission', e);
    }
    if (c?.reason === 'network' || c?.reason === 'closed' || c?.code === GrpcCode.UNAVAILABLE) {
      return new RegistryError(`etcd unavailable (endpoints ${this.endpointsText}) during ${where}: ${msg}`, 'unavailable', e);
    }
    return new RegistryError(`etcd ${where} failed: ${msg}`, 'other', e);
  }

  /**
   * Runs one etcd call on the current client, mapping errors and tracking the connection
   * state (an answer means connected). A call cut short because its client was replaced (etcd
   * was lost and found again) is sent again on the new client, unless it is the create txn
   * (which may have been applied: sent again it would find its own key and report the subnet
   * taken); that one counts as unavailable.
   */
  private async call<T>(op: string, key: string, path: string, body: object, t?: CallTimeout): Promise<T> {
    if (this.closed) throw new RegistryError('registry is closed', 'other');
    const d: CallDeadline = t?.timeoutMs === undefined ? { timeoutMs: this.timeoutMs } : { timeoutMs: t.timeoutMs, deadline: Date.now() + t.timeoutMs };
    for (let replaced = 0; ; replaced++) {
      const client = this.client;
      try {
        const r = await client.call<T>(path, body, d);
        this.setState('connected', null);
        return r;
      } catch (e) {
        if (client !== this.client && !this.closed) {
          if (replaced === 0 && op !== 'create' && e instanceof EtcdCallError && e.reason === 'closed') continue;
          throw new RegistryError(`etcd ${op} ${key} was cut short by a reconnect: ${e instanceof Error ? e.message : String(e)}`, 'unavailable', e);
        }
        const err = this.mapError(op, key, e);
        if (err.kind === 'unavailable' || err.kind === 'timeout') this.setState('disconnected', err.message);
        else if (err.kind !== 'other') this.setState('connected', null);
        throw err;
      }
    }
  }

  private range(op: string, key: string, body: object): Promise<RangeResponse> {
    return this.call<RangeResponse>(op, key, '/v3/kv/range', body);
  }

  // --- reads -------------------------------------------------------------------------

  async getNetworkConfig(): Promise<string> {
    const key = this.keys.config;
    const res = await this.range('get', key, { key: b64(key) });
    const kv = res.kvs?.[0];
    if (kv === undefined) throw new ConfigNotFoundError();
    return fromB64(kv.value).toString('utf8');
  }

  private toLease(kv: KeyValue): { lease: Lease } | { skipped: SkippedEntry } {
    const key = fromB64(kv.key).toString('utf8');
    const r = leaseFromKV(key, fromB64(kv.value), kv.lease ?? '0', int64(kv.mod_revision));
    return r.ok ? { lease: r.value } : { skipped: { key, error: r.error } };
  }

  /** Complete lease listings so far (a watch that resumes from its revision needs none). */
  get listings(): number {
    return this.listed;
  }

  /**
   * Every lease under <prefix>/subnets, read in pages of at most listPageKeys keys: one
   * answer for a large cluster would be tens of megabytes. The first page fixes the revision
   * and every later page is read at that same revision, so the listing is one consistent
   * snapshot and the watch that follows from revision + 1 misses nothing. A page too large for
   * the receive limit (huge values) is asked again with half the keys. If the revision is
   * compacted away between two pages, the listing starts over (a few times) at the current
   * revision.
   */
  async getLeases(): Promise<LeaseList> {
    for (let attempt = 1; ; attempt++) {
      try {
        const list = await this.listPaged();
        this.listed++;
        this.log.info(`listed ${list.leases.length} lease(s) under ${this.keys.subnets} at revision ${list.revision}`);
        return list;
      } catch (e) {
        if (!(e instanceof RegistryError && /required revision has been compacted/.test(e.message)) || attempt >= 3) throw e;
        this.log.warn(`listing ${this.keys.subnets} restarts: its revision was compacted between two pages`);
      }
    }
  }

  private async listPaged(): Promise<LeaseList> {
    const prefix = Buffer.from(this.keys.subnets);
    const end = b64(prefixEnd(prefix));
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    let from = prefix;
    let revision: number | null = null;
    let limit = this.listPageKeys;
    for (;;) {
      let res: RangeResponse;
      try {
        res = await this.range('list', this.keys.subnets, { key: b64(from), range_end: end, limit, ...(revision === null ? {} : { revision }) });
      } catch (e) {
        if (e instanceof RegistryError && tooLarge(e.cause) && limit > 1) {
          this.log.warn(`a page of ${limit} keys of ${this.keys.subnets} is larger than ${MAX_RECEIVE_BYTES} bytes: asking for ${Math.max(1, Math.floor(limit / 2))}`);
          limit = Math.max(1, Math.floor(limit / 2));
          continue;
        }
        throw e;
      }
      if (revision === null) revision = revisionOf(res.header);
      const kvs = res.kvs ?? [];
      for (const kv of kvs) {
        const r = this.toLease(kv);
        if ('lease' in r) leases.push(r.lease);
        else skipped.push(r.skipped);
      }
      const last = kvs[kvs.length - 1];
      if (res.more !== true || last === undefined) break;
      from = Buffer.concat([fromB64(last.key), Buffer.from([0])]); // the next key after the last one
      limit = this.listPageKeys;
    }
    return { leases, skipped, revision };
  }

  async getLease(subnet: IPv4Net): Promise<{ lease: Lease | null; invalid: string | null; revision: number }> {
    const key = this.keys.subnet(subnet);
    const res = await this.range('get', key, { key: b64(key) });
    const revision = revisionOf(res.header);
    const kv = res.kvs?.[0];
    if (kv === undefined) return { lease: null, invalid: null, revision };
    const r = this.toLease(kv);
    return 'lease' in r ? { lease: r.lease, invalid: null, revision } : { lease: null, invalid: r.skipped.error, revision };
  }

  async leaseTimeToLive(leaseId: string): Promise<number> {
    if (leaseId === '0' || leaseId === '') return -1;
    const res = await this.call<{ TTL?: string }>('lease-ttl', leaseId, '/v3/lease/timetolive', { ID: leaseId });
    return int64(res.TTL);
  }

  // --- writes ------------------------------------------------------------------------

  private async grant(ttlSeconds: number, key: string, t?: CallTimeout): Promise<{ id: string; ttl: number }> {
    const g = await this.call<{ ID?: string; TTL?: string; error?: string }>('grant', key, '/v3/lease/grant', { TTL: ttlSeconds }, t);
    if (g.error) throw new RegistryError(`etcd lease grant for ${key} failed: ${g.error}`, 'other');
    return { id: g.ID ?? '0', ttl: int64(g.TTL) };
  }

  private async revoke(id: string, key: string): Promise<void> {
    try {
      await this.call('revoke', key, '/v3/lease/revoke', { ID: id });
    } catch (e) {
      this.log.warn(`could not revoke etcd lease ${id} for ${key}: ${(e as Error).message}`);
    }
  }

  async createLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number): Promise<LeaseGrant> {
    const key = this.keys.subnet(subnet);
    const value = b64(encodeLeaseAttrs(attrs));
    const g = await this.grant(ttlSeconds, key);
    let res: { header?: ResponseHeader; succeeded?: boolean };
    try {
      res = await this.call('create', key, '/v3/kv/txn', {
        compare: [{ key: b64(key), target: 'VERSION', result: 'EQUAL', version: 0 }],
        success: [{ request_put: { key: b64(key), value, lease: g.id } }],
      });
    } catch (e) {
      await this.revoke(g.id, key);
      throw e;
    }
    if (res.succeeded !== true) {
      await this.revoke(g.id, key);
      throw new SubnetExistsError(subnet);
    }
    return { leaseId: g.id, ttlSeconds: g.ttl, revision: revisionOf(res.header) };
  }

  async updateLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number | null, t?: CallTimeout): Promise<LeaseGrant> {
    const key = this.keys.subnet(subnet);
    const value = b64(encodeLeaseAttrs(attrs));
    if (ttlSeconds === null) {
      const res = await this.call<{ header?: ResponseHeader }>('put', key, '/v3/kv/put', { key: b64(key), value }, t);
      return { leaseId: '0', ttlSeconds: null, revision: revisionOf(res.header) };
    }
    const g = await this.grant(ttlSeconds, key, t);
    try {
      const res = await this.call<{ header?: ResponseHeader }>('put', key, '/v3/kv/put', { key: b64(key), value, lease: g.id }, t);
      return { leaseId: g.id, ttlSeconds: g.ttl, revision: revisionOf(res.header) };
    } catch (e) {
      await this.revoke(g.id, key);
      throw e;
    }
  }

  async deleteLease(subnet: IPv4Net): Promise<void> {
    const key = this.keys.subnet(subnet);
    await this.call('delete', key, '/v3/kv/deleterange', { key: b64(key) });
  }

  // --- watches -----------------------------------------------------------------------

  watchLeases(fromRevision: number, signal: AbortSignal): AsyncIterable<WatchItem> {
    const prefix = Buffer.from(this.keys.subnets);
    return this.watchRange(this.keys.subnets, prefix, prefixEnd(prefix), fromRevision, signal);
  }

  watchLease(subnet: IPv4Net, fromRevision: number, signal: AbortSignal): AsyncIterable<WatchItem> {
    const key = this.keys.subnet(subnet);
    return this.watchRange(key, Buffer.from(key), undefined, fromRevision, signal);
  }

  private toEvent(ev: NonNullable<WatchResponse['events']>[number]): WatchEvent {
    const kv = ev.kv ?? {};
    const key = fromB64(kv.key).toString('utf8');
    const revision = int64(kv.mod_revision);
    if (ev.type === 'DELETE') {
      const sk = parseSubnetKey(key);
      return { type: 'delete', key, revision, subnet: sk === null ? null : sk.subnet };
    }
    const r = leaseFromKV(key, fromB64(kv.value), kv.lease ?? '0', revision);
    return r.ok ? { type: 'put', key, revision, lease: r.value } : { type: 'invalid', key, revision, error: r.error };
  }

  private watchRange(
    what: string,
    key: Buffer,
    rangeEnd: Buffer | undefined,
    fromRevision: number,
    signal: AbortSignal,
  ): AsyncIterable<WatchItem> {
    const self = this;
    return {
      async *[Symbol.asyncIterator](): AsyncGenerator<WatchItem> {
        if (signal.aborted) return;
        if (self.closed) throw new RegistryError('registry is closed', 'other');
        const ch = new Channel<WatchResponse>();
        const used = self.client;
        // A stream whose client has been replaced says nothing about the connection now.
        const current = (): boolean => used === self.client;
        let stop: (() => void) | null = null;
        const onAbort = (): void => {
          stop?.();
          ch.end();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        try {
          try {
            stop = await used.watch(
              { key: b64(key), ...(rangeEnd === undefined ? {} : { range_end: b64(rangeEnd) }), start_revision: fromRevision, progress_notify: true },
              // The probe that tells a live member from a dead connection: cheap, no leader needed.
              { path: '/v3/kv/range', body: { key: b64(key), count_only: true, serializable: true } },
              { onResponse: (r) => ch.push(r), onEnd: (e) => (e === null ? ch.end() : ch.fail(e)) },
            );
          } catch (e) {
            const err = self.mapError('watch', what, e);
            if (current() && (err.kind === 'unavailable' || err.kind === 'timeout')) self.setState('disconnected', err.message);
            throw err;
          }
          if (signal.aborted) return;
          for (;;) {
            let r: IteratorResult<WatchResponse>;
            try {
              r = await ch.next();
            } catch (e) {
              if (!current()) throw new RegistryError(`etcd watch ${what} was cut short by a reconnect`, 'unavailable', e);
              if (e instanceof EtcdCallError && /no leader/.test(e.message)) {
                // One member lost its cluster: watch again (on another endpoint), etcd is still there.
                throw new RegistryError(`etcd watch ${what}: the member answering it has no leader: ${e.message}`, 'unavailable', e);
              }
              const err = self.mapError('watch', what, e);
              if (err.kind !== 'permission' && err.kind !== 'auth') self.setState('disconnected', err.message);
              throw err;
            }
            if (r.done === true) return;
            const res = r.value;
            if (current()) self.setState('connected', null);
            const compacted = int64(res.compact_revision);
            if (compacted !== 0) {
              yield { kind: 'compacted', compactRevision: compacted, reason: 'compacted' };
              return;
            }
            if (res.canceled === true) {
              throw self.mapError('watch', what, new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
            }
            const events = res.events ?? [];
            if (res.created === true) {
              // A store that went back in time (wiped, or restored from a backup) would make
              // this watch wait silently for a revision it may not reach for a long time.
              const memberRevision = revisionOf(res.header);
              if (memberRevision + 1 < fromRevision) {
                // Or a member that is behind the others (back from a partition, or new and
                // still catching up): a linearizable read says where the cluster is.
                const cluster = await self.range('watch', what, { key: b64(key), count_only: true });
                const clusterRevision = revisionOf(cluster.header);
                if (clusterRevision + 1 < fromRevision) {
                  yield { kind: 'compacted', compactRevision: clusterRevision, reason: 'revision-reset' };
                  return;
                }
                self.log.v(1).info(`etcd watch ${what}: the member is at revision ${memberRevision}, behind the cluster (${clusterRevision}); waiting for it to catch up`);
              }
              if (events.length === 0) continue;
            }
            yield { kind: 'events', revision: revisionOf(res.header), events: events.map((ev) => self.toEvent(ev)) };
          }
        } finally {
          signal.removeEventListener('abort', onAbort);
          stop?.();
        }
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}
