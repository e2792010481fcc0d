// etcd v3's JSON gateway (/v3/...) over HTTP/1.1: the transport under EtcdRegistry (etcd.ts).
// It replaces the `etcd3` gRPC client, whose http2, tls, zlib and dns modules and parsed protos
// cost linend some 15 MB of memory; node:http is loaded anyway for /metrics, node:https only
// when an endpoint uses TLS.
//
// The gateway speaks protobuf's JSON mapping with the proto field names: int64 as decimal
// strings, bytes as base64, zero values omitted. A failed call answers an HTTP error status
// with {"error": text, "code": gRPC code, "message": text}; a watch is one POST /v3/watch whose
// chunked answer is a stream of {"result": WatchResponse} objects, ended by
// {"error": {"grpc_code", "http_code", "message", "http_status"}} when the gRPC stream fails.
//
// What this layer does for every call: the require-leader header, the auth token (fetched per
// endpoint, fetched again once when etcd calls it invalid), a deadline, failover to the next
// endpoint on errors that say "not this member", passing over endpoints that stalled, and a
// size limit on answers. Watches get their own TCP connection, watched by a cheap call to the
// same member every WATCH_PROBE_MS: HTTP/1.1 has no pings, and etcd 3.4's gateway cannot take
// progress requests once the answer has begun.

