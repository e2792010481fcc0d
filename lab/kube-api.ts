// A small stand-in for kube-apiserver, serving the part of the core v1 API that linend's kube
// mode and kubectl use: discovery (/api, /api/v1, /apis, /version), nodes (list, get, watch,
// create, delete, merge / strategic-merge / JSON PATCH of the node and of nodes/status) and
// pods (get, create through the JS API). Resource versions are one global counter as etcd's
// revision is; a watch from a resource version older than the kept history gets the real
// server's answer (an ERROR event with a 410 Status), and bookmarks are sent when asked for.
// An optional bearer-token table answers 401 for an unknown token and 403 (with the real
// server's message) for a verb the token was not granted.
//
// It listens on loopback, over HTTPS when given a certificate (kubectl sends a bearer token only
// over TLS), else plain HTTP: kube mode is tested against this and kubectl, not against a
// real kube-apiserver.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export interface KubeObject extends JsonObject {
  metadata: JsonObject;
}

/** What a token may do: resource ('nodes', 'nodes/status', 'pods') to verbs. */
export type Grants = Readonly<Record<string, readonly string[]>>;

export interface KubeApiOptions {
  /** Bearer tokens and what each may do; without it every request is allowed. */
  tokens?: Readonly<Record<string, { user: string; grants: Grants }>>;
  /** Events kept for watches from an older resource version; default 1000. */
  history?: number;
  /** Bookmark interval for watches that allow them; default 1000 ms. */
  bookmarkMs?: number;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Listen port; default 0 (any free one). */
  port?: number;
  /** PEM files of the server's certificate and key: serve HTTPS. */
  tls?: { readonly cert: string; readonly key: string };
}

export interface WatchEventRecord {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly rv: number;
  readonly object: KubeObject;
}

const clone = <T extends Json>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k] ?? null, v);
  }
  return out;
}

/** The merge keys of the Node's lists that strategic merge patches merge by element. */
const MERGE_KEYS: Readonly<Record<string, string>> = {
  'status.conditions': 'type',
  'status.addresses': 'type',
};

/** Strategic merge patch for a Node: as a merge patch, except lists with a merge key merge by element. */
export function strategicMergePatch(target: Json, patch: Json, path = ''): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue; // directives ($patch, $retainKeys...) are not used by linen or kubectl here
    const here = path === '' ? k : `${path}.${k}`;
    const key = MERGE_KEYS[here];
    if (v === null) delete out[k];
    else if (key !== undefined && Array.isArray(v)) {
      const list = Array.isArray(out[k]) ? (out[k] as Json[]).map((e) => clone(e)) : [];
      for (const item of v) {
        if (!isObject(item)) continue;
        const i = list.findIndex((e) => isObject(e) && e[key] === item[key]);
        if (item['$patch'] === 'delete') {
          if (i >= 0) list.splice(i, 1);
        } else if (i >= 0) list[i] = strategicMergePatch(list[i]!, item, here);
        else list.push(strategicMergePatch({}, item, here));
      }
      out[k] = list;
    } else out[k] = strategicMergePatch(out[k] ?? null, v, here);
  }
  return out;
}

