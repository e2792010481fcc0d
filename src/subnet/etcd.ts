// Registry on etcd v3 through the `etcd3` package (gRPC, the protocol every etcd serves: with
// or without its JSON gateway, behind `etcd grpc-proxy`, with client-certificate users), doing
// exactly the etcd calls flanneld does (docs/flanneld-compat.md, "etcd calls") so that linen and
// flanneld nodes can share one etcd:
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
// reset) is noticed by gRPC keepalive pings within 15 s, or by a call running into its
// deadline. From then on the registry is 'disconnected' and probes etcd every second with a
// fresh client (a fresh TCP connection: the old one may sit in exponential retransmission
// backoff for as long as the partition lasted); the first probe that gets an answer replaces
// the client and reports 'connected', which wakes the watch and renewal loops at once.
//
// Every answer is checked for the fields linen reads (a header with a revision, keys and values
// as bytes): a proxy or server that answers something else is an error, never a crash.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
// etcd3's own gRPC library (a dependency of etcd3), for call metadata.
import { credentials as grpcCredentials, Metadata } from '@grpc/grpc-js';
import {
  castGrpcError,
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCGenericError,
  GRPCResourceExhastedError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
  isRecoverableError,
  type IOptions,
} from 'etcd3';
import type { IPv4Net } from '../net.js';
import { nullLogger, type Logger } from '../log.js';
import { DEFAULT_ETCD_PREFIX, encodeLeaseAttrs, etcdKeys, leaseFromKV, parseSubnetKey, type Lease, type LeaseAttrs } from './lease.js';
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

export interface EtcdRegistryOptions {
  /** e.g. ["http://127.0.0.1:2379"]; "host:port" without a scheme also works. */
  endpoints: string[];
  /** --etcd-prefix, default DEFAULT_ETCD_PREFIX. */
  prefix?: string;
  /** Client certificate: used only when both keyFile and certFile are set (as flanneld). */
  keyFile?: string;
  certFile?: string;
  /** CA bundle that verifies etcd's server certificate (with https endpoints, with or without a client certificate). */
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

/** Keys per page of the lease listing: about 1 MB of VXLAN leases, a quarter of the default limit. */
export const LIST_PAGE_KEYS = 5000;

/**
 * The largest gRPC message linen accepts from etcd. A lease listing is paged and a watch
 * response carries at most what etcd accepted in one request (--max-request-bytes, 1.5 MiB
 * by default) per revision, but etcd batches the events of many revisions into one response
 * while a watch catches up; the 4 MiB default would then cut the stream.
 */
export const MAX_RECEIVE_BYTES = 64 << 20;

/** How long an endpoint on which a call timed out or found no usable member is passed over. */
export const STALLED_ENDPOINT_SKIP_MS = 15_000;

/** gRPC keepalive: a ping every 10 s on a connection, which is dead when one gets no answer in 5 s. */
const KEEPALIVE_TIME_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5_000;

/**
 * etcd's "require leader" call metadata (clientv3's WithRequireLeader), sent with every call.
 * A member cut off from the rest of its cluster then answers "no leader" at once (a
 * recoverable error: the call goes to the next endpoint) instead of holding the call until
 * its deadline, and cancels the watches it holds within a few election timeouts instead of
 * keeping them open without events for as long as the partition lasts.
 */
const requireLeader = grpcCredentials.createFromMetadataGenerator((_params, callback) => {
  const md = new Metadata();
  md.set('hasleader', 'true');
  callback(null, md);
});

/** The error etcd answers on a call (or watch) to a member that has no leader. */
const isNoLeader = (e: unknown): boolean => e instanceof Error && /no leader/.test(e.message);

type Policy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;

/** A fault-handling policy with only `execute` of its own (etcd3 asks for the whole interface). */
function policy(execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal) => Promise<T>): Policy {
  return {
    get _altReturn(): never {
      throw new Error('_altReturn is a type-only property');
    },
    onSuccess: () => ({ dispose: () => undefined }),
    onFailure: () => ({ dispose: () => undefined }),
    execute,
  };
}

/**
 * A fault-handling policy for etcd3 that retries recoverable errors `retries` times (on the
 * next endpoint) and otherwise gets out of the way: no circuit breaker, so the first call
 * after etcd comes back goes through instead of waiting out an open breaker. linen's own
 * loops do the backing off.
 */
function retryPolicy(retries: number): Policy {
  return policy(async (fn, signal) => {
    const ctx = { signal: signal ?? new AbortController().signal };
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn(ctx);
      } catch (e) {
        if (attempt >= retries || !(e instanceof Error) || !isRecoverableError(e)) throw e;
      }
    }
  });
}