import * as http from 'node:http';
import type { Agent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import type { Socket } from 'node:net';

/** gRPC status codes that etcd answers and linen tells apart. */
export const GrpcCode = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * The largest answer linen accepts from etcd. A lease listing is paged and a watch response
 * carries at most what etcd accepted in one request (--max-request-bytes, 1.5 MiB by default)
 * per revision, but etcd batches the events of many revisions into one response while a
 * watch catches up.
 */
export const MAX_RECEIVE_BYTES = 64 << 20;

/** How long an endpoint on which a call timed out or found no usable member is passed over. */
export const STALLED_ENDPOINT_SKIP_MS = 15_000;

/** While a watch is open: how often its member is asked a cheap question, and how long it may take. */
export const WATCH_PROBE_MS = 10_000;
export const WATCH_PROBE_TIMEOUT_MS = 5_000;

/** TCP keepalive on every socket: the kernel notices a peer that is gone for good. */
const TCP_KEEPALIVE_MS = 10_000;

/**
 * Why an etcd call failed. `reason`: 'etcd' (etcd or its gateway answered an error, `code` is
 * its gRPC code), 'timeout' (no answer before the deadline), 'network' (connecting, TLS, or the
 * connection broke), 'too-large' (answer over MAX_RECEIVE_BYTES), 'closed' (the client was closed).
 */
export class EtcdCallError extends Error {
  constructor(
    message: string,
    readonly reason: 'etcd' | 'timeout' | 'network' | 'too-large' | 'closed',
    readonly code: number | null,
    readonly endpoint: string,
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'EtcdCallError';
  }
}

/** What tlsRefusal says when the server hung up after the handshake without an alert. */
export const TLS_CLOSED_AFTER_HANDSHAKE = 'the server closed the TLS connection after the handshake, before any answer';

/** A reused connection that the server had closed: the request never reached etcd. */
class StaleConnection extends EtcdCallError {
  constructor(message: string, endpoint: string, cause: unknown) {
    super(message, 'network', null, endpoint, cause);
  }
}

/**
 * An error that says "not this member, maybe another": the call goes on to the next endpoint.
 * etcd's "no leader" is UNAVAILABLE; a deadline may be one hung member.
 */
export function tryNextEndpoint(e: unknown): boolean {
  if (!(e instanceof EtcdCallError)) return false;
  return e.reason === 'network' || e.reason === 'timeout' || e.code === GrpcCode.UNAVAILABLE || e.code === GrpcCode.DEADLINE_EXCEEDED;
}

// --- the JSON mapping ----------------------------------------------------------------------

/** bytes fields are base64 in JSON. */
export const b64 = (v: string | Buffer): string => (typeof v === 'string' ? Buffer.from(v) : v).toString('base64');
/** A bytes field; omitted means empty. */
export const fromB64 = (v: string | undefined): Buffer => Buffer.from(v ?? '', 'base64');
/** An int64 field (a decimal string); omitted means 0. Revisions and TTLs fit a double. */
export const int64 = (v: string | number | undefined): number => (v === undefined ? 0 : Number(v));

export interface ResponseHeader {
  revision?: string;
}
export interface KeyValue {
  key?: string;
  value?: string;
  lease?: string;
  mod_revision?: string;
}
export interface RangeResponse {
  header?: ResponseHeader;
  kvs?: KeyValue[];
  more?: boolean;
  count?: string;
}
export interface WatchResponse {
  header?: ResponseHeader;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: string;
  cancel_reason?: string;
  events?: { type?: 'PUT' | 'DELETE'; kv?: KeyValue }[];
}

/** The gateway's error body: {"error", "code", "message"} for a call, {"error": {...}} in a stream. */
interface GatewayError {
  error?: string | { grpc_code?: number; http_code?: number; message?: string; http_status?: string };
  code?: number;
  message?: string;
}

/** The gRPC code and text of a gateway error body, or null when the body is not one. */
export function gatewayError(body: unknown): { code: number | null; message: string } | null {
  if (typeof body !== 'object' || body === null || !('error' in body)) return null;
  const g = body as GatewayError;
  if (typeof g.error === 'object' && g.error !== null) {
    return { code: typeof g.error.grpc_code === 'number' ? g.error.grpc_code : null, message: g.error.message ?? g.error.http_status ?? 'unknown error' };
  }
  return { code: typeof g.code === 'number' ? g.code : null, message: g.message || (typeof g.error === 'string' ? g.error : '') || 'unknown error' };
}

/**
 * Splits a stream of concatenated JSON objects (newline-delimited or not) into the objects'
 * texts, whatever the chunk boundaries: counts braces outside strings. Holds at most
 * maxBytes of an unfinished object.
 */
export class JsonObjectSplitter {
  private parts: Buffer[] = [];
  private held = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(private readonly maxBytes = MAX_RECEIVE_BYTES) {}

  /** The objects completed by this chunk; throws when one grows past maxBytes. */
  push(chunk: Buffer): string[] {
    const out: string[] = [];
    let start = this.depth > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === 0x5c) this.escaped = true; // backslash
        else if (c === 0x22) this.inString = false;
        continue;
      }
      if (c === 0x22) this.inString = true;
      else if (c === 0x7b) { // {
        if (this.depth++ === 0) start = i;
      } else if (c === 0x7d && this.depth > 0 && --this.depth === 0) { // }
        this.parts.push(chunk.subarray(start, i + 1));
        out.push(Buffer.concat(this.parts).toString('utf8'));
        this.parts = [];
        this.held = 0;
        start = -1;
      }
    }
    if (this.depth > 0 && start >= 0) {
      this.parts.push(chunk.subarray(start));
      this.held += chunk.length - start;
      if (this.held > this.maxBytes) throw new Error(`an etcd answer is larger than ${this.maxBytes} bytes`);
    }
    return out;
  }
}

// --- endpoints and connections --------------------------------------------------------------

export interface EtcdTlsFiles {
  key: Buffer;
  cert: Buffer;
  /** null: the system's roots. */
  ca: Buffer | null;
}

export interface EtcdHttpOptions {
  /** "http://host:port", "https://host:port", or "host:port" (https when tls is set). */
  endpoints: readonly string[];
  tls: EtcdTlsFiles | null;
  auth: { username: string; password: string } | null;
  /** Endpoints passed over until then (ms); shared by the clients that replace each other. */
  stalled: Map<string, number>;
}

export interface CallDeadline {
  /** Deadline of each attempt (each endpoint tried). */
  timeoutMs: number;
  /** Date.now() after which no attempt starts and the running one ends. */
  deadline?: number;
}

/** One open watch: its answers, then an error or the end. */
export interface WatchHandlers {
  onResponse(r: WatchResponse): void;
  /** The stream failed (after which nothing more comes), or ended (error null). */
  onEnd(error: EtcdCallError | null): void;
}

type Requester = (options: RequestOptions, callback: (res: IncomingMessage) => void) => ClientRequest;

interface Endpoint {
  readonly name: string;
  readonly url: URL;
  readonly secure: boolean;
}

