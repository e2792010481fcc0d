// RetryLog: a retry loop's failure is a warning once, not at every retry.
import t from 'tap';
import { memoryLogger } from '../../src/log.js';
import { ManualClock } from '../../src/subnet/clock.js';
import { RetryLog, REPEAT_LOG_MS } from '../../src/subnet/retry-log.js';
import { RegistryError, type ConnectionStatus } from '../../src/subnet/registry.js';

const at = (state: ConnectionStatus['state']) => ({ connection: (): ConnectionStatus => ({ state, lastError: null, since: 0 }) });

t.test('the same failure again (but for its numbers) is quiet for a while, then a warning with the count', async (t) => {
  const { log, lines } = memoryLogger(0);
  const clock = new ManualClock();
  const r = new RetryLog(log, at('connected'), clock);
  const denied = new RegistryError('permission denied', 'permission');
  for (let i = 0; i < 10; i++) {
    r.failed(`watch failed: permission denied; reconnecting from rev ${i} in ${100 * 2 ** i} ms`, denied);
    await clock.advance(1000);
  }
  t.equal(lines.length, 1, 'one warning for ten failures');
  t.match(lines[0], /^W.*watch failed: permission denied; reconnecting from rev 0 in 100 ms$/);
  r.failed('another failure', denied);
  t.equal(lines.length, 2, 'a different failure is a warning at once');
  r.failed('another failure', denied);
  await clock.advance(REPEAT_LOG_MS);
  r.failed('another failure', denied);
  t.match(lines[2], /another failure \(1 more failure\(s\) since the last warning, shown with -v=1\)/, 'after REPEAT_LOG_MS, a warning again with the count');
  r.succeeded('the watch');
  t.match(lines[3], /^I.*the watch works again after 13 failed attempt\(s\)/);
  r.succeeded('the watch');
  t.equal(lines.length, 4, 'nothing more while it works');
});

t.test('while the registry reports etcd lost, connection failures are quiet (the registry logged the loss)', async (t) => {
  const { log, lines } = memoryLogger(0);
  const r = new RetryLog(log, at('disconnected'), new ManualClock());
  for (let i = 0; i < 5; i++) r.failed(`watch failed: unavailable; in ${i} ms`, new RegistryError('unavailable', 'unavailable'));
  t.same(lines, []);
  r.failed('watch failed: permission denied', new RegistryError('permission denied', 'permission'));
  t.equal(lines.length, 1, 'another kind of failure is a warning');
  r.succeeded('the watch');
  t.match(lines[1], /works again after 6 failed attempt/);
});