/** A call that ran into its deadline, or found the member unusable (down, gone, without leader). */
const endpointFailed = (e: unknown): boolean => {
  if (e instanceof GRPCDeadlineExceededError || e instanceof GRPCUnavailableError) return true;
  const code = typeof e === 'object' && e !== null ? (e as { code?: unknown }).code : undefined;
  return code === 4 || code === 14; // DEADLINE_EXCEEDED, UNAVAILABLE (not yet cast by etcd3)
};

/** What the endpoint policies share, across the clients that replace each other. */
interface EndpointState {
  /** Endpoints passed over until then (ms), after a call failed on them. */
  readonly stalled: Map<string, number>;
  /** The endpoint that gave the last answer. */
  answered: string | null;
}

/**
 * The fault-handling policy of one endpoint. An endpoint on which a call (or a watch stream)
 * ran into its deadline or found the member unusable (a member whose connection hangs:
 * unplugged, or its machine frozen; a member down or without leader) is passed over for
 * STALLED_ENDPOINT_SKIP_MS, so that the next call (a renewal's retry, a watch re-opened) goes
 * to another member instead of hanging on this one again until gRPC's keepalive or connect
 * timeout gives up on it. When every endpoint is passed over, none is.
 */
function endpointPolicy(host: string, all: readonly string[], state: EndpointState): Policy {
  return policy(async (fn, signal) => {
    const now = Date.now();
    if ((state.stalled.get(host) ?? 0) > now && all.some((h) => (state.stalled.get(h) ?? 0) <= now)) {
      // Not called through: etcd3 goes on to the next endpoint.
      throw new Error(`etcd endpoint ${host} passed over: a call failed on it`);
    }
    try {
      const r = await fn({ signal: signal ?? new AbortController().signal });
      state.stalled.delete(host);
      state.answered = host;
      return r;
    } catch (e) {
      if (endpointFailed(e) && all.length > 1) state.stalled.set(host, Date.now() + STALLED_ENDPOINT_SKIP_MS);
      throw e;
    }
  });
}

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

const nodeRequire = createRequire(import.meta.url);

function readTLSFile(flag: string, path: string, kind: 'key' | 'certificate'): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (e) {
    throw new RegistryError(`cannot read ${flag} ${path}: ${(e as Error).message}`, 'other', e);
  }
  // Checked here, where the flag is known: gRPC would only say "PEM routines::no start line".
  try {
    const { createPrivateKey, X509Certificate } = nodeRequire('node:crypto') as typeof import('node:crypto');
    if (kind === 'key') createPrivateKey(data);
    else new X509Certificate(data);
  } catch (e) {
    throw new RegistryError(`${flag} ${path} is not a PEM ${kind === 'key' ? 'private key' : 'certificate'}: ${(e as Error).message}`, 'other', e);
  }
  return data;
}

/** The system's CA roots (what Go uses with RootCAs nil). */
const systemRoots = (): Buffer => Buffer.from((nodeRequire('node:tls') as typeof import('node:tls')).rootCertificates.join('\n'));

/**
 * What went wrong in a TLS handshake, in words, from a gRPC connection error (null when the
 * error is not about TLS). OpenSSL's text is kept, without its source-file coordinates.
 */
export function tlsFailure(msg: string): string | null {
  const last = /Last error: ([\s\S]*?)(?: \(\d{4}-\d\d-\d\dT[^)]*\))?\.? Resolution note:/.exec(msg)?.[1] ?? msg;
  const text = last.replace(/^Error: /, '').replace(/\s+/g, ' ').trim();
  const clean = (s: string): string => s.replace(/:\.\.\/deps\/\S+/g, '').replace(/^[0-9A-F]+:error:[0-9A-F]+:/, '');
  const alert = /alert ([a-z ]+?)(?::|$)/i.exec(text)?.[1]?.trim();
  if (alert !== undefined && /certificate|unknown ca|certificate required|access denied/i.test(alert)) {
    return `etcd refused this client's certificate (TLS alert "${alert}"): --etcd-certfile must be signed by a CA etcd trusts (--trusted-ca-file)`;
  }
  if (/unable to verify|self[- ]signed|certificate (has expired|is not yet valid)|unable to get (local )?issuer|Hostname\/IP does not match|ERR_TLS_CERT/i.test(text)) {
    return `etcd's server certificate was not accepted (${clean(text)}): --etcd-cafile must be the CA that signed it, and it must name this endpoint`;
  }
  if (/SSL routines|wrong version number|tlsv1 alert|handshake/i.test(text)) {
    return `${clean(text)} (check --etcd-cafile, --etcd-certfile and --etcd-keyfile)`;
  }
  return null;
}

