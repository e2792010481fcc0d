// The lab API server as a process of its own, so that it can run inside a namespace (the
// hosts reach it on the underlay): `node dist/lab/kube-api-main.js <host> [port]`. It prints
// `listening <url>` on stdout, then takes one JSON command per line on stdin (the
// KubeApiServer methods a test drives: addNode, updateNode, deleteNode, addPod, node, compact,
// endWatches, stop, start) and answers each with one JSON line {id, result} or {id, error}.
import { createInterface } from 'node:readline';
import { KubeApiServer } from './kube-api.js';

interface Command {
  id: number;
  op: string;
  args: unknown[];
}

const [host, port] = [process.argv[2] ?? '127.0.0.1', Number(process.argv[3] ?? '0')];
const api = new KubeApiServer({ host, port, bookmarkMs: 1000 });
await api.start();
process.stdout.write(`listening ${api.url}\n`);

const ops: Record<string, (...a: never[]) => unknown> = {
  addNode: (name: string, opts: Parameters<KubeApiServer['addNode']>[1]) => api.addNode(name, opts),
  updateNode: (name: string, patch: Parameters<KubeApiServer['updateNode']>[1]) => api.updateNode(name, patch),
  deleteNode: (name: string) => api.deleteNode(name),
  addPod: (ns: string, name: string, node: string) => api.addPod(ns, name, node),
  node: (name: string) => api.node(name) ?? null,
  compact: () => api.compact(),
  endWatches: () => api.endWatches(),
  requests: () => api.requests,
  stop: () => api.stop(),
  start: () => api.start(),
};

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  void (async () => {
    let cmd: Command;
    try {
      cmd = JSON.parse(line) as Command;
    } catch {
      return;
    }
    const f = ops[cmd.op];
    try {
      if (f === undefined) throw new Error(`unknown command ${cmd.op}`);
      const result = await (f as (...a: unknown[]) => unknown)(...cmd.args);
      process.stdout.write(JSON.stringify({ id: cmd.id, result: result ?? null }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: cmd.id, error: (e as Error).message }) + '\n');
    }
  })();
});
// The test's end of stdin closing means it is gone: stop.
lines.on('close', () => void api.stop().then(() => process.exit(0)));
