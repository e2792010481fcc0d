// `npm run demo -- --kube`: the demo cluster in kube mode (the lab API server instead of etcd)
// runs to the end, every pod reaching every other, with the nodes annotated and marked up.
import t from 'tap';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../../src/paths.js';

t.test('demo --kube --hosts 2 --backend udp', async (t) => {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, join(repoRoot(), 'dist', 'demo', 'main.js'),
    '--kube', '--hosts', '2', '--backend', 'udp'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const timer = setTimeout(() => child.kill('SIGINT'), 240_000);
  const code = await new Promise<number | string | null>((r) => child.once('exit', (c, s) => r(c ?? s)));
  clearTimeout(timer);
  if (code !== 0) t.comment(out);
  t.equal(code, 0, 'the demo succeeded');
  // UDP's backend-type is the empty string, as flanneld writes it.
  t.match(out, /node-1\s+10\.\d+\.1\.0\/24\s+192\.168\.\d+\.1\s+FlannelIsUp/, 'kubectl shows node-1 with its podCIDR, public-ip and condition');
  t.match(out, /every pod reached every other pod/);
});
