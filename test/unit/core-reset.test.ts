// init() again resets the route table: routesReset only clears the hash when it holds routes
// (a fresh core leaves those pages untouched, out of the resident memory), so both paths are
// checked here: a table with routes, and one whose routes were all removed.
import t from 'tap';
import { Core } from '../../src/dataplane/core.js';

const ip = (s: string): number => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);

t.test('init after routes were set: no route is left, and routes can be set again', (t) => {
  const core = new Core({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip('10.5.1.0'), prefixLen: 24 } });
  for (let i = 2; i < 200; i++) core.setRoute({ subnet: { ip: ip(`10.5.${i}.0`), prefixLen: 24 }, publicIP: ip(`192.168.7.${i}`) });
  t.equal(core.routeCount, 198);
  t.equal(core.exports.init(0, 0), 0, 'init succeeds');
  t.equal(core.routeCount, 0, 'the table is empty');
  for (let i = 2; i < 200; i++) {
    if (core.exports.routeLookup(ip(`10.5.${i}.9`)) !== -1) { t.fail(`10.5.${i}.9 still has a route`); break; }
  }
  const idx = core.setRoute({ subnet: { ip: ip('10.5.7.0'), prefixLen: 24 }, publicIP: ip('192.168.7.7') });
  t.equal(core.exports.routeLookup(ip('10.5.7.9')), idx, 'a route set after the reset is found');
  t.equal(core.exports.routeLookup(ip('10.5.8.9')), -1, 'and only that one');
  t.end();
});

t.test('init after every route was removed: the table is still clear', (t) => {
  const core = new Core({ mode: 'udp', port: 8285, mtu: 1472, subnet: { ip: ip('10.5.1.0'), prefixLen: 24 } });
  for (let i = 2; i < 200; i++) core.setRoute({ subnet: { ip: ip(`10.5.${i}.0`), prefixLen: 24 }, publicIP: ip(`192.168.7.${i}`) });
  for (let i = 2; i < 200; i++) core.removeRoute({ ip: ip(`10.5.${i}.0`), prefixLen: 24 });
  t.equal(core.routeCount, 0);
  t.equal(core.exports.init(0, 0), 0, 'init succeeds');
  for (let i = 2; i < 200; i++) core.setRoute({ subnet: { ip: ip(`10.5.${i}.0`), prefixLen: 24 }, publicIP: ip(`192.168.8.${i}`) });
  let wrong = 0;
  for (let i = 2; i < 200; i++) {
    const r = core.exports.routeLookup(ip(`10.5.${i}.9`));
    if (r < 0 || core.exports.routeFind(ip(`10.5.${i}.0`), 24) !== r) wrong++;
  }
  t.equal(wrong, 0, 'every route set again is found at its entry');
  t.equal(core.routeCount, 198);
  t.end();
});
