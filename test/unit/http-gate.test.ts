// Admission on the health/metrics servers: one address gets its share, clients other than the
// node share what the node's reserve leaves, the node itself may take every slot.
import t from 'tap';
import { ConnectionGate, HTTP_LIMITS, isNodeClient } from '../../src/node/http.js';

const limits = { maxConnections: 10, maxConnectionsPerClient: 3, reservedForNode: 4 };
const admitted = (v: ReturnType<ConnectionGate['admit']>): (() => void) => {
  if ('refused' in v) throw new Error(`refused: ${v.refused}`);
  return v.release;
};

t.test('the node itself: loopback, or the address the connection arrived on', async (t) => {
  t.ok(isNodeClient('127.0.0.1', '0.0.0.0'));
  t.ok(isNodeClient('::ffff:127.0.0.9', '::ffff:127.0.0.1'));
  t.ok(isNodeClient('::1', '::1'));
  t.ok(isNodeClient('10.0.0.5', '10.0.0.5'), 'kubelet probing the node address from the node');
  t.notOk(isNodeClient('10.5.1.2', '10.5.1.1'), 'a pod');
  t.notOk(isNodeClient(undefined, '10.5.1.1'));
});

t.test('one address gets its share; a second address its own; released slots come back', async (t) => {
  const g = new ConnectionGate(limits);
  const pod = [0, 1, 2].map(() => admitted(g.admit('10.5.1.2', '10.5.1.1')));
  t.same(g.admit('10.5.1.2', '10.5.1.1'), { refused: 'client_limit' }, 'the fourth from one pod');
  admitted(g.admit('10.5.1.3', '10.5.1.1'));
  pod[0]!();
  pod[0]!(); // a second release of the same connection changes nothing
  admitted(g.admit('10.5.1.2', '10.5.1.1'));
  t.same(g.admit('10.5.1.2', '10.5.1.1'), { refused: 'client_limit' });
  t.same(g.held, { total: 4, others: 4 });
});

t.test('others share what the reserve leaves; the node takes the rest; nobody past the cap', async (t) => {
  const g = new ConnectionGate(limits);
  for (let i = 0; i < 6; i++) admitted(g.admit(`10.5.1.${10 + (i >> 1)}`, '10.5.1.1'));
  t.same(g.admit('10.5.1.99', '10.5.1.1'), { refused: 'server_full' }, 'a new address once 6 of 10 are taken by others');
  for (let i = 0; i < 4; i++) admitted(g.admit('127.0.0.1', '127.0.0.1'));
  t.same(g.held, { total: 10, others: 6 });
  t.same(g.admit('127.0.0.1', '127.0.0.1'), { refused: 'server_full' }, 'not even the node past the cap');
});

t.test('the node is not held to a per-address share', async (t) => {
  const g = new ConnectionGate(limits);
  for (let i = 0; i < limits.maxConnections; i++) admitted(g.admit('127.0.0.1', '127.0.0.1'));
  t.equal(g.held.total, limits.maxConnections);
});

t.test('the limits leave the node its reserve and a pod less than the whole cap', async (t) => {
  t.ok(HTTP_LIMITS.reservedForNode > 0 && HTTP_LIMITS.reservedForNode < HTTP_LIMITS.maxConnections);
  t.ok(HTTP_LIMITS.maxConnectionsPerClient <= HTTP_LIMITS.maxConnections - HTTP_LIMITS.reservedForNode);
  t.ok(HTTP_LIMITS.headersTimeoutMs <= 10_000, 'a request whose headers do not arrive is cut within a few seconds');
});