/** RFC 6902 JSON patch (add, remove, replace, test) on a copy. */
export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw new HttpError(400, 'BadRequest', 'a JSON patch must be a list of operations');
  const doc = clone(target);
  for (const op of ops) {
    if (!isObject(op) || typeof op['path'] !== 'string') throw new HttpError(400, 'BadRequest', 'bad JSON patch operation');
    const parts = op['path'].split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = parts.pop();
    if (last === undefined) throw new HttpError(422, 'Invalid', 'the root cannot be patched');
    let parent: Json = doc;
    for (const p of parts) {
      const next: Json | undefined = Array.isArray(parent) ? parent[Number(p)] : isObject(parent) ? parent[p] : undefined;
      if (next === undefined) throw new HttpError(422, 'Invalid', `path ${op['path']} does not exist`);
      parent = next;
    }
    const value = op['value'] ?? null;
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      if (op['op'] === 'add') parent.splice(i, 0, clone(value));
      else if (op['op'] === 'remove') parent.splice(i, 1);
      else if (op['op'] === 'replace') parent[i] = clone(value);
      else if (op['op'] === 'test' && JSON.stringify(parent[i]) !== JSON.stringify(value)) throw new HttpError(422, 'Invalid', `test failed at ${op['path']}`);
    } else if (isObject(parent)) {
      if (op['op'] === 'add' || op['op'] === 'replace') parent[last] = clone(value);
      else if (op['op'] === 'remove') delete parent[last];
      else if (op['op'] === 'test' && JSON.stringify(parent[last]) !== JSON.stringify(value)) throw new HttpError(422, 'Invalid', `test failed at ${op['path']}`);
    } else throw new HttpError(422, 'Invalid', `path ${op['path']} does not exist`);
  }
  return doc;
}

class HttpError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string) {
    super(message);
  }
}

const status = (code: number, reason: string, message: string): JsonObject => ({
  kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code,
});

const RESOURCES: Json = [
  { name: 'nodes', singularName: 'node', namespaced: false, kind: 'Node', verbs: ['create', 'delete', 'get', 'list', 'patch', 'watch'], shortNames: ['no'] },
  { name: 'nodes/status', singularName: '', namespaced: false, kind: 'Node', verbs: ['get', 'patch'] },
  { name: 'pods', singularName: 'pod', namespaced: true, kind: 'Pod', verbs: ['get'], shortNames: ['po'] },
];

interface Watcher {
  readonly res: ServerResponse;
  readonly kind: 'nodes';
  readonly name: string | null;
  readonly bookmarks: boolean;
}

/** The lab API server. Objects may also be changed directly from the test (as a controller would). */
export class KubeApiServer {
  private server: Server | null = null;
  private rv = 1;
  private readonly nodes = new Map<string, KubeObject>();
  private readonly pods = new Map<string, KubeObject>();
  private history: WatchEventRecord[] = [];
  /** Resource versions at or below this are gone from the history: watching from them gets 410. */
  private compactedRv = 1;
  private readonly watchers = new Set<Watcher>();
  private bookmarkTimer: NodeJS.Timeout | null = null;
  /** Every request as "VERB path" (with its query and content type for PATCH), for tests. */
  readonly requests: string[] = [];
  port = 0;

  constructor(private readonly o: KubeApiOptions = {}) {}

  get url(): string {
    return `${this.o.tls === undefined ? 'http' : 'https'}://${this.o.host ?? '127.0.0.1'}:${this.port}`;
  }

  get resourceVersion(): number {
    return this.rv;
  }

