// The Kubernetes API calls kube mode makes, on the official client (@kubernetes/client-node):
// get a node or a pod, list nodes, watch nodes from a resource version, and strategic-merge
// patch a node's status subresource. Loaded only in kube mode (daemon-kube imports it
// dynamically). Errors become RegistryErrors with a kind the callers act on and the API
// server's own message.
import { readFile } from 'node:fs/promises';
import { ApiException, CoreV1Api, KubeConfig, PatchStrategy, Watch, setHeaderOptions, type User, type V1Node } from '@kubernetes/client-node';
import { RegistryError, type RegistryErrorKind } from '../registry.js';
import type { NodeView } from './annotations.js';

export interface KubeClientOptions {
  /** --kube-api-url: overrides the kubeconfig's server, or is the whole config without one. */
  apiUrl: string;
  /** --kubeconfig-file. */
  kubeconfig: string;
  /** Where the service account files are (in-cluster config); default the root. */
  inClusterRoot?: string;
}

/** A watch event as linen uses it. */
export type NodeWatchEvent =
  | { readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'; readonly node: NodeView; readonly resourceVersion: string }
  | { readonly type: 'BOOKMARK'; readonly resourceVersion: string }
  /** The resource version is too old (410 Gone): list again. */
  | { readonly type: 'EXPIRED'; readonly message: string };

export class NodeNotFoundError extends RegistryError {
  constructor(name: string) {
    super(`node "${name}" not found`, 'other');
    this.name = 'NodeNotFoundError';
  }
}

/**
 * The client refuses a plain-HTTP server unless told to skip TLS verification, which has no
 * meaning without TLS; client-go (flanneld, kubectl) simply speaks HTTP there.
 */
function allowPlainHttp(kc: KubeConfig): KubeConfig {
  kc.clusters = kc.clusters.map((c) => (c.server.startsWith('http://') ? { ...c, skipTLSVerify: true } : c));
  return kc;
}

/** Builds the client configuration as flanneld does: kubeconfig and/or API URL, else in-cluster. */
export function kubeConfigFor(o: KubeClientOptions): KubeConfig {
  return allowPlainHttp(loadKubeConfig(o));
}

function loadKubeConfig(o: KubeClientOptions): KubeConfig {
  const kc = new KubeConfig();
  if (o.kubeconfig !== '') {
    kc.loadFromFile(o.kubeconfig);
    if (o.apiUrl !== '') {
      const cur = kc.getCurrentCluster();
      if (cur === null) throw new Error(`fail to create kubernetes config: ${o.kubeconfig} has no current cluster`);
      kc.clusters = kc.clusters.map((c) => (c.name === cur.name ? { ...c, server: o.apiUrl } : c));
    }
    return kc;
  }
  if (o.apiUrl !== '') {
    kc.loadFromOptions({
      clusters: [{ name: 'api', server: o.apiUrl, skipTLSVerify: false }],
      users: [{ name: 'none' }],
      contexts: [{ name: 'api', cluster: 'api', user: 'none' }],
      currentContext: 'api',
    });
    return kc;
  }
  if (process.env['KUBERNETES_SERVICE_HOST'] === undefined || process.env['KUBERNETES_SERVICE_PORT'] === undefined) {
    throw new Error('fail to create kubernetes config: not running in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset); give --kubeconfig-file or --kube-api-url');
  }
  kc.loadFromCluster(o.inClusterRoot);
  readServiceAccountTokenPerRequest(kc);
  return kc;
}

const SERVICE_ACCOUNT_TOKEN = 'linen-service-account-token';
type Authenticator = Parameters<KubeConfig['addAuthenticator']>[0];

/**
 * The kubelet rotates a pod's projected service account token by replacing the file. The
 * client's own token-file provider caches the token for a minute (in one instance shared by
 * every KubeConfig in the process), so requests made in that minute carry the old token. Kube
 * mode makes few requests (a list, a watch every few minutes, a patch at start), so reading the
 * small file on every request costs nothing and a rotated token is used at once. When the file
 * cannot be read the last token read is kept; the server's 401 then says what is wrong.
 */
function readServiceAccountTokenPerRequest(kc: KubeConfig): void {
  const provider = kc.getCurrentUser()?.authProvider as { config?: { tokenFile?: unknown } } | undefined;
  const path = provider?.config?.tokenFile;
  if (typeof path !== 'string') return;
  let last = '';
  const auth: Authenticator = {
    isAuthProvider: (user: User) => user.authProvider?.name === SERVICE_ACCOUNT_TOKEN,
    async applyAuthentication(_user, opts) {
      try {
        last = (await readFile(path, 'utf8')).trim();
      } catch {
        // keep the last token
      }
      if (last !== '') opts.headers = { ...opts.headers, Authorization: `Bearer ${last}` };
    },
  };
  kc.addAuthenticator(auth);
  // A provider name and config the client's built-in providers do not claim.
  kc.users = kc.users.map((u) => (u.authProvider === provider ? { ...u, authProvider: { name: SERVICE_ACCOUNT_TOKEN, config: {} } } : u));
}

/** The API server's message from an error response, or the error's own. */
function messageOf(e: unknown): string {
  if (e instanceof ApiException) {
    const body: unknown = e.body;
    let parsed: unknown = body;
    if (typeof body === 'string') {
      try {
        parsed = JSON.parse(body) as unknown;
      } catch {
        return body !== '' ? body : `HTTP ${e.code}`;
      }
    }
    if (typeof parsed === 'object' && parsed !== null && 'message' in parsed && typeof parsed.message === 'string') return parsed.message;
    return `HTTP ${e.code}`;
  }
  return (e as Error).message;
}

function kindOf(code: number | undefined): RegistryErrorKind {
  if (code === 401) return 'auth';
  if (code === 403) return 'permission';
  if (code === undefined || code >= 500 || code === 429) return 'unavailable';
  return 'other';
}

/** Wraps an API failure: a RegistryError whose message says what was asked and what the server said. */
export function apiError(what: string, e: unknown): RegistryError {
  if (e instanceof RegistryError) return e;
  const code = e instanceof ApiException ? e.code : typeof (e as { statusCode?: unknown }).statusCode === 'number' ? (e as { statusCode: number }).statusCode : undefined;
  const kind = kindOf(code);
  const hint = kind === 'permission' ? ' (the ClusterRole bound to linen\'s service account must allow it: see deploy/kube-linen.yml)' : kind === 'auth' ? ' (check the service account token or the kubeconfig\'s credentials)' : '';
  return new RegistryError(`${what}: ${messageOf(e)}${hint}`, kind, e);
}

export function nodeView(n: V1Node): NodeView {
  return {
    name: n.metadata?.name ?? '',
    annotations: n.metadata?.annotations ?? {},
    podCIDR: n.spec?.podCIDR ?? '',
    podCIDRs: n.spec?.podCIDRs ?? [],
  };
}

export class KubeClient {
  private readonly api: CoreV1Api;
  private readonly watcher: Watch;
  readonly server: string;

  constructor(readonly config: KubeConfig) {
    this.api = config.makeApiClient(CoreV1Api);
    this.watcher = new Watch(config);
    this.server = config.getCurrentCluster()?.server ?? '';
  }

  async getNode(name: string): Promise<NodeView> {
    try {
      return nodeView(await this.api.readNode({ name }));
    } catch (e) {
      if (e instanceof ApiException && e.code === 404) throw new NodeNotFoundError(name);
      throw apiError(`getting node "${name}"`, e);
    }
  }

  /** The pod's spec.nodeName ("" when not scheduled yet). */
  async podNodeName(namespace: string, name: string): Promise<string> {
    try {
      const pod = await this.api.readNamespacedPod({ name, namespace });
      return pod.spec?.nodeName ?? '';
    } catch (e) {
      throw apiError(`error retrieving pod spec for '${namespace}/${name}'`, e);
    }
  }

  async listNodes(): Promise<{ nodes: NodeView[]; resourceVersion: string }> {
    try {
      const list = await this.api.listNode({});
      return { nodes: list.items.map(nodeView), resourceVersion: list.metadata?.resourceVersion ?? '' };
    } catch (e) {
      throw apiError('listing nodes', e);
    }
  }

  /** Strategic-merge PATCH of nodes/<name>/status (annotations and conditions). */
  async patchNodeStatus(name: string, body: string): Promise<void> {
    try {
      await this.api.patchNodeStatus({ name, body: JSON.parse(body) as object }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    } catch (e) {
      throw apiError(`patching node "${name}"`, e);
    }
  }

  /**
   * Watches nodes from a resource version, with bookmarks, for at most timeoutSeconds; yields
   * until the stream ends (returns), fails (throws a RegistryError) or `signal` aborts.
   */
  async *watchNodes(resourceVersion: string, timeoutSeconds: number, signal: AbortSignal): AsyncGenerator<NodeWatchEvent> {
    const queue: NodeWatchEvent[] = [];
    let ended = false;
    let failure: unknown = null;
    let wake: (() => void) | null = null;
    const poke = (): void => {
      const w = wake;
      wake = null;
      w?.();
    };
    const onEvent = (type: string, obj: unknown): void => {
      const o = obj as V1Node & { code?: number; message?: string; reason?: string };
      if (type === 'ERROR') {
        if (o.code === 410) queue.push({ type: 'EXPIRED', message: o.message ?? 'resource version too old' });
        else failure = new RegistryError(`watching nodes: ${o.message ?? 'error event'}`, kindOf(o.code), o);
      } else if (type === 'BOOKMARK') {
        queue.push({ type, resourceVersion: o.metadata?.resourceVersion ?? resourceVersion });
      } else if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') {
        queue.push({ type, node: nodeView(o), resourceVersion: o.metadata?.resourceVersion ?? '' });
      }
      poke();
    };
    const onDone = (err: unknown): void => {
      ended = true;
      if (err !== null && err !== undefined && failure === null && !signal.aborted) failure = apiError('watching nodes', err);
      poke();
    };
    let controller: AbortController | null = null;
    const stop = (): void => {
      controller?.abort();
      poke();
    };
    signal.addEventListener('abort', stop, { once: true });
    try {
      controller = await this.watcher.watch('/api/v1/nodes', { resourceVersion, allowWatchBookmarks: true, timeoutSeconds }, onEvent, onDone);
      for (;;) {
        while (queue.length > 0) {
          const ev = queue.shift()!;
          yield ev;
          if (ev.type === 'EXPIRED') return;
        }
        if (failure !== null) throw failure;
        if (ended || signal.aborted) return;
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      signal.removeEventListener('abort', stop);
      controller?.abort();
    }
  }
}