function parseEndpoint(e: string, tls: boolean): Endpoint {
  const url = new URL(/^[a-z]+:\/\//i.test(e) ? e : `${tls ? 'https' : 'http'}://${e}`);
  return { name: e, url, secure: url.protocol === 'https:' };
}

/** The text of a socket error: node's AggregateError (several addresses tried) has none of its own. */
function errorText(e: unknown): string {
  if (e instanceof AggregateError && e.message === '') return e.errors.map(errorText).join('; ') || String((e as { code?: string }).code ?? 'connection failed');
  return e instanceof Error ? e.message : String(e);
}

/**
 * Unary calls reuse connections. An idle one is closed after a minute, long before etcd's
 * server would close it (5 min), so a call rarely meets a connection the server is closing.
 */
const AGENT_OPTIONS = { keepAlive: true, keepAliveMsecs: TCP_KEEPALIVE_MS, timeout: 60_000 };

const withKeepalive = (socket: Socket): void => {
  socket.setKeepAlive(true, TCP_KEEPALIVE_MS);
};

/**
 * A client for a fixed set of etcd endpoints with its own connections. EtcdRegistry replaces it
 * with a fresh one (fresh TCP connections) after etcd was lost; close() ends every call and
 * watch still running on it.
 */
export class EtcdHttpClient {
  private readonly endpoints: Endpoint[];
  private preferred = 0;
  private readonly tokens = new Map<string, Promise<string>>();
  private readonly open = new Set<ClientRequest>();
  /** The probe of each member that has watches open, and the watches' ends. */
  private readonly probes = new Map<string, { watches: Set<(e: EtcdCallError) => void>; probe: { path: string; body: object }; timer: ReturnType<typeof setInterval> }>();
  private agents: { http: Agent | null; https: Agent | null } = { http: null, https: null };
  private https: Promise<{ request: Requester; Agent: typeof http.Agent }> | null = null;
  private closed = false;

  constructor(private readonly opts: EtcdHttpOptions) {
    this.endpoints = opts.endpoints.map((e) => parseEndpoint(e, opts.tls !== null));
  }

  /**
   * POST path on the preferred endpoint; on an error that says "not this member" the next one
   * (each endpoint once), passing over stalled ones while some are not.
   */
  async call<T>(path: string, body: object, d: CallDeadline): Promise<T> {
    const order = this.order();
    let last: unknown = null;
    for (const i of order) {
      if (d.deadline !== undefined && Date.now() >= d.deadline && last !== null) break;
      const ep = this.endpoints[i]!;
      try {
        const r = await this.callOn<T>(ep, path, body, d);
        this.preferred = i;
        this.opts.stalled.delete(ep.name);
        return r;
      } catch (e) {
        last = e;
        this.markStalled(ep, e);
        if (!tryNextEndpoint(e) || this.closed) throw e;
        this.preferred = (i + 1) % this.endpoints.length;
      }
    }
    throw last;
  }

  /** The endpoints to try, the preferred first; stalled ones left out unless all are stalled. */
  private order(): number[] {
    const n = this.endpoints.length;
    const all = Array.from({ length: n }, (_, k) => (this.preferred + k) % n);
    const now = Date.now();
    const live = all.filter((i) => (this.opts.stalled.get(this.endpoints[i]!.name) ?? 0) <= now);
    return live.length > 0 ? live : all;
  }

  /**
   * Passes ep over for a while when e says it ran into its deadline or found the member
   * unusable (down, gone, without leader): the errors that send a call to the next endpoint.
   */
  private markStalled(ep: Endpoint, e: unknown): void {
    if (this.endpoints.length > 1 && tryNextEndpoint(e)) this.opts.stalled.set(ep.name, Date.now() + STALLED_ENDPOINT_SKIP_MS);
  }

  /** One call on one endpoint, with the auth token (fetched again once when etcd calls it invalid). */
  private async callOn<T>(ep: Endpoint, path: string, body: object, d: CallDeadline): Promise<T> {
    if (this.opts.auth === null) return this.post<T>(ep, path, body, d, null);
    for (let attempt = 0; ; attempt++) {
      const token = await this.token(ep, d);
      try {
        return await this.post<T>(ep, path, body, d, token);
      } catch (e) {
        if (attempt > 0 || !(e instanceof EtcdCallError && e.code === GrpcCode.UNAUTHENTICATED && /invalid auth token/.test(e.message))) throw e;
        this.tokens.delete(ep.name);
      }
    }
  }

  private token(ep: Endpoint, d: CallDeadline): Promise<string> {
    let t = this.tokens.get(ep.name);
    if (t === undefined) {
      const auth = this.opts.auth!;
      t = this.post<{ token?: string }>(ep, '/v3/auth/authenticate', { name: auth.username, password: auth.password }, d, null).then((r) => r.token ?? '');
      this.tokens.set(ep.name, t);
      t.catch(() => {
        if (this.tokens.get(ep.name) === t) this.tokens.delete(ep.name);
      });
    }
    return t;
  }

  private headers(token: string | null, length: number): Record<string, string | number> {
    return {
      'Content-Type': 'application/json',
      'Content-Length': length,
      // etcd's require-leader (clientv3's WithRequireLeader), forwarded by the gateway as gRPC
      // metadata: a member cut off from its cluster answers "no leader" at once instead of
      // holding the call, and cancels the watches it holds.
      'Grpc-Metadata-hasleader': 'true',
      ...(token === null || token === '' ? {} : { Authorization: token }),
    };
  }

  private async requester(ep: Endpoint): Promise<{ request: Requester; agent: Agent }> {
    if (this.closed) throw new EtcdCallError('etcd client is closed', 'closed', null, ep.name);
    if (!ep.secure) {
      this.agents.http ??= new http.Agent(AGENT_OPTIONS);
      return { request: http.request, agent: this.agents.http };
    }
    // Loaded only for TLS: node:https brings node:tls, which plain-http nodes never need.
    this.https ??= import('node:https').then((m) => ({ request: m.request, Agent: m.Agent }));
    const https = await this.https;
    this.agents.https ??= new https.Agent({ ...AGENT_OPTIONS, ...this.tlsOptions() });
    return { request: https.request, agent: this.agents.https };
  }

  private tlsOptions(): { key?: Buffer; cert?: Buffer; ca?: Buffer } {
    const t = this.opts.tls;
    if (t === null) return {};
    return { key: t.key, cert: t.cert, ...(t.ca === null ? {} : { ca: t.ca }) };
  }

  /**
   * One POST, its JSON answer or an EtcdCallError. A kept-alive connection that the server
   * closed just as it was reused fails before etcd saw the request: that one is sent again,
   * once, on a new connection.
   */
  private async post<T>(ep: Endpoint, path: string, body: object, d: CallDeadline, token: string | null): Promise<T> {
    try {
      return await this.postOnce<T>(ep, path, body, d, token);
    } catch (e) {
      if (e instanceof StaleConnection) return await this.postOnce<T>(ep, path, body, d, token, false);
      if (ep.secure && e instanceof EtcdCallError && e.reason === 'network' && /ECONNRESET|socket hang up|EPIPE/.test(e.message + String((e.cause as { code?: string })?.code))) {
        const why = await this.tlsRefusal(ep);
        if (why !== null) throw new EtcdCallError(why, 'network', null, ep.name, e);
      }
      throw e;
    }
  }

  /**
   * Why a TLS server hung up on a fresh connection, if it refused this client's certificate.
   * In TLS 1.3 the server checks the client's certificate after the client has finished its
   * handshake and sent its request; the server's alert then often reaches node after the
   * reset (the unread request makes the server's close a reset) and the error says only
   * "socket hang up". A connection that sends nothing gets the alert itself.
   */
  private async tlsRefusal(ep: Endpoint): Promise<string | null> {
    const tls = await import('node:tls');
    return new Promise((resolve) => {
      const socket = tls.connect({ host: ep.url.hostname, port: Number(ep.url.port || 443), ...this.tlsOptions() });
      const done = (why: string | null): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve(why);
      };
      const timer = setTimeout(() => done(null), 2000);
      let handshake = false;
      socket.on('secureConnect', () => {
        handshake = true;
      });
      socket.on('error', (e) => done(errorText(e)));
      socket.on('session', () => done(null)); // a session ticket: the server took the certificate
      // Some servers (node's) hang up without an alert.
      socket.on('close', () => done(handshake && this.opts.tls !== null ? TLS_CLOSED_AFTER_HANDSHAKE : null));
    });
  }

  private async postOnce<T>(ep: Endpoint, path: string, body: object, d: CallDeadline, token: string | null, reuse = true): Promise<T> {
    const r = await this.requester(ep);
    const request = r.request;
    const agent = reuse ? r.agent : undefined;
    const data = Buffer.from(JSON.stringify(body));
    const timeoutMs = Math.max(1, Math.min(d.timeoutMs, d.deadline === undefined ? Infinity : d.deadline - Date.now()));
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          protocol: ep.url.protocol, hostname: ep.url.hostname, port: ep.url.port, path, method: 'POST', headers: this.headers(token, data.length),
          ...(agent === undefined ? { agent: false, ...(ep.secure ? this.tlsOptions() : {}) } : { agent }),
        },
        (res) => {
          const parts: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_RECEIVE_BYTES) {
              fail(new EtcdCallError(`etcd's answer to ${path} is larger than ${MAX_RECEIVE_BYTES} bytes`, 'too-large', GrpcCode.RESOURCE_EXHAUSTED, ep.name));
            } else parts.push(c);
          });
          res.on('end', () => {
            if (done) return;
            let json: unknown;
            try {
              json = JSON.parse(Buffer.concat(parts).toString('utf8'));
            } catch (e) {
              fail(new EtcdCallError(`etcd answered ${path} with HTTP ${res.statusCode} and no JSON`, res.statusCode === 200 ? 'network' : 'etcd', null, ep.name, e));
              return;
            }
            const g = gatewayError(json);
            if (g !== null || res.statusCode !== 200) {
              fail(new EtcdCallError(g?.message ?? `HTTP ${res.statusCode}`, 'etcd', g?.code ?? null, ep.name));
              return;
            }
            finish();
            resolve(json as T);
          });
          res.on('error', (e) => fail(new EtcdCallError(errorText(e), 'network', null, ep.name, e)));
        },
      );
      let done = false;
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        this.open.delete(req);
      };
      const fail = (e: EtcdCallError): void => {
        if (done) return;
        finish();
        req.destroy(); // the socket leaves the pool: a late answer cannot be taken for another call's
        reject(e);
      };
      const timer = setTimeout(
        () => fail(new EtcdCallError(`no answer from ${ep.name} to ${path} within ${timeoutMs} ms`, 'timeout', null, ep.name)),
        timeoutMs,
      );
      this.open.add(req);
      req.on('socket', withKeepalive);
      req.on('error', (e) => {
        if (this.closed) fail(new EtcdCallError('etcd client was closed', 'closed', null, ep.name, e));
        else if (req.reusedSocket && !gotResponse && /ECONNRESET|EPIPE/.test((e as { code?: string }).code ?? '')) fail(new StaleConnection(errorText(e), ep.name, e));
        else fail(new EtcdCallError(errorText(e), 'network', null, ep.name, e));
      });
      req.on('response', () => {
        gotResponse = true;
      });
      let gotResponse = false;
      req.end(data);
    });
  }

  /**
   * Opens a watch (POST /v3/watch with one create request) on the preferred endpoint, on a
   * connection of its own. Every WATCH_PROBE_MS while it is open, `probe` (a cheap call) goes
   * to the same member (one probe for all the watches on it); if that gets no answer within
   * WATCH_PROBE_TIMEOUT_MS, or "no leader", the watch ends. Returns a function that ends the
   * watch (without calling onEnd).
   */
  async watch(createRequest: object, probe: { path: string; body: object }, h: WatchHandlers): Promise<() => void> {
    const [i] = this.order();
    const ep = this.endpoints[i!]!;
    const { request } = await this.requester(ep);
    const token = this.opts.auth === null ? null : await this.token(ep, { timeoutMs: WATCH_PROBE_TIMEOUT_MS * 2 });
    const data = Buffer.from(JSON.stringify({ create_request: createRequest }));
    let ended = false;
    let unprobe = (): void => undefined;
    const req = request(
      // A connection of its own (agent false): a watch holds it for as long as it runs.
      { protocol: ep.url.protocol, hostname: ep.url.hostname, port: ep.url.port, path: '/v3/watch', method: 'POST', agent: false, headers: this.headers(token, data.length), ...(ep.secure ? this.tlsOptions() : {}) },
      (res) => {
        const splitter = new JsonObjectSplitter();
        const bodyParts: string[] = [];
        res.on('data', (c: Buffer) => {
          if (ended) return;
          let objects: string[];
          try {
            objects = splitter.push(c);
          } catch (e) {
            end(new EtcdCallError(errorText(e), 'too-large', GrpcCode.RESOURCE_EXHAUSTED, ep.name, e));
            return;
          }
          for (const text of objects) {
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch (e) {
              end(new EtcdCallError(`etcd's watch stream carried something other than JSON: ${text.slice(0, 100)}`, 'network', null, ep.name, e));
              return;
            }
            const g = gatewayError(json);
            if (g !== null) {
              end(new EtcdCallError(g.message, 'etcd', g.code, ep.name));
              return;
            }
            if (res.statusCode !== 200) {
              bodyParts.push(text);
              continue;
            }
            const result = (json as { result?: WatchResponse }).result;
            if (result !== undefined) h.onResponse(result);
            if (ended) return;
          }
        });
        res.on('end', () => end(new EtcdCallError(`etcd's watch stream ended${res.statusCode !== 200 ? ` (HTTP ${res.statusCode}: ${bodyParts.join(' ').slice(0, 200)})` : ''}`, res.statusCode === 200 ? 'network' : 'etcd', null, ep.name)));
        res.on('error', (e) => end(new EtcdCallError(errorText(e), 'network', null, ep.name, e)));
      },
    );
    /** Ends the watch once; false when it had ended already. */
    const stop = (): boolean => {
      if (ended) return false;
      ended = true;
      unprobe();
      this.open.delete(req);
      req.destroy();
      return true;
    };
    const end = (e: EtcdCallError | null): void => {
      if (!stop()) return;
      if (e !== null) this.markStalled(ep, e);
      // An expired token: the next watch (or call) fetches a new one.
      if (e?.code === GrpcCode.UNAUTHENTICATED && token !== null) this.tokens.delete(ep.name);
      h.onEnd(e);
    };
    this.open.add(req);
    req.on('socket', withKeepalive);
    req.on('error', (e) => end(this.closed ? new EtcdCallError('etcd client was closed', 'closed', null, ep.name, e) : new EtcdCallError(errorText(e), 'network', null, ep.name, e)));
    req.end(data);
    unprobe = this.probeWhileWatching(ep, probe, end);
    return () => {
      stop();
    };
  }

  /** Adds a watch to its member's probe (started with the first watch, stopped with the last). */
  private probeWhileWatching(ep: Endpoint, probe: { path: string; body: object }, end: (e: EtcdCallError) => void): () => void {
    let p = this.probes.get(ep.name);
    if (p === undefined) {
      const watches = new Set<(e: EtcdCallError) => void>();
      const timer = setInterval(() => {
        const { path, body } = p!.probe;
        this.callOn(ep, path, body, { timeoutMs: WATCH_PROBE_TIMEOUT_MS }).catch((e: unknown) => {
          // No answer, or "no leader": the member cannot serve these watches any more.
          if (e instanceof EtcdCallError && (e.reason === 'timeout' || e.reason === 'network' || e.code === GrpcCode.UNAVAILABLE)) {
            const failed = new EtcdCallError(`etcd watch on ${ep.name}: the member failed a probe: ${e.message}`, e.reason, e.code, ep.name, e);
            for (const w of [...watches]) w(failed);
          }
        });
      }, WATCH_PROBE_MS);
      p = { watches, probe, timer };
      this.probes.set(ep.name, p);
    }
    const mine = p;
    mine.watches.add(end);
    return () => {
      mine.watches.delete(end);
      if (mine.watches.size === 0 && this.probes.get(ep.name) === mine) {
        clearInterval(mine.timer);
        this.probes.delete(ep.name);
      }
    };
  }

  /** Ends every call and watch still running on this client and its connections. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const req of this.open) req.destroy(new Error('etcd client was closed'));
    this.open.clear();
    for (const p of this.probes.values()) clearInterval(p.timer);
    this.probes.clear();
    this.agents.http?.destroy();
    this.agents.https?.destroy();
  }
}