  async start(): Promise<void> {
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.handle(req, res);
    const tls = this.o.tls;
    const server: Server = tls === undefined ? createServer(handler) : createTlsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, handler);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port || this.o.port || 0, this.o.host ?? '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    this.bookmarkTimer = setInterval(() => this.sendBookmarks(), this.o.bookmarkMs ?? 1000);
    this.bookmarkTimer.unref();
  }

  /** Stops listening and ends every watch (the objects stay for a restart on the same port). */
  async stop(): Promise<void> {
    if (this.bookmarkTimer !== null) clearInterval(this.bookmarkTimer);
    this.bookmarkTimer = null;
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    const s = this.server;
    this.server = null;
    if (s === null) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** Drops the event history: a watch from any older resource version now gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** Ends the open watches (as an API server does at its timeout), without an error. */
  endWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  node(name: string): KubeObject | undefined {
    const n = this.nodes.get(name);
    return n === undefined ? undefined : clone(n);
  }

  /** Creates a node (as a kubelet registers one), with a podCIDR if given. */
  addNode(name: string, opts: { podCIDR?: string; podCIDRs?: string[]; annotations?: Record<string, string>; addresses?: { type: string; address: string }[] } = {}): KubeObject {
    const spec: JsonObject = {};
    if (opts.podCIDR !== undefined) spec['podCIDR'] = opts.podCIDR;
    if (opts.podCIDRs !== undefined) spec['podCIDRs'] = opts.podCIDRs;
    else if (opts.podCIDR !== undefined) spec['podCIDRs'] = [opts.podCIDR];
    return this.createNode({
      metadata: { name, annotations: opts.annotations ?? {}, labels: { 'kubernetes.io/hostname': name } },
      spec,
      status: { addresses: opts.addresses ?? [], conditions: [] },
    });
  }

  /** Changes a node through a merge patch, as another controller would (the node controller setting podCIDR, say). */
  updateNode(name: string, patch: Json): KubeObject {
    const old = this.nodes.get(name);
    if (old === undefined) throw new Error(`no node ${name}`);
    return this.store(name, mergePatch(old, patch) as KubeObject, 'MODIFIED');
  }

  deleteNode(name: string): void {
    const old = this.nodes.get(name);
    if (old === undefined) return;
    this.nodes.delete(name);
    const obj = clone(old);
    obj.metadata['resourceVersion'] = String(++this.rv);
    this.emit({ type: 'DELETED', rv: this.rv, object: obj });
  }

  addPod(namespace: string, name: string, nodeName: string): void {
    this.pods.set(`${namespace}/${name}`, {
      kind: 'Pod', apiVersion: 'v1',
      metadata: { name, namespace, uid: `pod-${name}`, resourceVersion: String(++this.rv) },
      spec: { nodeName },
    });
  }

  private createNode(obj: KubeObject): KubeObject {
    const name = obj.metadata['name'];
    if (typeof name !== 'string' || name === '') throw new HttpError(422, 'Invalid', 'metadata.name: Required value: name or generateName is required');
    if (this.nodes.has(name)) throw new HttpError(409, 'AlreadyExists', `nodes "${name}" already exists`);
    obj.metadata['uid'] = `node-${name}-${this.rv + 1}`;
    obj.metadata['creationTimestamp'] = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return this.store(name, obj, 'ADDED');
  }

  private store(name: string, obj: KubeObject, type: 'ADDED' | 'MODIFIED'): KubeObject {
    const o = clone(obj);
    o['kind'] = 'Node';
    o['apiVersion'] = 'v1';
    o.metadata['name'] = name;
    o.metadata['resourceVersion'] = String(++this.rv);
    this.nodes.set(name, o);
    this.emit({ type, rv: this.rv, object: clone(o) });
    return clone(o);
  }

  private emit(ev: WatchEventRecord): void {
    this.history.push(ev);
    const keep = this.o.history ?? 1000;
    if (this.history.length > keep) {
      const dropped = this.history.splice(0, this.history.length - keep);
      this.compactedRv = dropped[dropped.length - 1]!.rv;
    }
    for (const w of this.watchers) this.send(w, ev);
  }

  private send(w: Watcher, ev: WatchEventRecord): void {
    if (w.name !== null && ev.object.metadata['name'] !== w.name) return;
    w.res.write(JSON.stringify({ type: ev.type, object: ev.object }) + '\n');
  }

  private sendBookmarks(): void {
    for (const w of this.watchers) {
      if (!w.bookmarks) continue;
      w.res.write(JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv), annotations: { 'k8s.io/initial-events-end': 'true' } } } }) + '\n');
    }
  }

  private authorize(req: IncomingMessage, verb: string, resource: string, name: string | null, namespace: string | null): void {
    const tokens = this.o.tokens;
    if (tokens === undefined) return;
    const auth = req.headers.authorization ?? '';
    const m = /^Bearer (.+)$/.exec(auth);
    const who = m === null ? undefined : tokens[m[1]!];
    if (who === undefined) throw new HttpError(401, 'Unauthorized', 'Unauthorized');
    if (who.grants[resource]?.includes(verb) === true) return;
    const [res, sub] = resource.split('/');
    const what = `${res}${name !== null ? ` "${name}"` : ''}`;
    const scope = namespace === null ? 'at the cluster scope' : `in the namespace "${namespace}"`;
    throw new HttpError(403, 'Forbidden', `${what} is forbidden: User "${who.user}" cannot ${verb} resource "${res}${sub !== undefined ? `/${sub}` : ''}" in API group "" ${scope}`);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    this.requests.push(`${method} ${url.pathname}${url.search}${method === 'PATCH' ? ` ${req.headers['content-type'] ?? ''}` : ''}`);
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
      await this.route(req, res, method, url, body);
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, 'InternalError', (e as Error).message);
      if (!res.headersSent) this.json(res, err.code, status(err.code, err.reason, err.message));
      else res.end();
    }
  }

  private json(res: ServerResponse, code: number, body: Json): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async route(req: IncomingMessage, res: ServerResponse, method: string, url: URL, body: string): Promise<void> {
    const p = url.pathname.replace(/\/$/, '');
    if (method === 'GET' && p === '/version') {
      return this.json(res, 200, { major: '1', minor: '32', gitVersion: 'v1.32.0-linen-lab', platform: 'linux/amd64' });
    }
    if (method === 'GET' && p === '/api') {
      return this.json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${this.o.host ?? '127.0.0.1'}:${this.port}` }] });
    }
    if (method === 'GET' && p === '/apis') return this.json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
    if (method === 'GET' && p === '/api/v1') return this.json(res, 200, { kind: 'APIResourceList', groupVersion: 'v1', resources: RESOURCES });
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(p);
    if (m !== null) {
      const [ns, name] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
      if (method !== 'GET') throw new HttpError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`);
      this.authorize(req, 'get', 'pods', name, ns);
      const pod = this.pods.get(`${ns}/${name}`);
      if (pod === undefined) throw new HttpError(404, 'NotFound', `pods "${name}" not found`);
      return this.json(res, 200, pod);
    }
    if (p === '/api/v1/nodes') {
      if (method === 'POST') {
        this.authorize(req, 'create', 'nodes', null, null);
        const obj = JSON.parse(body) as KubeObject;
        if (!isObject(obj.metadata)) throw new HttpError(400, 'BadRequest', 'metadata is required');
        return this.json(res, 201, this.createNode(obj));
      }
      if (method !== 'GET') throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
      const field = url.searchParams.get('fieldSelector') ?? '';
      const fm = /^metadata\.name=(.+)$/.exec(field);
      const only = fm === null ? null : fm[1]!;
      if (['true', '1'].includes(url.searchParams.get('watch') ?? '')) {
        this.authorize(req, 'watch', 'nodes', null, null);
        return this.watch(res, url, only);
      }
      this.authorize(req, 'list', 'nodes', null, null);
      const items = [...this.nodes.values()].filter((n) => only === null || n.metadata['name'] === only);
      return this.json(res, 200, { kind: 'NodeList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items });
    }
    m = /^\/api\/v1\/nodes\/([^/]+)(\/status)?$/.exec(p);
    if (m === null) throw new HttpError(404, 'NotFound', 'the server could not find the requested resource');
    const name = decodeURIComponent(m[1]!);
    const sub = m[2] !== undefined;
    const resource = sub ? 'nodes/status' : 'nodes';
    if (method === 'GET') {
      this.authorize(req, 'get', resource, name, null);
      const n = this.nodes.get(name);
      if (n === undefined) throw new HttpError(404, 'NotFound', `nodes "${name}" not found`);
      return this.json(res, 200, n);
    }
    if (method === 'DELETE' && !sub) {
      this.authorize(req, 'delete', 'nodes', name, null);
      const n = this.nodes.get(name);
      if (n === undefined) throw new HttpError(404, 'NotFound', `nodes "${name}" not found`);
      this.deleteNode(name);
      return this.json(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind: 'nodes', uid: n.metadata['uid'] ?? '' } });
    }
    if (method !== 'PATCH') throw new HttpError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    this.authorize(req, 'patch', resource, name, null);
    const old = this.nodes.get(name);
    if (old === undefined) throw new HttpError(404, 'NotFound', `nodes "${name}" not found`);
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
    let patch: Json;
    try {
      patch = JSON.parse(body) as Json;
    } catch (e) {
      throw new HttpError(400, 'BadRequest', `error decoding patch: ${(e as Error).message}`);
    }
    let next: Json;
    if (type === 'application/merge-patch+json') next = mergePatch(old, patch);
    else if (type === 'application/strategic-merge-patch+json') next = strategicMergePatch(old, patch);
    else if (type === 'application/json-patch+json') next = jsonPatch(old, patch);
    else throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
    if (!isObject(next) || !isObject(next['metadata'])) throw new HttpError(422, 'Invalid', 'the patch removed the metadata');
    const want = isObject(patch) && isObject(patch['metadata']) ? patch['metadata']['resourceVersion'] : undefined;
    if (typeof want === 'string' && want !== old.metadata['resourceVersion']) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on nodes "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    // The main resource leaves status alone and nodes/status leaves spec alone; metadata
    // (annotations included) may change through either, as on a real API server.
    if (sub) next['spec'] = clone(old['spec'] ?? {});
    else next['status'] = clone(old['status'] ?? {});
    next['metadata']['name'] = name;
    if (JSON.stringify({ ...next, metadata: { ...next['metadata'], resourceVersion: null } }) === JSON.stringify({ ...old, metadata: { ...old.metadata, resourceVersion: null } })) {
      return this.json(res, 200, old); // a no-op patch writes nothing and bumps no version
    }
    return this.json(res, 200, this.store(name, next as KubeObject, 'MODIFIED'));
  }

  private watch(res: ServerResponse, url: URL, only: string | null): void {
    const from = url.searchParams.get('resourceVersion') ?? '';
    const w: Watcher = { res, kind: 'nodes', name: only, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true' };
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    if (from === '' || from === '0') {
      // "Start at most recent", after a synthetic ADDED for every object as the real server sends.
      for (const n of this.nodes.values()) this.send(w, { type: 'ADDED', rv: Number(n.metadata['resourceVersion']), object: clone(n) });
    } else {
      const rv = Number(from);
      if (!Number.isInteger(rv) || rv < 0) {
        res.end(JSON.stringify({ type: 'ERROR', object: status(400, 'BadRequest', `invalid resource version: ${from}`) }) + '\n');
        return;
      }
      if (rv < this.compactedRv) {
        res.end(JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${rv} (${this.compactedRv})`) }) + '\n');
        return;
      }
      for (const ev of this.history) if (ev.rv > rv) this.send(w, ev);
    }
    this.watchers.add(w);
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : null;
    res.on('close', () => {
      if (timer !== null) clearTimeout(timer);
      this.watchers.delete(w);
    });
  }
}

/** A kubeconfig for `kubectl --kubeconfig` and linend's --kubeconfig-file. */
export function kubeconfigYaml(server: string, auth: { token?: string; ca?: string } = {}): string {
  const { token, ca } = auth;
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: lab',
    '  cluster:',
    `    server: ${server}`,
    ...(ca === undefined ? [] : [`    certificate-authority: ${ca}`]),
    'users:',
    '- name: lab',
    token === undefined ? '  user: {}' : `  user:\n    token: ${token}`,
    'contexts:',
    '- name: lab',
    '  context:',
    '    cluster: lab',
    '    user: lab',
    'current-context: lab',
    '',
  ].join('\n');
}