/**
 * gRPC ends a connection error with "Resolution note: <what name resolution said>", which is
 * empty for a plain address: the line then ends on a dangling label. Drop it when empty.
 */
export function withoutEmptyResolutionNote(msg: string): string {
  return msg.replace(/\.?\s*Resolution note:\s*$/, '');
}

/** host:port of an endpoint, without its scheme. */
const hostPort = (endpoint: string): { host: string; port: number } => {
  const u = new URL(/^[a-z]+:\/\//i.test(endpoint) ? endpoint : `http://${endpoint}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 2379) };
};

/**
 * Whether a TLS server listens at endpoint: a handshake that completes (the server's
 * certificate is not checked: only the protocol matters). Bounded by timeoutMs.
 */
export function speaksTLS(endpoint: string, timeoutMs = 2000): Promise<boolean> {
  const tls = nodeRequire('node:tls') as typeof import('node:tls');
  const { host, port } = hostPort(endpoint);
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
    const done = (v: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

/** How long a "no" of speaksTLS holds for an endpoint. */
const TLS_CHECK_AGAIN_MS = 30_000;

/** Connection errors that say nothing answered at all: no point asking whether TLS would. */
const NOT_CONNECTED = /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|no leader|passed over/;

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

// --- the shape of answers ------------------------------------------------------------------
// What the gRPC decoder hands over, as unknown: checked field by field before use.

/** An answer without a field linen needs: not etcd, or a proxy that changed it. */
export class AnswerShapeError extends Error {
  constructor(what: string) {
    super(`etcd's answer has no valid ${what}: the endpoint is not etcd, or something between changed its answer`);
    this.name = 'AnswerShapeError';
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;

/** An int64 field as gRPC decodes it (a decimal string, or a number). */
function int64(v: unknown, what: string): number {
  const n = typeof v === 'string' && /^-?\d{1,20}$/.test(v) ? Number(v) : typeof v === 'number' ? v : NaN;
  if (!Number.isSafeInteger(n)) throw new AnswerShapeError(what);
  return n;
}

const revisionOf = (res: unknown): number => {
  if (!isObject(res) || !isObject(res.header)) throw new AnswerShapeError('header');
  return int64(res.header.revision, 'header revision');
};

const bytes = (v: unknown, what: string): Buffer => {
  if (v === null || v === undefined) return Buffer.alloc(0);
  if (!Buffer.isBuffer(v)) throw new AnswerShapeError(what);
  return v;
};

interface KV {
  key: Buffer;
  value: Buffer;
  lease: string;
  modRevision: number;
}

function keyValue(v: unknown): KV {
  if (!isObject(v)) throw new AnswerShapeError('key-value');
  const lease = v.lease ?? '0';
  if (typeof lease !== 'string' && typeof lease !== 'number') throw new AnswerShapeError('lease ID');
  return { key: bytes(v.key, 'key'), value: bytes(v.value, 'value'), lease: String(lease), modRevision: int64(v.mod_revision ?? '0', 'mod_revision') };
}

function keyValues(res: unknown): KV[] {
  if (!isObject(res)) throw new AnswerShapeError('range answer');
  const kvs = res.kvs ?? [];
  if (!Array.isArray(kvs)) throw new AnswerShapeError('kvs list');
  return kvs.map(keyValue);
}

interface WatchAnswer {
  revision: number;
  created: boolean;
  canceled: boolean;
  cancelReason: string;
  compactRevision: number;
  events: { type: 'put' | 'delete'; kv: KV }[];
}

function watchAnswer(res: unknown): WatchAnswer {
  if (!isObject(res)) throw new AnswerShapeError('watch answer');
  const events = res.events ?? [];
  if (!Array.isArray(events)) throw new AnswerShapeError('events list');
  return {
    revision: revisionOf(res),
    created: res.created === true,
    canceled: res.canceled === true,
    cancelReason: typeof res.cancel_reason === 'string' ? res.cancel_reason : '',
    compactRevision: int64(res.compact_revision ?? '0', 'compact_revision'),
    events: events.map((ev: unknown) => {
      if (!isObject(ev)) throw new AnswerShapeError('event');
      const type = String(ev.type ?? 'PUT').toLowerCase();
      if (type !== 'put' && type !== 'delete') throw new AnswerShapeError('event type');
      return { type, kv: keyValue(ev.kv) };
    }),
  };
}

/** The etcd3 client and the raw gRPC calls linen makes on it. */
type Call<T> = (client: Etcd3) => Promise<T>;

export class EtcdRegistry implements Registry {
  readonly keys: { readonly config: string; readonly subnets: string; subnet(sn: IPv4Net): string };
  private client: Etcd3;
  private readonly options: IOptions;
  private readonly probeIntervalMs: number;
  private readonly listPageKeys: number;
  private listed = 0;
  private readonly endpointState: EndpointState = { stalled: new Map(), answered: null };
  private probing = false;
  private readonly log: Logger;
  private readonly endpoints: readonly string[];
  private readonly endpointsText: string;
  private readonly username: string;
  /** Whether each http:// endpoint speaks TLS, and when that was asked (a "no" is asked again after TLS_CHECK_AGAIN_MS). */
  private readonly tlsChecked = new Map<string, { at: number; answer: Promise<boolean> }>();
  private status: ConnectionStatus = { state: 'connecting', lastError: null, since: Date.now() };
  private readonly listeners = new Set<(s: ConnectionStatus) => void>();
  private closed = false;
  private reconnectCount = 0;

  constructor(opts: EtcdRegistryOptions) {
    if (opts.endpoints.length === 0) throw new RegistryError('no etcd endpoints given', 'other');
    this.log = opts.log ?? nullLogger;
    this.keys = etcdKeys(opts.prefix ?? DEFAULT_ETCD_PREFIX);
    this.endpoints = opts.endpoints;
    this.endpointsText = opts.endpoints.join(',');
    this.username = opts.username ?? '';
    const timeout = opts.requestTimeoutMs ?? 10_000;

    const options: IOptions = {
      hosts: opts.endpoints,
      defaultCallOptions: (ctx) => (ctx.isStream ? { credentials: requireLeader } : { deadline: Date.now() + timeout, credentials: requireLeader }),
      faultHandling: { host: (h) => endpointPolicy(h, opts.endpoints, this.endpointState), global: retryPolicy(opts.endpoints.length - 1) },
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 5000,
        // A dead connection is noticed within 15 s. etcd accepts pings every 5 s or more
        // (--grpc-keepalive-min-time) while streams are open, which linen's watches always are.
        'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
        'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
        'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      },
    };
    const key = opts.keyFile ?? '';
    const cert = opts.certFile ?? '';
    const ca = opts.caFile ?? '';
    const https = opts.endpoints.some((e) => e.startsWith('https://'));
    if (key !== '' && cert !== '') {
      options.credentials = {
        // No --etcd-cafile: verify against the system roots, as Go does with RootCAs nil.
        rootCertificate: ca !== '' ? readTLSFile('--etcd-cafile', ca, 'certificate') : systemRoots(),
        privateKey: readTLSFile('--etcd-keyfile', key, 'key'),
        certChain: readTLSFile('--etcd-certfile', cert, 'certificate'),
      };
    } else {
      if (key !== '' || cert !== '') {
        this.log.warn(`only one of --etcd-keyfile/--etcd-certfile given: TLS client authentication needs both (as flanneld), not using it`);
      }
      if (ca !== '' && https) {
        // flanneld ignores the CA without a client certificate; it is what verifies the server.
        options.credentials = { rootCertificate: readTLSFile('--etcd-cafile', ca, 'certificate') };
      } else if (ca !== '') {
        this.log.warn(`--etcd-cafile ${ca} is not used: no endpoint is https:// (${this.endpointsText})`);
      }
      if (opts.endpoints.some((e) => !e.startsWith('https://'))) {
        this.log.warn('no certificate provided: connecting to etcd with http. This is insecure');
      }
    }
    if (this.username !== '') options.auth = { username: this.username, password: opts.password ?? '' };
    this.options = options;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.listPageKeys = Math.max(1, opts.listPageKeys ?? LIST_PAGE_KEYS);
    this.client = new Etcd3(options);
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

  /** Where the last answer came from, for the log: the endpoint, and all of them when several. */
  private answeredBy(): string {
    const one = this.endpointState.answered;
    if (this.endpoints.length === 1 || one === null) return this.endpointsText;
    return `${one}, of ${this.endpointsText}`;
  }

  private setState(state: ConnectionStatus['state'], lastError: string | null): void {
    if (this.status.state === state && (state !== 'disconnected' || this.status.lastError === lastError)) return;
    const changed = this.status.state !== state;
    if (changed && state === 'connected' && this.status.state === 'disconnected') this.reconnectCount++;
    this.status = { state, lastError, since: changed ? Date.now() : this.status.since };
    if (changed) {
      if (state === 'connected') this.log.info(`connected to etcd (${this.answeredBy()})`);
      else if (state === 'disconnected') this.log.warn(`lost etcd (${this.endpointsText}): ${lastError ?? ''}`);
    }
    for (const l of this.listeners) l(this.status);
    if (state === 'disconnected') void this.recover();
  }

  /** Not connected, with the reason (an authentication failure): state unchanged, error kept. */
  private noteFailure(lastError: string): void {
    if (this.status.state === 'connected' || this.status.lastError === lastError) return;
    this.status = { ...this.status, lastError };
    for (const l of this.listeners) l(this.status);
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
        const fresh = new Etcd3(this.options);
        try {
          revisionOf(await fresh.kv.range({ key: Buffer.from(this.keys.config), count_only: true }, { deadline: Date.now() + this.probeIntervalMs }));
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

  /**
   * When no endpoint could be reached and one is http://: whether it speaks TLS (asked once
   * per endpoint), which gRPC would only report as a dropped connection.
   */
  private async plainToTLS(): Promise<string | null> {
    for (const e of this.endpoints) {
      if (e.startsWith('https://')) continue;
      let c = this.tlsChecked.get(e);
      if (c === undefined || (Date.now() - c.at > TLS_CHECK_AGAIN_MS && !(await c.answer))) {
        c = { at: Date.now(), answer: speaksTLS(e) };
        this.tlsChecked.set(e, c);
      }
      if (await c.answer) return `etcd at ${e} speaks TLS: use https://${e.replace(/^[a-z]+:\/\//i, '')} in --etcd-endpoints (with --etcd-cafile to verify it)`;
    }
    return null;
  }

  /** Turns anything etcd3/grpc throws into a RegistryError with a clear message. */
  private mapError(op: string, key: string, e: unknown): RegistryError {
    if (e instanceof RegistryError) return e;
    const raw = e instanceof Error ? e.message : String(e);
    const msg = withoutEmptyResolutionNote(raw);
    const where = `${op} ${key}`;
    if (e instanceof AnswerShapeError) {
      // Retried like an unreachable etcd: the endpoint or the proxy before it may be fixed.
      return new RegistryError(`etcd unusable (endpoints ${this.endpointsText}) during ${where}: ${msg}`, 'unavailable', e);
    }
    const tls = tlsFailure(raw);
    if (tls !== null) {
      // Still 'unavailable' (retried): the other side may be fixed while linend waits.
      return new RegistryError(`etcd TLS handshake failed (endpoints ${this.endpointsText}, during ${where}): ${tls}`, 'unavailable', e);
    }
    if (e instanceof GRPCResourceExhastedError) {
      // An answer larger than the receive limit: etcd is there, asking again the same way fails again.
      return new RegistryError(`etcd answer too large (${where}): ${msg}`, 'other', e);
    }
    if (e instanceof GRPCDeadlineExceededError) {
      return new RegistryError(`etcd request timed out (${where}, endpoints ${this.endpointsText}): ${msg}`, 'timeout', e);
    }
    if (e instanceof EtcdAuthenticationFailedError) {
      return new RegistryError(
        `etcd authentication failed for user ${JSON.stringify(this.username)} (check --etcd-username/--etcd-password): ${msg}`,
        'auth',
        e,
      );
    }
    if (e instanceof EtcdPermissionDeniedError || e instanceof GRPCUnauthenticatedError || /user name is empty|permission denied/.test(msg)) {
      const who = this.username === '' ? 'no user (etcd auth is enabled: set --etcd-username/--etcd-password, or a client certificate whose CommonName is an etcd user)' : `user ${JSON.stringify(this.username)}`;
      return new RegistryError(`etcd permission denied for ${where} as ${who}: ${msg}`, 'permission', e);
    }
    if (e instanceof GRPCUnavailableError || (e instanceof Error && isRecoverableError(e)) || /circuit breaker|No connection established|passed over/i.test(msg)) {
      return new RegistryError(`etcd unavailable (endpoints ${this.endpointsText}) during ${where}: ${msg}`, 'unavailable', e);
    }
    if (e instanceof GRPCGenericError && !/etcdserver:/.test(msg)) {
      // gRPC itself failed (a protocol error, an answer that does not decode): not etcd answering.
      return new RegistryError(`etcd unusable (endpoints ${this.endpointsText}) during ${where}: ${msg}: the endpoint does not answer as etcd's gRPC API`, 'unavailable', e);
    }
    return new RegistryError(`etcd ${where} failed: ${msg}`, 'other', e);
  }

  /**
   * mapError, and for an etcd that took the connection but did not answer gRPC the reason when
   * an http:// endpoint speaks TLS.
   */
  private async explain(op: string, key: string, e: unknown): Promise<RegistryError> {
    const err = this.mapError(op, key, e);
    if (err.kind !== 'unavailable' || this.closed || NOT_CONNECTED.test(err.message)) return err;
    const why = await this.plainToTLS();
    return why === null ? err : new RegistryError(`etcd unavailable during ${op} ${key}: ${why}`, 'unavailable', e);
  }

  /**
   * Runs one etcd call on the current client, mapping errors and tracking the connection
   * state (an answer means connected). A call cut short because its client was replaced (etcd
   * was lost and found again) is sent again on the new client, unless it is the create txn
   * (which may have been applied: sent again it would find its own key and report the subnet
   * taken); that one counts as unavailable. A failed authentication is not an answer: etcd
   * refused to talk to this client.
   */
  private call<T>(op: string, key: string, f: Call<T>): Promise<T>;
  private call<T, R>(op: string, key: string, f: Call<T>, check: (answer: T) => R): Promise<R>;
  private async call<T, R>(op: string, key: string, f: Call<T>, check?: (answer: T) => R): Promise<T | R> {
    if (this.closed) throw new RegistryError('registry is closed', 'other');
    for (let replaced = 0; ; replaced++) {
      const client = this.client;
      try {
        const answer = await f(client);
        const r = check === undefined ? answer : check(answer);
        this.setState('connected', null);
        return r;
      } catch (e) {
        if (client !== this.client && !this.closed) {
          if (replaced === 0 && op !== 'create') continue;
          throw new RegistryError(`etcd ${op} ${key} was cut short by a reconnect: ${withoutEmptyResolutionNote(e instanceof Error ? e.message : String(e))}`, 'unavailable', e);
        }
        const err = await this.explain(op, key, e);
        if (err.kind === 'unavailable' || err.kind === 'timeout') this.setState('disconnected', err.message);
        else if (err.kind === 'auth') this.noteFailure(err.message);
        else if (err.kind === 'permission') this.setState('connected', null);
        throw err;
      }
    }
  }

  // --- reads -------------------------------------------------------------------------

  async getNetworkConfig(): Promise<string> {
    const key = this.keys.config;
    const kv = await this.call('get', key, (c) => c.kv.range({ key: Buffer.from(key) }), (res) => (revisionOf(res), keyValues(res)[0]));
    if (kv === undefined) throw new ConfigNotFoundError();
    return kv.value.toString('utf8');
  }

  /** Runs a check of an answer's shape, as a RegistryError when it fails (the registry is then not connected). */
  private shaped<T>(op: string, key: string, check: () => T): T {
    try {
      return check();
    } catch (e) {
      const err = this.mapError(op, key, e);
      this.setState('disconnected', err.message);
      throw err;
    }
  }

  private toLease(kv: KV): { lease: Lease } | { skipped: SkippedEntry } {
    const key = kv.key.toString('utf8');
    const r = leaseFromKV(key, kv.value, kv.lease, kv.modRevision);
    return r.ok ? { lease: r.value } : { skipped: { key, error: r.error } };
  }

  /** Complete lease listings so far (a watch that resumes from its revision needs none). */
  get listings(): number {
    return this.listed;
  }

  /**
   * Every lease under <prefix>/subnets, read in pages of at most listPageKeys keys: one
   * response for a large cluster would exceed gRPC's receive limit (4 MiB by default, about
   * 22,000 VXLAN leases). The first page fixes the revision and every later page is read at
   * that same revision, so the listing is one consistent snapshot and the watch that follows
   * from revision + 1 misses nothing. A page too large for the receive limit (huge values)
   * is asked again with half the keys. If the revision is compacted away between two pages,
   * the listing starts over (a few times) at the current revision.
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
    const end = prefixEnd(prefix);
    const leases: Lease[] = [];
    const skipped: SkippedEntry[] = [];
    let from = prefix;
    let revision: number | null = null;
    let limit = this.listPageKeys;
    for (;;) {
      let page: { rev: number; kvs: KV[]; more: boolean };
      try {
        page = await this.call(
          'list',
          this.keys.subnets,
          (c) => c.kv.range({ key: from, range_end: end, limit, ...(revision === null ? {} : { revision }) }),
          (res) => ({ rev: revisionOf(res), kvs: keyValues(res), more: res.more === true }),
        );
      } catch (e) {
        if (e instanceof RegistryError && e.cause instanceof GRPCResourceExhastedError && limit > 1) {
          this.log.warn(`a page of ${limit} keys of ${this.keys.subnets} is larger than ${MAX_RECEIVE_BYTES} bytes: asking for ${Math.max(1, Math.floor(limit / 2))}`);
          limit = Math.max(1, Math.floor(limit / 2));
          continue;
        }
        throw e;
      }
      if (revision === null) revision = page.rev;
      for (const kv of page.kvs) {
        const r = this.toLease(kv);
        if ('lease' in r) leases.push(r.lease);
        else skipped.push(r.skipped);
      }
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || last === undefined) break;
      from = Buffer.concat([last.key, Buffer.from([0])]); // the next key after the last one
      limit = this.listPageKeys;
    }
    return { leases, skipped, revision };
  }

  async getLease(subnet: IPv4Net): Promise<{ lease: Lease | null; invalid: string | null; revision: number }> {
    const key = this.keys.subnet(subnet);
    const { revision, kv } = await this.call('get', key, (c) => c.kv.range({ key: Buffer.from(key) }), (res) => ({ revision: revisionOf(res), kv: keyValues(res)[0] }));
    if (kv === undefined) return { lease: null, invalid: null, revision };
    const r = this.toLease(kv);
    return 'lease' in r ? { lease: r.lease, invalid: null, revision } : { lease: null, invalid: r.skipped.error, revision };
  }

  async leaseTimeToLive(leaseId: string): Promise<number> {
    if (leaseId === '0' || leaseId === '') return -1;
    return this.call('lease-ttl', leaseId, (c) => c.leaseClient.leaseTimeToLive({ ID: leaseId }), (res) => int64((res as { TTL?: unknown }).TTL, 'TTL'));
  }

  // --- writes ------------------------------------------------------------------------

  private callOptions(t: CallTimeout | undefined): { deadline: number } | undefined {
    return t?.timeoutMs === undefined ? undefined : { deadline: Date.now() + t.timeoutMs };
  }

  private async grant(ttlSeconds: number, key: string, t?: CallTimeout): Promise<{ id: string; ttl: number }> {
    const g = await this.call('grant', key, (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds }, this.callOptions(t)), (g) => {
      if (g.error) return { error: g.error };
      if (typeof g.ID !== 'string' || !/^\d+$/.test(g.ID) || g.ID === '0') throw new AnswerShapeError('lease ID');
      return { id: g.ID, ttl: int64(g.TTL, 'TTL') };
    });
    if ('error' in g) throw new RegistryError(`etcd lease grant for ${key} failed: ${g.error}`, 'other');
    return g;
  }

  private async revoke(id: string, key: string): Promise<void> {
    try {
      await this.call('revoke', key, (c) => c.leaseClient.leaseRevoke({ ID: id }));
    } catch (e) {
      this.log.warn(`could not revoke etcd lease ${id} for ${key}: ${(e as Error).message}`);
    }
  }

  async createLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number): Promise<LeaseGrant> {
    const key = this.keys.subnet(subnet);
    const value = Buffer.from(encodeLeaseAttrs(attrs));
    const g = await this.grant(ttlSeconds, key);
    let res: { succeeded: boolean; revision: number };
    try {
      res = await this.call(
        'create',
        key,
        (c) =>
          c.kv.txn({
            compare: [{ key: Buffer.from(key), target: 'Version', result: 'Equal', version: 0 }],
            success: [{ request_put: { key: Buffer.from(key), value, lease: g.id } }],
          }),
        (r) => ({ succeeded: r.succeeded === true, revision: revisionOf(r) }),
      );
    } catch (e) {
      await this.revoke(g.id, key);
      throw e;
    }
    if (!res.succeeded) {
      await this.revoke(g.id, key);
      throw new SubnetExistsError(subnet);
    }
    return { leaseId: g.id, ttlSeconds: g.ttl, revision: res.revision };
  }

  async updateLease(subnet: IPv4Net, attrs: LeaseAttrs, ttlSeconds: number | null, t?: CallTimeout): Promise<LeaseGrant> {
    const key = this.keys.subnet(subnet);
    const value = Buffer.from(encodeLeaseAttrs(attrs));
    if (ttlSeconds === null) {
      const revision = await this.call('put', key, (c) => c.kv.put({ key: Buffer.from(key), value }, this.callOptions(t)), revisionOf);
      return { leaseId: '0', ttlSeconds: null, revision };
    }
    const g = await this.grant(ttlSeconds, key, t);
    try {
      const revision = await this.call('put', key, (c) => c.kv.put({ key: Buffer.from(key), value, lease: g.id }, this.callOptions(t)), revisionOf);
      return { leaseId: g.id, ttlSeconds: g.ttl, revision };
    } catch (e) {
      await this.revoke(g.id, key);
      throw e;
    }
  }

  async deleteLease(subnet: IPv4Net): Promise<void> {
    const key = this.keys.subnet(subnet);
    await this.call('delete', key, (c) => c.kv.deleteRange({ key: Buffer.from(key) }));
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

  private toEvent(ev: WatchAnswer['events'][number]): WatchEvent {
    const key = ev.kv.key.toString('utf8');
    const revision = ev.kv.modRevision;
    if (ev.type === 'delete') {
      const sk = parseSubnetKey(key);
      return { type: 'delete', key, revision, subnet: sk === null ? null : sk.subnet };
    }
    const r = leaseFromKV(key, ev.kv.value, ev.kv.lease, revision);
    return r.ok ? { type: 'put', key, revision, lease: r.value } : { type: 'invalid', key, revision, error: r.error };
  }

  /**
   * After etcd called the auth token invalid on a watch (it expired): a unary call, which
   * etcd3 answers by authenticating again, so that the watch opened next has a valid token.
   */
  private async reauthenticate(what: string): Promise<void> {
    await this.call('watch', what, (c) => c.kv.range({ key: Buffer.from(this.keys.config), count_only: true })).catch(() => undefined);
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
        const ch = new Channel<unknown>();
        // Opening the stream sends nothing: only an answer on it says etcd is there.
        const used = self.client;
        let stream: Awaited<ReturnType<Etcd3['watchClient']['watch']>>;
        try {
          stream = await used.watchClient.watch();
        } catch (e) {
          if (used !== self.client) throw new RegistryError(`etcd watch ${what} was cut short by a reconnect`, 'unavailable', e);
          const err = await self.explain('watch', what, e);
          if (err.kind === 'unavailable' || err.kind === 'timeout') self.setState('disconnected', err.message);
          throw err;
        }
        // A stream whose client has been replaced says nothing about the connection now.
        const current = (): boolean => used === self.client;
        let cancelled = false;
        const onAbort = (): void => {
          cancelled = true;
          stream.cancel();
          ch.end();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        stream.on('data', (res: unknown) => ch.push(res));
        stream.on('error', (e: Error) => {
          if (cancelled) ch.end();
          else ch.fail(castGrpcError(e));
        });
        stream.on('end', () => {
          if (cancelled) ch.end();
          else ch.fail(new RegistryError(`etcd watch stream for ${what} ended`, 'unavailable'));
        });
        try {
          stream.write({
            create_request: {
              key,
              range_end: rangeEnd,
              start_revision: fromRevision,
              progress_notify: true,
            },
          });
          for (;;) {
            let r: IteratorResult<unknown>;
            try {
              r = await ch.next();
            } catch (e) {
              if (!current()) throw new RegistryError(`etcd watch ${what} was cut short by a reconnect`, 'unavailable', e);
              if (isNoLeader(e)) {
                // One member lost its cluster: watch again (on another endpoint), etcd is still there.
                throw new RegistryError(`etcd watch ${what}: the member answering it has no leader: ${(e as Error).message}`, 'unavailable', e);
              }
              if (e instanceof EtcdInvalidAuthTokenError) {
                await self.reauthenticate(what);
                throw new RegistryError(`etcd watch ${what}: the auth token expired; authenticated again`, 'unavailable', e);
              }
              const err = await self.explain('watch', what, e);
              if (err.kind === 'unavailable' || err.kind === 'timeout') self.setState('disconnected', err.message);
              throw err;
            }
            if (r.done === true) return;
            const res = self.shaped('watch', what, () => watchAnswer(r.value));
            if (current()) self.setState('connected', null);
            if (res.compactRevision !== 0) {
              yield { kind: 'compacted', compactRevision: res.compactRevision, reason: 'compacted' };
              return;
            }
            if (res.canceled) {
              const reason = res.cancelReason || 'no reason given';
              if (/invalid auth token/.test(reason)) {
                await self.reauthenticate(what);
                throw new RegistryError(`etcd watch ${what}: the auth token expired; authenticated again`, 'unavailable');
              }
              throw self.mapError('watch', what, new Error(`watch canceled by etcd: ${reason}`));
            }
            if (res.created) {
              // A store that went back in time (wiped, or restored from a backup) would make
              // this watch wait silently for a revision it may not reach for a long time.
              if (res.revision + 1 < fromRevision) {
                // Or a member that is behind the others (back from a partition, or new and
                // still catching up): a linearizable read says where the cluster is.
                const clusterRevision = await self.call('watch', what, (c) => c.kv.range({ key, count_only: true }), revisionOf);
                if (clusterRevision + 1 < fromRevision) {
                  yield { kind: 'compacted', compactRevision: clusterRevision, reason: 'revision-reset' };
                  return;
                }
                self.log.v(1).info(`etcd watch ${what}: the member is at revision ${res.revision}, behind the cluster (${clusterRevision}); waiting for it to catch up`);
              }
              if (res.events.length === 0) continue;
            }
            yield { kind: 'events', revision: res.revision, events: res.events.map((ev) => self.toEvent(ev)) };
          }
        } finally {
          signal.removeEventListener('abort', onAbort);
          cancelled = true;
          stream.cancel();
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
